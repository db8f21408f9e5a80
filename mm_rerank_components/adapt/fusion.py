"""Learned fusion: one calibrated relevance probability from the scorer's raw score and first-stage signals.

A linear model over :class:`~mm_rerank_components.adapt.features.FeatureSpec` features, trained on
labelled candidate lists with a pairwise logistic (RankNet) loss over every (more relevant, less
relevant) pair of a query -- the hard negatives mined from both routes -- plus a small pointwise
logistic term that anchors the intercept, with an L2 penalty. Training is full-batch Newton's method
in numpy: convex, no random initialisation, identical weights run after run, a second or two on a
CPU. The seed only decides which pairs are kept when a query has more than ``max_pairs_per_query``
and which queries share a calibration fold.

The fused score is then mapped to P(relevant) per modality with Platt scaling
(:class:`~mm_rerank_components.calibration.PlattCalibrator`), fitted on *out-of-fold* fused scores
(each query scored by a model that did not train on it), so outputs stay on the package's unified
probability scale and are not over-confident on the training queries.

Example:
    >>> from mm_rerank_components import Candidate
    >>> lists = [
    ...     LabelledList(f"q{i}", [Candidate(f"p{i}", text="x", source="text", retrieval_score=0.9),
    ...                            Candidate(f"n{i}", text="y", source="text", retrieval_score=0.1)],
    ...                  raw_scores=[0.8, 0.2], labels=[1, 0])
    ...     for i in range(4)
    ... ]
    >>> model = fit_fusion(lists, seed=0)
    >>> p = model.predict("q", lists[0].candidates, [0.8, 0.2])
    >>> p[0] > p[1]
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from mm_rerank_components.adapt.features import ROUTE_FEATURES, FeatureSpec, listwise_scales
from mm_rerank_components.calibration import (
    PerModalityCalibrator,
    PlattCalibrator,
    calibrator_from_dict,
    expected_calibration_error,
)
from mm_rerank_components.reranker import MultimodalReranker, _RerankerBase, check_request, order_by_score
from mm_rerank_components.types import Candidate, Modality, Query, RankedCandidate

__all__ = [
    "FLOOR_WINDOW",
    "FUSION_FORMAT",
    "FusionModel",
    "FusionOptions",
    "LabelledList",
    "LearnedFusionReranker",
    "apply_modality_floor",
    "check_modality_floor",
    "fit_fusion",
    "strip_routes",
]

logger = logging.getLogger(__name__)

FUSION_FORMAT = "mm-rerank-fusion"
FUSION_FORMAT_VERSION = 1
_POOLED = "all"


@dataclass(frozen=True)
class LabelledList:
    """One query's candidate list with the scorer's raw scores and relevance labels (training data).

    Args:
        query: the query (a ``Query`` or its text).
        candidates: the first-stage candidates, each with ``source`` (route) and ``retrieval_score``
            where known.
        raw_scores: the scorer's raw score of each candidate (finite).
        labels: relevance grade of each candidate: 0 = not relevant, >= 1 = relevant.
        group: where the query comes from (a source or corpus name), or ``None``. With
            ``FusionOptions(calibrate_by="group")`` the calibration is fitted on scores of models that
            never saw the query's group, so it learns how the model transfers to a new source.

    Example:
        >>> from mm_rerank_components import Candidate
        >>> LabelledList("fox", [Candidate("a", text="fox")], [0.3], [1]).labels
        (1,)
    """

    query: Query | str
    candidates: tuple[Candidate, ...]
    raw_scores: tuple[float, ...]
    labels: tuple[int, ...]
    group: str | None

    def __init__(
        self,
        query: Query | str,
        candidates: Sequence[Candidate],
        raw_scores: Sequence[float],
        labels: Sequence[int | float | bool],
        group: str | None = None,
    ) -> None:
        if not (len(candidates) == len(raw_scores) == len(labels)):
            raise ValueError(
                f"LabelledList needs one raw score and one label per candidate, got {len(candidates)} "
                f"candidates, {len(raw_scores)} scores and {len(labels)} labels"
            )
        grades = []
        for label in labels:
            grade = int(label)
            if grade != label or grade < 0:
                raise ValueError(f"labels must be relevance grades 0, 1, 2, ... got {label!r}")
            grades.append(grade)
        scores = tuple(float(s) for s in raw_scores)
        if not all(math.isfinite(s) for s in scores):
            raise ValueError("raw_scores must be finite; drop candidates the scorer could not score")
        object.__setattr__(self, "query", query)
        object.__setattr__(self, "candidates", tuple(candidates))
        object.__setattr__(self, "raw_scores", scores)
        object.__setattr__(self, "labels", tuple(grades))
        object.__setattr__(self, "group", group)


# --------------------------------------------------------------------------------------------------
# The linear model and its training


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


@dataclass
class _Problem:
    z: np.ndarray  # standardised features, all rows
    y: np.ndarray  # 0/1 relevance, all rows
    row_w: np.ndarray  # pointwise weight of each row (each query sums to 1/queries)
    pairs_d: np.ndarray  # z[better] - z[worse]
    pair_w: np.ndarray  # each query's pairs sum to 1/queries_with_pairs
    #: where the L2 penalty pulls the weights (zeros, or a prior model's weights) and where Newton starts
    centre: np.ndarray | None = None
    start_bias: float = 0.0

    def loss_grad_hess(
        self, theta: np.ndarray, l2: float, pointwise: float
    ) -> tuple[float, np.ndarray, np.ndarray]:
        d = self.z.shape[1]
        w, b = theta[:d], theta[d]
        shift = w - self.centre if self.centre is not None else w
        loss = 0.5 * l2 * float(shift @ shift)
        grad = np.zeros(d + 1)
        grad[:d] = l2 * shift
        hess = np.zeros((d + 1, d + 1))
        hess[:d, :d] = l2 * np.eye(d)
        if len(self.pair_w):
            margin = self.pairs_d @ w
            loss += float(self.pair_w @ np.logaddexp(0.0, -margin))
            p = _sigmoid(-margin)  # d/dm log(1+e^-m) = -sigmoid(-m)
            grad[:d] -= self.pairs_d.T @ (self.pair_w * p)
            hess[:d, :d] += (self.pairs_d.T * (self.pair_w * p * (1 - p))) @ self.pairs_d
        if pointwise > 0:
            s = self.z @ w + b
            loss += pointwise * float(self.row_w @ (np.logaddexp(0.0, s) - self.y * s))
            q = _sigmoid(s)
            design = np.hstack([self.z, np.ones((len(s), 1))])
            grad += pointwise * design.T @ (self.row_w * (q - self.y))
            hess += pointwise * (design.T * (self.row_w * q * (1 - q))) @ design
        # the intercept gets a tiny ridge so the system stays solvable without a pointwise term
        hess[d, d] += 1e-9
        return loss, grad, hess


def _newton(
    problem: _Problem, l2: float, pointwise: float, max_iter: int = 50
) -> tuple[np.ndarray, float, int]:
    theta = np.zeros(problem.z.shape[1] + 1)
    if problem.centre is not None:
        theta[:-1] = problem.centre
    theta[-1] = problem.start_bias
    loss, grad, hess = problem.loss_grad_hess(theta, l2, pointwise)
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - reported as the iteration count
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-10:
            trial = theta - scale * step
            trial_loss, trial_grad, trial_hess = problem.loss_grad_hess(trial, l2, pointwise)
            if trial_loss <= loss:
                break
            scale /= 2
        else:
            break
        improvement = loss - trial_loss
        theta, loss, grad, hess = trial, trial_loss, trial_grad, trial_hess
        if improvement < 1e-10 or float(np.abs(grad).max()) < 1e-9:
            break
    return theta, loss, iterations


def _build_problem(
    matrices: Sequence[np.ndarray],
    lists: Sequence[LabelledList],
    mu: np.ndarray,
    sd: np.ndarray,
    rng: np.random.Generator,
    max_pairs_per_query: int,
) -> tuple[_Problem, int]:
    z_parts, y_parts, rw_parts, d_parts, pw_parts = [], [], [], [], []
    with_pairs = sum(1 for item in lists if len(set(item.labels)) > 1)
    non_empty = sum(1 for item in lists if item.candidates)
    for x, item in zip(matrices, lists, strict=True):
        if not item.candidates:
            continue  # an empty pool carries no signal
        z = (x - mu) / sd
        grades = np.asarray(item.labels)
        z_parts.append(z)
        y_parts.append((grades > 0).astype(float))
        rw_parts.append(np.full(len(z), 1.0 / (len(z) * non_empty)))
        better, worse = np.nonzero(grades[:, None] > grades[None, :])
        if len(better) == 0:
            continue
        if len(better) > max_pairs_per_query:
            keep = np.sort(rng.choice(len(better), size=max_pairs_per_query, replace=False))
            better, worse = better[keep], worse[keep]
        d_parts.append(z[better] - z[worse])
        pw_parts.append(np.full(len(better), 1.0 / (len(better) * with_pairs)))
    dim = len(mu)
    problem = _Problem(
        z=np.vstack(z_parts),
        y=np.concatenate(y_parts),
        row_w=np.concatenate(rw_parts),
        pairs_d=np.vstack(d_parts) if d_parts else np.zeros((0, dim)),
        pair_w=np.concatenate(pw_parts) if pw_parts else np.zeros(0),
    )
    return problem, len(problem.pair_w)


@dataclass(frozen=True)
class Prior:
    """A model the fit starts from and is pulled towards: ``l2 * |w - prior.weights|^2``, not ``l2 * |w|^2``.

    The fit keeps the prior's feature standardisation (``mean``, ``scale``), so its weights are
    comparable; ``strength`` is the penalty (``None`` until :func:`_choose_prior_strength` picks it).
    """

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    strength: float | None = None


def _fit_linear(
    matrices: Sequence[np.ndarray],
    lists: Sequence[LabelledList],
    *,
    seed: int,
    l2: float,
    pointwise: float,
    max_pairs_per_query: int,
    prior: Prior | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, dict[str, Any]]:
    if prior is not None:
        mu, sd = prior.mean, prior.scale
    else:
        stacked = np.vstack(matrices)
        mu = stacked.mean(axis=0)
        sd = stacked.std(axis=0)
        sd[sd < 1e-12] = 1.0
    rng = np.random.default_rng(seed)
    problem, n_pairs = _build_problem(matrices, lists, mu, sd, rng, max_pairs_per_query)
    if prior is not None:
        problem.centre, problem.start_bias = prior.weights, prior.bias
        l2 = prior.strength if prior.strength is not None else l2
    theta, loss, iterations = _newton(problem, l2, pointwise)
    dim = len(mu)
    info = {"pairs": n_pairs, "loss": float(loss), "iterations": iterations}
    return mu, sd, theta[:dim], float(theta[dim]), info


#: Penalties towards a prior model that :func:`_choose_prior_strength` compares (the losses are means
#: over queries: 0.01 lets the data move the weights freely, 10 keeps them near the prior).
PRIOR_STRENGTHS = (0.01, 0.1, 1.0, 10.0)


def _choose_prior_strength(
    matrices: Sequence[np.ndarray], lists: Sequence[LabelledList], prior: Prior, kwargs: dict[str, Any]
) -> tuple[float, dict[str, float]]:
    """The penalty of :data:`PRIOR_STRENGTHS` with the lowest out-of-fold training loss (5 query folds;
    a tie goes to the stronger prior). Fewer than 10 lists: the strongest."""
    if len(lists) < 10:
        return PRIOR_STRENGTHS[-1], {}
    fold = _folds(len(lists), 5, kwargs["seed"])
    totals = dict.fromkeys(PRIOR_STRENGTHS, 0.0)
    for f in range(5):
        # one training and one held-out problem per fold (the prior's standardisation, so the same for
        # every strength, as _fit_linear would build them); only the penalty changes between fits
        parts = [[i for i, k in enumerate(fold) if (k == f) == want] for want in (False, True)]
        held = parts[1]
        problems = [
            _build_problem(
                [matrices[i] for i in part],
                [lists[i] for i in part],
                prior.mean,
                prior.scale,
                np.random.default_rng(kwargs["seed"]),
                kwargs["max_pairs_per_query"],
            )[0]
            for part in parts
        ]
        problems[0].centre, problems[0].start_bias = prior.weights, prior.bias
        for strength in PRIOR_STRENGTHS:
            theta, _, _ = _newton(problems[0], strength, kwargs["pointwise"])
            totals[strength] += problems[1].loss_grad_hess(theta, 0.0, kwargs["pointwise"])[0] * len(held)
    losses = {s: total / len(lists) for s, total in totals.items()}
    best = min(losses.values())
    chosen = max(s for s, v in losses.items() if v <= best + 1e-9)
    return chosen, {str(s): round(v, 6) for s, v in losses.items()}


# --------------------------------------------------------------------------------------------------
# Ranking metrics on the training lists (pool-relative: the relevant documents inside each list)


def pool_metrics(
    lists: Sequence[LabelledList], scores: Sequence[Sequence[float] | np.ndarray], k: int = 10
) -> dict[str, float]:
    """Mean recall@k and nDCG@k of ordering each list by ``scores`` (relevant documents inside the pools).

    Example:
        >>> from mm_rerank_components import Candidate
        >>> item = LabelledList("q", [Candidate("a", text="x"), Candidate("b", text="y")], [0.0, 1.0], [1, 0])
        >>> pool_metrics([item], [[0.0, 1.0]], k=1)
        {'recall@1': 0.0, 'ndcg@1': 0.0}
    """
    recalls, ndcgs = [], []
    for item, s in zip(lists, scores, strict=True):
        grades = np.asarray(item.labels, dtype=float)
        relevant = grades > 0
        if not relevant.any():
            continue
        order = sorted(range(len(s)), key=lambda i: -float(s[i]))[:k]
        recalls.append(float(relevant[order].sum() / relevant.sum()))
        gains = (2.0 ** grades[order] - 1) / np.log2(np.arange(2, len(order) + 2))
        ideal_grades = np.sort(grades)[::-1][:k]
        ideal = (2.0**ideal_grades - 1) / np.log2(np.arange(2, len(ideal_grades) + 2))
        ndcgs.append(float(gains.sum() / ideal.sum()))
    return {f"recall@{k}": float(np.mean(recalls)), f"ndcg@{k}": float(np.mean(ndcgs))}


# --------------------------------------------------------------------------------------------------
# The fitted model


@dataclass
class FusionModel:
    """A trained learned-fusion model: features -> fused score -> calibrated P(relevant) per modality.

    Build it with :func:`fit_fusion`; save it with :meth:`to_dict` (plain JSON) and read it back with
    :meth:`from_dict`. Serve it with :class:`LearnedFusionReranker`.

    Attributes:
        spec: which features it reads.
        mean, scale: the feature standardisation fitted on the training rows.
        weights, bias: the linear model on standardised features (``fused = z @ weights + bias``).
        calibrator: Platt maps per modality from the fused score to a probability.
        training: what it was trained on and how it went (queries, pairs, loss, metrics, seed, l2).
        seconds: how long the fit took (not saved).
        modality_floor: with ``k > 0``, each query's first :data:`FLOOR_WINDOW` places hold at least
            ``k`` pictures and ``k`` passages whenever the list has enough of them (a captioned
            picture counts as a picture; :func:`apply_modality_floor`); 0 (the default) leaves the
            learned order alone.

    Example:
        >>> model = FusionModel.from_dict(model.to_dict())  # doctest: +SKIP
    """

    spec: FeatureSpec
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    calibrator: PerModalityCalibrator
    training: dict[str, Any] = field(default_factory=dict)
    #: Wall time of the fit (``features``, ``total``); not saved, so saved models are byte-identical.
    seconds: dict[str, float] = field(default_factory=dict, compare=False)
    modality_floor: int = 0
    #: Per route feature (``sim:r``, ``rr:r``, ``minmax:r``, ``z:r``), its training mean over the
    #: candidates that route returned: what a candidate without a retrieval score is given instead of 0.
    impute: dict[str, float] = field(default_factory=dict)
    #: The head fitted on the same lists without route signals (``FusionOptions.route_free``): it
    #: scores every list in which a candidate lacks a retrieval score (:meth:`head_for`).
    route_free: FusionModel | None = None

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.spec.names

    def fused_scores(
        self, query: Query | str | None, candidates: Sequence[Candidate], raw_scores: Sequence[float]
    ) -> list[float]:
        """The uncalibrated fused score (a log-odds-like value) of each candidate."""
        if not candidates:
            return []
        x = self.spec.transform(query, candidates, raw_scores)
        x = impute_metadata(self.spec, impute_route_features(self.spec, x, self.impute), self._meta_fill())
        return [float(v) for v in ((x - self.mean) / self.scale) @ self.weights + self.bias]

    def _meta_fill(self) -> dict[str, float]:
        """The value a missing metadata field reads as: its training mean (older folders: the fitted mean)."""
        col = self.spec.index
        return {
            f"meta:{n}": self.impute.get(f"meta:{n}", float(self.mean[col[f"meta:{n}"]]))
            for n in self.spec.metadata_fields
        }

    def predict(
        self,
        query: Query | str | None,
        candidates: Sequence[Candidate],
        raw_scores: Sequence[float],
        caption_scores: Sequence[float | None] | None = None,
    ) -> list[float]:
        """Calibrated P(relevant) of each candidate of one query's list (same order as ``candidates``).

        ``caption_scores`` (optional, aligned with ``candidates``): for a picture that carries a caption,
        the scorer's raw score of the caption alone (``None`` elsewhere). Such a picture then gets the
        larger of two probabilities: read as a picture (its own raw score) and its caption read as a
        passage (:meth:`caption_probabilities`). :class:`LearnedFusionReranker` passes them.

        Example:
            >>> model.predict("red fox", hits, raw_scores)  # doctest: +SKIP
            [0.83, 0.04]
        """
        head = self.head_for(candidates)
        given = strip_routes(candidates) if head is not self else candidates
        fused = head.fused_scores(query, given, raw_scores)
        if not fused:
            return []
        probabilities = head.calibrator.calibrate(fused, head.calibration_modalities(given))
        if caption_scores is not None:
            read = self.caption_probabilities(query, candidates, raw_scores, caption_scores)
            probabilities = [p if c is None else max(p, c) for p, c in zip(probabilities, read, strict=True)]
        if self.modality_floor > 0:
            kinds = ["image" if c.image is not None else "text" for c in candidates]
            return apply_modality_floor(probabilities, kinds, self.modality_floor)
        return probabilities

    def caption_probabilities(
        self,
        query: Query | str | None,
        candidates: Sequence[Candidate],
        raw_scores: Sequence[float],
        caption_scores: Sequence[float | None],
    ) -> list[float | None]:
        """P(relevant) of each captioned picture's caption read as a passage of this list (else ``None``).

        The caption has no retrieval signal of its own, so it is read by the route-free head (the model
        itself when it has none): the list's candidates without route signals plus one text candidate
        per caption, holding the caption and its raw score (``caption_scores[i]``, the scorer's score of
        the caption alone). Only the captions' probabilities are read back. A picture whose caption
        names what the query asks for then gets a passage's probability, which its pixels alone could
        not earn (a map learned on uncaptioned pictures).
        """
        if len(caption_scores) != len(candidates):
            raise ValueError(f"got {len(candidates)} candidates but {len(caption_scores)} caption scores")
        views = {
            i: view
            for i, (c, s) in enumerate(zip(candidates, caption_scores, strict=True))
            if s is not None and (view := caption_view(c)) is not None
        }
        out: list[float | None] = [None] * len(candidates)
        if not views:
            return out
        head = self.route_free or self
        given = [*strip_routes(candidates), *views.values()]
        raw = [*(float(r) for r in raw_scores), *(float(caption_scores[i]) for i in views)]  # type: ignore[arg-type]
        fused = head.fused_scores(query, given, raw)
        probabilities = head.calibrator.calibrate(fused, head.calibration_modalities(given))
        for i, p in zip(views, probabilities[len(candidates) :], strict=True):
            out[i] = float(p)
        return out

    def calibration_modalities(self, candidates: Sequence[Candidate]) -> list[Modality]:
        """The map each candidate's fused score goes through: a captioned picture (``text+image``) its own
        when the calibrator has one, else the modality its features read as (a picture's)."""
        own = self.calibrator.calibrators
        return [
            c.modality
            if c.modality == "text+image" and c.modality in own
            else cast(Modality, self.spec.modality_of(c))
            for c in candidates
        ]

    def head_for(self, candidates: Sequence[Candidate]) -> FusionModel:
        """The head that scores this list: :attr:`route_free` when a candidate lacks a retrieval score.

        Decided per list, so a list scores the same through every face that hands over the same
        signals, and one list never mixes the two heads' scales.
        """
        if self.route_free is not None and any(c.retrieval_score is None for c in candidates):
            return self.route_free
        return self

    def weight_table(self) -> list[tuple[str, float]]:
        """``(feature, weight on the standardised feature)``, largest magnitude first."""
        pairs = [(n, float(w)) for n, w in zip(self.spec.names, self.weights, strict=True)]
        return sorted(pairs, key=lambda p: -abs(p[1]))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (lists of floats, no pickles)."""
        return {
            "format": FUSION_FORMAT,
            "version": FUSION_FORMAT_VERSION,
            "features": self.spec.to_dict(),
            "feature_names": list(self.spec.names),
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "weights": [float(v) for v in self.weights],
            "bias": float(self.bias),
            "calibration": self.calibrator.to_dict(),
            "training": self.training,
            **({"modality_floor": self.modality_floor} if self.modality_floor else {}),
            **({"impute": dict(self.impute)} if self.impute else {}),
            **({"route_free": self.route_free.to_dict()} if self.route_free is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> FusionModel:
        """Rebuild a model from :meth:`to_dict` output; ``source`` names the file in error messages."""
        if data.get("format") != FUSION_FORMAT:
            raise ValueError(f'{source} is not a learned-fusion model (expected "format": "{FUSION_FORMAT}")')
        if data.get("version") != FUSION_FORMAT_VERSION:
            raise ValueError(
                f"{source} has fusion format version {data.get('version')!r}; this package reads "
                f"version {FUSION_FORMAT_VERSION}"
            )
        try:
            spec = FeatureSpec.from_dict(data["features"])
            if list(spec.names) != list(data["feature_names"]):
                raise ValueError(
                    f"{source}: its feature names do not match what this package version builds from its "
                    "feature settings; retrain with mm-rerank adapt"
                )
            arrays = [np.asarray(data[k], dtype=float) for k in ("mean", "scale", "weights")]
            if any(a.shape != (len(spec.names),) for a in arrays):
                raise ValueError(f"{source}: mean/scale/weights must each hold {len(spec.names)} numbers")
            calibrator = calibrator_from_dict(data["calibration"], source=source)
            if not isinstance(calibrator, PerModalityCalibrator):
                raise ValueError(f"{source}: calibration must be a PerModalityCalibrator")
            floor = check_modality_floor(data.get("modality_floor", 0), f"{source}: ")
            head = data.get("route_free")
            if head is not None and (not isinstance(head, Mapping) or "route_free" in head):
                raise ValueError(
                    f"{source}: route_free must be one learned-fusion model without its own head"
                )
            return cls(
                spec,
                arrays[0],
                arrays[1],
                arrays[2],
                float(data["bias"]),
                calibrator,
                dict(data["training"]),
                modality_floor=floor,
                impute=_read_impute(data.get("impute"), spec, source),
                route_free=cls.from_dict(head, f"{source} (route_free)") if head is not None else None,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{source}: malformed learned-fusion model ({exc!r})") from exc


def _read_impute(value: Any, spec: FeatureSpec, source: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or any(
        k not in spec.names or not isinstance(v, (int, float)) or not math.isfinite(v)
        for k, v in value.items()
    ):
        raise ValueError(f"{source}: impute must map feature names to finite numbers")
    return {str(k): float(v) for k, v in value.items()}


def route_feature_means(spec: FeatureSpec, matrices: Sequence[np.ndarray]) -> dict[str, float]:
    """Per route, the mean of its features over the training candidates that route returned."""
    if not matrices:
        return {}
    x = np.concatenate(matrices)
    col = spec.index
    present = x[:, col["retrieval_missing"]] == 0
    out: dict[str, float] = {}
    for route in spec.routes:
        rows = present & (x[:, col[f"route:{route}"]] == 1)
        if rows.any():
            for f in ROUTE_FEATURES:
                out[f"{f}:{route}"] = round(float(x[rows, col[f"{f}:{route}"]].mean()), 6)
    return out


def impute_route_features(spec: FeatureSpec, x: np.ndarray, means: Mapping[str, float]) -> np.ndarray:
    """``x`` with each candidate lacking a retrieval score given its route's training means.

    Without this a missing similarity reads as 0, far below anything a route returns, and shifts the
    fused score by a different amount per route (so per modality). With the route's mean the
    candidate is "an average hit of its route" and the scorer's own signals decide.

    Example:
        >>> x = impute_route_features(model.spec, matrix, model.impute)  # doctest: +SKIP
    """
    if not means or x.size == 0:
        return x
    col = spec.index
    missing = x[:, col["retrieval_missing"]] == 1
    if not missing.any():
        return x
    x = x.copy()
    for route in spec.routes:
        rows = missing & (x[:, col[f"route:{route}"]] == 1)
        for f in ROUTE_FEATURES:
            name = f"{f}:{route}"
            if name in means and rows.any():
                x[rows, col[name]] = means[name]
    return x


def metadata_means(spec: FeatureSpec, matrices: Sequence[np.ndarray]) -> dict[str, float]:
    """Per metadata field, the mean of its value over the training candidates that have one."""
    if not matrices or not spec.metadata_fields:
        return {}
    x = np.concatenate(matrices)
    col = spec.index
    out: dict[str, float] = {}
    for name in spec.metadata_fields:
        present = x[:, col[f"meta_missing:{name}"]] == 0
        out[f"meta:{name}"] = (
            round(float(x[present, col[f"meta:{name}"]].mean()), 6) if present.any() else 0.0
        )
    return out


def impute_metadata(spec: FeatureSpec, x: np.ndarray, means: Mapping[str, float]) -> np.ndarray:
    """``x`` with each missing metadata value read as that field's training mean.

    A missing field is 0 in the raw features; for a field such as a year (training mean ~2005) that is
    hundreds of standard deviations away, so one small weight made a candidate without a year the
    top hit (score 1.0). With the mean the value contributes nothing and ``meta_missing:<name>``
    carries what a missing value meant in training.

    Example:
        >>> x = impute_metadata(model.spec, matrix, {"meta:year": 2004.5})  # doctest: +SKIP
    """
    if not means or x.size == 0:
        return x
    col = spec.index
    out = x
    for name in spec.metadata_fields:
        key = f"meta:{name}"
        rows = x[:, col[f"meta_missing:{name}"]] == 1
        if key in means and rows.any():
            if out is x:
                out = x.copy()
            out[rows, col[key]] = means[key]
    return out


#: The places :func:`apply_modality_floor` looks at: the top 10 a user reads and the eval measures.
FLOOR_WINDOW = 10


def check_modality_floor(value: Any, where: str = "") -> int:
    """``value`` if it is a valid modality floor (an integer 0..5), else a ValueError naming it.

    Example:
        >>> check_modality_floor(2)
        2
    """
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= FLOOR_WINDOW // 2:
        raise ValueError(
            f"{where}modality_floor must be an integer 0..{FLOOR_WINDOW // 2}, got {value!r} "
            f"(places of the top {FLOOR_WINDOW} each modality keeps; 0 for none)"
        )
    return value


def apply_modality_floor(
    probabilities: Sequence[float], modalities: Sequence[str], floor: int, window: int = FLOOR_WINDOW
) -> list[float]:
    """Lift a modality short of ``floor`` places in the top ``window`` by the smallest log-odds shift.

    A label-free modality prior: when one modality fills the top of a list, every candidate of the
    other modality gets the same log-odds boost, just enough that its ``floor``-th best enters the
    top ``window``. The order within each modality is kept, scores stay sorted with the order (no
    candidate is moved past a higher score), and nothing changes when both modalities already hold
    ``floor`` places or when the list lacks ``floor`` candidates of the short modality or
    ``window - floor + 1`` of the other. The lifted probabilities are a prior, not evidence: the
    measured effect on rankings and calibration is in docs/benchmarks.md.

    Example:
        >>> p = apply_modality_floor([0.9, 0.8, 0.7, 0.1, 0.05], ["image"] * 3 + ["text"] * 2, 1, window=3)
        >>> [round(v, 3) for v in p]
        [0.9, 0.8, 0.7, 0.7, 0.525]
    """
    out = [float(v) for v in probabilities]
    kinds = sorted(set(modalities))
    if floor <= 0 or len(kinds) != 2:
        return out
    p = np.clip(np.asarray(out), 1e-12, 1 - 1e-12)
    logits = np.log(p) - np.log1p(-p)
    mods = np.asarray(list(modalities), dtype=object)
    for short in kinds:
        mine = np.sort(logits[mods == short])[::-1]
        others = np.sort(logits[mods != short])[::-1]
        if len(mine) < floor or len(others) <= window - floor:
            continue
        # the short modality holds `floor` of the top `window` once its floor-th best beats the
        # other modality's (window - floor + 1)-th best
        gap = float(others[window - floor] - mine[floor - 1])
        if gap >= 0:
            for i in np.flatnonzero(mods == short):
                out[i] = float(1.0 / (1.0 + np.exp(-(logits[i] + gap + 1e-6))))
            break  # at most one modality can be short of the floor
    return out


def _folds(n: int, k: int, seed: int) -> list[int]:
    order = np.random.default_rng(seed).permutation(n)
    fold = [0] * n
    for position, index in enumerate(order):
        fold[int(index)] = position % k
    return fold


def _calibrate(
    fused: Sequence[np.ndarray], lists: Sequence[LabelledList], scorer: str | None
) -> PerModalityCalibrator:
    scores = np.concatenate(fused)
    labels = np.concatenate([(np.asarray(item.labels) > 0).astype(float) for item in lists])
    modalities = np.asarray([c.modality for item in lists for c in item.candidates], dtype=object)
    maps: dict[str, PlattCalibrator] = {}
    stats: dict[str, Any] = {}
    for modality in sorted(set(modalities)):
        mask = modalities == modality
        y = labels[mask]
        entry: dict[str, Any] = {"pairs": int(mask.sum()), "positives": int(y.sum())}
        if not 0 < y.sum() < len(y):
            entry["map"] = f"pooled ({_POOLED!r}): this modality lacks relevant or non-relevant examples"
        elif (own := _increasing_platt(scores[mask], y, modality)) is None:
            entry["map"] = f"pooled ({_POOLED!r}): this modality's own fit had slope <= 0"
            entry["fallback"] = "reversed"  # its own map would have reversed the model's order
        else:
            maps[modality] = own
        stats[modality] = entry
    if 0 < labels.sum() < len(labels):
        maps[_POOLED] = PlattCalibrator().fit(scores, labels)
    if not maps:
        raise ValueError("learned fusion needs relevant and non-relevant candidates to calibrate")
    calibrator = PerModalityCalibrator(
        maps,
        fallback=_POOLED if _POOLED in maps else None,
        scorer=scorer,
        method="platt",
    )
    for modality, entry in stats.items():
        mask = modalities == modality
        mods = [cast(Modality, modality)] * int(mask.sum())
        probs: np.ndarray = np.asarray(calibrator.calibrate([float(v) for v in scores[mask]], mods))
        entry["ece"] = expected_calibration_error(probs, labels[mask])
        entry["mean_probability"] = float(probs.mean())
        entry["positive_rate"] = float(labels[mask].mean())
    calibrator.stats = stats
    return calibrator


def _what_it_saw(lists: Sequence[LabelledList]) -> dict[str, int]:
    """How many training queries held a picture (``picture_queries``; none: the fusion never learned
    picture queries, see :class:`LearnedFusionReranker`'s ``picture_queries``) and how many training
    candidates were captioned pictures (``captioned_pictures``; none: the maps never saw one, see
    :attr:`LearnedFusionReranker.calibrates_captions`)."""
    pictures = sum(isinstance(item.query, Query) and item.query.image is not None for item in lists)
    captioned = sum(c.modality == "text+image" for item in lists for c in item.candidates)
    return {"picture_queries": pictures, "captioned_pictures": captioned}


def _increasing_platt(scores: np.ndarray, labels: np.ndarray, modality: str) -> PlattCalibrator | None:
    """A Platt map of one modality's fused scores, or ``None`` when its slope is not positive.

    The fused score is what orders the candidates; a map with slope <= 0 (few relevant examples of the
    modality, or ones the model scored low) would turn that order upside down within the modality: the
    candidate the model rates highest would get the lowest probability. Measured: an adapted reranker
    fitted on Widelands' dev queries got a picture slope of -0.64 and put the query photo's own record
    last among pictures. Such a modality uses the pooled map instead (logged and kept in the stats).
    """
    cal = PlattCalibrator().fit(scores, labels, warn=False)  # the warning below says what happens instead
    if cal.a > 0:
        return cal
    logger.warning(
        "%s map of the fused scores had slope %.4g <= 0 (%d relevant of %d pairs): it would reverse the "
        "model's order within %s candidates; using the pooled map",
        modality,
        cal.a,
        int(labels.sum()),
        len(labels),
        modality,
    )
    return None


def _route_by_kind(lists: Sequence[LabelledList]) -> dict[str, str]:
    """The route that held most passages, and the one that held most pictures, in training."""
    counts: dict[tuple[str, str], int] = {}
    for item in lists:
        for c in item.candidates:
            if c.source is not None:
                key = ("image" if c.image is not None else "text", c.source)
                counts[key] = counts.get(key, 0) + 1
    out: dict[str, str] = {}
    for kind in ("text", "image"):
        held = sorted(
            ((n, route) for (k, route), n in counts.items() if k == kind), key=lambda x: (-x[0], x[1])
        )
        if held:
            out[kind] = held[0][1]
    return out


CALIBRATE_BY = ("query", "group")


@dataclass(frozen=True)
class FusionOptions:
    """How :func:`fit_fusion` trains: one set of options that ``adapt``, the default and the eval share.

    Args:
        seed: fixes pair subsampling and calibration folds; the same seed and data give identical
            weights and scores.
        l2: L2 penalty on the standardised weights (the losses are means, so 0.01 is mild).
        pointwise: weight of the pointwise logistic term next to the pairwise one (0 = pairwise only).
        metadata_fields: numeric ``Candidate.metadata`` fields to use as features.
        bm25: whether to use the BM25 features (needs ``bm25s``).
        listwise: whether to add the listwise (per-query softmax share) features, scaled by the
            training pool's per-modality raw-score spread (see :class:`FeatureSpec`).
        modality_floor: saved with the model: places of the top 10 each modality keeps
            (:func:`apply_modality_floor`); 0 for none.
        max_pairs_per_query: pairs kept per query (a seeded sample beyond that).
        calibration_folds: with ``calibrate_by="query"``, the Platt maps are fitted on out-of-fold
            fused scores from this many folds of queries (in-sample when there are fewer than
            ``2 * folds`` queries).
        calibrate_by: ``"query"`` (folds of queries) or ``"group"``: each query's calibration score
            comes from a model fitted without its whole group (``LabelledList.group``, a source), so
            the Platt maps learn how the model does on a source it never saw. Needs every list to
            carry a group and at least two groups; otherwise query folds are used (and logged).
        route_free: also fit a second head on the same lists stripped of ``source`` and
            ``retrieval_score``. It scores any list in which a candidate lacks a retrieval score
            (HTTP clients, nodes a user built), so those candidates get calibrated probabilities
            instead of a model reading imputed route signals.

    Example:
        >>> FusionOptions(listwise=True, modality_floor=2).replace(seed=1).seed
        1
    """

    seed: int = 0
    l2: float = 0.01
    pointwise: float = 0.2
    metadata_fields: tuple[str, ...] = ()
    bm25: bool = True
    listwise: bool = False
    modality_floor: int = 0
    max_pairs_per_query: int = 400
    calibration_folds: int = 5
    calibrate_by: str = "query"
    route_free: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata_fields", tuple(str(f) for f in self.metadata_fields))
        for name in ("seed", "max_pairs_per_query", "calibration_folds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < ((name != "seed" and 1) or 0):
                raise ValueError(f"FusionOptions.{name} must be a non-negative integer, got {value!r}")
        for name in ("l2", "pointwise"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
                raise ValueError(f"FusionOptions.{name} must be a finite number >= 0, got {value!r}")
        if self.l2 == 0 and self.pointwise == 0:
            raise ValueError("with l2=0 and pointwise=0 separable data has no finite solution; set l2 > 0")
        check_modality_floor(self.modality_floor, "FusionOptions.")
        if self.calibrate_by not in CALIBRATE_BY:
            raise ValueError(
                f"FusionOptions.calibrate_by must be one of {', '.join(CALIBRATE_BY)}, "
                f"got {self.calibrate_by!r}"
            )

    def replace(self, **changes: Any) -> FusionOptions:
        """A copy with ``changes``; an unknown name is a ValueError listing the options."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise ValueError(f"unknown fusion option(s) {unknown}; choose from {', '.join(names)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "metadata_fields": list(self.metadata_fields)}


def caption_view(candidate: Candidate) -> Candidate | None:
    """A captioned picture's caption as a passage of its own (same id and metadata), else ``None``.

    Example:
        >>> caption_view(Candidate("a", image="a.png", text="A fox")).text
        'A fox'
        >>> caption_view(Candidate("b", image="b.png")) is None
        True
    """
    if candidate.image is None or candidate.text is None or not candidate.text.strip():
        return None
    return Candidate(id=candidate.id, text=candidate.text, metadata=candidate.metadata)


def strip_routes(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates without ``source`` and ``retrieval_score`` (what the route-free head reads).

    Example:
        >>> strip_routes([Candidate("a", text="x", source="text", retrieval_score=0.4)])[0].source is None
        True
    """
    return [
        c
        if c.source is None and c.retrieval_score is None
        else dataclasses.replace(c, source=None, retrieval_score=None)
        for c in candidates
    ]


def fit_fusion(
    lists: Sequence[LabelledList],
    options: FusionOptions | None = None,
    /,
    *,
    scorer: str | None = None,
    prior: FusionModel | None = None,
    **changes: Any,
) -> FusionModel:
    """Train learned fusion on labelled candidate lists (every list given is training data).

    Args:
        lists: one :class:`LabelledList` per query; lists without a relevant and a non-relevant
            candidate still count in the pointwise term but add no pairs.
        options: a :class:`FusionOptions` (default ``FusionOptions()``).
        scorer: the scorer's name, recorded with the calibration.
        prior: a model to start from and pull towards (L2 towards its weights instead of towards 0;
            e.g. the shipped default, fitted on other sources). The fit then reads the prior's
            features (its ``spec``: ``bm25``, ``listwise`` and ``metadata_fields`` options are the
            prior's) with its standardisation; the penalty is chosen from :data:`PRIOR_STRENGTHS` by
            5-fold out-of-fold loss on ``lists``, and the calibration is refitted on ``lists``.
        **changes: option fields to override (``fit_fusion(lists, seed=1, listwise=True)``).

    With ``options.route_free`` (the default) the model carries a second head fitted on the lists
    stripped of route signals (:attr:`FusionModel.route_free`).

    Example:
        >>> model = fit_fusion(lists, FusionOptions(metadata_fields=("year",)))  # doctest: +SKIP
        >>> model.training["pairs"]  # doctest: +SKIP
        5120
    """
    opts = (options if options is not None else FusionOptions()).replace(**changes)
    if not lists:
        raise ValueError("fit_fusion needs at least one labelled list")
    if not any(any(g > 0 for g in item.labels) for item in lists):
        raise ValueError("fit_fusion needs at least one relevant candidate (label >= 1)")
    with _one_blas_thread():
        return _fit_heads(lists, opts, scorer, prior)


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """One BLAS thread while fitting (threadpoolctl, when installed): the products are a few hundred rows
    by ~30 features, where OpenBLAS's one thread per core only spins; on a busy 2-core machine a
    cross-validated fit took 41 s with its default threads and 3.0 s with one."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return cast("contextlib.AbstractContextManager[Any]", threadpool_limits(1, user_api="blas"))


def _fit_heads(
    lists: Sequence[LabelledList], opts: FusionOptions, scorer: str | None, prior: FusionModel | None
) -> FusionModel:
    model = _fit_head(lists, opts, scorer, prior)
    has_routes = any(
        c.source is not None or c.retrieval_score is not None for x in lists for c in x.candidates
    )
    if opts.route_free and has_routes:
        stripped = [
            LabelledList(x.query, strip_routes(x.candidates), x.raw_scores, x.labels, x.group) for x in lists
        ]
        head_prior = prior.route_free or prior if prior is not None else None
        model.route_free = _fit_head(stripped, opts, scorer, head_prior)
        model.seconds["total"] = round(model.seconds["total"] + model.route_free.seconds["total"], 4)
    return model


def _fit_head(
    lists: Sequence[LabelledList], opts: FusionOptions, scorer: str | None, prior: FusionModel | None = None
) -> FusionModel:
    """One linear model with its calibration (the body of :func:`fit_fusion`)."""
    started = time.perf_counter()
    spec = prior.spec if prior is not None else _spec_for(lists, opts)
    matrices = [spec.transform(item.query, item.candidates, item.raw_scores) for item in lists]
    meta_means = metadata_means(spec, matrices)
    matrices = [impute_metadata(spec, x, meta_means) for x in matrices]
    features_s = time.perf_counter() - started
    kwargs: dict[str, Any] = {
        "seed": opts.seed,
        "l2": opts.l2,
        "pointwise": opts.pointwise,
        "max_pairs_per_query": opts.max_pairs_per_query,
    }
    prior_info = _with_prior(matrices, lists, prior, kwargs)
    mu, sd, w, b, info = _fit_linear(matrices, lists, **kwargs)
    folds = _calibration_folds(lists, opts)
    if folds is None:
        calibration_scores = [((x - mu) / sd) @ w + b for x in matrices]
        how = "in-sample"
    else:
        calibration_scores = _out_of_fold(matrices, lists, folds[0], kwargs)
        how = folds[1]
    calibrator = _calibrate(calibration_scores, lists, scorer)
    fused = [((x - mu) / sd) @ w + b for x in matrices]
    training: dict[str, Any] = {
        "queries": len(lists),
        **_what_it_saw(lists),
        "candidates": int(sum(len(item.candidates) for item in lists)),
        "positives": int(sum(sum(1 for g in item.labels if g > 0) for item in lists)),
        **info,
        "seed": opts.seed,
        "l2": opts.l2,
        "pointwise": opts.pointwise,
        "max_pairs_per_query": opts.max_pairs_per_query,
        "calibration": how,
        "calibration_folds": len(set(folds[0])) if folds is not None else 1,
        **prior_info,
        "train_metrics": {
            "raw_score": pool_metrics(lists, [np.asarray(item.raw_scores) for item in lists]),
            "fused": pool_metrics(lists, fused),
            "out_of_fold": pool_metrics(lists, calibration_scores) if folds is not None else None,
        },
    }
    if opts.modality_floor:
        training["modality_floor"] = opts.modality_floor
    seconds = {"features": round(features_s, 4), "total": round(time.perf_counter() - started, 4)}
    logger.info(
        "learned fusion: %d queries, %d pairs, loss %.4f after %d Newton steps",
        len(lists),
        info["pairs"],
        info["loss"],
        info["iterations"],
    )
    impute = {**route_feature_means(spec, matrices), **meta_means}
    return FusionModel(
        spec, mu, sd, w, b, calibrator, training, seconds, modality_floor=opts.modality_floor, impute=impute
    )


def _with_prior(
    matrices: Sequence[np.ndarray],
    lists: Sequence[LabelledList],
    prior: FusionModel | None,
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    """Put the prior, its penalty chosen by cross-validation, into ``kwargs``; what to record of it."""
    if prior is None:
        return {}
    start = Prior(prior.mean, prior.scale, prior.weights, prior.bias)
    strength, cv = _choose_prior_strength(matrices, lists, start, kwargs)
    kwargs["prior"] = dataclasses.replace(start, strength=strength)
    return {"prior": {"strength": strength, "out_of_fold_loss": cv, "scorer": prior.calibrator.scorer}}


def _spec_for(lists: Sequence[LabelledList], opts: FusionOptions) -> FeatureSpec:
    routes = sorted({c.source for item in lists for c in item.candidates if c.source is not None})
    modalities = [c.modality for item in lists for c in item.candidates]
    scales = (
        listwise_scales([r for item in lists for r in item.raw_scores], modalities) if opts.listwise else {}
    )
    return FeatureSpec(
        routes=tuple(routes),
        route_by_kind=_route_by_kind(lists),
        metadata_fields=opts.metadata_fields,
        bm25=opts.bm25,
        listwise=scales,
        modalities=tuple(sorted(set(modalities))),
    )


def _calibration_folds(lists: Sequence[LabelledList], opts: FusionOptions) -> tuple[list[int], str] | None:
    """Each list's calibration fold and how they were formed, or ``None`` for an in-sample calibration."""
    if opts.calibrate_by == "group":
        groups = [item.group for item in lists]
        names = sorted({g for g in groups if g is not None})
        if None not in groups and len(names) >= 2:
            return [names.index(cast(str, g)) for g in groups], "leave-one-group-out"
        logger.warning(
            "calibrate_by='group' needs every list to carry a group and at least two groups (got %d); "
            "calibrating on query folds instead",
            len(names),
        )
    n, k = len(lists), opts.calibration_folds
    if k >= 2 and n >= 2 * k:
        return _folds(n, k, opts.seed), "out-of-fold"
    return None


def _out_of_fold(
    matrices: Sequence[np.ndarray], lists: Sequence[LabelledList], fold: Sequence[int], kwargs: dict[str, Any]
) -> list[np.ndarray]:
    """Each list's fused scores from a model fitted on the other folds."""
    oof: list[np.ndarray] = [np.zeros(0)] * len(lists)
    for f in sorted(set(fold)):
        train = [i for i in range(len(lists)) if fold[i] != f]
        f_mu, f_sd, f_w, f_b, _ = _fit_linear(
            [matrices[i] for i in train], [lists[i] for i in train], **kwargs
        )
        for i in range(len(lists)):
            if fold[i] == f:
                oof[i] = ((matrices[i] - f_mu) / f_sd) @ f_w + f_b
    return oof


# --------------------------------------------------------------------------------------------------
# Serving


class LearnedFusionReranker(_RerankerBase):
    """A reranker that fuses a base reranker's raw scores with first-stage signals, calibrated.

    The base :class:`~mm_rerank_components.MultimodalReranker` does the scoring (validation, image
    decoding, batching, caching, ``on_error``); this class replaces its calibration with the learned
    fusion model. Results are :class:`~mm_rerank_components.RankedCandidate` with ``score`` = the
    calibrated fused probability, ``raw_score`` = the scorer's raw score and ``index`` into the input.
    Candidates the base could not score (``on_error="keep"``) come last with their error, never dropped
    (not by ``top_n`` or ``threshold`` either).

    ``read_captions=True`` (off by default) also reads the caption of every captioned picture as a
    passage: the base scores the caption alone, and the picture gets the larger of its two probabilities
    (:meth:`FusionModel.caption_probabilities`). It costs one more scoring pass over the captions. Off,
    a captioned picture is read as a picture, and a caption naming exactly what the query asks for
    lifts it little. Measured in ``docs/calibration.md`` ("Captioned pictures"): it ranks captioned
    pictures no worse (better with English captions), but over-trusts a caption that nearly matches, so
    it is not the default.

    ``picture_queries`` (optional): the reranker that answers a query holding a picture, in place of
    the fusion, typically the same scorer with its own per-modality calibration. A fusion fitted on text
    queries never learned picture queries; measured on the built-in tasks (``docs/calibration.md``,
    "Picture queries"), adapted fusions ranked the query photo's own record first 12-100% of the time,
    the starter scorer's own maps 92-100%. :func:`~mm_rerank_components.adapt.load_reranker` and
    ``default_reranker()`` set it when the fusion saw no picture query and the scorer has its own
    calibration.

    Example:
        >>> from mm_rerank_components import MultimodalReranker
        >>> from mm_rerank_components.scorers import FakeScorer
        >>> reranker = LearnedFusionReranker(MultimodalReranker(FakeScorer()), model)  # doctest: +SKIP
        >>> reranker.rerank("red fox", hits, top_n=5)  # doctest: +SKIP
    """

    def __init__(
        self,
        base: MultimodalReranker,
        model: FusionModel,
        *,
        read_captions: bool = False,
        picture_queries: MultimodalReranker | None = None,
    ) -> None:
        if not isinstance(base, MultimodalReranker):
            raise TypeError(f"base must be a MultimodalReranker (it provides raw scores), got {base!r}")
        if not isinstance(model, FusionModel):
            raise TypeError(f"model must be a FusionModel (see fit_fusion), got {model!r}")
        if not isinstance(read_captions, bool):
            raise TypeError(f"read_captions must be True or False, got {read_captions!r}")
        if picture_queries is not None and not isinstance(picture_queries, MultimodalReranker):
            raise TypeError(
                f"picture_queries must be a MultimodalReranker (the scorer with its own calibration) "
                f"or None, got {picture_queries!r}"
            )
        self.base = base
        self.model = model
        self.read_captions = read_captions
        self.picture_queries = picture_queries

    @property
    def scorer(self) -> Any:
        return self.base.scorer

    @property
    def calibrates_captions(self) -> bool:
        """Whether a captioned picture's probability comes from a map fitted on captioned pictures: the
        model trained on some (``training["captioned_pictures"]``, e.g. ``mm-rerank adapt --data`` on a
        captioned corpus) or holds a ``text+image`` map, and :attr:`read_captions` is off (it reads the
        caption with the passage map). The default never saw a captioned picture: measured off its
        training sources, their scores run low (``docs/calibration.md``, "Same score, same meaning?")."""
        seen = self.model.training.get("captioned_pictures", 0) > 0
        return not self.read_captions and (seen or "text+image" in self.model.calibrator.calibrators)

    def warm_up(self) -> None:
        """Load the base's scorer now."""
        self.base.warm_up()

    def rerank(
        self,
        query: Query | str,
        candidates: Sequence[Candidate],
        *,
        top_n: int | None = None,
        threshold: float | None = None,
    ) -> list[RankedCandidate]:
        """Score with the base, fuse, calibrate, sort; ``top_n`` and ``threshold`` apply to fused scores.

        A query that holds a picture goes to :attr:`picture_queries` when it is set (the fusion then
        plays no part)."""
        query = check_request(query, top_n, threshold)
        if query.image is not None and self.picture_queries is not None:
            return self.picture_queries.rerank(query, candidates, top_n=top_n, threshold=threshold)
        base = self.base.rerank(query, candidates)
        if not base:
            return []
        scored = sorted((r for r in base if r.error is None), key=lambda r: r.index)
        failed = [r for r in base if r.error is not None]
        given = [candidates[r.index] for r in scored]
        captions = self._caption_scores(query, given) if self.read_captions else None
        probabilities = self.model.predict(query, given, [r.raw_score for r in scored], captions)
        order = order_by_score(probabilities, top_n=top_n, threshold=threshold)
        results = [
            dataclasses.replace(scored[o], score=float(probabilities[o]), rank=rank)
            for rank, o in enumerate(order)
        ]
        for r in failed:
            results.append(dataclasses.replace(r, rank=len(results)))
        return results

    def _caption_scores(self, query: Query, candidates: Sequence[Candidate]) -> list[float | None]:
        """The base's raw score of each captioned picture's caption alone (``None`` elsewhere).

        A caption the base cannot score leaves its picture read as a picture only (logged)."""
        out: list[float | None] = [None] * len(candidates)
        views = {i: v for i, v in enumerate(map(caption_view, candidates)) if v is not None}
        if not views:
            return out
        where = list(views)
        for r in self.base.rerank(query, list(views.values())):
            if r.error is None:
                out[where[r.index]] = r.raw_score
            else:
                logger.warning(
                    "caption of %r not scored (%s); read as a picture only", r.candidate.id, r.error
                )
        return out
