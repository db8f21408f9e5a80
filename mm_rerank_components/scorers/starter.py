"""``StarterScorer``: a second stage built from the offline starter models, more careful than the first.

The first stage (the Chroma route, :mod:`mm_rerank_components.starter.chroma`) compares the query with
one cheap embedding per item: MiniLM for texts, ConSE over one letterboxed view for images. The scorer
spends more compute per candidate, which is affordable on a few dozen candidates:

* images: ConSE over more classes (``top_k=20``), plus a *class match* term that uses the classifier's
  whole probability vector: the query is turned into a distribution over the 1,000 classes (softmax of
  its cosines with the class prompts, temperature ``class_match_temperature``) and compared with the
  image's class probabilities by the Bhattacharyya coefficient ``sum_c sqrt(q_c p_c)`` in ``[0, 1]``;
  the image score is ``cosine + class_match_weight * match``. Averaging class probabilities over
  several views (crops, a mirror image) is available (``n_views``) but measured *worse* on the Tux Paint
  stamps, so it is off by default;
* texts: the whole passage (MiniLM truncates at 256 tokens) *and* its best-matching window of a few
  sentences, so a long passage with one relevant paragraph is not diluted;
* text+image candidates: caption evidence and image evidence, mixed by ``caption_weight``;
* image queries (``Query.image``) are embedded the same way as image candidates (their class
  distribution is their class probabilities); a text+image query averages its text and image parts.

Raw scores are cosines in ``[-1, 1]``, plus the class-match bonus in ``[0, class_match_weight]`` for
images (``outputs_probabilities=False``). The reranker turns them into
probabilities with :meth:`StarterScorer.default_calibrator` (a calibration fitted on labelled data and
shipped as ``starter/data/starter_calibration.json``) when the user passes no calibrator.

Example:
    >>> from mm_rerank_components import MultimodalReranker
    >>> from mm_rerank_components.scorers.starter import StarterScorer
    >>> reranker = MultimodalReranker(StarterScorer())  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from mm_rerank_components.scorers._batching import run_batched
from mm_rerank_components.scorers.base import ALL_MODALITIES, BaseScorer
from mm_rerank_components.starter.classes import PROMPT_STYLES, PromptStyle
from mm_rerank_components.starter.conse import conse
from mm_rerank_components.starter.image_models import DEFAULT_IMAGE_MODEL
from mm_rerank_components.starter.models import StarterModels
from mm_rerank_components.starter.precomputed import (
    DEFAULT_COMPACT_K,
    IMAGE_CLASSES,
    TEXT_EMBEDDING,
    expand_classes,
    image_producer,
    parse_classes,
    text_producer,
)
from mm_rerank_components.types import Candidate, Modality, Precomputed, Query

if TYPE_CHECKING:
    from mm_rerank_components.calibration import Calibrator

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "starter_calibration.json"
DEFAULT_PROMPT_STYLES: tuple[PromptStyle, ...] = ("synonyms+definition",)
#: Characters of a passage searched for its best sentence window (bounds the cost of a huge passage).
DEFAULT_WINDOW_CHARS = 20_000

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


def split_windows(text: str, sentences_per_window: int = 3, max_windows: int = 16) -> list[str]:
    """Overlapping windows of ``sentences_per_window`` sentences (stride 1, or wider for long texts).

    Returns ``[]`` when the text has no more sentences than one window (the whole text then suffices).

    Example:
        >>> split_windows("A. B. C. D.", sentences_per_window=2)
        ['A. B.', 'B. C.', 'C. D.']
    """
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]
    if len(sentences) <= sentences_per_window:
        return []
    starts = list(range(0, len(sentences) - sentences_per_window + 1))
    if len(starts) > max_windows:
        step = len(starts) / max_windows
        starts = sorted({int(i * step) for i in range(max_windows)} | {starts[-1]})
    return [" ".join(sentences[i : i + sentences_per_window]) for i in starts]


_SCORE = {"score": True}  # field metadata: the setting changes a score (it is in the name and the spec)


@dataclass(frozen=True)
class StarterOptions:
    """Every setting of a :class:`StarterScorer`, checked once (issue 20 item 4).

    ``StarterScorer(options)`` builds from it; ``StarterScorer(**overrides)`` and
    ``StarterScorer(options, **overrides)`` take the same names as keyword arguments. The fields marked as
    changing a score (see :meth:`scoring`) are what :meth:`StarterScorer.spec_options` records.

    Args:
        models: a ready :class:`~mm_rerank_components.starter.StarterModels` (its device, model files,
            threads and batch sizes are used; its ``n_views``/``top_k``/``prompt_style`` are not: the scorer
            has its own below). Default: a new one on ``device`` with ``image_model`` and ``threads``
            (weights are shared with any other instance on that device).
        device: torch device when ``models`` is not given.
        image_model: the image classifier when ``models`` is not given: ``"efficientnet-lite0"`` (default)
            or ``"efficientnet-lite2"`` (more accurate, about 1.8x the time per picture; see
            docs/starter_models.md).
        threads: CPU threads per model call when ``models`` is not given: None (default) = one per request
            under load or concurrency, more for a big batch alone (see
            :mod:`mm_rerank_components.starter.threads`); an int fixes it.
        n_views: views per image whose class probabilities are averaged (1..7; 1 measured best).
        top_k: classes mixed by ConSE.
        class_k: classes of a picture the scorer reads (its most probable ones, renormalised; the rest
            count as 0), so a first stage that stored the top ``class_k`` (see
            :func:`~mm_rerank_components.starter.precomputed.compact_classes`) gives exactly the scores a
            fresh classification gives. ``top_k..1000``; 50 measured as good as all 1,000.
        prompt_styles: class prompt styles whose text embeddings are averaged.
        class_match_weight: weight of the class-match term in an image's score (0 turns it off).
        class_match_temperature: softmax temperature turning the query's class cosines into a
            distribution (small = only the closest classes count).
        caption_weight: share of the caption in a text+image candidate's score (the rest is the image).
        window_weight: share of the best sentence window in a long text candidate's score.
        window_chars: how much of a passage (characters from its start) is searched for the best window;
            the whole-passage embedding reads the first 256 tokens anyway. Bounds the cost of a huge
            passage.
        calibration_path: a calibration JSON for :meth:`default_calibrator`; default: the one shipped in
            ``mm_rerank_components/starter/data/`` (if any).
        image_cache_size: how many image embeddings to keep in memory, keyed by a hash of the pixels, so
            an image that comes back for another query is not run through the classifier again
            (0 turns the cache off).
        text_cache_size: how many text embeddings (passages, sentence windows, queries) to keep in memory,
            keyed by the text: a corpus's passages come back query after query (0 turns it off).

    Example:
        >>> StarterOptions(top_k=10).top_k
        10
    """

    models: StarterModels | None = None
    device: str = "cpu"
    image_model: str | None = None
    threads: int | None = None
    n_views: int = field(default=1, metadata=_SCORE)
    top_k: int = field(default=20, metadata=_SCORE)
    class_k: int = field(default=DEFAULT_COMPACT_K, metadata=_SCORE)
    prompt_styles: Sequence[PromptStyle] = field(default=DEFAULT_PROMPT_STYLES, metadata=_SCORE)
    class_match_weight: float = field(default=0.5, metadata=_SCORE)
    class_match_temperature: float = field(default=0.01, metadata=_SCORE)
    caption_weight: float = field(default=0.5, metadata=_SCORE)
    window_weight: float = field(default=0.5, metadata=_SCORE)
    window_chars: int = field(default=DEFAULT_WINDOW_CHARS, metadata=_SCORE)
    calibration_path: str | Path | None = None
    image_cache_size: int = 2048
    text_cache_size: int = 16384

    def __post_init__(self) -> None:
        _check_counts(self)
        styles = tuple(self.prompt_styles)
        if not styles or any(s not in PROMPT_STYLES for s in styles):
            raise ValueError(f"prompt_styles must be a non-empty subset of {PROMPT_STYLES}, got {styles!r}")
        _check_weights(self)
        # normalised once, so the scorer, its name and its spec read the same values
        object.__setattr__(self, "prompt_styles", styles)
        for name in ("class_match_weight", "class_match_temperature", "caption_weight", "window_weight"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.calibration_path is not None:
            object.__setattr__(self, "calibration_path", Path(self.calibration_path))

    @classmethod
    def build(cls, options: StarterOptions | None = None, **overrides: Any) -> StarterOptions:
        """``options`` (default: all defaults) with ``overrides`` replaced; an unknown name is an error."""
        if options is not None and not isinstance(options, StarterOptions):
            raise TypeError(
                f"options must be a StarterOptions, got {type(options).__name__}; "
                "pass models= (or other settings) by keyword"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown StarterScorer option(s) {unknown}; use one of {sorted(known)}")
        return replace(options, **overrides) if options is not None else cls(**overrides)

    def scoring(self) -> dict[str, Any]:
        """The JSON-able settings that change a score (``prompt_styles`` as a list), in field order."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("score")}
        out["prompt_styles"] = list(out["prompt_styles"])
        return out


