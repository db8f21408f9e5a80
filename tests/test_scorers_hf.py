"""Shared Hugging Face helpers: lazy imports, the extra's ImportError, device/dtype choice, model ids."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from mm_rerank_components import _deps
from mm_rerank_components.scorers import _hf


def test_scorer_modules_import_without_torch() -> None:
    code = (
        "import sys\n"
        "import mm_rerank_components.scorers.vlm, mm_rerank_components.scorers.clip\n"
        "import mm_rerank_components.scorers.cross_encoder, mm_rerank_components.scorers.jina_m0\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def fake_import(name: str, package: str | None = None) -> object:
        if name == "torch":
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
        return real(name, package)

    monkeypatch.setattr(_deps.importlib, "import_module", fake_import)
    with pytest.raises(ImportError, match=r'pip install "mm-rerank-components\[models\]"'):
        _hf.require_models()


def test_broken_install_is_not_reported_as_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_import(name: str, package: str | None = None) -> object:
        raise ImportError("libfoo.so: cannot open shared object file", name="torch._C")

    monkeypatch.setattr(_deps.importlib, "import_module", fake_import)
    with pytest.raises(ImportError, match="libfoo.so"):
        _hf.require_models()


def test_device_and_dtype_choice() -> None:
    torch = pytest.importorskip("torch")
    assert _hf.resolve_device("cpu") == torch.device("cpu")
    assert _hf.resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert _hf.resolve_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert _hf.resolve_dtype(torch.float16, torch.device("cpu")) is torch.float16
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        _hf.resolve_dtype("fp8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available; use device='cpu'"):
            _hf.resolve_device("cuda")
        assert _hf.resolve_device(None).type in ("cpu", "mps")


def test_model_ids_for_hub_names_and_folders(tmp_path: Path) -> None:
    assert _hf.model_id("Qwen/Qwen2-VL-2B-Instruct") == "Qwen/Qwen2-VL-2B-Instruct"
    folder = tmp_path / "my-model"
    folder.mkdir()
    ident = _hf.model_id(folder)
    assert ident.startswith("my-model@") and ident == _hf.model_id(str(folder))
    assert _hf.model_ref_str(folder) == str(folder.resolve())
    with pytest.raises(ValueError, match="model name or path must be a non-empty str"):
        _hf.model_ref_str("  ")


def test_remote_code_is_off_unless_asked() -> None:
    kwargs = _hf.pretrained_kwargs(
        local_files_only=True, revision=None, trust_remote_code=False, cache_dir=None
    )
    assert kwargs == {"local_files_only": True, "trust_remote_code": False}
