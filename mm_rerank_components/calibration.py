"""Calibrators: map a scorer's raw scores to probabilities of relevance on one scale.

A calibrator sees the raw scores of *one query's* candidate list together with each candidate's
modality, so both per-modality fitted maps (Platt, isotonic, temperature) and label-free per-query
standardisation fit the same interface.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mm_rerank_components.types import Modality

logger = logging.getLogger(__name__)


@runtime_checkable
class Calibrator(Protocol):
    """Raw scores (one query's list) and their modalities in, probabilities in ``[0, 1]`` out."""

    def calibrate(self, raw_scores: Sequence[float], modalities: Sequence[Modality]) -> list[float]:
        """Return one probability per raw score, in order."""
        ...


class SigmoidCalibrator:
    """``sigmoid((raw - shift) / temperature)`` for every modality: a fallback, not a fitted map.

    The reranker uses it (with a logged warning) when a scorer does not emit probabilities and no
    calibrator was given: scores land in ``[0, 1]`` but are *not* comparable across modalities.

    Example:
        >>> SigmoidCalibrator().calibrate([0.0], ["text"])
        [0.5]
    """

    def __init__(self, temperature: float = 1.0, shift: float = 0.0) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.temperature = temperature
        self.shift = shift

    def calibrate(self, raw_scores: Sequence[float], modalities: Sequence[Modality]) -> list[float]:
        return [_sigmoid((s - self.shift) / self.temperature) for s in raw_scores]


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


# --------------------------------------------------------------------------------------------------
# Fitted calibrators (Platt, isotonic, temperature), label-free per-query standardisation, per-modality
# wrapping, fitting, JSON persistence and reliability metrics.

CALIBRATION_FORMAT = "mm-rerank-calibration"
CALIBRATION_FORMAT_VERSION = 1
METHODS = ("platt", "isotonic", "temperature", "standardize", "standardize+platt")

_EPS = 1e-12


def _as_array(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float).reshape(-1)
    if not np.all(np.isfinite(array)):
        bad = array[~np.isfinite(array)][0]
        raise ValueError(f"{what} must be finite numbers, got {bad!r}")
    return array


def _as_labels(labels: Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    array = np.asarray(labels, dtype=float).reshape(-1)
    if array.shape[0] != n:
        raise ValueError(f"got {n} scores but {array.shape[0]} labels; pass one 0/1 label per score")
    if not np.all((array == 0) | (array == 1)):
        raise ValueError("labels must be 0/1 (or False/True): 1 = relevant, 0 = not relevant")
    return array


def _sigmoid_array(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x, dtype=float)
    positive = x >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-x[positive]))
    z = np.exp(x[~positive])
    out[~positive] = z / (1.0 + z)
    return out


def _fit_logistic(
    x: np.ndarray, targets: np.ndarray, *, fit_intercept: bool = True, l2: float = 1e-6, max_iter: int = 100
) -> tuple[float, float]:
    """Minimise the logistic loss of ``sigmoid(a * x + b)`` against soft targets with Newton steps.

    ``x`` is standardised internally for conditioning; a tiny L2 penalty keeps separable data finite.
    """
    mu = float(x.mean()) if fit_intercept else 0.0
    sd = float(x.std()) or 1.0
    z = (x - mu) / sd
    design = np.stack([z, np.ones_like(z)], axis=1) if fit_intercept else z[:, None]
    w = np.zeros(design.shape[1])

    def loss(weights: np.ndarray) -> float:
        logits = design @ weights
        # log(1 + e^l) - t * l, computed stably
        return float(np.mean(np.logaddexp(0.0, logits) - targets * logits) + 0.5 * l2 * weights @ weights)

    current = loss(w)
    for _ in range(max_iter):
        p = _sigmoid_array(design @ w)
        grad = design.T @ (p - targets) / len(z) + l2 * w
        hess = (design.T * (p * (1 - p))) @ design / len(z) + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-8:
            candidate = w - scale * step
            value = loss(candidate)
            if value <= current:
                break
            scale /= 2
        else:
            break
        w, previous, current = candidate, current, value
        if previous - current < 1e-12:
            break
    a_std = float(w[0])
    b_std = float(w[1]) if fit_intercept else 0.0
    return a_std / sd, b_std - a_std * mu / sd


class _SaveMixin:
    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write this calibrator as JSON (read it back with :func:`load_calibrator`)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": CALIBRATION_FORMAT, "version": CALIBRATION_FORMAT_VERSION, **self.to_dict()}
        target.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        return target


