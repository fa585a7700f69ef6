"""``micrec encode``: table output, cache reuse across runs, one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from model.commands import encode as encode_cmd
from model.commands.runner import run

ROWS = [
    {"item_id": "a", "title": "red coffee mug"},
    {"item_id": "b", "title": "printer toner"},
    {"item_id": "c"},
]


def _row(out: str, modality: str) -> dict[str, str]:
    lines = out.splitlines()
    head = next(line for line in lines if line.startswith("modality")).split()
    row = next(line for line in lines if line.startswith(modality + " ")).split()
    return dict(zip(head, row, strict=True))


def test_encode_prints_counts_and_reuses_cache(
    make_dataset,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(encode_cmd, "_load_dataset", lambda path: make_dataset(ROWS))
    argv = [
        "encode",
        "toy",
        "--cache-dir",
        str(tmp_path / "c"),
        "--image",
        "none",
        "--batch-size",
        "2",
    ]
    assert run(argv) == 0
    out = capsys.readouterr().out
    r = _row(out, "text")
    assert (r["encoder"], r["items"], r["encoded"], r["reused"], r["missing"]) == (
        "minilm-l6-v2",
        "3",
        "2",
        "0",
        "1",
    )
    assert float(r["items/s"]) > 0 and "image" not in out.split("modality", 1)[1]
    assert run(argv) == 0
    r = _row(capsys.readouterr().out, "text")
    assert (r["encoded"], r["reused"], r["items/s"]) == ("0", "2", "0.0")


def test_encode_a_dataset_folder_with_images(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scene: Callable[..., Image.Image]
) -> None:
    pytest.importorskip("model.data.loading")
    root = tmp_path / "ds"
    (root / "img").mkdir(parents=True)
    scene(0).save(root / "img" / "a.png")
    (root / "items.csv").write_text(
        "item_id,domain,title,categories,image\n"
        "a,arts,red coffee mug,kitchen,img/a.png\n"
        "b,office,printer toner,office,\n"
    )
    (root / "interactions.csv").write_text("user_id,item_id,domain\nu1,a,arts\nu1,b,office\n")
    assert run(["encode", str(root), "--cache-dir", str(tmp_path / "c"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "2 items" in out
    t, i = _row(out, "text"), _row(out, "image")
    assert (t["encoded"], t["missing"]) == ("2", "0")
    assert (i["encoder"], i["encoded"], i["missing"]) == ("efficientnet-lite0", "1", "1")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--text", "openclip"], "needs --clip-model and --clip-weights"),
        (["--text", "none", "--image", "none"], "nothing to encode"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (
            ["--image", "openclip", "--clip-model", "ViT-B-32", "--clip-weights", "openai"],
            "must be an existing local file",
        ),
    ],
)
def test_user_errors_are_one_line(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(["encode", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("micrec encode: error:") and message in err and "\n" not in err


def test_unknown_encoder_name_is_rejected_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run(["encode", "x", "--text", "bert"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
