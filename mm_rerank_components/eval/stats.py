"""Paired bootstrap over queries: a 95% interval for every comparison, and a verdict that says "tie".

Two pipelines run on the same queries, so each query gives one paired difference (``a - b`` of, say,
Recall@10). Resampling *queries* with replacement and re-averaging those differences gives the
percentile interval; queries of several tasks are resampled within their task (a stratified
bootstrap), so a pooled figure keeps every task's weight.

A comparison is **met** only when the whole interval lies above the target (lower bound > target),
**missed** when it lies below (upper bound < target), and a **tie** when it spans the target: a
difference of one or two queries is a tie, not a win.

Example:
    >>> out = paired_bootstrap([1.0, 1.0, 0.5, 1.0], [0.5, 1.0, 0.5, 0.5])
    >>> round(out["diff"], 3), out["verdict"]
    (0.25, 'tie')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

__all__ = ["BOOTSTRAP_SEED", "N_BOOTSTRAP", "paired_bootstrap", "pooled", "ratio_bootstrap", "verdict"]

Verdict = Literal["met", "tie", "missed"]
#: Fixed seed, so a report's intervals never change between runs on the same data.
BOOTSTRAP_SEED = 20260
N_BOOTSTRAP = 10_000


def verdict(lo: float, hi: float, target: float = 0.0) -> Verdict:
    """``"met"`` when ``lo > target``, ``"missed"`` when ``hi < target``, else ``"tie"``.

    Example:
        >>> verdict(0.01, 0.05), verdict(-0.02, 0.03), verdict(-0.05, -0.01)
        ('met', 'tie', 'missed')
    """
    if lo > target:
        return "met"
    if hi < target:
        return "missed"
    return "tie"


def _strata(n: int, groups: Sequence[Any] | None) -> list[np.ndarray]:
    if groups is None:
        return [np.arange(n)]
    if len(groups) != n:
        raise ValueError(f"got {n} paired values but {len(groups)} group labels; pass one per query")
    by: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        by.setdefault(g, []).append(i)
    return [np.asarray(v) for v in by.values()]


def _resample_index(strata: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n)`` indices, each row a resample of every stratum with replacement."""
    parts = [s[rng.integers(0, len(s), size=(n_boot, len(s)))] for s in strata]
    return np.concatenate(parts, axis=1)


def _check(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=float).reshape(-1)
    y = np.asarray(b, dtype=float).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired values need equal lengths, got {x.size} and {y.size}")
    if x.size == 0:
        raise ValueError("a paired bootstrap needs at least one query")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("paired values must be finite numbers")
    return x, y


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    groups: Sequence[Any] | None = None,
    target: float = 0.0,
    n_boot: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Mean of ``a - b`` over paired queries, its percentile bootstrap interval and the verdict.

    Args:
        a, b: one value per query (the same queries in the same order), e.g. per-query Recall@10.
        groups: optional stratum per query (the task), resampled separately when pooling tasks.
        target: the difference the comparison must clear (0 for "better than").

    Returns ``{"a", "b", "diff", "lo", "hi", "n", "verdict"}`` (``a`` and ``b`` are the means).

    Example:
        >>> paired_bootstrap([1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1])["verdict"]
        'met'
    """
    x, y = _check(a, b)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    d = x - y
    rng = np.random.default_rng(seed)
    idx = _resample_index(_strata(d.size, groups), n_boot, rng)
    means = d[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = (float(v) for v in np.quantile(means, [alpha, 1 - alpha]))
    return {
        "a": float(x.mean()),
        "b": float(y.mean()),
        "diff": float(d.mean()),
        "lo": lo,
        "hi": hi,
        "n": int(d.size),
        "verdict": verdict(lo, hi, target),
    }


def ratio_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    groups: Sequence[Any] | None = None,
    target: float = 0.0,
    n_boot: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Relative gain ``mean(a) / mean(b) - 1`` over paired queries, with its bootstrap interval.

    The verdict compares the interval with ``target`` (0.25 for "at least +25%").

    Example:
        >>> out = ratio_bootstrap([0.6] * 20, [0.4] * 20, target=0.25)
        >>> round(out["gain"], 2), out["verdict"]
        (0.5, 'met')
    """
    x, y = _check(a, b)
    rng = np.random.default_rng(seed)
    idx = _resample_index(_strata(x.size, groups), n_boot, rng)
    den = y[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        gains = np.where(den > 0, x[idx].mean(axis=1) / den - 1, np.inf)
    alpha = (1 - confidence) / 2
    lo, hi = (float(v) for v in np.quantile(gains, [alpha, 1 - alpha]))
    base = float(y.mean())
    gain = float(x.mean()) / base - 1 if base > 0 else float("inf")
    return {
        "a": float(x.mean()),
        "b": base,
        "gain": gain,
        "lo": lo,
        "hi": hi,
        "n": int(x.size),
        "verdict": verdict(lo, hi, target),
    }


def pooled(per_task: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> dict[str, Any]:
    """Stratified :func:`paired_bootstrap` over several tasks: ``{task: (a_values, b_values)}``."""
    a: list[float] = []
    b: list[float] = []
    groups: list[str] = []
    for task, (xs, ys) in per_task.items():
        a += [float(v) for v in xs]
        b += [float(v) for v in ys]
        groups += [task] * len(xs)
    return paired_bootstrap(a, b, groups=groups)
