"""The pipelines compared by ``mm-rerank eval``, all fed by the same two first-stage routes.

* ``text-only`` / ``image-only``: one route's hits, as that route ranks them.
* ``raw-merge``: the union of both routes sorted by raw similarity (what LlamaIndex's multimodal
  retriever does when it concatenates hits from two embedding spaces).
* ``rrf``: reciprocal rank fusion, ``sum 1 / (60 + rank)`` (LangChain's ``EnsembleRetriever``).
* ``minmax`` / ``zscore``: each route's list normalised on its own, then merged.
* ``rerank:<scorer>[+<calibration>]``: the union rescored by a scorer through
  :class:`~mm_rerank_components.MultimodalReranker` and calibrated onto one probability scale.

The ceiling of all of them is the union's recall (:func:`union_recall`): a relevant document that
neither route returned cannot be ranked in.

A *run* is ``{query_id: {doc_id: score}}`` where higher scores rank first and no two scores of one
query tie (ranks are turned into strictly decreasing scores), so every metric library reads the same
order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_rerank_components.calibration import Calibrator, SigmoidCalibrator, fit_calibrator
from mm_rerank_components.eval.embeddings import Embedder, cached_embeddings
from mm_rerank_components.eval.tasks import EvalTask
from mm_rerank_components.scorers.first_stage import FirstStageScorer
from mm_rerank_components.types import Candidate, Modality, Query

logger = logging.getLogger(__name__)

__all__ = [
    "FUSION_PIPELINES",
    "RRF_K",
    "FirstStage",
    "FirstStageScorer",
    "ScoredUnion",
    "calibrated_run",
    "compute_first_stage",
    "fit_on_dev",
    "fusion_run",
    "ranking_to_run",
    "score_union",
    "union_recall",
]

Run = dict[str, dict[str, float]]
RRF_K = 60
FUSION_PIPELINES = ("text-only", "image-only", "raw-merge", "rrf", "minmax", "zscore")


@dataclass
class FirstStage:
    """Both routes' similarities for every query: the numpy stand-in for two Chroma collections.

    Attributes:
        query_ids: rows of the score matrices.
        text_ids / image_ids: columns (text-only documents / documents with an image).
        text_scores / image_scores: cosine similarities, ``(queries, documents)``.
    """

    query_ids: list[str]
    text_ids: list[str]
    image_ids: list[str]
    text_scores: np.ndarray
    image_scores: np.ndarray
    #: The documents' unit vectors (rows as ``text_ids`` / ``image_ids``), kept for the label-free row.
    text_vectors: np.ndarray | None = field(default=None, repr=False)
    image_vectors: np.ndarray | None = field(default=None, repr=False)
    _row: dict[str, int] = field(init=False, repr=False)

    def vectors(self) -> dict[str, np.ndarray]:
        """``{doc id: unit vector}`` of every document (empty when the vectors were not kept)."""
        out: dict[str, np.ndarray] = {}
        for ids, matrix in ((self.text_ids, self.text_vectors), (self.image_ids, self.image_vectors)):
            if matrix is not None:
                out.update(zip(ids, matrix, strict=True))
        return out

    def hits(self, query_id: str, route: str, k: int) -> list[tuple[str, float]]:
        """The top ``k`` ``(doc_id, similarity)`` of one route for one query."""
        row = self._row[query_id]
        if route == "text":
            ids, scores = self.text_ids, self.text_scores[row]
        elif route == "image":
            ids, scores = self.image_ids, self.image_scores[row]
        else:
            raise ValueError(f"route must be 'text' or 'image', got {route!r}")
        if not ids or k <= 0:
            return []
        order = np.argsort(-scores, kind="stable")[:k]
        return [(ids[i], float(scores[i])) for i in order]

    def __post_init__(self) -> None:
        self._row = {q: i for i, q in enumerate(self.query_ids)}

    def union(self, query_id: str, k_text: int, k_image: int) -> list[tuple[str, str, float]]:
        """``(doc_id, route, similarity)`` of both routes' hits, merged by the product's own merge.

        :func:`mm_rerank_components.retrievers._hits.merge` is what
        ``ChromaMultiCollectionRetriever`` returns: the routes interleaved rank by rank (text route
        first at each rank), one entry per record (collection and id), its best hit kept. Each route
        here is its own collection, as in the product. The stand-in candidates carry only what the
        merge reads (id, route, score); their text is the id because a Candidate needs content.
        """
        from mm_rerank_components.retrievers._hits import Hit, merge

        routes = [
            [
                Hit(Candidate(doc_id, text=doc_id, source=route, retrieval_score=score), route, rank)
                for rank, (doc_id, score) in enumerate(self.hits(query_id, route, k))
            ]
            for route, k in (("text", k_text), ("image", k_image))
        ]
        return [(c.id, str(c.source), float(c.retrieval_score or 0.0)) for c in merge(routes)]


def compute_first_stage(task: EvalTask, embedder: Embedder, cache_dir: Path | None = None) -> FirstStage:
    """Embed the task's queries, text documents and images (cached) and compute both routes' cosines.

    A document with an image goes to the image route (embedded from its pixels, like the product's
    image collection); a text-only document goes to the text route.
    """
    text_ids = [d for d, c in task.docs.items() if c.image is None]
    image_ids = [d for d, c in task.docs.items() if c.image is not None]
    query_ids = list(task.queries)
    q = cached_embeddings(embedder, "text", [task.queries[i] for i in query_ids], cache_dir)
    dim = q.shape[1]
    t = (
        cached_embeddings(embedder, "text", [task.docs[d].text or "" for d in text_ids], cache_dir)
        if text_ids
        else np.zeros((0, dim), np.float32)
    )
    images = [task.docs[d].image for d in image_ids]
    if any(not isinstance(im, str) for im in images):
        raise TypeError("the evaluation's first stage needs image documents given as file paths")
    v = (
        cached_embeddings(embedder, "image", images, cache_dir)
        if image_ids
        else np.zeros((0, dim), np.float32)
    )
    return FirstStage(query_ids, text_ids, image_ids, q @ t.T, q @ v.T, text_vectors=t, image_vectors=v)


def ranking_to_run(ranking: Mapping[str, Sequence[str]]) -> Run:
    """``{qid: [doc ids best first]}`` -> ``{qid: {doc_id: strictly decreasing score}}``.

    Example:
        >>> ranking_to_run({"q": ["b", "a"]})
        {'q': {'b': 2.0, 'a': 1.0}}
    """
    return {qid: {d: float(len(docs) - i) for i, d in enumerate(docs)} for qid, docs in ranking.items()}


def _order(items: Sequence[tuple[str, float]]) -> list[str]:
    # a stable sort: equal scores keep their input order
    return [d for d, _ in sorted(items, key=lambda x: -x[1])]


def _normalise(scores: list[float], how: str) -> list[float]:
    arr = np.asarray(scores, dtype=float)
    if arr.size == 0:
        return []
    if how == "minmax":
        span = arr.max() - arr.min()
        return list((arr - arr.min()) / span) if span > 0 else [1.0] * arr.size
    std = arr.std()
    return list((arr - arr.mean()) / std) if std > 0 else [0.0] * arr.size


def fusion_run(
    first: FirstStage, pipeline: str, query_ids: Sequence[str], k_text: int = 16, k_image: int = 16
) -> Run:
    """A run of one label-free fusion pipeline (see :data:`FUSION_PIPELINES`).

    ``text-only`` and ``image-only`` return the route's top ``k_text + k_image``, so single routes are
    as deep as the merged lists.
    """
    if pipeline not in FUSION_PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; choose one of {', '.join(FUSION_PIPELINES)}")
    ranking: dict[str, list[str]] = {}
    depth = k_text + k_image
    for qid in query_ids:
        if pipeline in ("text-only", "image-only"):
            route = "text" if pipeline == "text-only" else "image"
            ranking[qid] = [d for d, _ in first.hits(qid, route, depth)]
            continue
        text = first.hits(qid, "text", k_text)
        image = first.hits(qid, "image", k_image)
        if pipeline == "raw-merge":
            merged = text + image
        elif pipeline == "rrf":
            fused: dict[str, float] = {}
            for hits in (text, image):
                for rank, (d, _) in enumerate(hits, start=1):
                    fused[d] = fused.get(d, 0.0) + 1.0 / (RRF_K + rank)
            merged = list(fused.items())
        else:
            merged = [
                (d, s)
                for hits in (text, image)
                for (d, _), s in zip(hits, _normalise([s for _, s in hits], pipeline), strict=True)
            ]
        ranking[qid] = _order(merged)
    return ranking_to_run(ranking)


@dataclass
class ScoredUnion:
    """One scorer's raw scores on every query's first-stage union (scored once, calibrated many ways).

    ``items[qid]`` is a list of ``(doc_id, modality, raw_score)`` in union order.
    """

    scorer: str
    items: dict[str, list[tuple[str, Modality, float]]]

    def pairs(
        self, task: EvalTask, query_ids: Sequence[str]
    ) -> tuple[list[float], list[Modality], list[int], list[str]]:
        """Flattened ``(raw_scores, modalities, labels, query_ids)`` for fitting or measuring."""
        raw: list[float] = []
        mods: list[Modality] = []
        labels: list[int] = []
        qids: list[str] = []
        for qid in query_ids:
            for doc_id, modality, score in self.items[qid]:
                raw.append(score)
                mods.append(modality)
                labels.append(1 if task.qrels[qid].get(doc_id, 0) > 0 else 0)
                qids.append(qid)
        return raw, mods, labels, qids

    def restrict(self, first: FirstStage, k_text: int, k_image: int) -> ScoredUnion:
        """The same scores on shallower unions (``k_text``/``k_image`` no deeper than were scored).

        A pair's raw score does not depend on the other candidates, so one scoring at the deepest
        depth serves every shallower one.
        """
        items: dict[str, list[tuple[str, Modality, float]]] = {}
        for qid, scored in self.items.items():
            by_doc = {d: (d, m, s) for d, m, s in scored}
            wanted = [d for d, _, _ in first.union(qid, k_text, k_image)]
            missing = [d for d in wanted if d not in by_doc]
            if missing:
                raise ValueError(
                    f"query {qid!r}: {len(missing)} candidates at k_text={k_text}, k_image={k_image} were "
                    "never scored; score the union at least that deep"
                )
            items[qid] = [by_doc[d] for d in wanted]
        return ScoredUnion(self.scorer, items)


def score_union(
    task: EvalTask,
    first: FirstStage,
    scorer: Any,
    query_ids: Sequence[str],
    k_text: int = 16,
    k_image: int = 16,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    cache_dir: Path | None = None,
) -> ScoredUnion:
    """Raw scores of ``scorer`` on each query's union, through the product's :class:`MultimodalReranker`.

    The reranker does what it does in production (validation, image decoding, batching by modality);
    the raw scores are kept so that several calibrations can be compared without rescoring. With
    ``cache_dir`` they are also saved, keyed by the scorer's ``name`` and every query and candidate,
    so a second run with the same scorer settings and data reads them back instead of rescoring.
    """
    from mm_rerank_components.reranker import MultimodalReranker

    name = str(getattr(scorer, "name", type(scorer).__name__))
    unions = {qid: first.union(qid, k_text, k_image) for qid in query_ids}
    cache_path = None
    if cache_dir is not None:
        # keyed by each query's set of candidates, not their order: a pair's raw score does not
        # depend on where the merge put it, so a change of merge order reuses the scores
        digest = hashlib.sha256(name.encode())
        for qid, union in unions.items():
            digest.update(f"\x00{qid}\x00{task.queries[qid]}".encode())
            for doc_id in sorted(d for d, _, _ in union):
                digest.update(f"\x01{doc_id}\x01{_doc_fingerprint(task.docs[doc_id])}".encode())
        cache_path = cache_dir / f"union-{task.name}-{digest.hexdigest()[:24]}.json"
        if cache_path.exists():
            payload = json.loads(cache_path.read_text(encoding="utf-8"))
            cached = {q: {d: (d, m, float(s)) for d, m, s in v} for q, v in payload.items()}
            return ScoredUnion(name, {q: [cached[q][d] for d, _, _ in unions[q]] for q in query_ids})
    items: dict[str, list[tuple[str, Modality, float]]] = {}
    if isinstance(scorer, FirstStageScorer):
        # its score is the retrieval score: nothing to decode or batch
        items = {qid: [(d, task.docs[d].modality, s) for d, _, s in unions[qid]] for qid in query_ids}
    else:
        reranker = MultimodalReranker(scorer, calibrator=SigmoidCalibrator(), batch_size=batch_size)
        decoded: dict[str, Any] = {}  # each picture decoded once, not once per query it comes back for
        for n, qid in enumerate(query_ids, start=1):
            candidates = [_with_route(task.docs[d], route, s, decoded) for d, route, s in unions[qid]]
            ranked = reranker.rerank(Query(text=task.queries[qid]), candidates)
            by_index = {r.index: r for r in ranked}
            items[qid] = [(c.id, c.modality, by_index[i].raw_score) for i, c in enumerate(candidates)]
            if progress is not None:
                progress(n, len(query_ids))
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(items), encoding="utf-8")
    return ScoredUnion(name, items)


def _doc_fingerprint(candidate: Candidate) -> str:
    image = candidate.image
    if isinstance(image, str) and os.path.exists(image):
        stat = os.stat(image)
        image_key = f"{image}:{stat.st_size}:{stat.st_mtime_ns}"
    else:
        image_key = repr(type(image)) if image is not None else ""
    return f"{candidate.text or ''}|{image_key}"


def _with_route(
    candidate: Candidate, route: str, score: float, decoded: dict[str, Any] | None = None
) -> Candidate:
    from dataclasses import replace

    if decoded is None or candidate.image is None:
        return replace(candidate, source=route, retrieval_score=score)
    if candidate.id not in decoded:
        from mm_rerank_components.media import load_image

        decoded[candidate.id] = load_image(candidate.image)
    return replace(candidate, source=route, retrieval_score=score, image=decoded[candidate.id])


def calibrated_run(scored: ScoredUnion, calibrator: Calibrator | None, query_ids: Sequence[str]) -> Run:
    """Rank each query's union by ``calibrator.calibrate(raw, modalities)`` (raw scores if ``None``)."""
    ranking: dict[str, list[str]] = {}
    for qid in query_ids:
        items = scored.items[qid]
        raw = [s for _, _, s in items]
        probs = calibrator.calibrate(raw, [m for _, m, _ in items]) if calibrator is not None else raw
        ranking[qid] = _order([(d, p) for (d, _, _), p in zip(items, probs, strict=True)])
    return ranking_to_run(ranking)


def fit_on_dev(task: EvalTask, scored: ScoredUnion, method: str, dev_ids: Sequence[str]) -> Calibrator:
    """Fit a calibrator of ``method`` on the dev queries' labelled union pairs only."""
    raw, mods, labels, qids = scored.pairs(task, dev_ids)
    return fit_calibrator(raw, mods, labels, method=method, query_ids=qids, scorer=scored.scorer)


def union_recall(
    first: FirstStage, task: EvalTask, query_ids: Sequence[str], k_text: int = 16, k_image: int = 16
) -> dict[str, float]:
    """Per query, the share of its relevant documents that either route returns: the pool's recall.

    No reranker over that pool can do better (a document neither route returned cannot be ranked
    in), so this is the true ceiling of every merge and rerank at this depth.

    Example:
        >>> union_recall(first, task, ["q1"], 16, 16)  # doctest: +SKIP
        {'q1': 1.0}
    """
    out: dict[str, float] = {}
    for qid in query_ids:
        relevant = {d for d, g in task.qrels[qid].items() if g > 0}
        pool = {d for d, _, _ in first.union(qid, k_text, k_image)}
        out[qid] = len(relevant & pool) / len(relevant)
    return out
