"""The product default: a label-free reranker fitted on several real sources, never on yours.

:func:`default_reranker` is what the CLI, the quickstart and the web app use when the user has no
labels. It is learned fusion (:mod:`mm_rerank_components.adapt`) over the starter scorer's raw score
and the first-stage routes' signals (route, similarity, rank, reciprocal rank, per-query min-max and
z-scores of both the route similarity and the raw score, modality, listwise shares), fitted on every
query of the built-in training tasks (:data:`~mm_rerank_components.eval.sources.DEFAULT_SOURCES`: Tux Paint,
GCompris, Wesnoth, Widelands and FreeOrion, five unrelated sources) and shipped as
``starter/data/default_fusion.json``; refit it with ``scripts/fit_default.py``. The evaluation
measures it leave-one-task-out (fitted on four sources, tested on the fifth).

Why five sources: every source added made the held-out figures better, most of all where the model
was wrong before. With three sources it put 67% pictures in Tux Paint's top 10 (50% of the relevant
documents are pictures) and was over-confident there (+91% among pairs predicted >= 0.1); with five,
57% and +10%. A source whose picture route is nearly blind (FreeOrion's science-fiction art) taught
it not to trust a route just because it is there.

Why no BM25 (``FIT_SETTINGS["bm25"] = False``; ``mm-rerank adapt`` keeps it, fitted in domain): the
pool-statistics BM25 of a query against another corpus's passages does not transfer (Tux Paint's
captions are French, the queries English). Measured leave-one-task-out, dropping it lifted GCompris
nDCG@10 from significantly below min-max fusion to a tie, and the default no longer needs ``bm25s``.

Why not a per-modality calibration of the raw score alone (the earlier default): raw similarity
levels move from one corpus to the next, so a map fitted on one corpus over-trusts one modality on
another (measured in ``docs/calibration.md``). Why not the per-query normalised signals alone
(:func:`relative_inputs`): measured leave-one-task-out over three sources, that variant ranked worse
(significantly below z-score fusion on nDCG@10, pooled) than the model that sees both the absolute
and the normalised signals.

Two label-free priors (every variant measured leave-one-task-out in docs/benchmarks.md):

* **Listwise features** (``FIT_SETTINGS["listwise"]``): each raw score's log share of a softmax over
  its query's candidates of the same modality. They read how crowded the top of a list is (several
  near-duplicate stamps alike vs one clear winner), which absolute score levels cannot, and they
  carry the largest weights of the shipped model.
* **A modality floor** (``FIT_SETTINGS["modality_floor"] = 2``): each query's top 10 keeps at least
  two candidates of each modality when the list has them, by the smallest log-odds lift of the short
  modality (:func:`~mm_rerank_components.adapt.fusion.apply_modality_floor`). A guard against the
  failure the old default showed on unseen data (one modality crowding the other out of the top 10).
  On the built-in tasks it rarely acts (a floor of 3 cost GCompris R@10, so 2 it is);
  ``default_reranker(modality_floor=0)`` turns it off.

A captioned picture (a ``text+image`` candidate; none of the training tasks has one) is read as a
picture: its raw score, listwise group and calibration are the pictures' (measured on Tux Paint with
captioned pictures: R@10 0.429 against 0.213 when it was an unseen modality, see docs/benchmarks.md).

Candidates should carry ``source`` (the route: ``"text"`` or ``"image"`` as the retriever names its
collections) and ``retrieval_score`` (the route's similarity); without them a candidate's route
features are the route's training means (``FusionModel.impute``) and the scorer's own signals decide
(measured level with the scorer's calibration on four tasks, below it on FreeOrion).

Example:
    >>> from mm_rerank_components.defaults import default_reranker
    >>> reranker = default_reranker()  # doctest: +SKIP
    >>> reranker.rerank("a red fox", candidates, top_n=10)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from mm_rerank_components.adapt.fusion import (
    FusionModel,
    FusionOptions,
    LearnedFusionReranker,
    check_modality_floor,
)
from mm_rerank_components.starter.data_files import DEFAULT_FUSION_FILE, data_path
from mm_rerank_components.types import Candidate, Query

logger = logging.getLogger(__name__)

__all__ = [
    "CAPTIONED_NOTE",
    "DEFAULT_DEPTH",
    "DEFAULT_FILE",
    "FIT_OPTIONS",
    "FIT_SETTINGS",
    "FUSION_FIELDS",
    "PICTURE_QUERY_NOTE",
    "DefaultFusionModel",
    "DefaultReranker",
    "RelativeFusionModel",
    "default_model_path",
    "default_reranker",
    "fit_default_model",
    "load_default_model",
    "relative_inputs",
    "scores_note",
]

#: said under the answer to a query that holds a picture (measured in docs/calibration.md, "Picture
#: queries"): every calibration this package ships was fitted on text queries
PICTURE_QUERY_NOTE = (
    "note: this query holds a picture. Its scores rank well (a photo that is in the database comes first "
    "about 99% of the time) but run high as probabilities: other pictures scored 0.3-0.6 for a picture "
    "query were rarely relevant when measured. Read them as an order, not against a threshold; see "
    "docs/calibration.md, 'Picture queries'."
)
#: said under an answer that holds a captioned picture when no map of the reranker was fitted on
#: captioned pictures (measured in docs/calibration.md, "Same score, same meaning?")
CAPTIONED_NOTE = (
    "note: this answer holds pictures that carry a caption, and this reranker was not calibrated on "
    "captioned pictures. Measured off its training sources, their scores run low (captioned pictures "
    "scored 0.2-0.4 were relevant 72% of the time, passages at the same score 23%); with --read-captions "
    "a caption that nearly matches is trusted too much. Rank by them rather than cut at a threshold, or "
    "calibrate them to your corpus: `mm-rerank adapt --db DB --out FOLDER` (no labels) or with `--data` "
    "(a few labelled queries), then `--reranker FOLDER`. See docs/calibration.md, 'Same score, same "
    "meaning?'."
)

DEFAULT_FILE = DEFAULT_FUSION_FILE
#: ``fit_fusion`` options of the shipped default (the eval's leave-one-task-out refits use the same).
#: No BM25: pool-statistics BM25 of English queries against another corpus's passages (French captions,
#: say) does not transfer; measured leave-one-task-out it cost GCompris nDCG@10 (docs/benchmarks.md).
FIT_OPTIONS = FusionOptions(
    seed=0,
    l2=0.01,
    pointwise=0.2,
    bm25=False,
    listwise=True,
    modality_floor=2,
    # query-fold Platt maps: leave-one-source-out maps ("group") fixed GCompris pictures but broke Tux
    # Paint and FreeOrion pictures (5 tasks leave-one-task-out, docs/calibration.md)
    calibrate_by="query",
    route_free=True,
)
#: :data:`FIT_OPTIONS` as a plain dict (what older scripts read).
FIT_SETTINGS: dict[str, Any] = FIT_OPTIONS.to_dict()
#: The ``(k_text, k_image)`` the shipped default was fitted at (its calibration assumes that pool).
DEFAULT_DEPTH = (16, 16)
#: Label-free fusion scores handed to the model as metadata features (min-max and RRF within route).
FUSION_FIELDS = ("mm_rerank:minmax", "mm_rerank:rrf")
_RRF_K = 60


def _zscores(values: Sequence[float], groups: Sequence[Any]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    out = np.zeros_like(x)
    keys = np.asarray(list(groups), dtype=object)
    for group in dict.fromkeys(groups):
        mask = keys == group
        std = float(x[mask].std())
        if std > 0:
            out[mask] = (x[mask] - x[mask].mean()) / std
    return out


def _route_fusion(candidates: Sequence[Candidate]) -> tuple[list[float], list[float]]:
    """Per candidate, its route's min-max score and ``60 / (60 + rank)`` (0 without a retrieval score)."""
    by_route: dict[Any, list[int]] = {}
    for i, c in enumerate(candidates):
        if c.retrieval_score is not None and np.isfinite(float(c.retrieval_score)):
            by_route.setdefault(c.source, []).append(i)
    minmax = [0.0] * len(candidates)
    rrf = [0.0] * len(candidates)
    for members in by_route.values():
        scores = np.asarray([float(candidates[i].retrieval_score) for i in members])  # type: ignore[arg-type]
        span = float(scores.max() - scores.min())
        for rank, j in enumerate(np.argsort(-scores, kind="stable"), start=1):
            i = members[int(j)]
            rrf[i] = _RRF_K / (_RRF_K + rank)
            minmax[i] = float((scores[j] - scores.min()) / span) if span > 0 else 1.0
    return minmax, rrf


