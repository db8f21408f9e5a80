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
from mm_rerank_components.scorers._hf import (
    ModelRef,
    as_calibrator,
    dtype_kwarg,
    load_error,
    model_id,
    model_ref_str,
    pretrained_kwargs,
    require_models,
    resolve_device,
    resolve_dtype,
    settings_digest,
    to_device,
)
from mm_rerank_components.types import Candidate, Modality, Query

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Activation = Literal["none", "sigmoid"]


class CrossEncoderScorer:
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
        device, dtype: as for :class:`~mm_rerank_components.scorers.VLMYesNoScorer`.
        batch_size: pairs per forward pass; max_length: tokens per (query, passage) pair.
        local_files_only, revision, cache_dir, trust_remote_code: passed to ``from_pretrained``.
        name: overrides the scorer name.

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
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = "auto",
        batch_size: int = 32,
        max_length: int = 512,
        local_files_only: bool = False,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        trust_remote_code: bool = False,
        name: str | None = None,
    ) -> None:
        self.torch, transformers = require_models()
        if activation not in ("none", "sigmoid"):
            raise ValueError(f"activation must be 'none' or 'sigmoid', got {activation!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if model_name_or_path is None and (model is None or tokenizer is None):
            raise ValueError("pass a model name or local path, or both model=... and tokenizer=...")
        self.activation = activation
        self.outputs_probabilities = activation == "sigmoid"
        self.calibrator = as_calibrator(calibrator)
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = resolve_device(device)
        ref = model_ref_str(model_name_or_path) if model_name_or_path is not None else None
        common = pretrained_kwargs(
            local_files_only=local_files_only,
            revision=revision,
            trust_remote_code=trust_remote_code,
            cache_dir=cache_dir,
        )
        self.dtype = resolve_dtype(dtype, self.device)
        ready_model = model is not None
        try:
            if model is None:
                assert ref is not None
                model = transformers.AutoModelForSequenceClassification.from_pretrained(
                    ref, **common, **dtype_kwarg(transformers, self.dtype)
                )
            if tokenizer is None:
                assert ref is not None
                tokenizer = transformers.AutoTokenizer.from_pretrained(ref, **common)
        except OSError as exc:
            raise load_error("cross-encoder", str(ref), exc, local_files_only) from exc
        num_labels = int(getattr(model.config, "num_labels", 1))
        if num_labels not in (1, 2):
            raise ValueError(
                f"a cross-encoder needs 1 output (relevance logit) or 2 (not relevant / relevant); "
                f"{model_id(ref, model)} has {num_labels}"
            )
        self.num_labels = num_labels
        if ready_model and dtype in (None, "auto"):
            self.dtype = next(model.parameters()).dtype  # a ready model keeps its dtype under "auto"
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = tokenizer
        settings = {"activation": activation, "max_length": max_length, "dtype": str(self.dtype)}
        self.name = name or f"cross-encoder:{model_id(ref, self.model)}:{settings_digest(settings)}"
        if calibrator is None and not self.outputs_probabilities:
            logger.info(
                "CrossEncoderScorer %s emits logits; pass calibrator=... to put them on the unified scale",
                self.name,
            )

    def default_calibrator(self) -> Calibrator | None:
        """The calibrator given at construction (None: the reranker's fallback applies)."""
        return self.calibrator

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        if not candidates:
            return []
        if not query.text or not query.text.strip():
            raise ValueError(
                "CrossEncoderScorer reads text: the query has no text; use a VLM scorer for image queries"
            )
        for candidate in candidates:
            if candidate.modality != "text":
                raise ValueError(
                    f"CrossEncoderScorer reads text candidates only; {candidate.id!r} is "
                    f"{candidate.modality}: route images to another scorer with ModalityRouter"
                )
        texts = [c.text or "" for c in candidates]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        scores = [math.nan] * len(texts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, value in zip(chunk, self._score_batch(query.text, [texts[i] for i in chunk]), strict=True):
                scores[i] = value
        return scores

    def _score_batch(self, query: str, texts: list[str]) -> list[float]:
        torch = self.torch
        batch = self.tokenizer(
            [query] * len(texts),
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch = to_device(batch, self.device, self.dtype)
        with torch.inference_mode():
            logits = self.model(**batch).logits.float()
        raw = logits[:, 0] if self.num_labels == 1 else logits[:, 1] - logits[:, 0]
        if self.activation == "sigmoid":
            raw = torch.sigmoid(raw)
        return [float(v) for v in raw.cpu()]
