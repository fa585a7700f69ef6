"""bench/ablation_served.py: the chosen trial it starts from, the rows it turns off, and
its report (rows equal to the served one shown with the served numbers, marked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model.runconfig import load_run_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(REPO / "bench"))  # the bench modules' own imports are bare
    import ablation_served

    return ablation_served


def _full_run(trials: list[dict[str, Any]] | None) -> dict[str, Any]:
    chosen = {
        "cross_domain_weight": 0.02,
        "temperature": 0.4,
        "drop_interaction": 0.1,
        "modalities": [],
        "cross_domain_rule": "content",
    }
    return {"train": {"micrec": [{"chosen_config": chosen, "tuning_trials": trials}]}}


def test_the_chosen_trials_lr_is_read_from_the_runs_trials(served: Any) -> None:
    trials = [
        {
            "params": {
                "cross_domain_weight": 0.1,
                "temperature": 0.2,
                "drop_interaction": 0.1,
                "lr": 0.005,
            }
        },
        {
            "params": {
                "cross_domain_weight": 0.02,
                "temperature": 0.4,
                "drop_interaction": 0.1,
                "lr": 0.007,
            }
        },
    ]
    model, lr = served.chosen_trial(_full_run(trials), 0, None)
    assert lr == 0.007
    # the blend fit chooses the cross-domain rule again, so the trial's is not imposed
    assert "cross_domain_rule" not in model and model["temperature"] == 0.4
    assert served.chosen_trial(_full_run(trials), 0, 0.003)[1] == 0.003
    with pytest.raises(SystemExit, match="give --lr"):
        served.chosen_trial(_full_run(None), 0, None)


def test_every_row_applies_to_a_run_config_and_turns_its_parts_off(served: Any) -> None:
    cfg = load_run_config(None, {})
    for row in served.ROWS:
        served.row_config(cfg, row)  # a misspelt key would raise here
    off = served.row_config(cfg, "no-transfer")
    assert off.model.cross_domain_weight == 0.0 and not off.bridge.enabled
    assert not off.blend.copurchase and not off.blend.copurchase_warm
    assert off.blend.profile_other == (0.0,)
    assert served.row_config(cfg, "served") == cfg


def _record(
    out: Path, seed: int, row: str, all_: float | None, val: float | None = None, **extra: Any
) -> None:
    (out / "runs").mkdir(parents=True, exist_ok=True)
    rec: dict[str, Any] = {"label": "toy", "seed": seed, "row": row, **extra}
    if all_ is not None:
        rec["results"] = {"a": {"all": {"ndcg@20": all_}, "cold_items": {"ndcg@20": None}}}
        rec["info"] = {"val": None if val is None else {"a": {"all": {"ndcg@20": val}}}}
    (out / "runs" / f"toy-s{seed}-{row}.json").write_text(json.dumps(rec))


def test_report_resolves_rows_equal_to_served_and_gives_ratios(
    served: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(tmp_path, 0, "served", 0.10, val=0.30)
    _record(tmp_path, 1, "served", 0.20)  # imported from a run without validation numbers
    _record(tmp_path, 0, "inmo-blend", None, same_as="served")
    _record(tmp_path, 1, "inmo-blend", 0.10)
    _record(tmp_path, 0, "no-transfer", 0.05, val=0.15)
    _record(tmp_path, 0, "no-alignment", None, same_as="no-transfer")
    served.main(["report", "--out", str(tmp_path), "--plot", str(tmp_path / "rows.png")])
    out = capsys.readouterr().out
    assert "| served | 15.00 +- 5.00 |" in out
    # seed 0 is the served configuration (10.0), seed 1 trained (10.0): mean 10 / 15
    assert "| inmo-blend (1 of 2 = served) | 10.00 +- 0.00 (0.67) |" in out
    # ratios over the seeds both rows ran (seed 0): test 5 / 10, validation 15 / 30
    assert "| no-transfer | 5.00 +- 0.00 (0.50) | n/a |" in out
    assert out.count("| 15.00 (0.50) [1] |") == 2  # no-transfer and its twin no-alignment
    assert "| no-alignment (1 of 1 = no-transfer) | 5.00 +- 0.00 (0.50) |" in out
    assert "n/a" in out  # a slice without a value is not averaged as zero
    # the summary: no-content never ran (n/a), no-transfer and inmo-blend over served on `all`
    assert "| toy / a | n/a | n/a | n/a | n/a | 0.50 | n/a | n/a | n/a | 0.67 |" in out
    assert (tmp_path / "rows.png").stat().st_size > 0


def test_report_summary_rows_are_chosen_and_checked(
    served: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    ratios = {"data / a": {"plus-transfer-0.1": [1.1, 0.5, 0.9, 0.8, 0.7, 0.6]}}
    lines = served.summary(ratios, ("plus-transfer-0.1",))
    assert "plus-transfer-0.1: all" in lines[2]
    assert lines[4] == "| data / a | 1.10 | 0.90 | 0.70 | 0.60 |"
    with pytest.raises(SystemExit):
        served.main(["report", "--out", "x", "--summary-rows", "no-such-row"])
    assert "unknown rows ['no-such-row']" in capsys.readouterr().err