def _check_counts(o: StarterOptions) -> None:
    if not isinstance(o.n_views, int) or not 1 <= o.n_views <= 7:
        raise ValueError(f"n_views must be an int between 1 and 7, got {o.n_views!r}")
    if not isinstance(o.top_k, int) or not 1 <= o.top_k <= 1000:
        raise ValueError(f"top_k must be an int between 1 and 1000, got {o.top_k!r}")
    if isinstance(o.class_k, bool) or not isinstance(o.class_k, int) or not o.top_k <= o.class_k <= 1000:
        raise ValueError(f"class_k must be an int between top_k ({o.top_k}) and 1000, got {o.class_k!r}")
    if isinstance(o.window_chars, bool) or not isinstance(o.window_chars, int) or o.window_chars < 1:
        raise ValueError(f"window_chars must be a positive int, got {o.window_chars!r}")
    for label, size in (("image_cache_size", o.image_cache_size), ("text_cache_size", o.text_cache_size)):
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"{label} must be an int >= 0, got {size!r}")


def _check_weights(o: StarterOptions) -> None:
    for label, weight in (("caption_weight", o.caption_weight), ("window_weight", o.window_weight)):
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"{label} must be between 0 and 1, got {weight!r}")
    if o.class_match_weight < 0:
        raise ValueError(f"class_match_weight must be >= 0, got {o.class_match_weight!r}")
    if not o.class_match_temperature > 0:
        raise ValueError(f"class_match_temperature must be > 0, got {o.class_match_temperature!r}")


