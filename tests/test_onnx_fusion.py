"""ONNX Runtime's transformer fusion in OnnxEncoder (starter/_onnx.py): fused scores equal torch's, and a graph
that cannot be fused is used unfused with a warning, never with changed scores."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from mm_rerank_components.starter import _onnx  # noqa: E402
from mm_rerank_components.starter._onnx import OnnxEncoder  # noqa: E402
from mm_rerank_components.testing import build_bert_cross_encoder  # noqa: E402

WORDS = ["red", "fox", "snow", "owl", "den", "river", "a", "the", "in"] + [f"w{i}" for i in range(40)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(build_bert_cross_encoder(tmp_path_factory.mktemp("tiny-bert"), WORDS))


@pytest.fixture(scope="module")
def batch(folder: Path) -> dict[str, Any]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    passages = ["red fox", "the owl in the snow " * 4, "w1 w2 w3", "a den in the river w5 w6 w7 w8"]
    batch = dict(tokenizer(["fox"] * 4, passages, padding=True, return_tensors="pt"))
    assert batch["attention_mask"].min() == 0  # one padded row at least: the fused attention's mask path
    return batch


@pytest.fixture
def ops(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """The operator types of each graph a session is built from (before ONNX Runtime's own passes)."""
    import onnx

    seen: list[set[str]] = []
    original = _onnx._session

    def recording(ort: Any, path: Path, threads: int) -> Any:
        seen.append({node.op_type for node in onnx.load(str(path)).graph.node})
        return original(ort, path, threads)

    monkeypatch.setattr(_onnx, "_session", recording)
    return seen


def reference(model: Any, batch: dict[str, Any], output: str) -> np.ndarray:
    with torch.no_grad():
        return getattr(model(**batch), output).numpy()


def test_fused_fp32_graph_scores_like_torch(folder: Path, batch: dict[str, Any], ops: list[set[str]]) -> None:
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(folder), local_files_only=True
    ).eval()
    before = model.config._attn_implementation
    encoder = OnnxEncoder(model, list(batch), "logits", fuse=True, threads=1)
    assert encoder.fused
    assert {"Attention", "SkipLayerNormalization"} <= ops[-1]  # fused kernels, not MatMul/Softmax chains
    np.testing.assert_allclose(encoder(batch), reference(model, batch, "logits"), atol=1e-5, rtol=0)
    assert model.config._attn_implementation == before  # the eager export leaves the model as it was


def test_fuse_then_quantise_gives_quantised_attention(
    folder: Path, batch: dict[str, Any], ops: list[set[str]]
) -> None:
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(folder), local_files_only=True
    ).eval()
    encoder = OnnxEncoder(model, list(batch), "logits", int8=True, fuse=True, threads=1)
    assert encoder.fused and "QAttention" in ops[-1]
    expected = reference(model, batch, "logits")
    scores = encoder(batch)
    np.testing.assert_allclose(scores, expected, atol=0.05, rtol=0)  # int8: close, not equal
    assert not np.array_equal(scores, expected)


def test_fused_encoder_output_matches_on_real_tokens(folder: Path, batch: dict[str, Any]) -> None:
    """The starter text model's use: ``last_hidden_state`` of a bare BertModel, compared where unpadded."""
    model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    encoder = OnnxEncoder(model, list(batch), "last_hidden_state", fuse=True, threads=1)
    keep = batch["attention_mask"].numpy().astype(bool)
    assert encoder.fused and not keep.all()
    got, expected = encoder(batch)[keep], reference(model, batch, "last_hidden_state")[keep]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_unfusable_graph_falls_back_with_a_warning(
    folder: Path, batch: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # the SDPA export is a real graph the optimiser cannot fuse attention in
    monkeypatch.setattr(_onnx, "EXPORT_ATTENTION", None)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(folder), local_files_only=True
    ).eval()
    with caplog.at_level(logging.WARNING, logger=_onnx.__name__):
        encoder = OnnxEncoder(model, list(batch), "logits", fuse=True, threads=1)
    assert not encoder.fused
    assert "fusion failed" in caplog.text and "no attention fused" in caplog.text
    np.testing.assert_allclose(encoder(batch), reference(model, batch, "logits"), atol=1e-5, rtol=0)


def test_fused_graph_with_changed_scores_is_discarded(
    folder: Path,
    batch: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    ops: list[set[str]],
) -> None:
    monkeypatch.setattr(_onnx, "FUSE_TOLERANCE", -1.0)  # any difference at all counts as changed scores
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(folder), local_files_only=True
    ).eval()
    with caplog.at_level(logging.WARNING, logger=_onnx.__name__):
        encoder = OnnxEncoder(model, list(batch), "logits", fuse=True, threads=1)
    assert not encoder.fused and "using the unfused graph" in caplog.text
    assert "Attention" in ops[0] and "Attention" not in ops[-1]  # the probed fused graph, then the unfused
    np.testing.assert_allclose(encoder(batch), reference(model, batch, "logits"), atol=1e-5, rtol=0)
