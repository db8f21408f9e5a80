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
        "import mm_rerank_components.scorers.llm, mm_rerank_components.scorers.late_interaction\n"
        "import mm_rerank_components.scorers._yesno, mm_rerank_components.scorers._qwen_vision\n"
        "import mm_rerank_components.adapt.lora, mm_rerank_components.testing\n"
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


def test_load_options_and_the_one_loader(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    options = _hf.HFLoadOptions(device="cpu", local_files_only=True)
    assert options.trust_remote_code is False and options.attn_implementation is None
    assert options.pretrained() == {"local_files_only": True, "trust_remote_code": False}
    with pytest.raises(ValueError, match="pass a model name or local path for the cross-encoder"):
        _hf.load_hf_model("cross-encoder", None, None, ("AutoModel",), options)
    with pytest.raises(ValueError, match="could not load the cross-encoder from .*missing"):
        _hf.load_hf_model("cross-encoder", tmp_path / "missing", None, ("AutoModel",), options)
    ready = torch.nn.Linear(2, 2).to(torch.float64)
    loaded = _hf.load_hf_model("thing", None, ready, ("AutoModel",), options)
    assert loaded.dtype is torch.float64 and not loaded.model.training  # "auto" keeps a ready model's dtype
    assert loaded.ident == "Linear"
    with pytest.raises(ValueError, match="also pass the Tokenizer object"):
        loaded.companion("AutoTokenizer")
    assert loaded.companion("AutoTokenizer", given="tok") == "tok"
    cast = _hf.load_hf_model(
        "thing", None, ready, ("AutoModel",), _hf.HFLoadOptions(device="cpu", dtype="float32")
    )
    assert cast.dtype is torch.float32 and next(cast.model.parameters()).dtype is torch.float32


def test_batching_knobs_and_padding() -> None:
    torch = pytest.importorskip("torch")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _hf.default_token_budget("auto", cpu) == 1024
    assert _hf.default_token_budget("auto", cuda) is None
    assert _hf.default_token_budget(None, cpu) is None and _hf.default_token_budget(64, cpu) == 64
    with pytest.raises(ValueError, match="max_batch_tokens must be a positive int, 'auto' or None, got 0"):
        _hf.default_token_budget(0, cpu)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got True"):
        _hf.check_positive("batch_size", True)
    _hf.check_positive("max_text_tokens", None, optional=True)
    ids, mask = _hf.pad_rows([[5, 6, 7], [8]], 0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = _hf.pad_rows([[5, 6, 7], [8]], 9)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 9]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_yes_no_planning_keeps_groups_apart_and_order() -> None:
    from mm_rerank_components.scorers._yesno import YesNoPrompt, plan_groups, score_in_batches

    plan = plan_groups([5, 1, 3, 2, 9, 4], [0, 0, 0, 1, 1, 1], max_items=2, max_cost=None)
    assert plan == [[1, 2], [0], [3, 5], [4]]
    scores = score_in_batches(plan, lambda chunk: [float(i) for i in chunk], 6)
    assert scores == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(ValueError, match=r"template must contain \{document\} exactly once"):
        YesNoPrompt(template="{query} only")
    assert [k for k, _ in YesNoPrompt(template="{document} then {query}").pieces()] == [
        "document",
        "text",
        "query",
    ]


def test_short_texts_are_not_tokenised_for_the_cut() -> None:
    from mm_rerank_components.scorers._yesno import cut_text

    class CountingTokenizer:
        calls = 0

        def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
            CountingTokenizer.calls += 1
            return {"input_ids": list(range(len(text.split())))}

        def decode(self, ids: list, skip_special_tokens: bool = False) -> str:
            return " ".join(f"t{i}" for i in ids)

    tok = CountingTokenizer()
    assert cut_text(tok, "a short passage", 1024) == "a short passage"
    assert CountingTokenizer.calls == 0  # shorter in bytes than the budget: tokenised once, in its prompt
    assert cut_text(tok, "one two three four", 3) == "t0 t1 t2" and CountingTokenizer.calls == 1
    assert cut_text(tok, "x" * 50, None) == "x" * 50


BACKEND_EXAMPLES = sorted(
    p.name
    for p in (Path(__file__).parent.parent / "examples" / "backends").glob("*.py")
    if not p.name.startswith("_")
)


@pytest.mark.slow
@pytest.mark.parametrize("script", BACKEND_EXAMPLES)
def test_backend_examples_run_on_tiny_models(script: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    pytest.importorskip("chromadb")
    import os

    root = Path(__file__).parent.parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(root / "examples" / "backends" / script)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "random weights" in done.stdout or "same scores after reload: True" in done.stdout
