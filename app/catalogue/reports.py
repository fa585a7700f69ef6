"""The serving bundle's evaluation, for ``GET /v1/model/evaluation`` and its plots.

What a bundle stores (model/pipeline.py ``train_run``; ``micrec evaluate`` adds
``evaluation/``): the manifest's ``metrics`` (training summary, test metrics per domain and
slice, degree buckets ``deg_*`` among the slices), ``history.json`` (one row per epoch),
``training_curve.png``, ``tuning.png`` when tuned, ``evaluation/results.json`` (the model
and baselines) and ``evaluation/slices_<domain>.png``. Plots are served by *name* from
that fixed list, never by a path the client gives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.api.errors import NotFound
from app.api.schemas_console import EvaluationReport
from app.api.validation import shown
from app.catalogue.images import sniff
from app.lifecycle.state import ModelState

MAX_REPORT_BYTES = 8 * 1024 * 1024
"""Larger report files are skipped (a bundle's are tens of KiB)."""


def plot_files(domains: list[str]) -> dict[str, str]:
    """Plot name -> file relative to the bundle directory."""
    files = {"training_curve": "training_curve.png", "tuning": "tuning.png"}
    for d in domains:
        files[f"slices_{d}"] = f"evaluation/slices_{d}.png"
    return files


def _read(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_REPORT_BYTES + 1)
    except OSError:
        return None
    return data if len(data) <= MAX_REPORT_BYTES else None


def _json(path: Path) -> Any:
    data = _read(path)
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def evaluation(state: ModelState) -> EvaluationReport:
    root = state.bundle_path
    manifest = _json(root / "manifest.json")
    metrics = manifest.get("metrics") if isinstance(manifest, dict) else None
    baselines = _json(root / "evaluation" / "results.json")
    history = _json(root / "history.json")
    plots = [name for name, rel in plot_files(state.domains).items() if (root / rel).is_file()]
    return EvaluationReport(
        model_version=state.model_version,
        metrics=metrics if isinstance(metrics, dict) else {},
        baselines=baselines if isinstance(baselines, dict) else None,
        history=[r for r in history if isinstance(r, dict)] if isinstance(history, list) else [],
        plots=plots,
    )


def plot(state: ModelState, name: str) -> bytes:
    rel = plot_files(state.domains).get(name)
    data = None if rel is None else _read(state.bundle_path / rel)
    if data is None or sniff(data) != "image/png":
        raise NotFound(f"the bundle has no plot {shown(name)}")
    return data
