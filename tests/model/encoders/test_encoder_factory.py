"""create_encoder: names, argument checks, one shared instance per process."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.encoders.factory import DEFAULT_ENCODERS, create_encoder, encoder_spec


def test_defaults_exist_and_have_the_right_modality() -> None:
    assert DEFAULT_ENCODERS == {"text": "minilm-l6-v2", "image": "efficientnet-lite0"}
    for modality, name in DEFAULT_ENCODERS.items():
        enc = create_encoder(name)  # cheap: the network loads on first encode
        assert (enc.name, enc.modality) == (name, modality)
        assert encoder_spec(enc) == {"name": name}
    assert create_encoder("minilm-l6-v2").dim == 384
    assert create_encoder("efficientnet-lite0").dim == 1280


def test_same_arguments_same_instance() -> None:
    assert create_encoder("minilm-l6-v2") is create_encoder("minilm-l6-v2", device="cpu")
    assert create_encoder("minilm-l6-v2") is not create_encoder("minilm-l6-v2", device="meta")


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown encoder 'bert'"):
        create_encoder("bert")
    with pytest.raises(ValueError, match="encodes text"):
        create_encoder("minilm-l6-v2", modality="image")
    with pytest.raises(ValueError, match="no model_name"):
        create_encoder("efficientnet-lite0", model_name="x")
    with pytest.raises(ValueError, match="needs model_name, weights_path and modality"):
        create_encoder("openclip", model_name="ViT-B-32", modality="image")
