"""MiniLM text encoder: shapes, normalisation, determinism, semantic sanity."""

from __future__ import annotations

import numpy as np
import pytest

from model.encoders.base import ContentEncoder

TEXTS = ["red coffee mug", "ceramic coffee cup", "printer toner", "sulky slimline storage box"]


def test_shape_dtype_and_unit_norm(text_encoder: ContentEncoder) -> None:
    assert (text_encoder.name, text_encoder.modality, text_encoder.dim) == (
        "minilm-l6-v2",
        "text",
        384,
    )
    v = text_encoder.encode(TEXTS, batch_size=2)
    assert v.shape == (len(TEXTS), 384)
    assert v.dtype == np.float32
    assert v.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_deterministic_and_independent_of_batching(text_encoder: ContentEncoder) -> None:
    a = text_encoder.encode(TEXTS, batch_size=64)
    b = text_encoder.encode(TEXTS, batch_size=64)
    np.testing.assert_array_equal(a, b)
    # Different batch composition changes padding only; results agree to float noise.
    c = np.concatenate([text_encoder.encode([t], batch_size=1) for t in TEXTS])
    np.testing.assert_allclose(a, c, atol=1e-5)


def test_semantic_similarity_sanity(text_encoder: ContentEncoder) -> None:
    mug, cup, toner = text_encoder.encode(TEXTS[:3])
    assert float(mug @ cup) > float(mug @ toner) + 0.2


def test_empty_input_list_and_bad_types(text_encoder: ContentEncoder) -> None:
    assert text_encoder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        text_encoder.encode(["ok", 3])
    with pytest.raises(ValueError):
        text_encoder.encode(["ok"], batch_size=0)


def test_progress_bar_only_when_asked(
    text_encoder: ContentEncoder, capsys: pytest.CaptureFixture[str]
) -> None:
    text_encoder.encode(TEXTS, batch_size=2)
    assert "2/2" not in capsys.readouterr().err
    text_encoder.encode(TEXTS, batch_size=2, progress=True)
    assert "2/2" in capsys.readouterr().err  # tqdm: 2 batches of 2
