"""Target checks on held-out queries, each comparison with a paired bootstrap 95% CI over queries.

Verdicts (see :mod:`mm_rerank_components.eval.stats`): a comparison is ``met`` only when the whole
interval clears the target, ``missed`` when the whole interval falls short, and a ``tie`` otherwise.
A check's ``passes`` says whether its target holds: for "beats X" only ``met`` passes; for "never
significantly below X" anything but ``missed`` passes.

Rows checked (any that exist): the pipeline chosen on dev, the product default (label-free) and the
adapted row (learned on the task's dev queries).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mm_rerank_components.calibration import calibration_in_the_large, expected_calibration_error
from mm_rerank_components.eval.metrics import per_query_values
from mm_rerank_components.eval.stats import paired_bootstrap, pooled, ratio_bootstrap

__all__ = [
    "BASELINES",
    "LABEL_FREE_BASELINES",
    "TARGET_CITL",
    "TARGET_ECE",
    "TARGET_GAIN",
    "TARGET_SHARE_GAP",
    "calibration_checks",
    "calibration_figures",
    "pooled_checks",
    "row_checks",
]

#: Relative Recall@10 gain over the best single route that a reranked row must reach.
TARGET_GAIN = 0.25
TARGET_ECE = 0.05
#: Among pairs predicted >= 0.1: |mean predicted / observed rate - 1| must stay within this.
TARGET_CITL = 0.25
#: The pictures' share of the top 10 must be within this of their share of the relevant documents.
TARGET_SHARE_GAP = 0.15
BASELINES = ("raw-merge", "rrf", "minmax", "zscore")
LABEL_FREE_BASELINES = ("rrf", "minmax", "zscore")
METRICS = ("recall@10", "ndcg@10")


def _values(pipes: Mapping[str, Any], name: str, metric: str, qids: Sequence[str]) -> list[float]:
    return per_query_values(pipes[name]["test"], metric, qids)


def _check(name: str, goal: str, result: Mapping[str, Any], detail: str) -> dict[str, Any]:
    passes = result["verdict"] != "missed" if goal == "not below" else result["verdict"] == "met"
    return {"name": name, "goal": goal, **result, "detail": detail, "passes": passes}


def _fmt_ci(result: Mapping[str, Any], key: str = "diff") -> str:
    return f"{result[key]:+.3f} [95% CI {result['lo']:+.3f}, {result['hi']:+.3f}]"


def best_route(pipes: Mapping[str, Any], qids: Sequence[str]) -> str:
    """The single route with the higher test Recall@10 (the stronger, so the stricter, reference)."""
    return max(
        ("text-only", "image-only"), key=lambda p: float(np.mean(_values(pipes, p, "recall@10", qids)))
    )


def row_checks(pipes: Mapping[str, Any], row: str, role: str, qids: Sequence[str]) -> list[dict[str, Any]]:
    """Checks of one row on the test queries ``qids``.

    ``role`` is ``"chosen"`` or ``"adapted"`` (must beat every merge and gain +25% over the best
    route) or ``"default"`` (must never be significantly below the best label-free fusion, and keep
    pictures in its top 10 in proportion).
    """
    checks: list[dict[str, Any]] = []
    if role == "default":
        strongest = max(
            LABEL_FREE_BASELINES,
            key=lambda p: float(np.mean(_values(pipes, p, "recall@10", qids))),
        )
        for metric in METRICS:
            result = paired_bootstrap(
                _values(pipes, row, metric, qids), _values(pipes, strongest, metric, qids)
            )
            checks.append(
                _check(
                    f"{row} vs the best label-free fusion ({strongest}), {metric}",
                    "not below",
                    result,
                    f"{result['a']:.3f} vs {result['b']:.3f}, {_fmt_ci(result)}",
                )
            )
        checks.append(_share_check(pipes, row, qids))
        return checks
    route = best_route(pipes, qids)
    gain = ratio_bootstrap(
        _values(pipes, row, "recall@10", qids), _values(pipes, route, "recall@10", qids), target=TARGET_GAIN
    )
    checks.append(
        _check(
            f"{row} vs best single route ({route}), recall@10",
            f">= +{100 * TARGET_GAIN:.0f}%",
            gain,
            f"{gain['a']:.3f} vs {gain['b']:.3f}, gain {100 * gain['gain']:+.1f}% "
            f"[95% CI {100 * gain['lo']:+.1f}%, {100 * gain['hi']:+.1f}%]",
        )
    )
    for baseline in BASELINES:
        for metric in METRICS:
            result = paired_bootstrap(
                _values(pipes, row, metric, qids), _values(pipes, baseline, metric, qids)
            )
            checks.append(
                _check(
                    f"{row} vs {baseline}, {metric}",
                    "beats",
                    result,
                    f"{result['a']:.3f} vs {result['b']:.3f}, {_fmt_ci(result)}",
                )
            )
    return checks


def _share_check(pipes: Mapping[str, Any], row: str, qids: Sequence[str]) -> dict[str, Any]:
    test = pipes[row]["test"]
    shares = per_query_values(test, "image_share@10", qids)
    relevant = per_query_values(test, "relevant_image_share", qids)
    result = paired_bootstrap(shares, relevant)
    lo, hi = result["lo"], result["hi"]
    if lo >= -TARGET_SHARE_GAP and hi <= TARGET_SHARE_GAP:
        verdict = "met"
    elif hi < -TARGET_SHARE_GAP or lo > TARGET_SHARE_GAP:
        verdict = "missed"
    else:
        verdict = "tie"
    result["verdict"] = verdict
    return {
        "name": f"{row}: pictures' share of the top 10 vs of the relevant documents",
        "goal": f"within {100 * TARGET_SHARE_GAP:.0f} points",
        **result,
        "detail": (
            f"{100 * result['a']:.0f}% vs {100 * result['b']:.0f}%, gap {100 * result['diff']:+.0f} points "
            f"[95% CI {100 * lo:+.0f}, {100 * hi:+.0f}]"
        ),
        "passes": verdict == "met",
    }


def calibration_figures(probs: Sequence[float], mods: Sequence[str], labels: Sequence[int]) -> dict[str, Any]:
    """Per modality: ECE, calibration-in-the-large among pairs predicted >= 0.1, pairs and positives."""
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels, dtype=int)
    m = np.asarray(mods, dtype=object)
    out: dict[str, Any] = {}
    for modality in sorted(set(mods)):
        mask = m == modality
        out[modality] = {
            "ece": expected_calibration_error(p[mask], y[mask]),
            "pairs": int(mask.sum()),
            "positives": int(y[mask].sum()),
            "mean_predicted": float(p[mask].mean()),
            "observed_rate": float(y[mask].mean()),
            "above_0.1": calibration_in_the_large(p[mask], y[mask], 0.1),
        }
    return out


def calibration_checks(row: str, figures: Mapping[str, Any]) -> list[dict[str, Any]]:
    """ECE <= 0.05 and calibration-in-the-large within 25% per modality (point estimates, with n)."""
    checks: list[dict[str, Any]] = []
    for modality, fig in sorted(figures.items()):
        ece = fig["ece"]
        checks.append(
            {
                "name": f"{row}: ECE on held-out {modality} pairs",
                "goal": f"<= {TARGET_ECE}",
                "value": ece,
                "n": fig["pairs"],
                "verdict": "met" if ece <= TARGET_ECE else "missed",
                "passes": ece <= TARGET_ECE,
                "detail": f"{ece:.3f} over {fig['pairs']} pairs ({fig['positives']} relevant)",
            }
        )
        big = fig["above_0.1"]
        gap = big["relative_gap"]
        ok = bool(big["pairs"]) and bool(np.isfinite(gap)) and abs(gap) <= TARGET_CITL
        checks.append(
            {
                "name": f"{row}: mean predicted vs observed among {modality} pairs predicted >= 0.1",
                "goal": f"within {100 * TARGET_CITL:.0f}% relative",
                "value": gap,
                "n": big["pairs"],
                "verdict": "met" if ok else "missed",
                "passes": ok,
                "detail": (
                    f"{big['mean_predicted']:.3f} predicted vs {big['observed_rate']:.3f} observed "
                    f"({100 * gap:+.0f}%, {big['pairs']} pairs)"
                    if big["pairs"]
                    else "no pair predicted >= 0.1"
                ),
            }
        )
    return checks


def pooled_checks(entries: Mapping[str, Mapping[str, Any]], row: str, role: str) -> list[dict[str, Any]]:
    """``row`` against the merges, pooled over every task that has it (stratified bootstrap)."""
    having = {t: e for t, e in entries.items() if row in e["pipelines"]}
    if not having:
        return []
    baselines = LABEL_FREE_BASELINES if role == "default" else BASELINES
    checks = []
    for baseline in baselines:
        for metric in METRICS:
            per_task = {}
            for task, entry in having.items():
                qids = entry["test_queries"]
                per_task[task] = (
                    _values(entry["pipelines"], row, metric, qids),
                    _values(entry["pipelines"], baseline, metric, qids),
                )
            result = pooled(per_task)
            goal = "not below" if role == "default" else "beats"
            checks.append(
                _check(
                    f"{row} vs {baseline}, {metric}, pooled over {len(having)} tasks",
                    goal,
                    result,
                    f"{result['a']:.3f} vs {result['b']:.3f}, {_fmt_ci(result)} ({result['n']} queries)",
                )
            )
    return checks