def relative_inputs(
    candidates: Sequence[Candidate], raw_scores: Sequence[float]
) -> tuple[list[Candidate], list[float]]:
    """The default's view of one list: every score relative to the rest of its own list.

    Raw scores become z-scores within their modality, retrieval scores z-scores within their route,
    and each candidate gains its route's min-max and RRF fusion scores as metadata
    (:data:`FUSION_FIELDS`). Absolute similarities never reach the model: their scale moves from
    one corpus to the next, which is what made the calibrated raw score drift out of domain.

    Example:
        >>> from mm_rerank_components.types import Candidate
        >>> hits = [Candidate("a", text="x", source="text", retrieval_score=0.9),
        ...         Candidate("b", text="y", source="text", retrieval_score=0.5)]
        >>> cands, raw = relative_inputs(hits, [0.7, 0.3])
        >>> [round(v, 6) for v in raw], cands[0].metadata["mm_rerank:minmax"]
        ([1.0, -1.0], 1.0)
    """
    if len(candidates) != len(raw_scores):
        raise ValueError(f"got {len(candidates)} candidates but {len(raw_scores)} raw scores")
    raw = _zscores(raw_scores, [c.modality for c in candidates])
    minmax, rrf = _route_fusion(candidates)
    have = [(i, float(c.retrieval_score)) for i, c in enumerate(candidates) if c.retrieval_score is not None]
    sims = _zscores([s for _, s in have], [candidates[i].source for i, _ in have])
    z_of = dict(zip([i for i, _ in have], sims.tolist(), strict=True))
    out = []
    for i, c in enumerate(candidates):
        metadata = {**(c.metadata or {}), FUSION_FIELDS[0]: minmax[i], FUSION_FIELDS[1]: rrf[i]}
        out.append(replace(c, retrieval_score=z_of.get(i), metadata=metadata))
    return out, [float(v) for v in raw]


