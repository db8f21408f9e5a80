"""A text cross-encoder scorer: a Hugging Face sequence-classification model reads (query, passage).

Text only: image candidates go to another scorer through
:class:`~mm_rerank_components.scorers.ModalityRouter`, and a per-modality calibrator puts the two on one
scale. Needs the ``models`` extra: ``pip install "mm-rerank-components[models]"``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from mm_rerank_components.calibration import Calibrator
from mm_rerank_components.scorers._batching import plan_batches, split_by_calls
from mm_rerank_components.scorers._hf import (
    HFLoadOptions,
    ModelRef,
    as_calibrator,
    check_positive,
    check_readable,
    default_token_budget,
    load_hf_model,
    pad_rows,
    settings_digest,
    to_device,
)
from mm_rerank_components.scorers.base import BaseScorer
from mm_rerank_components.scorers.onnx import Backend, OnnxEncoder, check_backend, quantize_int8
from mm_rerank_components.types import Candidate, Modality, Query

if TYPE_CHECKING:
    import torch
    from typing_extensions import Unpack

    from mm_rerank_components.scorers._hf import LoadKwargs

logger = logging.getLogger(__name__)

Activation = Literal["none", "sigmoid"]


class CrossEncoderScorer(BaseScorer):
    """Relevance of text candidates from a cross-encoder (``AutoModelForSequenceClassification``).

    The raw score is the model's relevance logit: the single output of a one-label model (ms-marco
    MiniLM cross-encoders, bge-reranker), or ``logit[1] - logit[0]`` (the log-odds of "relevant") of a
    two-label model. Logits are not probabilities (``outputs_probabilities`` is False), so the reranker
    needs a calibrator: pass ``calibrator=`` (shipped through :meth:`default_calibrator`), or
    ``activation="sigmoid"`` to take the model's own sigmoid as its probability, which is only as
    calibrated as the model's training made it and is not comparable with an image scorer unless checked.

    Args:
        model_name_or_path: a Hugging Face id (``"cross-encoder/ms-marco-MiniLM-L-6-v2"``) or a local folder.
        model, tokenizer: ready objects instead of loading them.
        calibrator: a :class:`~mm_rerank_components.Calibrator` fitted on this scorer's raw scores, or the
            path of its JSON file.
        activation: ``"none"`` (raw logits) or ``"sigmoid"`` (probabilities).
        batch_size: at most this many pairs per forward pass (the scorer's batching knob).
        max_batch_tokens: padded tokens per forward pass; ``"auto"`` is 1024 on CPU (small batches stay
            in cache and measured fastest) and no budget on an accelerator; None: ``batch_size`` alone.
            Pairs are tokenised once, sorted by length and cut into balanced batches.
        max_length: tokens per (query, passage) pair.
        backend: how the model runs on the CPU (see :mod:`mm_rerank_components.scorers.onnx`): ``"torch"``
            (as loaded; the reference), ``"torch-int8"`` (dynamic int8 quantisation), ``"onnx"`` or
            ``"onnx-int8"`` (ONNX Runtime; the ``onnx`` extra). Faster, with rankings close to but not
            exactly those of fp32 (measured in docs/benchmarks.md); an int8 score also moves slightly
            (about 1e-3) with its batch-mates, as activations are quantised with one scale per batch.
            :meth:`logits` needs ``"torch"``.
        name: overrides the scorer name.
        load: :class:`~mm_rerank_components.scorers._hf.HFLoadOptions` keywords (``device``, ``dtype``,
            ``local_files_only``, ``revision``, ``cache_dir``, ``trust_remote_code``,
            ``attn_implementation``).

    Example:
        >>> scorer = CrossEncoderScorer("cross-encoder/ms-marco-MiniLM-L-6-v2")  # doctest: +SKIP
        >>> scorer.score(Query("red fox"), [Candidate("p", text="Red foxes live in dens.")])  # doctest: +SKIP
        [7.1]
    """

    modalities: frozenset[Modality] = frozenset({"text"})

    def __init__(
        self,
        model_name_or_path: ModelRef | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        calibrator: Calibrator | str | os.PathLike[str] | None = None,
        activation: Activation = "none",
        batch_size: int = 32,
        max_batch_tokens: int | str | None = "auto",
        max_length: int = 512,
        backend: Backend = "torch",
        name: str | None = None,
        **load: Unpack[LoadKwargs],
    ) -> None:
        if activation not in ("none", "sigmoid"):
            raise ValueError(f"activation must be 'none' or 'sigmoid', got {activation!r}")
        check_positive("batch_size", batch_size)
        check_positive("max_length", max_length)
        self.activation = activation
        self.outputs_probabilities = activation == "sigmoid"
        self.calibrator = as_calibrator(calibrator)
        self.batch_size = batch_size
        self.max_length = max_length
        loaded = load_hf_model(
            "cross-encoder",
            model_name_or_path,
            model,
            ("AutoModelForSequenceClassification",),
            HFLoadOptions(**load),
        )
        import torch  # importable now: load_hf_model checked the extra

        self.torch = torch
        self.model, self.device, self.dtype = loaded.model, loaded.device, loaded.dtype
        self.max_batch_tokens = default_token_budget(max_batch_tokens, self.device)
        self.tokenizer = loaded.companion("AutoTokenizer", tokenizer)
        self.backend = check_backend(backend, self.device)
        self.onnx = self._use_backend()
        self.num_labels = _num_labels(self.model, loaded.ident)
        settings: dict[str, object] = {
            "activation": activation,
            "max_length": max_length,
            "dtype": str(self.dtype),
        }
        if self.backend != "torch":  # fp32 torch keeps the names (and cached scores) it always had
            settings["backend"] = self.backend
        self.name = name or f"cross-encoder:{loaded.ident}:{settings_digest(settings)}"
        if calibrator is None and not self.outputs_probabilities:
            logger.info(
                "CrossEncoderScorer %s emits logits; pass calibrator=... to put them on the unified scale",
                self.name,
            )

    def _use_backend(self) -> OnnxEncoder | None:
        """Quantise the model (``torch-int8``) or export it to ONNX Runtime (``onnx``, ``onnx-int8``)."""
        if self.backend == "torch-int8":
            self.model = quantize_int8(self.model)
        elif self.backend in ("onnx", "onnx-int8"):
            names = ["input_ids", "attention_mask"]
            if "token_type_ids" in self.tokenizer.model_input_names:
                names.append("token_type_ids")
            return OnnxEncoder(self.model, names, "logits", int8=self.backend == "onnx-int8")
        return None

    def default_calibrator(self) -> Calibrator | None:
        """The calibrator given at construction (None: the reranker's fallback applies)."""
        return self.calibrator

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        return self.score_many([(query, candidates)])[0]

    def score_many(self, calls: Sequence[tuple[Query, Sequence[Candidate]]]) -> list[list[float]]:
        """Scores of several ``(query, candidates)`` calls from shared forward passes: every pair of every
        call is tokenised in one tokenizer call, sorted by length and cut into balanced batches, so the
        pairs of concurrent requests fill the same passes (each pair's score does not depend on its
        batch-mates: right padding with an attention mask)."""
        for query, candidates in calls:
            if candidates:
                check_readable("CrossEncoderScorer", self.modalities, query, candidates)
        queries = [query.text or "" for query, candidates in calls for _ in candidates]
        texts = [c.text or "" for _, candidates in calls for c in candidates]
        flat = [math.nan] * len(texts)
        if texts:
            encoded = self.tokenize_pairs(queries, texts)
            lengths = [len(row) for row in encoded["input_ids"]]
            for chunk in plan_batches(lengths, max_items=self.batch_size, max_cost=self.max_batch_tokens):
                for i, value in zip(chunk, self.forward(self.pad(encoded, chunk)).tolist(), strict=True):
                    flat[i] = float(value)
        return split_by_calls(flat, calls)

    def tokenize_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> dict[str, list[list[int]]]:
        """Every ``(queries[i], texts[i])`` pair tokenised once, truncated to ``max_length``, unpadded."""
        return dict(self.tokenizer(list(queries), list(texts), truncation=True, max_length=self.max_length))

    def tokenize(self, query: str, texts: Sequence[str]) -> dict[str, list[list[int]]]:
        """Every (query, passage) pair tokenised once, truncated to ``max_length``, unpadded."""
        return self.tokenize_pairs([query] * len(texts), texts)

    def pad(self, encoded: dict[str, list[list[int]]], chunk: Sequence[int]) -> dict[str, Any]:
        """The rows ``chunk`` of :meth:`tokenize`'s output, right-padded into tensors on the device."""
        pad_id = int(self.tokenizer.pad_token_id or 0)
        batch: dict[str, Any] = {}
        for key in ("input_ids", "token_type_ids"):
            if key in encoded:
                rows = [encoded[key][i] for i in chunk]
                batch[key], batch["attention_mask"] = pad_rows(rows, pad_id if key == "input_ids" else 0)
        return to_device(batch, self.device, self.dtype)

    def logits(self, query: Query, candidates: Sequence[Candidate]) -> torch.Tensor:
        """The relevance logit per candidate as one differentiable tensor (for fine-tuning; one padded
        batch, before any ``activation``)."""
        if self.backend != "torch":
            raise ValueError(f"logits() needs backend='torch' (gradients), this scorer runs {self.backend!r}")
        encoded = self.tokenize(query.text or "", [c.text or "" for c in candidates])
        return self.logits_of(self.pad(encoded, range(len(candidates))))

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """The raw relevance (logit, or its sigmoid) of each row of a padded batch, on the CPU."""
        torch = self.torch
        if self.onnx is not None:
            logits = torch.from_numpy(self.onnx(batch))
            raw = logits[:, 0] if self.num_labels == 1 else logits[:, 1] - logits[:, 0]
        else:
            with torch.inference_mode():
                raw = self.logits_of(batch)
        if self.activation == "sigmoid":
            raw = torch.sigmoid(raw)
        return raw.cpu()

    def logits_of(self, batch: dict[str, Any]) -> torch.Tensor:
        """The relevance logit of each row of a padded batch (``logit[1] - logit[0]`` for two labels)."""
        logits = self.model(**batch).logits.float()
        return logits[:, 0] if self.num_labels == 1 else logits[:, 1] - logits[:, 0]


def _num_labels(model: Any, ident: str) -> int:
    """The model's outputs: 1 (a relevance logit) or 2 (not relevant / relevant); else an error."""
    num_labels = int(getattr(model.config, "num_labels", 1))
    if num_labels not in (1, 2):
        raise ValueError(
            f"a cross-encoder needs 1 output (relevance logit) or 2 (not relevant / relevant); "
            f"{ident} has {num_labels}"
        )
    return num_labels
