"""Encoders by name, created once per process.

Built-in names: ``minilm-l6-v2`` (text, 384-d) and ``efficientnet-lite0`` (image, 1280-d);
``openclip`` (optional extra) needs ``model_name``, ``weights_path`` and ``modality``.
Creating an encoder is cheap: the network is loaded on its first ``encode`` and then kept,
and the same arguments return the same instance, so the seconds spent loading MiniLM are
paid once per process.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from model.encoders.base import ContentEncoder

DEFAULT_ENCODERS: dict[str, str] = {"text": "minilm-l6-v2", "image": "efficientnet-lite0"}
"""Default encoder per modality."""

BUILTIN_MODALITY: dict[str, str] = {"minilm-l6-v2": "text", "efficientnet-lite0": "image"}
OPENCLIP = "openclip"
ENCODER_NAMES: tuple[str, ...] = (*BUILTIN_MODALITY, OPENCLIP)

_instances: dict[tuple[Any, ...], ContentEncoder] = {}
_lock = threading.Lock()


def create_encoder(
    name: str,
    *,
    device: str = "cpu",
    weights_path: str | Path | None = None,
    model_name: str | None = None,
    modality: str | None = None,
) -> ContentEncoder:
    """The (process-wide shared) encoder called ``name``.

    Args:
        name: "minilm-l6-v2", "efficientnet-lite0" or "openclip".
        device: torch device ("cpu", "cuda", "cuda:1", ...).
        weights_path: built-ins: optional override of the packaged model directory
            (MiniLM) or ``.pth`` file (EfficientNet); openclip: the required local weights file.
        model_name: openclip only: architecture name or local JSON config.
        modality: openclip only ("text" or "image"); for built-ins it must match if given.

    Raises:
        ValueError: unknown name or arguments that do not fit it.
        FileNotFoundError: a weights path that is not a local file.
        ImportError: openclip requested but open_clip is not usable.
    """
    if name not in ENCODER_NAMES:
        raise ValueError(f"unknown encoder {name!r}; choose from {', '.join(ENCODER_NAMES)}")
    if name == OPENCLIP:
        if model_name is None or weights_path is None or modality is None:
            raise ValueError("encoder 'openclip' needs model_name, weights_path and modality")
    else:
        if model_name is not None:
            raise ValueError(f"encoder {name!r} takes no model_name")
        if modality is not None and modality != BUILTIN_MODALITY[name]:
            raise ValueError(f"encoder {name!r} encodes {BUILTIN_MODALITY[name]}, not {modality}")
    wp = str(Path(weights_path).expanduser().resolve()) if weights_path is not None else None
    key = (name, device, wp, model_name, modality)
    with _lock:
        enc = _instances.get(key)
        if enc is None:
            enc = _build(
                name, device=device, weights_path=wp, model_name=model_name, modality=modality
            )
            _instances[key] = enc
        return enc


def _build(
    name: str,
    *,
    device: str,
    weights_path: str | None,
    model_name: str | None,
    modality: str | None,
) -> ContentEncoder:
    # Imports are local so that importing the factory never pulls in sentence-transformers
    # (seconds) or open_clip (optional).
    if name == "minilm-l6-v2":
        from model.encoders.text import MiniLMTextEncoder

        return MiniLMTextEncoder(device=device, model_path=weights_path)
    if name == "efficientnet-lite0":
        from model.encoders.image import EfficientNetLite0Encoder

        return EfficientNetLite0Encoder(device=device, weights_path=weights_path)
    from model.encoders.clip import OpenClipEncoder

    assert model_name is not None and weights_path is not None and modality is not None
    return OpenClipEncoder(model_name, weights_path, modality, device=device)


def created_encoder(name: str) -> ContentEncoder | None:
    """The encoder this process created whose ``name`` (feature name) is ``name``."""
    with _lock:
        return next((e for e in _instances.values() if e.name == name), None)


def encoder_spec(encoder: ContentEncoder) -> dict[str, Any]:
    """Keyword arguments that rebuild ``encoder`` with ``create_encoder(**spec)``.

    Store this (not only ``encoder.name``) wherever an encoder must be re-created later,
    e.g. in a model bundle: an openclip encoder cannot be rebuilt from its name alone.
    """
    from model.encoders.clip import OpenClipEncoder

    if isinstance(encoder, OpenClipEncoder):
        return {
            "name": OPENCLIP,
            "model_name": encoder.model_name,
            "weights_path": str(encoder.weights_path),
            "modality": encoder.modality,
        }
    return {"name": encoder.name}