class _ScoreMap(_SaveMixin):
    """A monotone map from one raw score to a probability, the same for every modality."""

    method: str = ""

    def fit(
        self, raw_scores: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray
    ) -> _ScoreMap:
        raise NotImplementedError

    def predict(self, raw_scores: Sequence[float] | np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def calibrate(self, raw_scores: Sequence[float], modalities: Sequence[Modality]) -> list[float]:
        if len(raw_scores) != len(modalities):
            raise ValueError(f"got {len(raw_scores)} scores but {len(modalities)} modalities")
        if len(raw_scores) == 0:
            return []
        return [float(p) for p in self.predict(_as_array(raw_scores, "raw_scores"))]

    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "method": self.method, "params": self.params()}


class PlattCalibrator(_ScoreMap):
    """Platt scaling: ``P(relevant) = sigmoid(a * raw + b)``.

    Fitted by maximum likelihood with Platt's smoothed targets (``(N+ + 1) / (N+ + 2)`` for positives,
    ``1 / (N- + 2)`` for negatives), which keeps small or separable samples from producing 0 and 1.

    Example:
        >>> cal = PlattCalibrator().fit([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
        >>> p = cal.calibrate([0.15, 0.85], ["text", "text"])
        >>> p[0] < 0.5 < p[1]
        True
    """

    method = "platt"

    def __init__(self, a: float = 1.0, b: float = 0.0) -> None:
        self.a = float(a)
        self.b = float(b)

    def fit(
        self,
        raw_scores: Sequence[float] | np.ndarray,
        labels: Sequence[float] | np.ndarray,
        *,
        warn: bool = True,
    ) -> PlattCalibrator:
        """Fit ``a`` and ``b`` (Platt's smoothed targets); ``warn=False`` leaves a slope <= 0 to the caller
        to report (it logs what it does about it instead)."""
        x = _as_array(raw_scores, "raw_scores")
        y = _as_labels(labels, len(x))
        _require_both_classes(y, "Platt scaling")
        n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
        targets = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        self.a, self.b = _fit_logistic(x, targets)
        if self.a <= 0 and warn:
            logger.warning(
                "Platt fit has slope %.4g <= 0: higher raw scores are *less* often relevant in this data",
                self.a,
            )
        return self

    def predict(self, raw_scores: Sequence[float] | np.ndarray) -> np.ndarray:
        return _sigmoid_array(self.a * _as_array(raw_scores, "raw_scores") + self.b)

    def params(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b}

    def __repr__(self) -> str:
        return f"PlattCalibrator(a={self.a:.6g}, b={self.b:.6g})"


class TemperatureCalibrator(_ScoreMap):
    """Temperature scaling with an intercept: ``P(relevant) = sigmoid(raw / temperature + bias)``.

    The temperature fixes how confident the scores are; the intercept ``bias`` fixes the base rate.
    Without it the fit has to explain the base rate with the slope alone: on scores that are all
    positive (cosines) with few relevant pairs, that drives the slope negative, which reads as
    "higher scores are less often relevant" when it only means "most pairs are not relevant". Unlike
    Platt, the slope must be positive: a negative one raises ``ValueError``.

    Example:
        >>> cal = TemperatureCalibrator().fit([-4.0, -2.0, 2.0, 4.0, -3.0, 3.0], [0, 1, 0, 1, 0, 1])
        >>> cal.temperature > 1  # overconfident logits get a temperature above 1
        True
    """

    method = "temperature"

    def __init__(self, temperature: float = 1.0, bias: float = 0.0) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.bias = float(bias)

    def fit(
        self, raw_scores: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray
    ) -> TemperatureCalibrator:
        x = _as_array(raw_scores, "raw_scores")
        y = _as_labels(labels, len(x))
        _require_both_classes(y, "temperature scaling")
        a, b = _fit_logistic(x, y, fit_intercept=True)
        if a <= 0:
            raise ValueError(
                f"temperature scaling found higher raw scores less often relevant (fitted 1/T = {a:.4g} "
                "<= 0 even with an intercept): check the labels and the score sign, or use "
                "method='isotonic'"
            )
        self.temperature, self.bias = 1.0 / a, b
        return self

    def predict(self, raw_scores: Sequence[float] | np.ndarray) -> np.ndarray:
        return _sigmoid_array(_as_array(raw_scores, "raw_scores") / self.temperature + self.bias)

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "bias": self.bias}

    def __repr__(self) -> str:
        return f"TemperatureCalibrator(temperature={self.temperature:.6g}, bias={self.bias:.6g})"


