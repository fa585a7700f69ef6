"""bench/quality_compare.py: seeds matched across files, means over the seeds --after ran,
ratios against before and the baselines; a seed missing from a side is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.quality_compare import main


def _results(path: Path, seeds: list[int], methods: dict[str, list[float]]) -> Path:
    """A results.json with one domain "a" whose ``all`` NDCG@20 per seed is given."""
    per_seed = {
        m: [{"a": {"all": {"ndcg@20": v}}} for v in values] for m, values in methods.items()
    }
    path.write_text(json.dumps({"seeds": seeds, "per_seed": per_seed, "train": {}}))
    return path


def test_matches_seeds_across_files_and_takes_ratios(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    before = _results(
        tmp_path / "b.json", [0, 1], {"micrec": [0.10, 0.20], "popular": [0.05, 0.05]}
    )
    a0 = _results(tmp_path / "a0.json", [0], {"micrec": [0.12]})
    a1 = _results(tmp_path / "a1.json", [1], {"micrec": [0.24]})
    # a run trained once (no search) records its trials as null
    run = json.loads(a1.read_text())
    run["train"] = {"micrec": [{"tuning_trials": None}]}
    a1.write_text(json.dumps(run))
    assert (
        main(["--before", str(before), "--after", str(a0), str(a1), "--baselines", str(before)])
        == 0
    )
    out = capsys.readouterr().out
    # means over seeds 0 and 1: before 15.00, after 18.00, popular 5.00
    assert "| a | all | 15.00 | 18.00 | 1.20 | 5.00 | 3.60 |" in out
    assert "seed 1: before no search recorded; after no search recorded" in out


def test_a_seed_missing_from_the_baselines_is_refused(tmp_path: Path) -> None:
    base = _results(tmp_path / "base.json", [0], {"micrec": [0.1], "popular": [0.05]})
    after = _results(tmp_path / "a.json", [2], {"micrec": [0.12]})
    with pytest.raises(SystemExit):
        main(["--before", str(base), "--after", str(after), "--baselines", str(base)])