class StarterScorer(BaseScorer):
    """Rerank text, image and text+image candidates with the offline starter models.

    Reuses the first stage's work (:attr:`reuses`): a passage's stored MiniLM embedding
    (``precomputed["text_embedding"]``) and a picture's compact class probabilities
    (``precomputed["image_classes"]``), each only when its producer is this scorer's own
    (:func:`~mm_rerank_components.starter.precomputed.text_producer`,
    :func:`~mm_rerank_components.starter.precomputed.image_producer`); otherwise it computes them. The
    query is embedded (and its picture classified) once per request, however many modality groups the
    reranker scores.

    Args:
        options: a :class:`StarterOptions` (its fields are documented there); default: all defaults.
        **overrides: any :class:`StarterOptions` field by name (``models=``, ``top_k=``, ...), replacing
            the one in ``options``.

    Example:
        >>> from mm_rerank_components.types import Candidate, Query
        >>> scorer = StarterScorer()
        >>> scorer.score(Query("a dog"), [Candidate("c", text="a puppy")])  # doctest: +SKIP
        [0.62...]
    """

    outputs_probabilities = False
    modalities: frozenset[Modality] = ALL_MODALITIES
    reuses: frozenset[str] = frozenset({TEXT_EMBEDDING, IMAGE_CLASSES})

    def __init__(self, options: StarterOptions | None = None, **overrides: Any) -> None:
        opts = StarterOptions.build(options, **overrides)
        self.options = opts
        self._emb = _Embeddings(_models(opts.models, opts.device, opts.image_model, opts.threads), opts)
        self.class_match_weight = opts.class_match_weight
        self.class_match_temperature = opts.class_match_temperature
        self.n_views = opts.n_views
        self.top_k = opts.top_k
        self.class_k = opts.class_k
        self.prompt_styles: tuple[PromptStyle, ...] = tuple(opts.prompt_styles)
        self.caption_weight = opts.caption_weight
        self.window_weight = opts.window_weight
        self.window_chars = opts.window_chars
        self.calibration_path = Path(opts.calibration_path) if opts.calibration_path is not None else None
        self.image_cache_size = opts.image_cache_size
        self.text_cache_size = opts.text_cache_size
        self._queries = _QueryMemo(8)
        #: fingerprints a precomputed entry must carry to be reused (see starter.precomputed)
        self.text_producer = text_producer(self.models)
        self.image_producer = image_producer(self.models, opts.n_views)
        # pictures are letterboxed to the model's input; zoomed views (n_views > 1) crop 70% of the side
        input_side = getattr(self.models, "image_size", None)  # a test double may not say
        self.image_side = (
            input_side
            if opts.n_views == 1 or not isinstance(input_side, int)
            else math.ceil(input_side / 0.7)
        )
        self.name = _name(self.models, opts)

    @property
    def models(self) -> StarterModels:
        """The starter models every embedding goes through (replaceable, e.g. by a counting wrapper)."""
        return self._emb.models

    @models.setter
    def models(self, models: StarterModels) -> None:
        self._emb.models = models

    def __repr__(self) -> str:
        return f"StarterScorer({self.name!r}, device={self.models.device!r})"

    def own_spec(self) -> tuple[str, dict[str, Any]] | None:
        """``"starter"`` with every setting that changes a score (a subclass has none)."""
        if type(self) is not StarterScorer:
            return None
        return "starter", {"image_model": self.models.image_model, **self.options.scoring()}

    # -- loading ------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load both models and embed the class prompts now (otherwise it happens on the first call)."""
        self._emb.classes()
        _ = self.models.image_classifier

    # -- embeddings ---------------------------------------------------------------------------------------
    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        """The scorer's image embeddings: ConSE over ``top_k`` classes and the prompt ensemble.

        Takes PIL images; returns unit-length float32 ``(len(images), 384)``.
        """
        return self._emb.image_features(images)[:, : self.models.dim]

    def _image_features(self, images: Sequence[Any]) -> np.ndarray:
        """``[ConSE (384) | sqrt of class probabilities (1000)]`` per image (scripts time it)."""
        return self._emb.image_features(images)

    def _query_features(self, query: Query) -> tuple[np.ndarray, np.ndarray]:
        """The query's unit-length embedding and the square root of its class distribution, computed once
        per request (the reranker calls :meth:`score` once per modality group with the same query)."""
        return self._queries.get_or_compute(query, lambda: self._query_features_uncached(query))

    def _query_features_uncached(self, query: Query) -> tuple[np.ndarray, np.ndarray]:
        embs, sqrt_dists = [], []
        if query.text is not None and query.text.strip():
            q = self._emb.embed_texts([query.text])[0]
            logits = (self._emb.classes() @ q) / self.class_match_temperature
            dist = np.exp(logits - logits.max())
            embs.append(q)
            sqrt_dists.append(np.sqrt(dist / dist.sum()))
        if query.image is not None:
            feats = self._emb.image_features([_as_pil(query.image)])[0]
            embs.append(feats[: self.models.dim])
            sqrt_dists.append(feats[self.models.dim :])
        vec = np.mean(embs, axis=0)
        # the mean of two distributions, then back to square roots
        sqrt_dist = np.sqrt(np.mean(np.square(sqrt_dists), axis=0))
        return (vec / max(float(np.linalg.norm(vec)), 1e-12)).astype(np.float32), sqrt_dist.astype(np.float32)

    def embed_query(self, query: Query) -> np.ndarray:
        """A unit-length 384-d embedding of the query (text, image, or the mean of both)."""
        return self._query_features(query)[0]

    # -- reuse of the first stage's work ----------------------------------------------------------------
    def _stored_embedding(self, candidate: Candidate) -> np.ndarray | None:
        signal = _signal(candidate, TEXT_EMBEDDING, self.text_producer)
        if signal is None:
            return None
        vec = np.asarray(signal.value, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vec)) if vec.shape == (self.models.dim,) else 0.0
        if not (np.isfinite(norm) and norm > 0.5):
            logger.debug("candidate %r: stored text embedding unusable (shape %s)", candidate.id, vec.shape)
            return None
        return vec / norm

    def _stored_probabilities(self, candidate: Candidate) -> np.ndarray | None:
        signal = _signal(candidate, IMAGE_CLASSES, self.image_producer)
        if signal is None:
            return None
        try:
            pairs = parse_classes(signal.value)
        except ValueError as exc:
            logger.debug("candidate %r: stored image classes unusable: %s", candidate.id, exc)
            return None
        if len(pairs) < self.class_k:
            logger.debug(
                "candidate %r: %d stored classes, the scorer reads %d; classifying again",
                candidate.id,
                len(pairs),
                self.class_k,
            )
            return None
        return expand_classes(pairs)

    def _text_scores(self, q: np.ndarray, candidates: Sequence[Candidate]) -> np.ndarray:
        texts = [c.text or "" for c in candidates]
        full = np.zeros((len(texts), self.models.dim), dtype=np.float32)
        missing = []
        for i, c in enumerate(candidates):
            stored = self._stored_embedding(c)
            if stored is None:
                missing.append(i)
            else:
                full[i] = stored
        if missing:
            full[missing] = self._emb.embed_texts([texts[i] for i in missing])
        full_scores = full @ q
        if self.window_weight == 0.0:
            return full_scores
        windows = [split_windows(t[: self.window_chars]) for t in texts]
        flat = [w for ws in windows for w in ws]
        if not flat:
            return full_scores
        sims = self._emb.embed_texts(flat) @ q
        out = full_scores.copy()
        pos = 0
        for i, ws in enumerate(windows):
            if ws:
                best = float(sims[pos : pos + len(ws)].max())
                out[i] = (1.0 - self.window_weight) * full_scores[i] + self.window_weight * max(
                    best, full_scores[i]
                )
                pos += len(ws)
        return out

    def _image_scores(
        self, q: np.ndarray, q_sqrt_dist: np.ndarray, candidates: Sequence[Candidate]
    ) -> np.ndarray:
        feats = np.zeros((len(candidates), self.models.dim + 1000), dtype=np.float32)
        stored: list[tuple[int, np.ndarray]] = []
        missing = []
        for i, c in enumerate(candidates):
            probs = self._stored_probabilities(c)
            if probs is None:
                missing.append(i)
            else:
                stored.append((i, probs))
        if stored:
            feats[[i for i, _ in stored]] = self._emb.features_from_probabilities(
                np.stack([p for _, p in stored])
            )
        if missing:
            feats[missing] = self._emb.image_features([_as_pil(candidates[i].image) for i in missing])
        dim = self.models.dim
        return np.asarray(feats[:, :dim] @ q + self.class_match_weight * (feats[:, dim:] @ q_sqrt_dist))

    def needs_pixels(self, candidate: Candidate) -> bool:
        """Pixels are read only for a picture without usable stored class probabilities."""
        return candidate.image is not None and self._stored_probabilities(candidate) is None

    # -- Scorer protocol ----------------------------------------------------------------------------------
    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        """One raw score per candidate (cosines, plus the class-match bonus for pictures), in order."""
        if not candidates:
            return []
        q, q_sqrt_dist = self._query_features(query)
        text_idx = [i for i, c in enumerate(candidates) if c.text is not None and c.text.strip()]
        image_idx = [i for i, c in enumerate(candidates) if c.image is not None]
        text_scores: dict[int, float] = {}
        if text_idx:
            values = self._text_scores(q, [candidates[i] for i in text_idx])
            text_scores = dict(zip(text_idx, values.tolist(), strict=True))
        image_scores: dict[int, float] = {}
        if image_idx:
            values = self._image_scores(q, q_sqrt_dist, [candidates[i] for i in image_idx])
            image_scores = dict(zip(image_idx, values.tolist(), strict=True))
        scores: list[float] = []
        for i, candidate in enumerate(candidates):
            t, im = text_scores.get(i), image_scores.get(i)
            if t is not None and im is not None:
                scores.append(self.caption_weight * t + (1.0 - self.caption_weight) * im)
            elif t is not None or im is not None:
                scores.append(float(t if t is not None else im))  # type: ignore[arg-type]
            else:  # pragma: no cover - Candidate guarantees text or image
                raise ValueError(f"candidate {candidate.id!r} has neither text nor image")
        return scores

    def score_many(self, calls: Sequence[tuple[Query, Sequence[Candidate]]]) -> list[list[float]]:
        """Scores of several ``(query, candidates)`` calls, each equal to that call's :meth:`score`.

        The texts (queries, passages, sentence windows) and pictures that are neither stored on the
        candidates nor cached are embedded first, all calls together, in shared length-sorted batches;
        each call is then scored from the caches. With a cache turned off (size 0), or more new items than
        it holds, that kind is embedded call by call as :meth:`score` does.
        """
        texts: list[str] = []
        images: list[Any] = []
        for query, candidates in calls:
            if not candidates:
                continue
            if query.text is not None and query.text.strip():
                texts.append(query.text)
            if query.image is not None:
                images.append(_as_pil(query.image))
            for c in candidates:
                if c.text is not None and c.text.strip():
                    if self._stored_embedding(c) is None:
                        texts.append(c.text)
                    if self.window_weight != 0.0:
                        texts.extend(split_windows(c.text[: self.window_chars]))
                if c.image is not None and self._stored_probabilities(c) is None:
                    images.append(_as_pil(c.image))
        unique_texts = list(dict.fromkeys(self._emb.bound(t) for t in texts))
        if 1 < len(unique_texts) <= self.text_cache_size:
            self._emb.embed_texts(unique_texts)
        if 1 < len(images) <= self.image_cache_size:
            self._emb.image_features(images)
        return [list(self.score(query, candidates)) for query, candidates in calls]

    # -- calibration --------------------------------------------------------------------------------------
    def default_calibrator(self) -> Calibrator | None:
        """The shipped calibration for this scorer, or ``None`` when no calibration JSON exists.

        Loaded with :func:`mm_rerank_components.calibration.load_calibrator` from ``calibration_path`` or
        ``mm_rerank_components/starter/data/starter_calibration.json``.
        """
        path = self.calibration_path
        if path is None:
            shipped = resources.files("mm_rerank_components.starter").joinpath("data", CALIBRATION_FILE)
            if not shipped.is_file():
                logger.debug(
                    "no shipped starter calibration (%s); scores stay uncalibrated", CALIBRATION_FILE
                )
                return None
            path = Path(str(shipped))
        elif not path.is_file():
            raise FileNotFoundError(f"calibration_path {str(path)!r} does not exist")
        from mm_rerank_components.calibration import load_calibrator

        calibrator = load_calibrator(path)
        fitted_for = getattr(calibrator, "scorer", None)
        if fitted_for is not None and fitted_for != self.name:
            logger.warning(
                "the calibration in %s was fitted for scorer %r, not %r; probabilities may be off "
                "(fit one for these settings with `mm-rerank eval --write-calibration`)",
                path,
                fitted_for,
                self.name,
            )
        return calibrator


