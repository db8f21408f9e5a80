"""Per-candidate signals for learned fusion, computed over one query's candidate list.

Every value is computed from what a reranker sees at query time (the query, the candidate list with
each candidate's ``source`` route and ``retrieval_score``, and the scorer's raw scores), so training
and serving build exactly the same features. Missing inputs are explicit indicator features, never
silent zeros mixed with real zeros.

BM25 uses *per-query pool* statistics: the candidate list's passages and captions are indexed with
``bm25s`` and the query is scored against them. Why not corpus statistics saved in the folder: the
reranker only ever sees the pool, the user's database keeps changing after training (stale document
frequencies would shift the feature), and scoring unseen documents against stored statistics would
mean re-implementing BM25's term weighting outside the library. Pool IDF also rewards the terms that
separate candidates of *this* list, which is what a reranker needs. Its scale depends on the pool size,
so the folder records the depth it was trained at and a max-normalised copy is a feature too.

Example:
    >>> from mm_rerank_components import Candidate
    >>> spec = FeatureSpec(routes=("text", "image"))
    >>> hits = [Candidate("a", text="red fox", source="text", retrieval_score=0.8)]
    >>> x = spec.transform("red fox", hits, [0.9])
    >>> x.shape == (1, len(spec.names))
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mm_rerank_components.types import MODALITIES, Candidate, Query

__all__ = [
    "LISTWISE_TEMPERATURES",
    "OTHER_ROUTE",
    "ROUTE_FEATURES",
    "RRF_K",
    "FeatureSpec",
    "bm25_pool_scores",
    "listwise_scales",
]

#: The constant of reciprocal rank fusion, ``1 / (RRF_K + rank)``, as in the eval's ``rrf`` pipeline.
RRF_K = 60
#: The route bucket for candidates whose ``source`` is ``None`` or a route not seen in training.
OTHER_ROUTE = "<other>"
#: The per-route features, each named ``<feature>:<route>`` (see :class:`FeatureSpec`).
ROUTE_FEATURES = ("sim", "rr", "minmax", "z")
#: Softmax temperatures of the listwise features, as multiples of the modality's raw-score scale.
LISTWISE_TEMPERATURES = (0.5, 1.0)


def _query_text(query: Query | str | None) -> str | None:
    if query is None:
        return None
    text = query if isinstance(query, str) else query.text
    return text if text is not None and text.strip() else None


_BM25S: Any = None


def _bm25s() -> Any:
    global _BM25S
    if _BM25S is None:
        import logging

        from mm_rerank_components._deps import require

        module = require("bm25s", "adapt", "the BM25 feature of learned fusion")
        # bm25s sets its own logger to DEBUG on import, which floods any handler with a line per index
        # build; hand the level back to the application's logging configuration
        library_logger = logging.getLogger("bm25s")
        if library_logger.level == logging.DEBUG:
            library_logger.setLevel(logging.NOTSET)
        _BM25S = module
    return _BM25S


def bm25_pool_scores(query_text: str | None, texts: Sequence[str | None]) -> list[float | None]:
    """BM25 of ``query_text`` against each text of one candidate pool, with the pool's own statistics.

    Returns ``None`` for a candidate without text (and for every candidate when the query has no text),
    so the caller can mark it missing. Uses ``bm25s`` (English stopwords, Lucene BM25).

    Example:
        >>> s = bm25_pool_scores("red fox", ["a red fox", "an owl", None])
        >>> s[0] > s[1] == 0.0 and s[2] is None
        True
    """
    present = [i for i, t in enumerate(texts) if t is not None and t.strip()]
    out: list[float | None] = [None] * len(texts)
    if query_text is None or not present:
        return out
    bm25s = _bm25s()
    docs = bm25s.tokenize(
        [str(texts[i]) for i in present], return_ids=False, show_progress=False, stopwords="en"
    )
    query_tokens = bm25s.tokenize(query_text, return_ids=False, show_progress=False, stopwords="en")[0]
    for i in present:
        out[i] = 0.0
    if not any(docs):
        return out
    retriever = bm25s.BM25()
    retriever.index(docs, show_progress=False)
    known = [t for t in query_tokens if t in retriever.vocab_dict]
    if not known:
        return out
    scores = retriever.get_scores(known)
    for position, i in enumerate(present):
        out[i] = float(scores[position])
    return out


def _route_ranks(candidates: Sequence[Candidate], route_of: list[str]) -> dict[int, tuple[int, float, float]]:
    """For candidates with a retrieval score: ``index -> (rank in route (1-based), minmax, z)``."""
    by_route: dict[str, list[int]] = {}
    for i, c in enumerate(candidates):
        if c.retrieval_score is not None and math.isfinite(float(c.retrieval_score)):
            by_route.setdefault(route_of[i], []).append(i)
    out: dict[int, tuple[int, float, float]] = {}
    for members in by_route.values():
        scores = np.asarray([float(candidates[i].retrieval_score) for i in members])  # type: ignore[arg-type]
        order = sorted(range(len(members)), key=lambda j: -scores[j])  # stable: ties keep input order
        span = float(scores.max() - scores.min())
        std = float(scores.std())
        mean = float(scores.mean())
        for rank, j in enumerate(order, start=1):
            minmax = (scores[j] - scores.min()) / span if span > 0 else 1.0
            z = (scores[j] - mean) / std if std > 0 else 0.0
            out[members[j]] = (rank, float(minmax), float(z))
    return out


def _modality_z(raw: np.ndarray, modalities: list[str]) -> np.ndarray:
    z = np.zeros_like(raw)
    for modality in set(modalities):
        mask = np.asarray([m == modality for m in modalities])
        values = raw[mask]
        std = float(values.std())
        if std > 0:
            z[mask] = (values - values.mean()) / std
    return z


def _log_softmax_by_modality(
    raw: np.ndarray, modalities: Sequence[str], temperature: Mapping[str, float]
) -> np.ndarray:
    """Each raw score's log share of a softmax over the query's candidates of its modality."""
    out = np.zeros_like(raw)
    for modality, tau in temperature.items():
        mask = np.asarray([m == modality for m in modalities])
        if not mask.any() or not tau > 0:
            continue
        s = raw[mask] / tau
        top = float(s.max())
        out[mask] = s - (top + math.log(float(np.exp(s - top).sum())))
    return out


def listwise_scales(raw_scores: Sequence[float], modalities: Sequence[str]) -> dict[str, float]:
    """Per modality, the standard deviation of raw scores over a training pool (the listwise unit).

    Example:
        >>> listwise_scales([0.1, 0.3, 0.5, 0.9], ["text", "text", "image", "image"])
        {'image': 0.2, 'text': 0.1}
    """
    raw = np.asarray(raw_scores, dtype=float)
    mods = np.asarray(list(modalities), dtype=object)
    out = {}
    for modality in sorted(set(mods)):
        std = float(raw[mods == modality].std())
        if std > 0 and math.isfinite(std):
            out[str(modality)] = round(std, 6)
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    return None


@dataclass(frozen=True)
class FeatureSpec:
    """Which features learned fusion builds, in a fixed order (:attr:`names`).

    Args:
        routes: the first-stage routes (``Candidate.source`` values) seen in training, sorted.
        route_by_kind: which trained route held passages (``"text"``) and which held pictures
            (``"image"``). A candidate whose ``source`` is not a trained route (a collection named
            differently at serving time, or no source at all) is read as the route of its kind: one
            with an image as ``route_by_kind["image"]``, else ``route_by_kind["text"]``; only when
            that kind is unknown too does it fall into :data:`OTHER_ROUTE`. So a model trained on
            routes ``"text"``/``"image"`` serves collections ``"mm_text"``/``"mm_images"``.
        metadata_fields: numeric ``Candidate.metadata`` fields to use as features (a missing or
            non-numeric value sets ``meta_missing:<name>``).
        bm25: whether to compute the BM25 features (``bm25s`` needed).
        listwise: per modality, the raw-score scale (:func:`listwise_scales` of the training pool);
            when given, the listwise features are built. Empty (the default): none.
        modalities: the candidate modalities seen in training. A candidate of another modality is
            read as the trained modality of its kind (:meth:`modality_of`): a captioned picture
            (``"text+image"``) as a picture when only ``"image"`` was trained, so its raw score still
            counts. Empty (folders saved before this field): every modality reads its own columns.

    Features, per candidate:
        * ``raw:<modality>``: the scorer's raw score (only in its modality's column, since raw scales
          differ by modality), and ``raw_z:<modality>``: its z-score among the query's candidates of
          that modality;
        * ``modality:<m>``: one-hot modality;
        * per route ``r``: ``route:r`` (one-hot), ``sim:r`` (retrieval score), ``rr:r`` (reciprocal rank
          ``1/(60+rank)`` within the route, ranked by retrieval score), ``minmax:r`` and ``z:r`` (the
          route's scores normalised within the query);
        * ``retrieval_missing``: no retrieval score (all ``sim/rr/minmax/z`` are then 0);
        * ``bm25`` and ``bm25_rel`` (divided by the pool's best), ``query_text_missing``,
          ``doc_text_missing`` (image without caption);
        * ``meta:<name>`` and ``meta_missing:<name>`` for each metadata field;
        * with ``listwise``: ``listwise:<modality>@<t>``, the log of the candidate's share of a
          softmax over the query's candidates of its modality, at temperature ``t`` times that
          modality's scale (:data:`LISTWISE_TEMPERATURES`). A linear model cannot build this from the
          other features: it reads how crowded the top of this list is. Several near-duplicates
          scoring alike share the mass, a clear winner keeps it, so the fused score adapts per query
          where absolute score levels move from one corpus to the next.
    """

    routes: tuple[str, ...] = ()
    route_by_kind: Mapping[str, str] = field(default_factory=dict)
    metadata_fields: tuple[str, ...] = ()
    bm25: bool = True
    listwise: Mapping[str, float] = field(default_factory=dict)
    modalities: tuple[str, ...] = ()
    names: tuple[str, ...] = field(init=False)
    #: Column of each feature name in :meth:`transform`'s matrix (derived from :attr:`names`).
    index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if OTHER_ROUTE in self.routes:
            raise ValueError(f"{OTHER_ROUTE!r} is reserved; name routes after their collections")
        for kind, route in self.route_by_kind.items():
            if kind not in ("text", "image") or route not in self.routes:
                raise ValueError(
                    f"route_by_kind maps 'text'/'image' to one of the routes {list(self.routes)}, "
                    f"got {kind!r}: {route!r}"
                )
        object.__setattr__(self, "route_by_kind", dict(sorted(self.route_by_kind.items())))
        for modality, scale in self.listwise.items():
            if modality not in MODALITIES or not (isinstance(scale, (int, float)) and 0 < scale < math.inf):
                raise ValueError(
                    f"listwise maps a modality {list(MODALITIES)} to a positive raw-score scale, "
                    f"got {modality!r}: {scale!r}"
                )
        object.__setattr__(self, "listwise", {m: float(v) for m, v in sorted(self.listwise.items())})
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown:
            raise ValueError(f"modalities must be among {list(MODALITIES)}, got {unknown}")
        object.__setattr__(self, "modalities", tuple(sorted(set(self.modalities))))
        names: list[str] = []
        names += [f"raw:{m}" for m in MODALITIES]
        names += [f"raw_z:{m}" for m in MODALITIES]
        names += [f"modality:{m}" for m in MODALITIES]
        for route in (*self.routes, OTHER_ROUTE):
            names += [f"route:{route}", *(f"{f}:{route}" for f in ROUTE_FEATURES)]
        names.append("retrieval_missing")
        if self.bm25:
            names += ["bm25", "bm25_rel", "query_text_missing", "doc_text_missing"]
        for name in self.metadata_fields:
            names += [f"meta:{name}", f"meta_missing:{name}"]
        if self.listwise:
            names += [f"listwise:{m}@{t:g}" for m in MODALITIES for t in LISTWISE_TEMPERATURES]
        object.__setattr__(self, "names", tuple(names))
        object.__setattr__(self, "index", {name: j for j, name in enumerate(names)})

    def to_dict(self) -> dict[str, Any]:
        return {
            "routes": list(self.routes),
            "route_by_kind": dict(self.route_by_kind),
            "metadata_fields": list(self.metadata_fields),
            "bm25": self.bm25,
            **({"listwise": dict(self.listwise)} if self.listwise else {}),
            **({"modalities": list(self.modalities)} if self.modalities else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        return cls(
            routes=tuple(data["routes"]),
            route_by_kind=dict(data.get("route_by_kind") or {}),
            metadata_fields=tuple(data["metadata_fields"]),
            bm25=bool(data["bm25"]),
            listwise=dict(data.get("listwise") or {}),
            modalities=tuple(data.get("modalities") or ()),
        )

    def route_of(self, candidate: Candidate) -> str:
        """The trained route a candidate's features go to (see ``route_by_kind``)."""
        if candidate.source in self.routes:
            return str(candidate.source)
        kind = "image" if candidate.image is not None else "text"
        return self.route_by_kind.get(kind, OTHER_ROUTE)

    def modality_of(self, candidate: Candidate) -> str:
        """The trained modality whose columns (and calibration) a candidate uses (see ``modalities``).

        Example:
            >>> spec = FeatureSpec(routes=("image",), modalities=("image", "text"))
            >>> spec.modality_of(Candidate("a", image="a.png", text="a caption"))
            'image'
        """
        modality = candidate.modality
        if not self.modalities or modality in self.modalities:
            return modality
        kinds = ("image", "text+image") if candidate.image is not None else ("text", "text+image")
        return next((m for m in kinds if m in self.modalities), modality)

    def transform(
        self, query: Query | str | None, candidates: Sequence[Candidate], raw_scores: Sequence[float]
    ) -> np.ndarray:
        """The ``(len(candidates), len(names))`` feature matrix of one query's list.

        ``raw_scores`` must be finite (score failed candidates separately; they are never fused).
        """
        if len(raw_scores) != len(candidates):
            raise ValueError(f"got {len(candidates)} candidates but {len(raw_scores)} raw scores")
        n = len(candidates)
        x = np.zeros((n, len(self.names)))
        if n == 0:
            return x
        col = self.index
        raw = np.asarray(raw_scores, dtype=float)
        if not np.all(np.isfinite(raw)):
            raise ValueError("raw scores must be finite; leave candidates the scorer failed out of fusion")
        modalities = [self.modality_of(c) for c in candidates]
        raw_z = _modality_z(raw, list(modalities))
        route_of = [self.route_of(c) for c in candidates]
        ranks = _route_ranks(candidates, route_of)
        for i, c in enumerate(candidates):
            m = modalities[i]
            x[i, col[f"raw:{m}"]] = raw[i]
            x[i, col[f"raw_z:{m}"]] = raw_z[i]
            x[i, col[f"modality:{m}"]] = 1.0
            route = route_of[i]
            x[i, col[f"route:{route}"]] = 1.0
            if i in ranks:
                rank, minmax, z = ranks[i]
                x[i, col[f"sim:{route}"]] = float(c.retrieval_score)  # type: ignore[arg-type]
                x[i, col[f"rr:{route}"]] = 1.0 / (RRF_K + rank)
                x[i, col[f"minmax:{route}"]] = minmax
                x[i, col[f"z:{route}"]] = z
            else:
                x[i, col["retrieval_missing"]] = 1.0
        if self.bm25:
            self._bm25(x, col, query, candidates)
        self._metadata(x, col, candidates)
        if self.listwise:
            self._listwise(x, col, raw, modalities)
        return x

    def _metadata(self, x: np.ndarray, col: Mapping[str, int], candidates: Sequence[Candidate]) -> None:
        for name in self.metadata_fields:
            for i, c in enumerate(candidates):
                value = _number(c.metadata.get(name)) if c.metadata else None
                if value is None:
                    x[i, col[f"meta_missing:{name}"]] = 1.0
                else:
                    x[i, col[f"meta:{name}"]] = value

    def _listwise(
        self, x: np.ndarray, col: Mapping[str, int], raw: np.ndarray, modalities: Sequence[str]
    ) -> None:
        for t in LISTWISE_TEMPERATURES:
            temperature = {m: t * scale for m, scale in self.listwise.items()}
            shares = _log_softmax_by_modality(raw, modalities, temperature)
            for i, m in enumerate(modalities):
                if m in self.listwise:
                    x[i, col[f"listwise:{m}@{t:g}"]] = shares[i]

    @staticmethod
    def _bm25(
        x: np.ndarray, col: Mapping[str, int], query: Query | str | None, candidates: Sequence[Candidate]
    ) -> None:
        text = _query_text(query)
        if text is None:
            x[:, col["query_text_missing"]] = 1.0
        scores = bm25_pool_scores(text, [c.text for c in candidates])
        best = max((s for s in scores if s is not None), default=0.0)
        for i, (c, s) in enumerate(zip(candidates, scores, strict=True)):
            if not (c.text and c.text.strip()):
                x[i, col["doc_text_missing"]] = 1.0
            if s is not None:
                x[i, col["bm25"]] = s
                x[i, col["bm25_rel"]] = s / best if best > 0 else 0.0
