"""Feature cache: hits, misses, changed content, missing modalities, storage format."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from model.encoders.base import ContentEncoder
from model.encoders.cache import (
    FeatureCache,
    FeatureCacheError,
    encode_dataset,
    load_features,
)

ROWS: list[dict[str, Any]] = [
    {"item_id": "a", "title": "red coffee mug", "categories": "kitchen"},
    {"item_id": "b", "title": "printer toner"},
    {"item_id": "c"},  # no text at all: missing modality
    {"item_id": "d", "title": "", "categories": "office supplies"},  # categories alone count
]


def _png(path: Path, color: tuple[int, int, int]) -> Path:
    Image.new("RGB", (16, 16), color).save(path)
    return path


def test_second_run_reuses_everything(make_dataset, fake_text, tmp_path: Path) -> None:
    ds = make_dataset(ROWS)
    feats, rep = encode_dataset(ds, {"text": fake_text}, tmp_path / "cache", batch_size=2)
    r = rep.modalities["text"]
    assert (r.total, r.encoded, r.reused, r.missing, r.failed) == (4, 3, 0, 1, 0)
    assert feats.item_ids == ["a", "b", "c", "d"]
    f = feats.modalities["text"]
    assert f.encoder == "fake-text" and f.vectors.shape == (4, 8) and f.vectors.dtype == np.float32
    assert f.mask.tolist() == [True, True, False, True]
    assert not f.vectors[2].any()  # missing -> zero row
    assert len(fake_text.seen) == 3

    fake_text.seen.clear()
    feats2, rep2 = encode_dataset(ds, {"text": fake_text}, tmp_path / "cache")
    r2 = rep2.modalities["text"]
    assert (r2.encoded, r2.reused, r2.missing) == (0, 3, 1)
    assert fake_text.seen == []
    np.testing.assert_array_equal(feats2.modalities["text"].vectors, f.vectors)
    np.testing.assert_array_equal(feats2.modalities["text"].mask, f.mask)


def test_changed_title_reencodes_only_that_item(make_dataset, fake_text, tmp_path: Path) -> None:
    encode_dataset(make_dataset(ROWS), {"text": fake_text}, tmp_path)
    rows = [dict(r) for r in ROWS]
    rows[1]["title"] = "black printer toner cartridge"
    rows.append({"item_id": "e", "title": "new stapler"})
    fake_text.seen.clear()
    feats, rep = encode_dataset(make_dataset(rows), {"text": fake_text}, tmp_path)
    r = rep.modalities["text"]
    assert (r.encoded, r.reused, r.missing) == (2, 2, 1)
    assert sorted(fake_text.seen) == ["black printer toner cartridge", "new stapler"]
    expected = fake_text.encode(["black printer toner cartridge"])[0]
    np.testing.assert_array_equal(feats.modalities["text"].vectors[1], expected)
    # The changed item's row was overwritten in place: 4 distinct items -> 4 rows.
    assert FeatureCache(tmp_path).read("fake-text").vectors.shape == (4, 8)


def test_storage_is_npy_plus_json_without_pickle(make_dataset, fake_text, tmp_path: Path) -> None:
    ds = make_dataset(ROWS)
    encode_dataset(ds, {"text": fake_text}, tmp_path, flush_seconds=0.0)
    encode_dataset(
        make_dataset([*ROWS, {"item_id": "z", "title": "z"}]), {"text": fake_text}, tmp_path
    )
    folder = tmp_path / "fake-text"
    index = json.loads((folder / "index.json").read_text())
    assert index["encoder"] == "fake-text" and index["modality"] == "text" and index["dim"] == 8
    # old matrices are removed when a new one is committed; no temp files are left behind
    assert sorted(p.name for p in folder.iterdir()) == sorted(["index.json", index["vectors"]])
    mat = np.load(folder / index["vectors"], allow_pickle=False)
    assert mat.dtype == np.float32 and mat.shape == (index["rows"], 8) == (4, 8)
    sha, row = index["items"]["a"]
    assert len(sha) == 64 and 0 <= row < 4


def test_interrupted_run_keeps_flushed_work(make_dataset, fake_text, tmp_path: Path) -> None:
    rows = [{"item_id": f"i{k}", "title": f"item number {k}"} for k in range(40)]
    fake_text.fail_after = 20  # chunks are batch_size * 8 = 16 items: first chunk succeeds
    with pytest.raises(RuntimeError, match="simulated crash"):
        encode_dataset(
            make_dataset(rows), {"text": fake_text}, tmp_path, batch_size=2, flush_seconds=0
        )
    fake_text.fail_after = None
    _, rep = encode_dataset(make_dataset(rows), {"text": fake_text}, tmp_path, batch_size=2)
    assert (rep.modalities["text"].reused, rep.modalities["text"].encoded) == (16, 24)


def test_images_missing_unreadable_and_changed(make_dataset, fake_image, tmp_path: Path) -> None:
    red = _png(tmp_path / "red.png", (255, 0, 0))
    blue = _png(tmp_path / "blue.png", (0, 0, 255))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image")
    rows = [
        {"item_id": "r", "image": red},
        {"item_id": "b", "image": blue},
        {"item_id": "x", "image": corrupt},
        {"item_id": "n"},  # no image
        {"item_id": "g", "image": tmp_path / "gone.png"},  # referenced but absent
    ]
    cache = tmp_path / "cache"
    feats, rep = encode_dataset(make_dataset(rows), {"image": fake_image}, cache, batch_size=8)
    r = rep.modalities["image"]
    assert (r.encoded, r.reused, r.missing, r.failed) == (2, 0, 1, 2)
    assert feats.modalities["image"].mask.tolist() == [True, True, False, False, False]

    # Unreadable content is remembered: not retried until its bytes change.
    fake_image.seen.clear()
    _, rep = encode_dataset(make_dataset(rows), {"image": fake_image}, cache)
    assert (rep.modalities["image"].encoded, rep.modalities["image"].failed) == (0, 2)
    assert fake_image.seen == []

    _png(blue, (0, 0, 200))  # same path, new bytes -> re-encoded
    _png(corrupt, (0, 255, 0))  # repaired -> encoded now
    feats, rep = encode_dataset(make_dataset(rows), {"image": fake_image}, cache)
    assert (rep.modalities["image"].encoded, rep.modalities["image"].reused) == (2, 1)
    assert feats.modalities["image"].mask.tolist() == [True, True, True, False, False]


def test_load_features_reads_only_and_refuses_stale(
    make_dataset, fake_text, fake_image, tmp_path: Path
) -> None:
    img = _png(tmp_path / "p.png", (1, 2, 3))
    rows = [{**ROWS[0], "image": img}, *ROWS[1:]]
    ds = make_dataset(rows)
    with pytest.raises(FeatureCacheError, match="micrec encode"):
        load_features(ds, tmp_path / "cache", {"text": "fake-text"})
    encs: dict[str, ContentEncoder] = {"text": fake_text, "image": fake_image}
    feats, _ = encode_dataset(ds, encs, tmp_path / "cache")
    for names in ({"text": "fake-text", "image": "fake-image"}, ["fake-text", "fake-image"]):
        loaded = load_features(ds, tmp_path / "cache", names)
        assert loaded.item_ids == feats.item_ids
        for m in ("text", "image"):
            np.testing.assert_array_equal(loaded.modalities[m].vectors, feats.modalities[m].vectors)
            np.testing.assert_array_equal(loaded.modalities[m].mask, feats.modalities[m].mask)
    fake_text.seen.clear()
    edited = make_dataset([{**rows[0], "title": "blue coffee mug"}, *rows[1:]])
    with pytest.raises(FeatureCacheError, match="1 item"):
        load_features(edited, tmp_path / "cache", {"text": "fake-text"})
    assert fake_text.seen == []  # never encodes


def test_encoder_modality_and_dim_must_match(make_dataset, fake_text, tmp_path: Path) -> None:
    ds = make_dataset(ROWS)
    with pytest.raises(ValueError, match="encodes text"):
        encode_dataset(ds, {"image": fake_text}, tmp_path)
    encode_dataset(ds, {"text": fake_text}, tmp_path)
    fake_text.dim = 16  # same name, different output size: the cache must not mix them
    with pytest.raises(FeatureCacheError, match="dim 8"):
        encode_dataset(ds, {"text": fake_text}, tmp_path)


def test_real_encoders_end_to_end(
    make_dataset,
    text_encoder: ContentEncoder,
    image_encoder: ContentEncoder,
    scene: Callable[..., Image.Image],
    tmp_path: Path,
) -> None:
    p0, p1 = tmp_path / "0.png", tmp_path / "1.png"
    scene(0).save(p0)
    scene(1).save(p1)
    rows = [
        {"item_id": "a", "title": "red coffee mug", "image": p0},
        {"item_id": "b", "title": "printer toner"},
        {"item_id": "c", "image": p1},
    ]
    encs = {"text": text_encoder, "image": image_encoder}
    feats, rep = encode_dataset(make_dataset(rows), encs, tmp_path / "cache")
    assert rep.modalities["text"].encoded == 2 and rep.modalities["image"].encoded == 2
    t, i = feats.modalities["text"], feats.modalities["image"]
    assert t.vectors.shape == (3, 384) and i.vectors.shape == (3, 1280)
    assert t.mask.tolist() == [True, True, False] and i.mask.tolist() == [True, False, True]
    np.testing.assert_allclose(np.linalg.norm(t.vectors[t.mask], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(t.vectors[0], text_encoder.encode(["red coffee mug"])[0], atol=1e-5)
    np.testing.assert_allclose(i.vectors[2], image_encoder.encode([p1])[0], atol=1e-5)
    _, rep = encode_dataset(make_dataset(rows), encs, tmp_path / "cache")
    assert rep.modalities["text"].encoded == 0 and rep.modalities["image"].encoded == 0
    assert "minilm-l6-v2" in rep.format_table()
