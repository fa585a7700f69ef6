"""Encoder records: what a bundle says about its encoders, and the rule a server applies
when it rebuilds them (configured but wrong weights: refused in one line; none
configured: unavailable, with the reason). open_clip itself is not needed here (the
end-to-end open_clip bundle: tests/app/test_clip_bundle.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.encoders.factory import create_encoder
from model.encoders.records import (
    BundleEncoders,
    EncoderRefused,
    EncoderUnavailable,
    encoder_record,
    packaged_weights,
    resolve,
    weights_sha256,
)


def clip_record(weights: Path, **extra: object) -> dict[str, object]:
    return {
        "name": "openclip-tiny-0123456789ab-text",
        "dim": 16,
        "backend": "openclip",
        "model_name": "ViT-B-32",
        "preprocess": {"size": 224},
        "weights_sha256": weights_sha256(weights),
        **extra,
    }


def test_a_builtin_is_recorded_by_its_packaged_weights() -> None:
    record = encoder_record(create_encoder("minilm-l6-v2"))
    assert record["backend"] == "minilm-l6-v2" and record["dim"] == 384
    assert record["weights_sha256"] == weights_sha256(packaged_weights("minilm-l6-v2"))
    assert resolve("text", record, clip_weights=None) == "minilm-l6-v2"
    # other weights under the same name (another package version): refused
    other = {**record, "weights_sha256": "0" * 64}
    with pytest.raises(EncoderRefused, match="sha256 differs"):
        resolve("text", other, clip_weights=None)


def test_bundles_without_records_still_resolve() -> None:
    assert resolve("text", {"name": "minilm-l6-v2", "dim": 384}, clip_weights=None) == (
        "minilm-l6-v2"
    )
    old_clip = {"name": "openclip-tiny-0123456789ab-image", "dim": 16}
    with pytest.raises(EncoderUnavailable, match="does not record how to rebuild"):
        resolve("image", old_clip, clip_weights=None)


def test_open_clip_weights_rule(tmp_path: Path) -> None:
    weights = tmp_path / "clip.pt"
    weights.write_bytes(b"the weights the bundle was trained with")
    record = clip_record(weights)
    with pytest.raises(EncoderUnavailable, match="MICREC_CLIP_WEIGHTS"):
        resolve("text", record, clip_weights=None)
    with pytest.raises(EncoderRefused, match="no such file"):
        resolve("text", record, clip_weights=tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    other.write_bytes(b"another checkpoint")
    with pytest.raises(EncoderRefused, match="sha256") as err:
        resolve("text", record, clip_weights=other)
    assert "\n" not in str(err.value)
    spec = resolve("text", record, clip_weights=weights)
    assert spec == {
        "name": "openclip",
        "weights_path": str(weights.resolve()),
        "modality": "text",
        "model_name": "ViT-B-32",
    }
    inline = clip_record(weights, model_name=None, model_config={"embed_dim": 16})
    spec = resolve("image", inline, clip_weights=weights)
    assert isinstance(spec, dict) and spec["model_config"] == {"embed_dim": 16}
    assert "model_name" not in spec


def test_bundle_encoders_report_and_refuse(tmp_path: Path) -> None:
    weights = tmp_path / "clip.pt"
    weights.write_bytes(b"w")
    records = {"text": clip_record(weights), "image": clip_record(weights)}
    encoders = BundleEncoders(records, None, None)
    assert set(encoders.unavailable) == {"text", "image"}
    with pytest.raises(EncoderUnavailable, match="not configured"):
        encoders.encode("text", "a mug")
    assert BundleEncoders(records, None, weights).unavailable == {}
    other = tmp_path / "other.pt"
    other.write_bytes(b"x")
    with pytest.raises(EncoderRefused):
        BundleEncoders(records, None, other)
