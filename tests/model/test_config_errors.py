"""Every run-configuration error is one line naming the key, exit status 2, no traceback
(issue 14 point 4): ``micrec train`` / ``demo build`` on bad TOML configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from model.runconfig import ConfigError, load_run_config
from tests.model.small_domain import write_small_domain_dataset

BAD_CONFIGS = [
    # (TOML, what the one line must say)
    (
        '[features]\ntext = ""',
        "[features] text = '': unknown encoder ''; choose from minilm-l6-v2, openclip, none",
    ),
    ('[features]\nimage = "resnet"', "[features] image = 'resnet': unknown encoder 'resnet'"),
    (
        '[features]\nimage = "openclip"',
        "[features] image = 'openclip' needs clip_model and clip_weights",
    ),
    ('[model]\ndim = "big"', "[model] dim = 'big': Input should be a valid integer"),
    ("[train]\nlr = [1]", "[train] lr = [1]: Input should be a valid number"),
    (
        '[data]\nsparsify = { big = "x" }',
        "[data] sparsify.big = 'x': Input should be a valid number",
    ),
    ("[model]\ndim = 0", "[model] dim must be >= 1, got 0"),
    ("[model]\ntemperature = -1", "[model] temperature must be > 0"),
    ("[train]\nepochs = -1", "[train] epochs must be >= 1, got -1"),
    ("[data]\nnew_ratio = 2", "[data] new_ratio must be in [0, 1), got 2"),
    ('[model]\nmodalities = ["txt"]', "[model] modalities ['txt'] unknown"),
    ('[train]\ndevice = "tpu"', "[train] device 'tpu' is not a torch device"),
    ("[train]\nepoch = 3", "[train] unknown keys ['epoch']"),
    (
        "[blend]\ncopurchase_pop = [0, 5]",
        "[blend] copurchase_pop must list exponents in [0, 2], got [0.0, 5.0]",
    ),
    (
        "[blend]\nprofile_other = [-1]",
        "[blend] profile_other must list weights in [0, 4], got [-1.0]",
    ),
    ("[trian]\nepochs = 3", "unknown config sections ['trian']"),
    ("train = 3", "[train] must be a table of keys, got 3"),
    ('[model]\nvariant = "nope"', "[model] variant = 'nope': unknown; choose from"),
    ("[train\n", "invalid TOML"),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_domain_dataset(tmp_path_factory.mktemp("config-errors") / "data")


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(("toml", "message"), BAD_CONFIGS)
def test_train_config_errors_are_one_line(
    toml: str, message: str, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(toml + "\n")
    out = tmp_path / "bundle"
    assert main(["train", str(data), "--config", str(config), "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("micrec train: config error: ") and message in line, line
    assert not out.exists()  # nothing was trained


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[data]\ndomains = ["nope"]', "[data] domains: ['nope'] not in the dataset"),
        ("[data]\nsparsify = { nope = 0.5 }", "[data] sparsify names unknown domain(s) nope"),
    ],
)
def test_config_that_does_not_fit_the_data_is_one_line(
    toml: str, message: str, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(toml + '\n[features]\ntext = "none"\nimage = "none"\n')
    assert main(["train", str(data), "--config", str(config), "--out", str(tmp_path / "b")]) == 2
    line = one_error_line(capsys)
    assert line.startswith("micrec train: config error: ") and message in line, line


def test_cli_overrides_are_checked_like_the_file(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(data), "--device", "gpu0"]) == 2
    assert "config error: [train] device 'gpu0'" in one_error_line(capsys)


def test_demo_build_config_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "demo.toml"
    config.write_text('[features]\ntext = ""\n')
    args = ["demo", "build", "--config", str(config), "--out", str(tmp_path / "b")]
    assert main([*args, "--data", str(tmp_path / "data")]) == 2
    line = one_error_line(capsys)
    assert line.startswith("micrec demo: config error: [features] text = ''"), line


def test_library_callers_get_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^\[model\] n_layers must be >= 0, got -1$"):
        load_run_config(None, {"model": {"n_layers": -1}})
    assert isinstance(ConfigError("x"), ValueError)  # callers catching ValueError still do


def test_the_reported_command_prints_one_line(data: Path, tmp_path: Path) -> None:
    """The issue's reproduction, as a user runs it: the installed ``micrec`` entry point."""
    config = tmp_path / "run.toml"
    config.write_text('[features]\ntext = ""\n')
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MICREC_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "train", str(data), "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "micrec train: config error: [features] text = '': unknown encoder ''; "
        "choose from minilm-l6-v2, openclip, none"
    ]
