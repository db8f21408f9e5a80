"""benchmarks/starter_int8_quality.py's helpers on tiny synthetic data (no models, no network, no caches)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "starter_int8_quality.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("starter_int8_quality", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_kendall_tau_b_known_values(bench: ModuleType) -> None:
    assert bench.kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert bench.kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # one swapped pair of three: (2 - 1) / 3
    assert bench.kendall_tau_b([3, 2, 1], [3, 1, 2]) == pytest.approx(1 / 3)
    # ties: tau-b = (C - D) / sqrt((C + D + Ta)(C + D + Tb)); a = [1,1,2], b = [1,2,3]: C = 2, Ta = 1
    assert bench.kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / np.sqrt(3 * 2))
    assert bench.kendall_tau_b([5.0], [1.0]) == 1.0  # nothing to compare
    with pytest.raises(ValueError, match="paired lists"):
        bench.kendall_tau_b([1, 2], [1])


def test_kendall_tau_b_matches_scipy(bench: ModuleType) -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.integers(0, 5, size=12).astype(float)  # with ties
        b = rng.integers(0, 5, size=12).astype(float)
        assert bench.kendall_tau_b(list(a), list(b)) == pytest.approx(stats.kendalltau(a, b).statistic)


def test_ranking_agreement_counts_identical_and_same_set_tops(bench: ModuleType) -> None:
    docs = [f"d{i}" for i in range(12)]
    ref = {q: {d: float(12 - i) for i, d in enumerate(docs)} for q in ("q1", "q2", "q3")}
    other = {q: dict(r) for q, r in ref.items()}
    # q2: two documents inside the top 10 swap (same set, not identical)
    other["q2"]["d0"], other["q2"]["d1"] = ref["q2"]["d1"], ref["q2"]["d0"]
    # q3: d11 (last) jumps to the top, and the other run lacks d10 (tau over the common documents only)
    other["q3"]["d11"] = 100.0
    del other["q3"]["d10"]
    out = bench.ranking_agreement(ref, other, k=10)
    assert out["queries"] == 3
    assert out["top_identical_share"] == pytest.approx(1 / 3)
    assert out["top_same_set_share"] == pytest.approx(2 / 3)
    tau_q2 = 1 - 2 * 1 / (12 * 11 / 2)  # one discordant pair of 66: (65 - 1) / 66
    tau_q3 = 1 - 2 * 10 / (11 * 10 / 2)  # d11 now beats the 10 common others: 10 discordant of 55
    assert out["kendall_tau_mean"] == pytest.approx((1 + tau_q2 + tau_q3) / 3)
    assert out["kendall_tau_min"] == pytest.approx(tau_q3)


def test_ranking_agreement_rejects_missing_queries(bench: ModuleType) -> None:
    with pytest.raises(ValueError, match="not in the other run"):
        bench.ranking_agreement({"q": {"a": 1.0}}, {})
    with pytest.raises(ValueError, match="at least one query"):
        bench.ranking_agreement({}, {})


def test_top_ids_breaks_ties_by_id(bench: ModuleType) -> None:
    assert bench.top_ids({"b": 1.0, "a": 1.0, "c": 2.0}, 3) == ["c", "a", "b"]


def test_vector_change_detects_a_run_that_read_the_reference(bench: ModuleType) -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(5, 8))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    same = bench.vector_change(ref, ref.copy())
    assert same["max_abs_difference"] == 0.0 and same["cosine_min"] == pytest.approx(1.0)
    moved = ref + 0.05 * rng.normal(size=ref.shape)
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    out = bench.vector_change(ref, moved)
    assert out["rows"] == 5 and 0.9 < out["cosine_min"] < 1.0 and out["max_abs_difference"] > 0
    with pytest.raises(ValueError, match="shapes differ"):
        bench.vector_change(ref, ref[:2])
    # the report refuses an int8 run whose passage vectors equal fp32's
    with pytest.raises(RuntimeError, match="read fp32 embeddings"):
        bench.check_vectors_differ("onnx-int8", {"vectors": {"text": same}})
    bench.check_vectors_differ("onnx-int8", {"vectors": {"text": out}})


def test_metric_differences_per_task_and_pooled(bench: ModuleType) -> None:
    ref = {"a": {f"q{i}": 1.0 for i in range(20)}, "b": {f"p{i}": 0.0 for i in range(10)}}
    worse = {"a": {q: (0.0 if i < 10 else 1.0) for i, q in enumerate(ref["a"])}, "b": dict(ref["b"])}
    out = bench.metric_differences(ref, worse)
    assert out["per_task"]["a"]["diff"] == pytest.approx(-0.5)
    assert out["per_task"]["a"]["verdict"] == "missed"
    assert out["per_task"]["b"]["diff"] == 0.0 and out["per_task"]["b"]["verdict"] == "tie"
    pooled = out["pooled"]
    assert pooled["n"] == 30 and pooled["diff"] == pytest.approx(-10 / 30)
    assert pooled["lo"] <= pooled["diff"] <= pooled["hi"] < 0
    identical = bench.metric_differences(ref, ref)["pooled"]
    assert (identical["diff"], identical["lo"], identical["hi"], identical["verdict"]) == (
        0.0,
        0.0,
        0.0,
        "tie",
    )
    with pytest.raises(ValueError, match="different queries"):
        bench.metric_differences(ref, {"a": {"x": 1.0}, "b": ref["b"]})
    with pytest.raises(ValueError, match="tasks differ"):
        bench.metric_differences(ref, {"a": ref["a"]})
