"""Optional open_clip backend (``pip install micrec[clip]``): CLIP text or image features.

Weights must be a **local file** (a ``.pt``/``.pth``/``.bin`` state dict, ``.safetensors``
or big_vision ``.npz``); open_clip's hub tags ("openai", "laion2b_...") are refused because
they download at run time. ``.pt``-style files are read with ``torch.load(weights_only=True)``.

The architecture is either a built-in open_clip config name ("ViT-B-32") or a local JSON
file: open_clip's model-config format (``{"embed_dim", "vision_cfg", "text_cfg", ...}``) or
the ``open_clip_config.json`` form ``{"model_cfg": {...}, "preprocess_cfg": {...}}``.

One encoder instance serves one modality; a text and an image encoder built on the same
(architecture, weights, device) share one loaded model.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from model.encoders.base import ContentEncoder
from model.encoders.image import batches, l2_normalise, open_rgb, resize_center_crop, to_chw
from model.encoders.text import hub_offline

INSTALL_HINT = (
    "the open_clip backend needs the optional 'clip' extra; see README 'Optional CLIP backend' "
    "for an install recipe that keeps the CPU torch build"
)

_models: dict[tuple[str, str, str], tuple[Any, Any]] = {}
"""(registry name, weights path, device) -> (open_clip model, tokenizer), loaded once."""
_models_lock = threading.Lock()
_config_dir: Path | None = None


def import_open_clip() -> Any:
    """``import open_clip`` with hub access off; ImportError with the install hint if unusable.

    open_clip imports torchvision at import time, and a torchvision wheel built for another
    torch fails with RuntimeError ("operator torchvision::nms does not exist"), not
    ImportError, so every failure is mapped to ImportError here.
    """
    hub_offline()
    try:
        import open_clip
    except Exception as err:
        raise ImportError(
            f"cannot import open_clip ({type(err).__name__}: {err}); {INSTALL_HINT}"
        ) from err
    return open_clip


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _register_json_config(path: Path) -> tuple[str, dict[str, Any]]:
    """Register a local JSON model config with open_clip; -> (registry name, preprocess cfg).

    The registry name carries a hash of the file's content so a file called e.g.
    ``ViT-B-32.json`` can neither shadow the built-in config nor collide with another file
    of the same stem.
    """
    global _config_dir
    open_clip = import_open_clip()
    raw = json.loads(path.read_text(encoding="utf-8"))
    model_cfg = raw.get("model_cfg", raw)
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in model_cfg]
    if missing:
        raise ValueError(f"{path}: not an open_clip model config (missing {', '.join(missing)})")
    blob = json.dumps(model_cfg, sort_keys=True)
    # The hash covers preprocess_cfg too: it changes the image vectors (and so the cache key).
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:10]
    name = f"micrec-{path.stem}-{digest}"
    with _models_lock:
        if name not in open_clip.list_models():
            if _config_dir is None:
                _config_dir = Path(tempfile.mkdtemp(prefix="micrec-openclip-"))
                atexit.register(shutil.rmtree, _config_dir, ignore_errors=True)
            cfg_file = _config_dir / f"{name}.json"
            cfg_file.write_text(blob, encoding="utf-8")
            open_clip.add_model_config(cfg_file)
    return name, dict(raw.get("preprocess_cfg", {}))


def _open_clip_preprocess(img: Image.Image, cfg: dict[str, Any]) -> np.ndarray:
    """open_clip's inference transform in PIL + numpy -> float32 ``[3, size, size]``."""
    size = cfg.get("size", 224)
    if isinstance(size, list | tuple):
        if len(set(size)) != 1:
            raise ValueError(f"non-square open_clip input size {size} is not supported")
        size = size[0]
    mode = cfg.get("resize_mode", "shortest")
    resample = {
        "bicubic": Image.Resampling.BICUBIC,
        "bilinear": Image.Resampling.BILINEAR,
        "nearest": Image.Resampling.NEAREST,
    }[cfg.get("interpolation", "bicubic")]
    if mode == "shortest":
        if resample != Image.Resampling.BICUBIC:
            w, h = img.size
            s = size / min(w, h)
            img = img.resize((max(size, round(w * s)), max(size, round(h * s))), resample)
        img = resize_center_crop(img, size)
    elif mode == "squash":
        img = img.resize((size, size), resample)
    elif mode == "longest":  # keep the aspect ratio, pad to a square
        w, h = img.size
        s = size / max(w, h)
        small = img.resize((max(1, round(w * s)), max(1, round(h * s))), resample)
        fill = int(cfg.get("fill_color", 0))
        img = Image.new("RGB", (size, size), (fill, fill, fill))
        img.paste(small, ((size - small.width) // 2, (size - small.height) // 2))
    else:
        raise ValueError(f"unknown open_clip resize_mode {mode!r}")
    return to_chw(img, cfg["mean"], cfg["std"])


class OpenClipEncoder(ContentEncoder):
    """CLIP text or image tower of an open_clip model loaded from local files.

    ``encode`` -> float32 ``[n, embed_dim]``, L2-normalised (the CLIP joint space, so text
    and image vectors of the same model are comparable).

    Args:
        model_name: built-in open_clip architecture ("ViT-B-32") or a local JSON config file.
        weights_path: existing local weights file (never a hub tag).
        modality: "text" or "image".
        device: torch device for the model.

    ``name`` is ``openclip-<arch>-<sha256 of the weights, 12 hex>-<modality>`` (``<arch>`` of a
    JSON config is its stem plus a hash of its content), so the feature cache never mixes
    vectors of different checkpoints or preprocessing.
    """

    def __init__(
        self, model_name: str, weights_path: str | Path, modality: str, device: str = "cpu"
    ) -> None:
        if modality not in ("text", "image"):
            raise ValueError(f"modality must be 'text' or 'image', got {modality!r}")
        weights = Path(weights_path).expanduser()
        if not weights.is_file():
            raise FileNotFoundError(
                f"open_clip weights must be an existing local file, got {str(weights_path)!r} "
                "(hub tags such as 'openai' or 'laion2b_s34b_b79k' are not supported: "
                "MICRec never downloads weights)"
            )
        if ":" in model_name and not model_name.endswith(".json"):
            raise ValueError(
                f"open_clip model {model_name!r}: schemas like 'hf-hub:' / 'local-dir:' are not "
                "supported; pass a built-in architecture name or a local JSON config file"
            )
        open_clip = import_open_clip()
        self.modality = modality
        self.device = device
        self.weights_path = weights.resolve()
        self.model_name = model_name
        self._preprocess_override: dict[str, Any] = {}
        if model_name.endswith(".json"):
            cfg_path = Path(model_name).expanduser()
            if not cfg_path.is_file():
                raise FileNotFoundError(f"open_clip config file not found: {model_name}")
            self._registry_name, self._preprocess_override = _register_json_config(cfg_path)
            arch = self._registry_name.removeprefix("micrec-")  # stem + config hash
        else:
            if open_clip.get_model_config(model_name) is None:
                raise ValueError(
                    f"unknown open_clip architecture {model_name!r} "
                    f"(built-ins: {', '.join(open_clip.list_models())})"
                )
            self._registry_name = arch = model_name
        self.dim = int(open_clip.get_model_config(self._registry_name)["embed_dim"])
        self.name = f"openclip-{arch}-{file_sha256(self.weights_path)[:12]}-{modality}"
        self._preprocess_cfg: dict[str, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        key = (self._registry_name, str(self.weights_path), self.device)
        with _models_lock:
            if key not in _models:
                open_clip = import_open_clip()
                model = open_clip.create_model(
                    self._registry_name,
                    pretrained=str(self.weights_path),  # a local file: checked in __init__
                    weights_only=True,
                    device=self.device,
                    # never fetch timm / HF base weights for the towers
                    pretrained_image=False,
                    pretrained_text=False,
                    force_preprocess_cfg=self._preprocess_override or None,
                )
                model.eval().requires_grad_(False)
                _models[key] = (model, open_clip.get_tokenizer(self._registry_name))
            model, tokenizer = _models[key]
            if self._preprocess_cfg is None:
                self._preprocess_cfg = dict(import_open_clip().get_model_preprocess_cfg(model))
            return model, tokenizer

    def preprocess_cfg(self) -> dict[str, Any]:
        """The image preprocessing open_clip configured for this model (loads it)."""
        self._load()
        assert self._preprocess_cfg is not None
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._preprocess_cfg.items()}

    @torch.inference_mode()
    def encode(
        self, inputs: Sequence[Any], *, batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        """``inputs``: str (text) or PIL image / image path (image) -> ``[n, dim]`` float32."""
        model, tokenizer = self._load()
        out = np.zeros((len(inputs), self.dim), dtype=np.float32)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(inputs), desc=f"encode {self.name}", unit=self.modality)
        for start in batches(len(inputs), batch_size):
            chunk = list(inputs[start : start + batch_size])
            if self.modality == "text":
                if any(not isinstance(t, str) for t in chunk):
                    raise TypeError(f"{self.name} encodes str")
                feats = model.encode_text(tokenizer(chunk).to(self.device))
            else:
                assert self._preprocess_cfg is not None
                x = np.stack(
                    [_open_clip_preprocess(open_rgb(im), self._preprocess_cfg) for im in chunk]
                )
                feats = model.encode_image(torch.from_numpy(x).to(self.device))
            out[start : start + len(chunk)] = l2_normalise(feats)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        return out
