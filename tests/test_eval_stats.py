"""The paired bootstrap and the target checks: seeded, stratified, and a tie is called a tie."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mm_rerank_components.eval.stats import paired_bootstrap, pooled, ratio_bootstrap, verdict
from mm_rerank_components.eval.targets import (
    calibration_checks,
    calibration_figures,
    pooled_checks,
    row_checks,
)


def test_verdict_needs_the_whole_interval_on_one_side() -> None:
    assert verdict(0.001, 0.2) == "met"
    assert verdict(-0.001, 0.2) == "tie"
    assert verdict(0.0, 0.0) == "tie"  # an exact tie is a tie, never "missed"
    assert verdict(-0.3, -0.01) == "missed"
    assert verdict(0.3, 0.4, target=0.25) == "met"
    assert verdict(0.2, 0.4, target=0.25) == "tie"


def test_paired_bootstrap_is_seeded_and_calls_one_or_two_queries_a_tie() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, 100).astype(float)
    b = a.copy()
    b[:2] = 1 - b[:2]  # two queries differ
    one = paired_bootstrap(a, b)
    assert one == paired_bootstrap(a, b)  # same seed, same interval
    assert one["verdict"] == "tie" and one["lo"] <= one["diff"] <= one["hi"]
    same = paired_bootstrap(a, a)
    assert (same["diff"], same["lo"], same["hi"], same["verdict"]) == (0.0, 0.0, 0.0, "tie")


def test_paired_bootstrap_detects_a_real_difference_both_ways() -> None:
    rng = np.random.default_rng(2)
    b = rng.uniform(0, 0.5, 200)
    a = b + rng.uniform(0.05, 0.15, 200)
    assert paired_bootstrap(a, b)["verdict"] == "met"
    assert paired_bootstrap(b, a)["verdict"] == "missed"
    result = paired_bootstrap(a, b)
    assert result["lo"] > 0.05 and result["hi"] < 0.15 and result["n"] == 200


def test_paired_bootstrap_input_errors() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least one query"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="one per query"):
        paired_bootstrap([1.0, 0.0], [0.0, 0.0], groups=["a"])


def test_stratified_pooling_keeps_each_tasks_queries_in_every_resample() -> None:
    # task x always gains 1, task y never changes: every stratified resample averages to exactly 0.5
    result = pooled({"x": ([1.0] * 10, [0.0] * 10), "y": ([0.0] * 10, [0.0] * 10)})
    assert result["diff"] == pytest.approx(0.5)
    assert result["lo"] == pytest.approx(0.5) and result["hi"] == pytest.approx(0.5)
    assert result["verdict"] == "met"


def test_ratio_bootstrap_against_a_relative_target() -> None:
    assert ratio_bootstrap([0.6] * 30, [0.4] * 30, target=0.25)["verdict"] == "met"
    assert ratio_bootstrap([0.45] * 30, [0.4] * 30, target=0.25)["verdict"] == "missed"
    assert ratio_bootstrap([1.0, 0.0] * 10, [0.4] * 20, target=0.25)["verdict"] == "tie"


def _pipes(values: dict[str, list[float]], share: list[float], rel_share: list[float]) -> dict[str, Any]:
    qids = [f"q{i}" for i in range(len(share))]

    def entry(v: list[float]) -> dict[str, Any]:
        per_q = dict(zip(qids, v, strict=True))
        return {
            "test": {
                "per_query": {
                    "recall@10": per_q,
                    "ndcg@10": per_q,
                    "image_share@10": dict(zip(qids, share, strict=True)),
                    "relevant_image_share": dict(zip(qids, rel_share, strict=True)),
                }
            }
        }

    return {name: entry(v) for name, v in values.items()}


def test_row_checks_for_the_default_and_a_reranked_row() -> None:
    n = 60
    rng = np.random.default_rng(3)
    base = rng.uniform(0.3, 0.6, n).tolist()
    values = {
        "text-only": [v / 2 for v in base],
        "image-only": [v / 3 for v in base],
        "raw-merge": [v - 0.1 for v in base],
        "rrf": base,
        "minmax": base,
        "zscore": base,
        "better": [v + 0.1 for v in base],
        "same": list(base),
        "worse": [v - 0.1 for v in base],
    }
    pipes = _pipes(values, share=[0.5] * n, rel_share=[0.5] * n)
    qids = [f"q{i}" for i in range(n)]
    same = {c["name"]: c for c in row_checks(pipes, "same", "default", qids)}
    # the default is checked on R@10 against every fusion, raw merge included
    ties = [same[f"same vs {b}, recall@10"] for b in ("rrf", "minmax", "zscore")]
    assert all(c["verdict"] == "tie" and c["passes"] and c["goal"] == "not below" for c in ties)
    above_raw = same["same vs raw-merge, recall@10"]
    assert above_raw["verdict"] == "met" and above_raw["passes"]
    share = next(c for name, c in same.items() if "share" in name)
    assert share["verdict"] == "met"
    worse = row_checks(pipes, "worse", "default", qids)
    assert any(c["verdict"] == "missed" and not c["passes"] for c in worse)
    better = {c["name"]: c for c in row_checks(pipes, "better", "chosen", qids)}
    assert better["better vs rrf, recall@10"]["verdict"] == "met"
    gain = next(c for name, c in better.items() if "single route" in name)
    assert gain["verdict"] == "met" and gain["gain"] > 0.25
    # a tie never counts as beating a baseline
    tied = {c["name"]: c for c in row_checks(pipes, "same", "chosen", qids)}
    assert tied["same vs rrf, recall@10"]["verdict"] == "tie"
    assert not tied["same vs rrf, recall@10"]["passes"]


def test_share_check_misses_a_top_10_without_pictures() -> None:
    n = 40
    pipes = _pipes({"row": [0.5] * n}, share=[0.1] * n, rel_share=[0.5] * n)
    for name in ("text-only", "image-only", "raw-merge", "rrf", "minmax", "zscore"):
        pipes[name] = pipes["row"]
    checks = row_checks(pipes, "row", "default", [f"q{i}" for i in range(n)])
    share = next(c for c in checks if "share" in c["name"])
    assert share["verdict"] == "missed" and not share["passes"]


def test_calibration_checks_catch_what_ece_hides() -> None:
    # 95% of pairs near 0 and well calibrated; the few high predictions are twice the observed rate
    rng = np.random.default_rng(4)
    low = rng.uniform(0.0, 0.02, 1900)
    probs = np.concatenate([low, np.full(100, 0.6)])
    labels = np.concatenate([(rng.uniform(size=1900) < low).astype(int), (np.arange(100) < 30).astype(int)])
    figures = calibration_figures(probs.tolist(), ["text"] * 2000, labels.tolist())
    checks = {c["name"]: c for c in calibration_checks("row", figures)}
    ece = next(c for name, c in checks.items() if "ECE" in name)
    citl = next(c for name, c in checks.items() if "predicted >= 0.1" in name)
    assert ece["passes"]  # ECE about 0.015: looks fine
    assert not citl["passes"] and citl["value"] == pytest.approx(1.0)  # 0.6 predicted vs 0.3 observed
    assert citl["verdict"] == "missed" and citl["lo"] > 0.25  # the whole interval is above +25%


def test_share_check_band_is_ten_points() -> None:
    n = 40
    pipes = _pipes({"row": [0.5] * n}, share=[0.37] * n, rel_share=[0.5] * n)
    for name in ("text-only", "image-only", "raw-merge", "rrf", "minmax", "zscore"):
        pipes[name] = pipes["row"]
    share = next(
        c for c in row_checks(pipes, "row", "default", [f"q{i}" for i in range(n)]) if "share" in c["name"]
    )
    # 13 points short: inside the old 15-point band, outside issue 19's 10 points
    assert share["diff"] == pytest.approx(-0.13) and share["verdict"] == "missed"


def test_label_free_row_is_checked_against_the_default() -> None:
    n = 40
    rng = np.random.default_rng(5)
    base = rng.uniform(0.3, 0.6, n).tolist()
    values = {name: base for name in ("text-only", "image-only", "raw-merge", "rrf", "minmax", "zscore")}
    values |= {"default": [v + 0.1 for v in base], "label-free": base}
    pipes = _pipes(values, share=[0.5] * n, rel_share=[0.5] * n)
    checks = {
        c["name"]: c for c in row_checks(pipes, "label-free", "label-free", [f"q{i}" for i in range(n)])
    }
    below = checks["label-free vs default, recall@10"]
    assert below["goal"] == "not below" and below["verdict"] == "missed" and not below["passes"]


def test_pooled_targets_follow_issue_19() -> None:
    n = 40
    rng = np.random.default_rng(6)
    base = rng.uniform(0.3, 0.6, n).tolist()
    values = {name: base for name in ("raw-merge", "rrf", "minmax", "zscore")}
    values |= {"default": [v + 0.05 for v in base], "adapted": [v + 0.1 for v in base], "label-free": base}
    qids = [f"q{i}" for i in range(n)]
    entries = {
        t: {"pipelines": _pipes(values, [0.5] * n, [0.5] * n), "test_queries": qids} for t in ("a", "b")
    }
    default = {c["name"]: c for c in pooled_checks(entries, "default")}
    assert default["default vs raw-merge, ndcg@10, pooled over 2 tasks"]["goal"] == "beats"
    assert default["default vs zscore, recall@10, pooled over 2 tasks"]["goal"] == "not below"
    assert all(c["passes"] for c in default.values()) and len(default) == 8
    adapted = pooled_checks(entries, "adapted")
    assert [c["name"] for c in adapted] == ["adapted vs default, ndcg@10, pooled over 2 tasks"]
    assert adapted[0]["verdict"] == "met"
    label_free = {c["name"]: c for c in pooled_checks(entries, "label-free")}
    assert not label_free["label-free vs rrf, recall@10, pooled over 2 tasks"][
        "passes"
    ]  # a tie is not "beats"
    assert label_free["label-free vs default, recall@10, pooled over 2 tasks"]["verdict"] == "missed"
