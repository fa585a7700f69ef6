"""Markdown tables of evaluation results."""

from __future__ import annotations

from model.reporting import coverage_table

RESULTS = {
    "micrec": {"d": {"all": {"coverage@20": 0.5, "long_tail@20": 0.25, "ndcg@20": 0.1}}},
    "popular": {"d": {"all": {"coverage@20": 0.05, "long_tail@20": 0.0, "ndcg@20": None}}},
}


def test_coverage_table_has_one_row_per_method_in_percent() -> None:
    lines = coverage_table(RESULTS, "d").strip().splitlines()
    assert lines[0] == "**d: catalogue coverage (%, slice all)**"
    assert lines[2] == "| method | coverage@20 | long_tail@20 | ndcg@20 |"
    assert lines[4:] == ["| micrec | 50.00 | 25.00 | 10.00 |", "| popular | 5.00 | 0.00 | n/a |"]


def test_coverage_table_shows_the_spread_over_seeds() -> None:
    spreads = {m: {"d": {"all": {"coverage@20": 0.01, "long_tail@20": None}}} for m in RESULTS}
    assert "| micrec | 50.00 ± 1.00 | 25.00 | 10.00 |" in coverage_table(
        RESULTS, "d", spreads=spreads
    )
