"""bench/ablation_compare.py: means over the seeds both sides ran, and their ratio."""

from __future__ import annotations

import json
from pathlib import Path

from bench.ablation_compare import load, table


def _run(folder: Path, seed: int, row: str, all_: float, val: float) -> None:
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    run = {
        "label": "toy",
        "seed": seed,
        row: {"a": {"all": {"ndcg@20": all_}}},
        f"{row}_val": {"a": {"all": {"ndcg@20": val}}},
    }
    (folder / "runs" / f"toy-s{seed}.json").write_text(json.dumps(run))


def test_compares_only_the_seeds_both_ran(tmp_path: Path) -> None:
    _run(tmp_path / "a", 0, "r", 0.10, 0.20)
    _run(tmp_path / "a", 1, "r", 0.30, 0.20)
    _run(tmp_path / "b", 0, "s", 0.15, 0.10)  # seed 1 missing on this side
    _, a = load(f"{tmp_path / 'a'}:r")
    _, b = load(f"{tmp_path / 'b'}:s")
    lines = table(a, b, ("A", "B"))
    assert "| toy / a | 0 | all | 10.00 | 15.00 | 1.50 |" in lines
    assert "| toy / a | 0 | validation all | 20.00 | 10.00 | 0.50 |" in lines