def pool_adjacent_violators(y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The non-decreasing sequence closest to ``y`` in weighted least squares (PAV algorithm).

    Example:
        >>> pool_adjacent_violators(np.array([1.0, 3.0, 2.0, 4.0])).tolist()
        [1.0, 2.5, 2.5, 4.0]
    """
    values = np.asarray(y, dtype=float)
    w = np.ones_like(values) if weights is None else np.asarray(weights, dtype=float)
    # a stack of blocks: (mean, weight, length)
    means: list[float] = []
    block_w: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(values, w, strict=True):
        means.append(float(value))
        block_w.append(float(weight))
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            total = block_w[-2] + block_w[-1]
            merged = (means[-2] * block_w[-2] + means[-1] * block_w[-1]) / total
            means[-2:] = [merged]
            block_w[-2:] = [total]
            sizes[-2:] = [sizes[-2] + sizes[-1]]
    return np.repeat(np.array(means), np.array(sizes, dtype=int))


class IsotonicCalibrator(_ScoreMap):
    """Isotonic regression: the best non-decreasing step map from raw score to relevance rate.

    Fitted with pool-adjacent-violators; predictions interpolate linearly between the centres of the
    fitted blocks, so distinct scores keep distinct, ordered probabilities inside the fitted range, and
    are clamped outside it. Probabilities are kept in ``[eps, 1 - eps]`` (default ``eps = 1e-3``).

    Example:
        >>> cal = IsotonicCalibrator().fit([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0, 0, 1, 0, 1, 1])
        >>> p = cal.calibrate([0.1, 0.35, 0.6], ["image"] * 3)
        >>> p[0] <= p[1] <= p[2]
        True
    """

    method = "isotonic"

    def __init__(self, x: Sequence[float] = (), y: Sequence[float] = (), eps: float = 1e-3) -> None:
        self.x = [float(v) for v in x]
        self.y = [float(v) for v in y]
        if len(self.x) != len(self.y):
            raise ValueError(
                f"isotonic knots need as many x as y values, got {len(self.x)} and {len(self.y)}"
            )
        if not 0 <= eps < 0.5:
            raise ValueError(f"eps must be in [0, 0.5), got {eps!r}")
        self.eps = float(eps)

    def fit(
        self, raw_scores: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray
    ) -> IsotonicCalibrator:
        x = _as_array(raw_scores, "raw_scores")
        y = _as_labels(labels, len(x))
        if len(x) == 0:
            raise ValueError("cannot fit isotonic regression on zero pairs")
        # equal scores form one point (their mean label), so ties cannot be split by label order
        unique_x, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        sums = np.bincount(inverse, weights=y)
        fitted = pool_adjacent_violators(sums / counts, counts.astype(float))
        knots_x: list[float] = []
        knots_y: list[float] = []
        start = 0
        while start < len(fitted):
            end = start
            while end + 1 < len(fitted) and fitted[end + 1] == fitted[start]:
                end += 1
            block_w = counts[start : end + 1]
            knots_x.append(float(np.average(unique_x[start : end + 1], weights=block_w)))
            knots_y.append(float(fitted[start]))
            start = end + 1
        self.x, self.y = knots_x, knots_y
        return self

    def predict(self, raw_scores: Sequence[float] | np.ndarray) -> np.ndarray:
        if not self.x:
            raise ValueError("IsotonicCalibrator is not fitted: call fit(raw_scores, labels) first")
        values = np.interp(_as_array(raw_scores, "raw_scores"), self.x, self.y)
        return np.clip(values, self.eps, 1 - self.eps)

    def params(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "eps": self.eps}

    def __repr__(self) -> str:
        return f"IsotonicCalibrator({len(self.x)} knots)"


class PerQueryStandardizer(_SaveMixin):
    """Label-free: z-score each modality's raw scores *within one query's list*, then ``sigmoid``.

    **Not a probability** (``outputs_probabilities = False``): it orders a list, nothing more.

    ``P = sigmoid(scale * (raw - mean) / std + shift)``, with mean and std taken over the candidates of
    the same modality in the same call. It needs no labels, which is its appeal; what it cannot know is
    whether a modality's list holds any relevant item at all (every list gets some high scores).
    A modality with one candidate (std 0) gets ``z = 0``.

    Example:
        >>> p = PerQueryStandardizer().calibrate([0.9, 0.1, 0.5, 30.0, 10.0], ["text"] * 3 + ["image"] * 2)
        >>> p[0] > p[2] > p[1] and p[3] > p[4]
        True
    """

    method = "standardize"
    #: ``sigmoid(z)`` ranks within a list but is not P(relevant): the median candidate of every list
    #: gets 0.5 whatever the list holds. Reports show no ECE verdict for it, and thresholds mean nothing.
    outputs_probabilities = False

    def __init__(self, scale: float = 1.0, shift: float = 0.0, min_std: float = 1e-6) -> None:
        self.scale = float(scale)
        self.shift = float(shift)
        self.min_std = float(min_std)

    def standardize(self, raw_scores: Sequence[float], modalities: Sequence[Modality]) -> np.ndarray:
        """The per-modality, per-list z-scores (before the sigmoid)."""
        return _standardize(_as_array(raw_scores, "raw_scores"), modalities, self.min_std)

    def calibrate(self, raw_scores: Sequence[float], modalities: Sequence[Modality]) -> list[float]:
        if len(raw_scores) != len(modalities):
            raise ValueError(f"got {len(raw_scores)} scores but {len(modalities)} modalities")
        if len(raw_scores) == 0:
            return []
        z = self.standardize(raw_scores, modalities)
        return [float(p) for p in _sigmoid_array(self.scale * z + self.shift)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "method": self.method,
            "params": {"scale": self.scale, "shift": self.shift, "min_std": self.min_std},
        }

    def __repr__(self) -> str:
        return f"PerQueryStandardizer(scale={self.scale:.4g}, shift={self.shift:.4g})"


def _standardize(raw: np.ndarray, modalities: Sequence[Modality], min_std: float) -> np.ndarray:
    if len(raw) != len(modalities):
        raise ValueError(f"got {len(raw)} scores but {len(modalities)} modalities")
    z = np.zeros_like(raw)
    mods = np.asarray(list(modalities), dtype=object)
    for modality in set(modalities):
        mask = mods == modality
        values = raw[mask]
        std = float(values.std())
        z[mask] = (values - values.mean()) / std if std > min_std else 0.0
    return z


_MAP_TYPES: dict[str, type[_ScoreMap]] = {
    "PlattCalibrator": PlattCalibrator,
    "TemperatureCalibrator": TemperatureCalibrator,
    "IsotonicCalibrator": IsotonicCalibrator,
}


class PerModalityCalibrator(_SaveMixin):
    """One fitted map per modality: the unified scale for scorers whose raw scores differ by modality.

    Args:
        calibrators: ``{"text": PlattCalibrator(...), "image": IsotonicCalibrator(...)}``.
        standardize: z-score each modality's scores within the query's list before the map (the
            ``"standardize+platt"`` method), which removes per-query offsets the map cannot see.
        fallback: the modality whose map is used for a modality with no map of its own (for example
            ``"image"`` for ``"text+image"`` candidates). Without it such a candidate raises ValueError.
        scorer: the scorer the maps were fitted for (recorded in the JSON, checked by users).
        method: how the maps were fitted (``"platt"``, ``"isotonic"``, ...).
        stats: fit statistics per modality (pairs, positives, ECE before and after), kept in the JSON.

    Example:
        >>> cal = PerModalityCalibrator({"text": PlattCalibrator(10, -5), "image": PlattCalibrator(40, -8)})
        >>> [round(p, 3) for p in cal.calibrate([0.5, 0.2], ["text", "image"])]
        [0.5, 0.5]
    """

    def __init__(
        self,
        calibrators: Mapping[str, _ScoreMap],
        *,
        standardize: bool = False,
        min_std: float = 1e-6,
        fallback: str | None = None,
        scorer: str | None = None,
        method: str | None = None,
        stats: Mapping[str, Any] | None = None,
    ) -> None:
        if not calibrators:
            raise ValueError("PerModalityCalibrator needs at least one modality's calibrator")
        if fallback is not None and fallback not in calibrators:
            raise ValueError(f"fallback {fallback!r} has no calibrator; choose one of {sorted(calibrators)}")
        self.calibrators = dict(calibrators)
        self.standardize = bool(standardize)
        self.min_std = float(min_std)
        self.fallback = fallback
        self.scorer = scorer
        self.method = method
        self.stats = dict(stats or {})

    def _map_for(self, modality: str) -> _ScoreMap:
        found = self.calibrators.get(modality)
        if found is not None:
            return found
        if self.fallback is not None:
            return self.calibrators[self.fallback]
        raise ValueError(
            f"no calibration for {modality!r} candidates (this calibrator covers "
            f"{', '.join(sorted(self.calibrators))}); fit one on labelled {modality} pairs or pass "
            f"fallback='{next(iter(sorted(self.calibrators)))}'"
        )

    def calibrate(self, raw_scores: Sequence[float], modalities: Sequence[Modality]) -> list[float]:
        if len(raw_scores) != len(modalities):
            raise ValueError(f"got {len(raw_scores)} scores but {len(modalities)} modalities")
        if len(raw_scores) == 0:
            return []
        raw = _as_array(raw_scores, "raw_scores")
        if self.standardize:
            raw = _standardize(raw, modalities, self.min_std)
        out = np.zeros_like(raw)
        mods = np.asarray(list(modalities), dtype=object)
        for modality in set(modalities):
            mask = mods == modality
            out[mask] = self._map_for(modality).predict(raw[mask])
        return [float(p) for p in out]

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "scorer": self.scorer,
            "method": self.method,
            "standardize": self.standardize,
            "min_std": self.min_std,
            "fallback": self.fallback,
            "modalities": {m: c.to_dict() for m, c in sorted(self.calibrators.items())},
            "stats": self.stats,
        }

    def __repr__(self) -> str:
        inner = ", ".join(f"{m}={c!r}" for m, c in sorted(self.calibrators.items()))
        return f"PerModalityCalibrator({inner}, standardize={self.standardize}, scorer={self.scorer!r})"


def _require_both_classes(y: np.ndarray, what: str) -> None:
    if y.size == 0 or y.min() == y.max():
        raise ValueError(
            f"{what} needs both relevant (1) and non-relevant (0) examples, got {int(y.sum())} relevant "
            f"of {y.size}"
        )


def _new_map(method: str) -> _ScoreMap:
    if method in ("platt", "standardize+platt"):
        return PlattCalibrator()
    if method == "isotonic":
        return IsotonicCalibrator()
    if method == "temperature":
        return TemperatureCalibrator()
    raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")


def fit_calibrator(
    raw_scores: Sequence[float] | np.ndarray,
    modalities: Sequence[Modality],
    labels: Sequence[float] | np.ndarray,
    method: str = "platt",
    *,
    query_ids: Sequence[Hashable] | None = None,
    scorer: str | None = None,
    fallback: str | None = None,
    n_bins: int = 10,
) -> PerModalityCalibrator | PerQueryStandardizer:
    """Fit one calibration map per modality from labelled ``(raw score, modality, relevant?)`` pairs.

    Args:
        raw_scores, modalities, labels: one entry per (query, candidate) pair; labels are 0/1.
        method: ``"platt"`` (default), ``"isotonic"``, ``"temperature"``, ``"standardize"`` (label-free:
            returns a :class:`PerQueryStandardizer`, labels only feed the reported ECE) or
            ``"standardize+platt"`` (per-query z-scores, then Platt per modality).
        query_ids: which query each pair belongs to; required by the two standardising methods.
        scorer: the scorer's ``name``, recorded in the saved JSON.
        fallback: modality whose map serves modalities without one (see :class:`PerModalityCalibrator`).
        n_bins: bins for the ECE recorded in ``stats``.

    Example:
        >>> cal = fit_calibrator([0.1, 0.9, 0.2, 0.8, 5.0, 9.0, 4.0, 8.0],
        ...                      ["text"] * 4 + ["image"] * 4, [0, 1, 0, 1, 0, 1, 0, 1])
        >>> p = cal.calibrate([0.85, 8.5], ["text", "image"])
        >>> abs(p[0] - p[1]) < 0.2  # very different raw scales, one probability scale
        True
    """
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    raw = _as_array(raw_scores, "raw_scores")
    if len(modalities) != len(raw):
        raise ValueError(f"got {len(raw)} scores but {len(modalities)} modalities")
    y = _as_labels(labels, len(raw))
    if len(raw) == 0:
        raise ValueError("cannot fit a calibrator on zero pairs")
    features = raw
    if method.startswith("standardize"):
        if query_ids is None or len(query_ids) != len(raw):
            raise ValueError(
                f"method {method!r} standardises within each query's list, so pass query_ids= (one per score)"
            )
        features = _standardize_groups(raw, list(modalities), list(query_ids))
    label_free = PerQueryStandardizer()
    maps, stats = _fit_per_modality(features, list(modalities), y, method, label_free, n_bins)
    if method == "standardize":
        logger.info(
            "label-free standardisation: in-sample ECE %s", {m: s["ece_fit"] for m, s in stats.items()}
        )
        return label_free
    return PerModalityCalibrator(
        maps,
        standardize=method == "standardize+platt",
        fallback=fallback,
        scorer=scorer,
        method=method,
        stats=stats,
    )


def _fit_per_modality(
    features: np.ndarray,
    modalities: list[Modality],
    y: np.ndarray,
    method: str,
    label_free: PerQueryStandardizer,
    n_bins: int,
) -> tuple[dict[str, _ScoreMap], dict[str, Any]]:
    """One map per modality (none for ``"standardize"``) and the in-sample statistics of each."""
    mods = np.asarray(modalities, dtype=object)
    stats: dict[str, Any] = {}
    maps: dict[str, _ScoreMap] = {}
    for modality in sorted(set(modalities)):
        mask = mods == modality
        x, labels_m = features[mask], y[mask]
        entry: dict[str, Any] = {"pairs": int(mask.sum()), "positives": int(labels_m.sum())}
        if method == "standardize":
            probs = _sigmoid_array(label_free.scale * x + label_free.shift)
        else:
            fitted = _new_map(method).fit(x, labels_m)
            maps[modality] = fitted
            probs = fitted.predict(x)
        entry["ece_fit"] = expected_calibration_error(probs, labels_m, n_bins=n_bins)
        entry["mean_probability"] = float(np.mean(probs))
        entry["positive_rate"] = float(np.mean(labels_m))
        stats[modality] = entry
    return maps, stats


def _standardize_groups(raw: np.ndarray, modalities: list[Modality], query_ids: list[Hashable]) -> np.ndarray:
    z = np.zeros_like(raw)
    groups: dict[Hashable, list[int]] = {}
    for index, qid in enumerate(query_ids):
        groups.setdefault(qid, []).append(index)
    for indices in groups.values():
        idx = np.asarray(indices)
        z[idx] = _standardize(raw[idx], [modalities[i] for i in indices], 1e-6)
    return z


#: Largest calibration file :func:`load_calibrator` reads, and its deepest nesting.
MAX_CALIBRATION_BYTES = 16 * 1024 * 1024
MAX_CALIBRATION_DEPTH = 16


def load_calibrator(path: str | os.PathLike[str]) -> PerModalityCalibrator | PerQueryStandardizer | _ScoreMap:
    """Read a calibrator written by ``save()``; every value is checked (see :func:`calibrator_from_dict`).

    Example:
        >>> import tempfile, os
        >>> path = PlattCalibrator(2.0, -1.0).save(os.path.join(tempfile.mkdtemp(), "cal.json"))
        >>> load_calibrator(path)
        PlattCalibrator(a=2, b=-1)
    """
    from mm_rerank_components._json import JSONLimitError, loads_strict

    source = Path(path)
    try:
        size = source.stat().st_size
        if size > MAX_CALIBRATION_BYTES:
            raise ValueError(
                f"calibration file {source} is {size} bytes, over the limit of {MAX_CALIBRATION_BYTES}"
            )
        payload = loads_strict(
            source.read_bytes(), max_depth=MAX_CALIBRATION_DEPTH, max_int_digits=30, allow_nan=True
        )
    except FileNotFoundError:
        raise FileNotFoundError(f"calibration file {source} does not exist") from None
    except JSONLimitError as exc:
        raise ValueError(f"calibration file {source} is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CALIBRATION_FORMAT:
        raise ValueError(
            f'{source} is not an mm-rerank calibration file (expected "format": "{CALIBRATION_FORMAT}")'
        )
    if payload.get("version") != CALIBRATION_FORMAT_VERSION:
        raise ValueError(
            f"{source} has calibration format version {payload.get('version')!r}; this package reads "
            f"version {CALIBRATION_FORMAT_VERSION}"
        )
    return calibrator_from_dict(payload, source=str(source))


def calibrator_from_dict(
    data: Mapping[str, Any], source: str = "<dict>"
) -> PerModalityCalibrator | PerQueryStandardizer | _ScoreMap:
    """Rebuild a calibrator from its ``to_dict()`` form (what :func:`load_calibrator` does after reading).

    Every value is checked before use, so a damaged or hostile file fails here, naming the field, instead
    of scoring NaN, 0.0 or a constant later: numbers must be finite (never booleans), temperatures and
    scales positive, isotonic knots strictly increasing in ``x`` with non-decreasing ``y`` in ``[0, 1]``.

    Example:
        >>> calibrator_from_dict({"type": "PlattCalibrator", "params": {"a": float("nan"), "b": 0}})
        Traceback (most recent call last):
        ...
        ValueError: <dict>: params.a must be a finite number, got nan
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: a calibrator must be a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    if kind == "PerModalityCalibrator":
        modalities = data.get("modalities")
        if not isinstance(modalities, Mapping) or not modalities:
            raise ValueError(f"{source}: modalities must be a non-empty object of modality -> calibrator")
        maps: dict[str, _ScoreMap] = {}
        for modality, entry in modalities.items():
            maps[modality] = _map_from_dict(entry, source, f"modalities.{modality}.")
        fallback = data.get("fallback")
        if fallback is not None and fallback not in maps:
            raise ValueError(f"{source}: fallback {fallback!r} has no calibrator in modalities")
        standardize = data.get("standardize", False)
        if not isinstance(standardize, bool):
            raise ValueError(f"{source}: standardize must be true or false, got {standardize!r}")
        stats = data.get("stats") or {}
        if not isinstance(stats, Mapping):
            raise ValueError(f"{source}: stats must be an object, got {type(stats).__name__}")
        for name in ("scorer", "method"):
            if data.get(name) is not None and not isinstance(data.get(name), str):
                raise ValueError(f"{source}: {name} must be a string or null, got {data.get(name)!r}")
        return PerModalityCalibrator(
            maps,
            standardize=standardize,
            min_std=_number(data.get("min_std", 1e-6), source, "min_std", low=0.0),
            fallback=fallback,
            scorer=data.get("scorer"),
            method=data.get("method"),
            stats=stats,
        )
    if kind == "PerQueryStandardizer":
        params = _params(data, source, "")
        return PerQueryStandardizer(
            scale=_number(params.get("scale", 1.0), source, "params.scale", positive=True),
            shift=_number(params.get("shift", 0.0), source, "params.shift"),
            min_std=_number(params.get("min_std", 1e-6), source, "params.min_std", low=0.0),
        )
    return _map_from_dict(data, source, "")


def _params(data: Mapping[str, Any], source: str, where: str) -> Mapping[str, Any]:
    params = data.get("params")
    if not isinstance(params, Mapping):
        raise ValueError(f"{source}: {where}params must be an object, got {type(params).__name__}")
    return params


def _number(
    value: Any, source: str, field: str, *, positive: bool = False, low: float | None = None
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{source}: {field} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{source}: {field} must be > 0, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{source}: {field} must be >= {low:g}, got {value!r}")
    return float(value)


def _numbers(value: Any, source: str, field: str) -> list[float]:
    if not isinstance(value, list):
        raise ValueError(f"{source}: {field} must be a list of numbers, got {type(value).__name__}")
    return [_number(v, source, f"{field}[{i}]") for i, v in enumerate(value)]


def _map_from_dict(data: Any, source: str, where: str = "") -> _ScoreMap:
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: {where or 'the calibrator'} must be a JSON object")
    kind = data.get("type")
    cls = _MAP_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(
            f"{source}: {where}type: unknown calibrator type {kind!r}; expected one of "
            f"{', '.join([*_MAP_TYPES, 'PerModalityCalibrator', 'PerQueryStandardizer'])}"
        )
    params = _params(data, source, where)
    field = f"{where}params."
    if cls is PlattCalibrator:
        return PlattCalibrator(
            _number(params.get("a"), source, field + "a"), _number(params.get("b"), source, field + "b")
        )
    if cls is TemperatureCalibrator:
        return TemperatureCalibrator(
            _number(params.get("temperature"), source, field + "temperature", positive=True),
            _number(params.get("bias", 0.0), source, field + "bias"),
        )
    x = _numbers(params.get("x"), source, field + "x")
    y = _numbers(params.get("y"), source, field + "y")
    if not x or len(x) != len(y):
        raise ValueError(f"{source}: {field}x and y must be non-empty lists of the same length")
    if any(b <= a for a, b in itertools.pairwise(x)):
        raise ValueError(f"{source}: {field}x must be strictly increasing (isotonic knots)")
    if any(b < a for a, b in itertools.pairwise(y)) or not 0.0 <= y[0] <= y[-1] <= 1.0:
        raise ValueError(
            f"{source}: {field}y must be non-decreasing probabilities in [0, 1] (a monotone map)"
        )
    eps = _number(params.get("eps", 1e-3), source, field + "eps", low=0.0)
    if not eps < 0.5:
        raise ValueError(f"{source}: {field}eps must be in [0, 0.5), got {eps!r}")
    return IsotonicCalibrator(x, y, eps=eps)


# --------------------------------------------------------------------------------------------------
# Reliability


def reliability_bins(
    probs: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray, n_bins: int = 10
) -> list[dict[str, float]]:
    """Equal-width probability bins: ``[{"lo", "hi", "count", "mean_prob", "positive_rate"}, ...]``.

    Empty bins are included with ``count = 0`` (and ``nan`` means).

    Example:
        >>> [b["count"] for b in reliability_bins([0.05, 0.95], [0, 1], n_bins=2)]
        [1.0, 1.0]
    """
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    p = _as_array(probs, "probs")
    y = _as_labels(labels, len(p))
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probs must lie in [0, 1]; calibrate raw scores first")
    index = np.minimum((p * n_bins).astype(int), n_bins - 1)
    bins = []
    for b in range(n_bins):
        mask = index == b
        count = float(mask.sum())
        bins.append(
            {
                "lo": b / n_bins,
                "hi": (b + 1) / n_bins,
                "count": count,
                "mean_prob": float(p[mask].mean()) if count else float("nan"),
                "positive_rate": float(y[mask].mean()) if count else float("nan"),
            }
        )
    return bins


def expected_calibration_error(
    probs: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray, n_bins: int = 10
) -> float:
    """ECE: the count-weighted mean gap between predicted probability and observed relevance rate.

    Equal-width bins over ``[0, 1]``; 0 means perfectly calibrated on this sample.

    Example:
        >>> expected_calibration_error([0.9, 0.9, 0.1, 0.1], [1, 1, 0, 0])
        0.1
    """
    bins = reliability_bins(probs, labels, n_bins)
    total = sum(b["count"] for b in bins)
    if total == 0:
        raise ValueError("cannot compute ECE of zero predictions")
    ece = sum(b["count"] * abs(b["mean_prob"] - b["positive_rate"]) for b in bins if b["count"]) / total
    return round(float(ece), 12)


def calibration_in_the_large(
    probs: Sequence[float] | np.ndarray,
    labels: Sequence[float] | np.ndarray,
    min_prob: float = 0.1,
) -> dict[str, float]:
    """Mean predicted probability vs observed relevance rate among pairs predicted ``>= min_prob``.

    ECE is dominated by the many pairs near 0 (most candidates are not relevant), so a map that is
    badly off where rankings are decided can still show a tiny ECE. This looks only at the pairs
    that matter: ``relative_gap = mean_predicted / observed_rate - 1`` (``inf`` when none is
    relevant, ``nan`` when no pair is predicted that high).

    Example:
        >>> out = calibration_in_the_large([0.05, 0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1, 1])
        >>> out["pairs"], round(out["observed_rate"], 2), round(out["relative_gap"], 3)
        (4, 0.75, -0.333)
    """
    p = _as_array(probs, "probs")
    y = _as_labels(labels, len(p))
    mask = p >= min_prob
    n = int(mask.sum())
    if n == 0:
        return {
            "pairs": 0,
            "mean_predicted": float("nan"),
            "observed_rate": float("nan"),
            "relative_gap": float("nan"),
        }
    mean_p, rate = float(p[mask].mean()), float(y[mask].mean())
    gap = mean_p / rate - 1 if rate > 0 else float("inf")
    return {"pairs": n, "mean_predicted": mean_p, "observed_rate": rate, "relative_gap": gap}


def reliability_plot(
    groups: Mapping[str, tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]],
    path: str | os.PathLike[str] | None = None,
    *,
    n_bins: int = 10,
    title: str = "Reliability diagram",
) -> Any:
    """Draw a reliability diagram (one line per group, e.g. per modality) and optionally save a PNG.

    Args:
        groups: ``{"text": (probs, labels), "image": (probs, labels)}``.
        path: where to write the PNG; ``None`` only returns the figure.

    Returns the matplotlib ``Figure``. Needs matplotlib: ``pip install "mm-rerank-components[eval]"``.

    Example:
        >>> fig = reliability_plot({"text": ([0.2, 0.8], [0, 1])}, "reliability.png")  # doctest: +SKIP
    """
    from mm_rerank_components._deps import pyplot

    plt = pyplot("reliability_plot")
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5.2, 6.0), gridspec_kw={"height_ratios": [3, 1]}, sharex=True, constrained_layout=True
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    for name, (probs, labels) in groups.items():
        bins = [b for b in reliability_bins(probs, labels, n_bins) if b["count"]]
        ece = expected_calibration_error(probs, labels, n_bins)
        ax.plot(
            [b["mean_prob"] for b in bins],
            [b["positive_rate"] for b in bins],
            marker="o",
            label=f"{name} (ECE {ece:.3f}, n={len(np.asarray(probs))})",
        )
        hist.hist(np.asarray(probs, dtype=float), bins=n_bins, range=(0, 1), alpha=0.5, label=name)
    ax.set_ylabel("observed relevance rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    hist.set_xlabel("predicted probability of relevance")
    hist.set_ylabel("pairs")
    hist.set_yscale("log")
    if path is not None:
        fig.savefig(path, dpi=90)
        plt.close(fig)
    return fig
