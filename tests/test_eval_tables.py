"""scripts/benchmark_tables.py: the issue 19 calibration summary read from an eval run's results."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from mm_rerank_components.eval.targets import calibration_checks, calibration_figures


def _tables() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_tables.py"
    spec = importlib.util.spec_from_file_location("benchmark_tables", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _task(prob: float, rate_every: int) -> dict[str, Any]:
    n = 200
    probs = [prob] * n
    labels = [1 if i % rate_every == 0 else 0 for i in range(n)]
    queries = [f"q{i // 10}" for i in range(n)]
    figures = calibration_figures(probs, ["image"] * n, labels, queries)
    return {
        "calibration": {"default": {"test": figures}},
        "targets": {"rows": {"default": {"checks": calibration_checks("default", figures)}}},
    }


def test_the_summary_counts_each_cells_band_verdict_and_ece() -> None:
    tables = _tables()
    # 0.5 predicted vs 0.5 observed: inside the band; 0.5 vs 0.1: wholly outside
    results = {"tasks": {"good": _task(0.5, 2), "bad": _task(0.5, 10)}}
    lines = tables.calibration_summary(results, ("default",))
    good = next(line for line in lines if line.startswith("| default | good | image |"))
    bad = next(line for line in lines if line.startswith("| default | bad | image |"))
    assert "| met |" in good and "0.500 / 0.500 (200)" in good
    assert "| **missed** |" in bad and "+400%" in bad
    assert "| default | 2 | 1 | 0 | 1 | 0 | 1 |" in lines  # 1 inside, 1 outside; ECE met once
