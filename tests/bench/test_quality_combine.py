"""bench/quality.py --combine: seeds run in separate processes make one report, with the
runs of each seed exactly as they were, in the order of --seeds; a (method, seed) that no
file holds, and runs made with other settings, are refused."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.data.synth import SynthConfig, write_synthetic_catalogue

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("combine")
    data = write_synthetic_catalogue(root / "data", SynthConfig.tiny(images=False, users=300))
    cfg = root / "run.toml"
    cfg.write_text(f'[features]\ntext = "none"\nimage = "none"\ncache_dir = "{root / "cache"}"\n')
    sys.path.insert(0, str(REPO / "bench"))  # the bench modules' own imports are bare
    yield data, cfg
    sys.path.remove(str(REPO / "bench"))


def _run(setup: tuple[Path, Path], out: Path, *extra: str) -> dict:
    from quality import main

    data, cfg = setup
    argv = ["--dataset", str(data), "--config", str(cfg), "--methods", "popular"]
    main([*argv, "--threads", "1", "--out", str(out), *extra])
    return json.loads((out / "results.json").read_text())


def test_combines_seeds_run_apart(setup: tuple[Path, Path], tmp_path: Path) -> None:
    one = _run(setup, tmp_path / "s1", "--seeds", "1")
    zero = _run(setup, tmp_path / "s0", "--seeds", "0")
    both = _run(
        setup,
        tmp_path / "all",
        "--seeds",
        "0",
        "1",
        "--combine",
        str(tmp_path / "s1" / "results.json"),
        str(tmp_path / "s0" / "results.json"),
    )
    assert both["seeds"] == [0, 1]
    assert both["per_seed"]["popular"] == zero["per_seed"]["popular"] + one["per_seed"]["popular"]
    assert zero["per_seed"]["popular"] != one["per_seed"]["popular"]  # two different splits
    report = (tmp_path / "all" / "results.md").read_text()
    assert "Seeds per method: popular 2" in report


@pytest.mark.parametrize(
    ("made_with", "combined_seeds", "message"),
    [
        ((), ("0", "2"), "no run of (method, seed) [('popular', 2)]"),
        (("--overlap-ratio", "0.5"), ("0",), "was run with another configuration"),
    ],
    ids=["a seed no file holds", "runs of other settings"],
)
def test_refused(
    setup: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    made_with: tuple[str, ...],
    combined_seeds: tuple[str, ...],
    message: str,
) -> None:
    _run(setup, tmp_path / "s0", "--seeds", "0", *made_with)
    combine = ("--combine", str(tmp_path / "s0" / "results.json"))
    with pytest.raises(SystemExit) as e:
        _run(setup, tmp_path / "all", "--seeds", *combined_seeds, *combine)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