class RelativeFusionModel(FusionModel):
    """A learned-fusion model that reads :func:`relative_inputs` (the shipped default's kind).

    Same weights, calibration and JSON as :class:`~mm_rerank_components.adapt.FusionModel`; only its
    inputs are first made relative to their own list, so it serves any
    :class:`~mm_rerank_components.adapt.LearnedFusionReranker` as is.

    Example:
        >>> model = load_default_model()  # doctest: +SKIP
        >>> model.predict("red fox", hits, raw_scores)  # doctest: +SKIP
    """

    def fused_scores(
        self, query: Query | str | None, candidates: Sequence[Candidate], raw_scores: Sequence[float]
    ) -> list[float]:
        if not candidates:
            return []
        relative, raw = relative_inputs(candidates, raw_scores)
        return super().fused_scores(query, relative, raw)


class DefaultFusionModel(FusionModel):
    """The shipped default's model: routes named by the retriever are mapped onto the trained ones.

    The default was trained with the routes ``"text"`` and ``"image"``; a retriever names them after
    its collections (``ChromaMultiCollectionRetriever`` sets ``source`` to the collection name). A
    candidate whose ``source`` is not a trained route but which has a retrieval score came from the
    image collection when it has a picture and from the text collection otherwise, which is exactly
    how the two-collection first stage splits documents; without this every route signal would fall
    into the "unknown route" bucket the model never saw.

    Example:
        >>> from mm_rerank_components.types import Candidate
        >>> model = load_default_model()
        >>> hit = Candidate("a", text="fox", source="mm_text", retrieval_score=0.5)
        >>> model.canonical_routes([hit])[0].source
        'text'
    """

    def fused_scores(
        self, query: Query | str | None, candidates: Sequence[Candidate], raw_scores: Sequence[float]
    ) -> list[float]:
        return super().fused_scores(query, self.canonical_routes(candidates), raw_scores)

    def canonical_routes(self, candidates: Sequence[Candidate]) -> list[Candidate]:
        """Candidates whose unknown ``source`` is replaced by ``"image"`` or ``"text"`` (copies)."""
        known = set(self.spec.routes)
        out = []
        for c in candidates:
            if c.source not in known and c.retrieval_score is not None:
                route = "image" if c.image is not None else "text"
                c = replace(c, source=route) if route in known else c
            out.append(c)
        return out


def fit_default_model(lists: Sequence[Any], scorer: str | None = None) -> FusionModel:
    """Fit the default's model on labelled lists (:class:`~mm_rerank_components.adapt.LabelledList`).

    Example:
        >>> model = fit_default_model(lists, scorer=StarterScorer().name)  # doctest: +SKIP
    """
    from mm_rerank_components.adapt import fit_fusion

    return fit_fusion(lists, FIT_OPTIONS, scorer=scorer)


def default_model_path() -> Path:
    """Where the shipped default model lives (inside the installed package).

    Example:
        >>> default_model_path().name
        'default_fusion.json'
    """
    return data_path(DEFAULT_FILE)


def load_default_model(path: str | Path | None = None) -> DefaultFusionModel:
    """The shipped default model (or the one at ``path``), a :class:`~mm_rerank_components.adapt.FusionModel`.

    Example:
        >>> "trained_on" in load_default_model().training
        True
    """
    source = Path(path) if path is not None else default_model_path()
    if not source.is_file():
        raise FileNotFoundError(
            f"default fusion model {source} does not exist; refit it with python scripts/fit_default.py"
        )
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source} is not valid JSON: {exc}") from exc
    return cast(DefaultFusionModel, DefaultFusionModel.from_dict(data, source=str(source)))


