"""A real browser and a real service for the console tests.

* :func:`chromium_path` - the system Chromium (Debian ``chromium``, installed by
  ``make system-deps`` / ``.ci/run``). Missing, the browser tests FAIL; they skip only when
  ``MICREC_SKIP_BROWSER=1`` says so explicitly. Playwright drives it (``executable_path``);
  ``playwright install`` is never run: nothing is downloaded.
* :func:`build_console_bundle` - a tiny real bundle (synthetic catalogue with pictures,
  text features, test metrics) trained the way tests/app/real_bundle.py trains its own.
* :class:`PageWatch` - what went wrong on a page: script errors, console errors and every
  HTTP answer >= 400, so a test can require "no errors except the refusals it expects".
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import torch

from model.data.synth import SynthConfig, write_synthetic_catalogue
from model.pipeline import train_run
from tests.app.real_bundle import run_config

SKIP_ENV = "MICREC_SKIP_BROWSER"
SCREENSHOTS = Path(__file__).resolve().parents[4] / "artifacts" / "test-screenshots"


def chromium_path() -> str:
    """The system Chromium, or a test failure saying how to install it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get(SKIP_ENV) == "1":
            pytest.skip(f"chromium not installed and {SKIP_ENV}=1")
        pytest.fail(
            "the console's browser tests need the system chromium: run `make system-deps` "
            f"(apt-get install chromium chromium-driver), or set {SKIP_ENV}=1 to skip them"
        )
    return found


@dataclass
class ConsoleBundle:
    bundle: Path
    images: Path
    """The catalogue's pictures (``<item_id>.png``): item_images_dir of the service."""


def build_console_bundle(root: Path) -> ConsoleBundle:
    """Catalogue with 32 px pictures + a bundle trained on its texts, with test metrics."""
    data = root / "data"
    write_synthetic_catalogue(data, SynthConfig.tiny(users=300))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = train_run(data, run_config(root, epochs=10, seed=0), root / "bundle", progress=False)
    finally:
        torch.set_num_threads(threads)
    return ConsoleBundle(out.bundle_dir, data / "images")


@dataclass
class PageWatch:
    """Errors of one page: uncaught script errors, console errors, failed requests."""

    script_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    """(status, path) of every answer >= 400."""

    def attach(self, page: Any) -> PageWatch:
        page.on("pageerror", lambda err: self.script_errors.append(str(err)))
        page.on(
            "console",
            lambda msg: self.console_errors.append(msg.text) if msg.type == "error" else None,
        )
        page.on(
            "response",
            lambda r: (
                self.failed.append((r.status, urlparse(r.url).path)) if r.status >= 400 else None
            ),
        )
        return self

    def check(self, *expected: tuple[int, str]) -> None:
        """No script error; console errors only for the failed requests, and those are
        exactly the refusals the test expects."""
        assert self.script_errors == []
        unexplained = [
            m for m in self.console_errors if not m.startswith("Failed to load resource")
        ]
        assert unexplained == []
        assert sorted(set(self.failed)) == sorted(set(expected)), self.failed
        assert len(self.console_errors) == len(self.failed)

    def reset(self) -> None:
        self.script_errors.clear()
        self.console_errors.clear()
        self.failed.clear()
