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
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from mm_rerank_components.scorers._hf import (
    HFLoadOptions,
    ModelRef,
    check_positive,
    load_hf_model,
    model_id,
    settings_digest,
)
from mm_rerank_components.scorers.base import ALL_MODALITIES, BaseScorer
from mm_rerank_components.types import Candidate, Modality, Query

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from mm_rerank_components.scorers._hf import LoadKwargs

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "jinaai/jina-reranker-m0"
TextImageMode = Literal["max", "mean", "image", "text"]


class JinaRerankerM0Scorer(BaseScorer):
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
        batch_size: passed to ``compute_score`` (the model batches each document type itself).
        max_length: token budget per pair, passed to ``compute_score``.
        text_image_mode: how a text+image candidate is scored.
        compute_kwargs: any further keyword arguments for ``compute_score``.
        name: overrides the scorer name.
        load: :class:`~mm_rerank_components.scorers._hf.HFLoadOptions` keywords; ``trust_remote_code``
            must be True to load the published model (it runs the repository's code); ``device``,
            ``dtype``, ``attn_implementation`` (e.g. ``"flash_attention_2"``), ``local_files_only``,
            ``revision``, ``cache_dir``. A ready ``model=`` is used as it is.

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
        batch_size: int = 8,
        max_length: int = 2048,
        text_image_mode: TextImageMode = "max",
        compute_kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        **load: Unpack[LoadKwargs],
    ) -> None:
        if text_image_mode not in ("max", "mean", "image", "text"):
            raise ValueError(
                f"text_image_mode must be 'max', 'mean', 'image' or 'text', got {text_image_mode!r}"
            )
        check_positive("batch_size", batch_size)
        self.text_image_mode = text_image_mode
        self.batch_size = batch_size
        self.max_length = max_length
        self.compute_kwargs = dict(compute_kwargs or {})
        # compute_kwargs={"normalize_scores": False} asks the model for raw logits: calibrate those.
        self.outputs_probabilities = self.compute_kwargs.get("normalize_scores", True) is not False
        self._warned_query = False
        self.device: Any = None
        self.dtype: Any = None
        ident = model_id(None, model) if model is not None else None
        if model is None:
            options = HFLoadOptions(**load)
            loaded = load_hf_model(
                "jina-reranker-m0 model", model_name_or_path, None, ("AutoModel",), options
            )
            model, self.device, self.dtype, ident = loaded.model, loaded.device, loaded.dtype, loaded.ident
        if not callable(getattr(model, "compute_score", None)):
            raise ValueError(
                f"{ident} ({type(model).__name__}) has no compute_score(); "
                "JinaRerankerM0Scorer needs jina-reranker-m0 or a model with the same interface"
            )
        self.model = model
        settings = {
            "max_length": max_length,
            "text_image_mode": text_image_mode,
            "compute_kwargs": sorted(self.compute_kwargs.items()),
        }
        self.name = name or f"jina-m0:{ident}:{settings_digest(settings)}"

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
