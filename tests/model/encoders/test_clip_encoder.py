"""open_clip backend: local weights only; a tiny random model round-trips through it.

The loading test needs an importable open_clip (optional ``clip`` extra) and is skipped
without it; the refusal tests run everywhere because they fail before importing it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from model.encoders.clip import OpenClipEncoder, _register_json_config, import_open_clip
from model.encoders.factory import create_encoder, encoder_spec

TINY_CFG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _open_clip() -> Any:
    try:
        return import_open_clip()
    except ImportError as err:  # also covers a torchvision built for another torch
        if os.environ.get("MICREC_REQUIRE_CLIP") == "1":  # `make test-clip`: must not skip
            raise
        pytest.skip(f"open_clip not usable here: {err}")


@pytest.mark.parametrize("weights", ["openai", "laion2b_s34b_b79k", "/no/such/file.pt"])
def test_hub_tags_and_missing_files_are_refused(weights: str) -> None:
    with pytest.raises(FileNotFoundError, match="local file"):
        OpenClipEncoder("ViT-B-32", weights, "image")


def test_schemas_and_bad_modality_are_refused(tmp_path: Path) -> None:
    w = tmp_path / "w.pt"
    w.write_bytes(b"")
    with pytest.raises(ValueError, match="schemas"):
        OpenClipEncoder("hf-hub:laion/CLIP-ViT-B-32", w, "image")
    with pytest.raises(ValueError, match="modality"):
        OpenClipEncoder("ViT-B-32", w, "audio")


def test_tiny_random_model_round_trip(tmp_path: Path, scene: Callable[..., Image.Image]) -> None:
    open_clip = _open_clip()
    cfg_path = tmp_path / "tiny-clip.json"
    cfg_path.write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": {"mean": [0.5] * 3}}))
    # Build a random-init model of that architecture and save a plain state dict.
    registry_name, _ = _register_json_config(cfg_path)
    torch.manual_seed(0)
    model = open_clip.create_model(registry_name)
    weights = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), weights)

    text = create_encoder(
        "openclip", model_name=str(cfg_path), weights_path=weights, modality="text"
    )
    image = create_encoder(
        "openclip", model_name=str(cfg_path), weights_path=weights, modality="image"
    )
    assert text.modality == "text" and image.modality == "image" and text.dim == image.dim == 16
    assert text.name.startswith("openclip-tiny-clip-") and text.name.endswith("-text")
    assert text.name[:-5] == image.name[:-6]  # same checkpoint hash
    assert encoder_spec(text)["weights_path"] == str(weights.resolve())

    t = text.encode(["red coffee mug", "printer toner", "x"], batch_size=2)
    im = image.encode([scene(0), scene(1)], batch_size=1)
    assert t.shape == (3, 16) and im.shape == (2, 16)
    assert t.dtype == im.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(im, axis=1), 1.0, atol=1e-5)

    # Same numbers as the model itself, with open_clip's own tokenizer.
    with torch.inference_mode():
        tokens = open_clip.get_tokenizer(registry_name)(["red coffee mug"])
        ref = model.eval().encode_text(tokens, normalize=True)[0].numpy()
    np.testing.assert_allclose(t[0], ref, atol=1e-5)
    # The JSON preprocess_cfg reached the image path.
    assert image._preprocess_cfg["mean"] == [0.5] * 3  # type: ignore[attr-defined]
