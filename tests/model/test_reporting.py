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


def test_targets_table_compares_with_the_best_baseline_within_one_std() -> None:
    from model.reporting import targets_table

    def res(all_: float | None, cold: float | None) -> dict:
        return {"office": {"all": {"ndcg@20": all_}, "cold_items": {"ndcg@20": cold}}}

    mean = {
        "popular": res(0.04, 0.005),
        "content-knn": res(0.03, 0.08),
        "inmo": res(0.09, None),
        "micrec": res(0.10, 0.075),
    }
    std = {"micrec": res(0.002, 0.004)}
    table = targets_table(mean, std, "office")
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if "|" in line}
    assert "inmo 9.00" in rows["all"] and "1.11" in rows["all"] and rows["all"].endswith("yes |")
    # 7.5 < 8.0 - 0.4: missed, and said so
    assert "content-knn 8.00" in rows["cold_items"] and rows["cold_items"].endswith("**no** |")
    assert rows["deg_1-5"].count("n/a") == 4