class _Embeddings:
    """The scorer's embeddings of texts and pictures (class prompts, caches, batching), apart from scoring."""

    def __init__(self, models: StarterModels, opts: StarterOptions) -> None:
        self.models = models
        self.n_views = opts.n_views
        self.top_k = opts.top_k
        self.class_k = opts.class_k
        self.prompt_styles = tuple(opts.prompt_styles)
        self._lock = threading.Lock()
        self._class_matrix: np.ndarray | None = None
        self._image_cache: _VectorLRU[bytes] = _VectorLRU(opts.image_cache_size)
        self._text_cache: _VectorLRU[str] = _VectorLRU(opts.text_cache_size)
        self._text_chars: int | None = None

    def classes(self) -> np.ndarray:
        if self._class_matrix is None:
            with self._lock:
                if self._class_matrix is None:
                    stacked = sum(self.models.class_embeddings(s) for s in self.prompt_styles)
                    matrix = np.asarray(stacked, dtype=np.float32)
                    matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
                    matrix.setflags(write=False)
                    self._class_matrix = matrix
        return self._class_matrix

    def bound(self, text: str) -> str:
        """The part of a passage the text model reads (so caches never hold a megabyte key)."""
        if self._text_chars is None:
            self._text_chars = int(self.models.max_text_chars)
        return text[: self._text_chars]

    def image_features(self, images: Sequence[Any]) -> np.ndarray:
        """``[ConSE embedding (384) | sqrt of class probabilities (1000)]`` per image, cached by pixels."""
        images = list(images)
        return self._image_cache.get_or_compute(
            [_pixel_key(im) for im in images],
            lambda positions: self._image_features_uncached([images[i] for i in positions]),
            width=self.models.dim + 1000,
        )

    def _image_features_uncached(self, images: list[Any]) -> np.ndarray:
        probs = run_batched(
            images,
            lambda batch: list(self.models.image_probabilities(batch, n_views=self.n_views)),
            costs=[1.0] * len(images),  # every picture is letterboxed to the same size
            max_items=_batch_size(self.models, "image_batch_size"),
        )
        return self.features_from_probabilities(np.asarray(probs, dtype=np.float32))

    def features_from_probabilities(self, probs: np.ndarray) -> np.ndarray:
        """``[ConSE | sqrt of the top class_k probabilities, renormalised]``: the same whether computed or
        reused, and a picture still matches itself fully (Bhattacharyya coefficient 1)."""
        probs = np.clip(np.asarray(probs, dtype=np.float32), 0.0, None)
        if self.class_k < probs.shape[1]:
            drop = np.argpartition(-probs, self.class_k - 1, axis=1)[:, self.class_k :]
            probs = probs.copy()
            np.put_along_axis(probs, drop, 0.0, axis=1)
        probs = probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)
        emb = conse(probs, self.classes(), self.top_k)
        return np.concatenate([emb, np.sqrt(np.clip(probs, 0.0, None))], axis=1).astype(np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Text embeddings of the bounded texts, cached by text: passages come back query after query."""
        bounded = [self.bound(t) for t in texts]
        return self._text_cache.get_or_compute(
            bounded,
            lambda positions: np.asarray(
                run_batched(
                    [bounded[i] for i in positions],
                    lambda batch: list(self.models.embed_texts(batch)),
                    costs=[len(bounded[i]) for i in positions],
                    max_items=_batch_size(self.models, "text_batch_size"),
                ),
                dtype=np.float32,
            ),
            width=self.models.dim,
        )


K = TypeVar("K", bound=Hashable)


class _VectorLRU(Generic[K]):
    """A thread-safe LRU of float32 vectors; computes the missing ones in one batch."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[K, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(
        self, keys: Sequence[K], compute: Callable[[list[int]], np.ndarray], *, width: int
    ) -> np.ndarray:
        """Rows for ``keys``; ``compute(positions)`` returns rows for the first position of each missing
        key, in order."""
        if self.max_entries == 0:
            return np.asarray(compute(list(range(len(keys)))), dtype=np.float32)
        out = np.zeros((len(keys), width), dtype=np.float32)
        missing: dict[K, list[int]] = {}
        with self._lock:
            for i, key in enumerate(keys):
                hit = self._data.get(key)
                if hit is None:
                    missing.setdefault(key, []).append(i)
                else:
                    self._data.move_to_end(key)
                    out[i] = hit
        if missing:
            fresh = compute([positions[0] for positions in missing.values()])
            with self._lock:
                for (key, positions), vec in zip(missing.items(), fresh, strict=True):
                    out[positions] = vec
                    self._data[key] = np.array(vec, dtype=np.float32)
                    self._data.move_to_end(key)
                while len(self._data) > self.max_entries:
                    self._data.popitem(last=False)
        return out