def default_reranker(
    scorer: Any = None,
    *,
    model_path: str | Path | None = None,
    modality_floor: int | None = None,
    read_captions: bool = False,
    **kwargs: Any,
) -> Any:
    """The label-free product default: the shipped learned fusion over ``scorer`` (default: starter).

    Args:
        scorer: the scorer whose raw scores the model was fitted on; default a new ``StarterScorer()``.
            Another scorer works but was not what the model learned from: a warning says so.
        model_path: a default-model JSON other than the shipped one.
        modality_floor: places of each query's top 10 each modality keeps (0 turns the floor off);
            ``None`` keeps the model's own (2 for the shipped one).
        read_captions: also read each captioned picture's caption as a passage (off by default; see
            :class:`~mm_rerank_components.adapt.LearnedFusionReranker` and ``docs/calibration.md``).
        **kwargs: passed to :class:`~mm_rerank_components.MultimodalReranker` (``batch_size``,
            ``on_error``, ...), which does the scoring.

    Returns a :class:`~mm_rerank_components.adapt.LearnedFusionReranker` (a ``Reranker``): ``score``
    is a calibrated probability of relevance, ``raw_score`` the scorer's own score. Text queries (what
    the shipped model was fitted on) get the learned fusion; queries with a picture get the scorer's
    own per-modality calibration, which measured much better on them (see ``DefaultReranker``).

    Example:
        >>> from mm_rerank_components.defaults import default_reranker
        >>> reranker = default_reranker()  # doctest: +SKIP
        >>> [r.candidate.id for r in reranker.rerank("red fox", hits, top_n=3)]  # doctest: +SKIP
        ['img:fox', 'txt:fox', 'img:dog']
    """
    from mm_rerank_components.reranker import MultimodalReranker

    if scorer is None:
        from mm_rerank_components.scorers.starter import StarterScorer

        scorer = StarterScorer()
    model = load_default_model(model_path)
    if modality_floor is not None:
        model.modality_floor = check_modality_floor(modality_floor)
    fitted_for = model.calibrator.scorer
    name = getattr(scorer, "name", type(scorer).__name__)
    if fitted_for is not None and fitted_for != name:
        logger.warning(
            "the default fusion model was fitted on %r scores, not %r; its weights and probabilities may "
            "be off (adapt one to your scorer with mm-rerank adapt)",
            fitted_for,
            name,
        )
    base = MultimodalReranker(scorer, **kwargs)
    return DefaultReranker(base, model, read_captions=read_captions, picture_queries=base)


class DefaultReranker(LearnedFusionReranker):
    """The shipped fusion for text queries, the scorer's own calibration for queries with a picture.

    The default fusion model was fitted on the built-in tasks' text queries only, so
    :func:`default_reranker` gives it ``picture_queries=`` its base reranker (the same scorer, calibrated
    per modality). Measured (``scripts/picture_query_routing_check.py``: every built-in picture asked as
    the query with its own record among the candidates, the fusion refitted without the task): the
    fusion ranks the photo's own record first 0.021 [0.011, 0.031] less often pooled (Wesnoth: 79% vs
    100%), though it finds the other relevant documents a little more often
    (``scripts/picture_queries_check.py``; ``docs/calibration.md``, "Picture queries").

    Example:
        >>> reranker = default_reranker()  # doctest: +SKIP
        >>> reranker.rerank(Query(image="photo.jpg"), hits)  # doctest: +SKIP
    """


def scores_note(reranker: Any, query: Query, modalities: Iterable[str]) -> str | None:
    """Why the scores of an answer are not one calibrated scale, as a note for its reader, or ``None``.

    ``modalities``: those of the answer's candidates. A query holding a picture gets
    :data:`PICTURE_QUERY_NOTE`; an answer holding a captioned picture (``text+image``) gets
    :data:`CAPTIONED_NOTE` unless the reranker says it ``calibrates_captions`` (an adapted reranker
    fitted on captioned pictures). The CLI, the shell, the quickstart, the web chat and ``serve``
    (``scores_calibrated``) all decide with this.

    Example:
        >>> scores_note(None, Query("red fox"), ["text", "image"]) is None
        True
        >>> scores_note(None, Query("red fox"), ["text+image"]) == CAPTIONED_NOTE
        True
    """
    if query.image is not None:
        return PICTURE_QUERY_NOTE
    if "text+image" in modalities and not getattr(reranker, "calibrates_captions", False):
        return CAPTIONED_NOTE
    return None
