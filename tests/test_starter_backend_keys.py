"""int8/ONNX text backends never share a cache key with fp32 (class-prompt file, model and scorer names)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mm_rerank_components.starter import _onnx
from mm_rerank_components.starter._onnx import env_text_backend
from mm_rerank_components.starter.models import StarterModels, _class_cache_path


def test_class_prompt_cache_and_names_are_keyed_by_the_text_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"weights")
    monkeypatch.setenv("MM_RERANK_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MM_RERANK_TEXT_BACKEND", raising=False)
    prompts = ["a photo of a fox", "a photo of a cat"]
    fp32 = _class_cache_path(model_dir, prompts)
    assert fp32 is not None and fp32 == _class_cache_path(model_dir, prompts, "torch")
    keys = {b: _class_cache_path(model_dir, prompts, b) for b in ("torch-int8", "onnx", "onnx-int8")}
    assert len({fp32, *keys.values()}) == 4  # an int8 process never writes (or reads) the fp32 file
    assert env_text_backend() == "torch"
    plain = StarterModels().text_label
    monkeypatch.setenv("MM_RERANK_TEXT_BACKEND", "onnx-int8")
    assert env_text_backend() == "onnx-int8"
    assert StarterModels().text_label == f"{plain}-onnx-int8"  # eval caches and precomputed signals apart


def test_int8_weights_are_quantised_per_channel() -> None:
    torch = pytest.importorskip("torch")
    assert _onnx.PER_CHANNEL
    model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    quantized = _onnx.quantize_int8(model)
    weight = quantized[0].weight()
    assert weight.qscheme() == torch.per_channel_affine
    assert weight.q_per_channel_scales().numel() == 4
