"""A jina-reranker-m0 scorer: one call for mixed text and image candidates.

jina-reranker-m0's own ``compute_score(pairs, doc_type=...)`` takes one document type per call. This
scorer splits a mixed list by type, calls it once per type, and merges the scores back by index. The
model ships its own code on the Hub, so loading it needs ``trust_remote_code=True``, which this scorer
never turns on by itself: you pass it.

Needs the ``models`` extra: ``pip install "mm-rerank-components[models]"``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from mm_rerank_components.scorers._hf import (
    ModelRef,
    dtype_kwarg,
    load_error,
    model_id,
    model_ref_str,
    pretrained_kwargs,
    require_models,
    resolve_device,
    resolve_dtype,
    settings_digest,
)
from mm_rerank_components.scorers.base import ALL_MODALITIES
from mm_rerank_components.types import Candidate, Modality, Query

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "jinaai/jina-reranker-m0"
TextImageMode = Literal["max", "mean", "image", "text"]


class JinaRerankerM0Scorer:
    """jina-reranker-m0 (or any model with the same ``compute_score`` interface) behind the Scorer protocol.

    Text candidates are scored with ``doc_type="text"``, image candidates with ``doc_type="image"``; a
    text+image candidate is scored as both and combined by ``text_image_mode`` (``"max"``, ``"mean"``), or
    only as ``"image"`` or ``"text"``. A text query is sent with ``query_type="text"``, an image-only
    query with ``query_type="image"``; a query with both uses its text (the model reads one query type),
    and the scorer logs that once.

    The published model's ``compute_score`` returns sigmoid-normalised relevance in ``[0, 1]``, so
    ``outputs_probabilities`` is True (False when ``compute_kwargs={"normalize_scores": False}`` asks for
    raw logits, which then need a calibrator); the reranker rejects probabilities outside ``[0, 1]``.

    Args:
        model_name_or_path: a Hugging Face id (default ``"jinaai/jina-reranker-m0"``) or a local folder.
        model: a ready model object with ``compute_score`` instead of loading one.
        trust_remote_code: must be True to load the published model (it runs the repository's code).
        device, dtype: as for :class:`~mm_rerank_components.scorers.VLMYesNoScorer`.
        batch_size: passed to ``compute_score``.
        max_length: token budget per pair, passed to ``compute_score``.
        text_image_mode: how a text+image candidate is scored.
        compute_kwargs: any further keyword arguments for ``compute_score``.
        attn_implementation: passed to ``from_pretrained`` when set (e.g. ``"flash_attention_2"``).
        local_files_only, revision, cache_dir: passed to ``from_pretrained``.
        name: overrides the scorer name.

    Example:
        >>> scorer = JinaRerankerM0Scorer(trust_remote_code=True, dtype="bfloat16")  # doctest: +SKIP
        >>> scorer.score(Query("a red fox"), [Candidate("t", text="Foxes are red."),
        ...                                   Candidate("i", image=pil_image)])  # doctest: +SKIP
        [0.88, 0.62]
    """

    outputs_probabilities = True
    modalities: frozenset[Modality] = ALL_MODALITIES

    def __init__(
        self,
        model_name_or_path: ModelRef | None = DEFAULT_MODEL,
        *,
        model: Any = None,
        trust_remote_code: bool = False,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = "auto",
        batch_size: int = 8,
        max_length: int = 2048,
        text_image_mode: TextImageMode = "max",
        compute_kwargs: Mapping[str, Any] | None = None,
        attn_implementation: str | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> None:
        if text_image_mode not in ("max", "mean", "image", "text"):
            raise ValueError(
                f"text_image_mode must be 'max', 'mean', 'image' or 'text', got {text_image_mode!r}"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.text_image_mode = text_image_mode
        self.batch_size = batch_size
        self.max_length = max_length
        self.compute_kwargs = dict(compute_kwargs or {})
        # compute_kwargs={"normalize_scores": False} asks the model for raw logits: calibrate those.
        self.outputs_probabilities = self.compute_kwargs.get("normalize_scores", True) is not False
        self._warned_query = False
        self.device: Any = None
        self.dtype: Any = None
        ref: str | None = None
        if model is None:
            if model_name_or_path is None:
                raise ValueError("pass a model name or local path, or a ready model=...")
            _, transformers = require_models()
            self.device = resolve_device(device)
            self.dtype = resolve_dtype(dtype, self.device)
            ref = model_ref_str(model_name_or_path)
            kwargs = pretrained_kwargs(
                local_files_only=local_files_only,
                revision=revision,
                trust_remote_code=trust_remote_code,
                cache_dir=cache_dir,
                extra=dtype_kwarg(transformers, self.dtype),
            )
            if attn_implementation is not None:
                kwargs["attn_implementation"] = attn_implementation
            try:
                model = transformers.AutoModel.from_pretrained(ref, **kwargs)
            except ValueError as exc:
                if not trust_remote_code and "trust_remote_code" in str(exc):
                    raise ValueError(
                        f"{ref!r} runs its own model code from its repository, which this package never "
                        "enables by itself: pass trust_remote_code=True if you trust that code"
                    ) from exc
                raise load_error("jina-reranker-m0 model", ref, exc, local_files_only) from exc
            except OSError as exc:
                raise load_error("jina-reranker-m0 model", ref, exc, local_files_only) from exc
            model = model.to(self.device).eval()
        if not callable(getattr(model, "compute_score", None)):
            raise ValueError(
                f"{model_id(ref, model)} ({type(model).__name__}) has no compute_score(); "
                "JinaRerankerM0Scorer needs jina-reranker-m0 or a model with the same interface"
            )
        self.model = model
        settings = {
            "max_length": max_length,
            "text_image_mode": text_image_mode,
            "compute_kwargs": sorted(self.compute_kwargs.items()),
        }
        self.name = name or f"jina-m0:{model_id(ref, model)}:{settings_digest(settings)}"

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        if not candidates:
            return []
        query_type, query_value = self._query(query)
        as_text: list[int] = []
        as_image: list[int] = []
        for i, candidate in enumerate(candidates):
            has_text = bool(candidate.text and candidate.text.strip())
            has_image = candidate.image is not None
            if has_text and (not has_image or self.text_image_mode != "image"):
                as_text.append(i)
            if has_image and (not has_text or self.text_image_mode != "text"):
                as_image.append(i)
        found: list[list[float]] = [[] for _ in candidates]
        if as_text:
            values = self._compute([[query_value, candidates[i].text] for i in as_text], query_type, "text")
            for i, value in zip(as_text, values, strict=True):
                found[i].append(value)
        if as_image:
            values = self._compute(
                [[query_value, candidates[i].image] for i in as_image], query_type, "image"
            )
            for i, value in zip(as_image, values, strict=True):
                found[i].append(value)
        scores = []
        for values in found:
            if len(values) == 1:
                scores.append(values[0])
            elif self.text_image_mode == "mean":
                scores.append(sum(values) / len(values))
            else:
                scores.append(max(values))
        return scores

    def _query(self, query: Query) -> tuple[str, Any]:
        if query.text and query.text.strip():
            if query.image is not None and not self._warned_query:
                self._warned_query = True
                logger.warning(
                    "jina-reranker-m0 reads one query type per call: using the query's text and "
                    "ignoring its image"
                )
            return "text", query.text
        return "image", query.image

    def _compute(self, pairs: list[list[Any]], query_type: str, doc_type: str) -> list[float]:
        kwargs = {
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "query_type": query_type,
            "doc_type": doc_type,
            **self.compute_kwargs,
        }
        raw = self.model.compute_score(pairs, **kwargs)
        values = [float(raw)] if isinstance(raw, (int, float)) else [float(v) for v in _flat(raw)]
        if len(values) != len(pairs):
            raise ValueError(f"compute_score returned {len(values)} scores for {len(pairs)} {doc_type} pairs")
        bad = [v for v in values if not math.isfinite(v)]
        if bad:
            raise ValueError(f"compute_score returned non-finite scores {bad[:3]} for {doc_type} pairs")
        return values


def _flat(raw: Any) -> list[Any]:
    if hasattr(raw, "tolist"):
        raw = raw.tolist()
    if isinstance(raw, (int, float)):
        return [raw]
    return list(raw)
