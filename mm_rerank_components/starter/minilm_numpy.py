"""The starter's MiniLM text encoder in numpy: the same forward pass as :mod:`.minilm`, without torch.

Why it exists: importing torch is the largest single cost of a cold ``mm-rerank query`` (about 1.3 of its
3.3-3.5 s on a quiet 2-core machine), and a text query needs no other torch model: the pictures' class
lists come precomputed from the store and the class-prompt embeddings from their cache. So the one-shot
``query`` command embeds texts here (``MM_RERANK_TEXT_BACKEND=numpy``, which it sets unless told
otherwise); everything long-lived (``serve``, ``shell``, the Python API, ingest) keeps the torch reference.

Same files, same arithmetic, in float32 like torch: embeddings, then per layer fused QKV projection,
masked softmax attention, residual + LayerNorm, exact-GELU feed-forward, residual + LayerNorm; then the
sentence-transformers pooling (mean over the attention mask, L2 normalisation) that
:class:`~mm_rerank_components.starter.text.MiniLMTextEncoder` applies. GELU's ``erf`` is the polynomial
torch's own vectorised kernel uses. The embeddings differ from torch's by float32 rounding only (under
1e-6), and so do the scores: ``tests/test_cold_query.py`` compares both on the quickstart questions.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mm_rerank_components.starter.minilm import (
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    BertConfig,
    WordPieceTokenizer,
    checked_names,
    max_seq_length,
    model_max_length,
    packaged_model_dir,
)

logger = logging.getLogger(__name__)

#: the text runtime that picks this encoder (:func:`~mm_rerank_components.starter.models.text_runtime`)
BACKEND = "numpy"
#: one-text embeddings kept per encoder (a one-shot command asks for the same query text several times)
MEMO_SIZE = 64
#: as :data:`mm_rerank_components.starter.text.CHARS_PER_TOKEN` (which imports torch; a test keeps them equal)
CHARS_PER_TOKEN = 16


def default_model_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (:func:`~.minilm.packaged_model_dir`)."""
    return packaged_model_dir()


# Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): the erf torch's vectorised CPU GELU kernel evaluates in
# float32 (``Vectorized<float>::erf``), so the two GELUs agree to a few float32 ulps
_ERF_P = np.float32(0.3275911)
_ERF_A = tuple(np.float32(c) for c in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592))


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact-form GELU ``x * (1 + erf(x / sqrt 2)) / 2`` in float32, in place of ``x`` (returned).

    Example:
        >>> round(float(gelu(np.array([1.0], dtype=np.float32))[0]), 6)
        0.841345
    """
    z = np.abs(x) * np.float32(1.0 / math.sqrt(2.0))
    t = z * _ERF_P
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    poly = t * _ERF_A[0]
    for c in _ERF_A[1:]:
        poly += c
        poly *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z  # 1 - erf(|x| / sqrt 2)
    poly *= np.float32(0.5)  # the share of x GELU drops: 1 - Phi(|x|)
    np.subtract(np.float32(1.0), poly, out=poly, where=x >= 0)
    x *= poly
    return x


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis (biased variance, as torch), float32."""
    centered = x - x.mean(-1, keepdims=True)
    var = np.square(centered).mean(-1, keepdims=True)
    var += np.float32(eps)
    np.sqrt(var, out=var)
    centered /= var
    centered *= weight
    centered += bias
    return centered


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file as a read-only numpy view of one memory map (no copy)."""
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    size = int(np.frombuffer(raw[:8].tobytes(), dtype="<u8")[0])
    header = json.loads(raw[8 : 8 + size].tobytes())
    start = 8 + size
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in dtypes:
            raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}, which this reader lacks")
        begin, end = info["data_offsets"]
        flat = raw[start + begin : start + end].view(np.dtype(dtypes[info["dtype"]]).newbyteorder("<"))
        out[name] = flat.reshape(info["shape"])
    return out


class NumpyBertEncoder:
    """BERT's last hidden state in numpy float32 (see :class:`~.minilm.BertEncoder`, its torch twin)."""

    def __init__(self, config: BertConfig, weights: dict[str, np.ndarray]) -> None:
        self.config = config
        names = checked_names(config, {k: tuple(v.shape) for k, v in weights.items()})
        self.weights = {k: np.asarray(weights[v], dtype=np.float32) for k, v in names.items()}
        for i in range(config.num_hidden_layers):
            p = f"encoder.layer.{i}.attention.self"
            for part in ("weight", "bias"):
                parts = [self.weights.pop(f"{p}.{n}.{part}") for n in ("query", "key", "value")]
                self.weights[f"{p}.qkv.{part}"] = np.concatenate(parts)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """``(batch, tokens, hidden_size)`` float32 hidden states of the last layer."""
        tokens = input_ids.shape[1]
        if tokens > self.config.max_position_embeddings:
            raise ValueError(
                f"{tokens} tokens exceed max_position_embeddings {self.config.max_position_embeddings}"
            )
        w = self.weights
        x = (
            w["embeddings.word_embeddings.weight"][input_ids]
            + w["embeddings.position_embeddings.weight"][:tokens][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        keep = attention_mask[:, None, None, :].astype(np.float32)
        bias = (np.float32(1.0) - keep) * np.finfo(np.float32).min
        for i in range(self.config.num_hidden_layers):
            x = self._layer(x, bias, f"encoder.layer.{i}")
        return x

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        # one 2-D product (BLAS sgemm): numpy's stacked 3-D matmul against a transposed view is far slower
        flat = x.reshape(-1, x.shape[-1])
        out: np.ndarray = flat @ self.weights[f"{name}.weight"].T
        out += self.weights[f"{name}.bias"]
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        w, eps = self.weights, self.config.layer_norm_eps
        return layer_norm(x, w[f"{name}.weight"], w[f"{name}.bias"], eps)

    def _layer(self, x: np.ndarray, bias: np.ndarray, p: str) -> np.ndarray:
        batch, tokens, hidden = x.shape
        heads, size = self.config.num_attention_heads, self.config.head_size
        qkv = self._linear(x, f"{p}.attention.self.qkv").reshape(batch, tokens, 3, heads, size)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # each (batch, heads, tokens, size)
        scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / math.sqrt(size)) + bias
        scores -= scores.max(-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(-1, keepdims=True)
        attended = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, tokens, hidden)
        x = self._norm(
            self._linear(attended, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm"
        )
        inner = gelu(self._linear(x, f"{p}.intermediate.dense"))
        return self._norm(self._linear(inner, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")


class NumpyTextEncoder:
    """:class:`~mm_rerank_components.starter.text.MiniLMTextEncoder`'s ``encode`` without torch.

    The same folder, token limit, character bound, length-sorted batches and pooling; CPU only.

    Args:
        model_dir: a BERT folder :func:`~.minilm.supports` accepts (the packaged all-MiniLM-L6-v2 by default).
        batch_size: texts per forward pass.
        max_length: token limit; default as the torch encoder (``max_seq_length``, 256 for MiniLM).

    Example:
        >>> NumpyTextEncoder().encode(["a dog"]).shape  # doctest: +SKIP
        (1, 384)
    """

    backend = BACKEND

    def __init__(
        self, model_dir: str | Path | None = None, batch_size: int = 64, max_length: int | None = None
    ) -> None:
        from mm_rerank_components.starter import minilm

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        if not minilm.supports(self.model_dir):
            raise ValueError(
                f"{self.model_dir} is not a BERT folder the numpy encoder reads (config.json, "
                "tokenizer.json, model.safetensors); use the torch runtime"
            )
        self.batch_size = batch_size
        raw = json.loads((self.model_dir / "config.json").read_text(encoding="utf-8"))
        self.config = BertConfig.from_dict(raw, str(self.model_dir / "config.json"))
        self.model = NumpyBertEncoder(self.config, read_safetensors(self.model_dir / WEIGHTS_FILE))
        tokenizer_limit = model_max_length(self.model_dir, self.config)
        self.tokenizer = WordPieceTokenizer(self.model_dir / TOKENIZER_FILE, tokenizer_limit)
        positions = self.config.max_position_embeddings
        limit = max_length or max_seq_length(self.model_dir, min(tokenizer_limit, positions))
        self.max_length = min(limit, positions)
        self.max_chars = self.max_length * CHARS_PER_TOKEN
        self.dim = self.config.hidden_size
        #: one-text calls already answered (a query's text is embedded for each collection and the scorer)
        self._single: dict[str, np.ndarray] = {}
        logger.debug("loaded numpy text encoder from %s (max_length %d)", self.model_dir, self.max_length)

    def bound(self, text: str) -> str:
        """The first :attr:`max_chars` characters of ``text`` (what the torch encoder keeps)."""
        return text if len(text) <= self.max_chars else text[: self.max_chars]

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Embed ``texts`` into a float32 ``(len(texts), dim)`` array of unit-length rows."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings, not a single str; wrap it: encode([text])")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}")
        if len(texts) == 1 and texts[0] in self._single:
            return self._single[texts[0]].copy()  # the same computation gives the same bits
        step = batch_size or self.batch_size
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        bounded = [self.bound(t) for t in texts]
        order = sorted(range(len(bounded)), key=lambda i: len(bounded[i]))
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            batch = self.tokenizer(
                [bounded[i] for i in idx], padding=True, truncation=True, max_length=self.max_length
            )
            ids = np.asarray(batch["input_ids"], dtype=np.int64)
            mask = np.asarray(batch["attention_mask"], dtype=np.int64)
            hidden = self.model(ids, mask)
            weight = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weight).sum(1) / np.maximum(weight.sum(1), np.float32(1e-9))
            norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-12))
            out[idx] = pooled / norms
        if len(texts) == 1:
            if len(self._single) >= MEMO_SIZE:
                self._single.clear()
            self._single[texts[0]] = out.copy()
        return out