def _models(
    models: StarterModels | None, device: str, image_model: str | None, threads: int | None
) -> StarterModels:
    if models is None:
        return StarterModels(device=device, image_model=image_model or DEFAULT_IMAGE_MODEL, threads=threads)
    if image_model is not None and image_model != getattr(models, "image_model", image_model):
        raise ValueError(
            f"image_model={image_model!r} but the given models use {models.image_model!r}; "
            "pass one or the other"
        )
    if threads is not None:
        raise ValueError(
            "threads= applies when the scorer builds its models; pass StarterModels(threads=...)"
        )
    return models


def _signal(candidate: Candidate, kind: str, producer: str) -> Precomputed | None:
    """The candidate's precomputed ``kind`` entry when this producer made it (content: the core checks)."""
    for signal in candidate.precomputed.values():
        if signal.kind == kind:
            if signal.producer == producer:
                return signal
            logger.debug(
                "candidate %r: %s made by %r, not %r; computing it",
                candidate.id,
                kind,
                signal.producer,
                producer,
            )
    return None


def _batch_size(models: Any, attr: str) -> int:
    value = getattr(models, attr, 32)
    return value if isinstance(value, int) and value > 0 else 32


class _QueryMemo:
    """The last few queries' features. Keyed by the text and the query picture *object* (kept alive
    here, so its id cannot be reused): the reranker hands every modality group the same decoded picture."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[tuple[str | None, int], tuple[Any, tuple[np.ndarray, np.ndarray]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def get_or_compute(
        self, query: Query, compute: Callable[[], tuple[np.ndarray, np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray]:
        key = (query.text, id(query.image))
        with self._lock:
            hit = self._data.get(key)
            if hit is not None and hit[0] is query.image:
                self._data.move_to_end(key)
                return hit[1]
        value = compute()
        with self._lock:
            self._data[key] = (query.image, value)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return value


def _name(models: Any, o: StarterOptions) -> str:
    """Every setting that changes a score, and the model files: a shared cache never mixes two scorers."""
    files = f"{_label(models, 'text_label')}+{_label(models, 'image_label')}"
    return (
        f"starter:{files}:v{o.n_views}:k{o.top_k}/{o.class_k}:{'+'.join(o.prompt_styles)}"
        f":m{o.class_match_weight:g}@{o.class_match_temperature:g}:c{o.caption_weight:g}"
        f":w{o.window_weight:g}/{o.window_chars}"
    )


def _label(models: Any, attr: str) -> str:
    """The models' file label; test doubles without one are named by their class."""
    value = getattr(models, attr, None)
    return value if isinstance(value, str) else type(models).__name__.lower()


def _pixel_key(image: Any) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image.mode}:{image.size}".encode())
    digest.update(image.tobytes())
    return digest.digest()


def _as_pil(image: Any) -> Any:
    """The reranker hands scorers decoded PIL images; anything else is decoded by the core's loader."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    from mm_rerank_components.media import load_image

    return load_image(image)
