"""``micrec export`` and ``micrec retrain`` as commands: settings like ``micrec serve``, one
clear line for what is wrong, exit statuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.store.base import Interaction
from app.store.sqlite import SQLiteStore
from tests.app.store.test_store_export import _bundle_with_dataset


def _micrec(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MICREC_")}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_export_command(tmp_path: Path) -> None:
    bundle = _bundle_with_dataset(tmp_path)
    db = tmp_path / "state.db"
    SQLiteStore(db).add_interactions([Interaction("u7", "a1", "arts", 9000.0)], 10)
    env = {"MICREC_STORE_URL": f"sqlite:///{db}", "MICREC_BUNDLE_PATH": str(bundle)}
    out = tmp_path / "export"
    proc = _micrec(["export", str(out), "--quiet"], env)
    assert proc.returncode == 0, proc.stderr
    assert "interactions: 5 bundle, 1 store" in proc.stdout
    assert (out / "interactions.csv").read_text().splitlines()[-1] == "u7,a1,arts,9000,store"
    again = _micrec(["export", str(out), "--quiet"], env)  # never overwrites silently
    assert again.returncode == 2 and "use --force" in again.stderr
    assert _micrec(["export", str(out), "--quiet", "--force"], env).returncode == 0


def test_retrain_command_needs_a_registry(tmp_path: Path) -> None:
    env = {"MICREC_STORE_URL": f"sqlite:///{tmp_path / 'state.db'}"}
    proc = _micrec(["retrain"], env)
    assert proc.returncode == 2
    assert "no bundle registry: set MICREC_REGISTRY_DIR" in proc.stderr
    bad = _micrec(["retrain", "--registry", str(tmp_path), "--slice", "everything"], env)
    assert bad.returncode == 2 and "gate slice 'everything'" in bad.stderr


def test_export_with_the_store_down_is_one_line(tmp_path: Path) -> None:
    bundle = _bundle_with_dataset(tmp_path)
    env = {"MICREC_STORE_URL": "redis://127.0.0.1:1/0", "MICREC_BUNDLE_PATH": str(bundle)}
    proc = _micrec(["export", str(tmp_path / "export"), "--quiet"], env)
    assert proc.returncode == 2, proc.stderr
    assert "redis 127.0.0.1:1" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "export").exists()  # nothing half-written
