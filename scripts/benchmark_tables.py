"""Print the markdown tables of docs/benchmarks.md from an eval run's ``results.json``.

Every figure in those tables comes from this script, so the docs say exactly what the run measured:
per task, each pipeline's held-out Recall@10 and nDCG@10 with its paired bootstrap 95% CI against RRF
and min-max; the default's and the adapted row's target checks; the pooled checks; calibration per
modality; the pooled same-score table (pictures and passages at the same score); the depth sweep.

Usage::

    mm-rerank --threads 1 eval --scorer first-stage --scorer starter --out reports/eval
    python scripts/benchmark_tables.py reports/eval/results.json > /tmp/tables.md
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mm_rerank_components.eval.metrics import per_query_values
from mm_rerank_components.eval.report import _checks_lines, _depth_lines, _gap_cell, same_score_lines
from mm_rerank_components.eval.stats import paired_bootstrap
from mm_rerank_components.eval.targets import TARGET_ECE

ROWS = (
    "text-only",
    "image-only",
    "raw-merge",
    "rrf",
    "minmax",
    "zscore",
    "rerank:first-stage+platt",
    "rerank:starter",
    "rerank:starter+platt",
    "rerank:starter+isotonic",
    "rerank:starter+standardize+platt",
    "default",
    "default-no-routes",
    "adapted",
    "adapted-no-routes",
    "label-free",
)
TITLES = {
    "tuxpaint-mixed": "Tux Paint mixed corpus",
    "gcompris-explore": "GCompris explore",
    "wesnoth-units": "Wesnoth units",
    "widelands-items": "Widelands items",
    "freeorion-items": "FreeOrion items",
}


def _vs(task: Mapping[str, Any], row: str, other: str, metric: str) -> str:
    if row == other:
        return "–"
    qids = task["test_queries"]
    pipes = task["pipelines"]
    r = paired_bootstrap(
        per_query_values(pipes[row]["test"], metric, qids),
        per_query_values(pipes[other]["test"], metric, qids),
    )
    verdict = {"met": "above", "missed": "**below**", "tie": "tie"}[r["verdict"]]
    return f"{r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}] {verdict}"


def task_table(name: str, task: Mapping[str, Any]) -> list[str]:
    pipes = task["pipelines"]
    share = next(iter(pipes.values()))["test"]["relevant_image_share"]
    lines = [
        f"### {TITLES.get(name, name)} ({len(task['test_queries'])} held-out queries; union recall "
        f"{task['union_recall']['mean']:.3f}; pictures are {100 * share:.0f}% of relevant)",
        "",
        "| pipeline | R@10 | nDCG@10 | R@10 vs RRF | R@10 vs min-max | nDCG@10 vs min-max "
        "| pictures in top 10 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in ROWS:
        if row not in pipes:
            continue
        o = pipes[row]["test"]["overall"]
        lines.append(
            f"| {row} | {o['recall@10']:.3f} | {o['ndcg@10']:.3f} | {_vs(task, row, 'rrf', 'recall@10')} | "
            f"{_vs(task, row, 'minmax', 'recall@10')} | {_vs(task, row, 'minmax', 'ndcg@10')} | "
            f"{100 * pipes[row]['test']['image_share@10']:.0f}% |"
        )
    return [*lines, ""]


def checks(results: Mapping[str, Any], row: str) -> list[str]:
    lines: list[str] = []
    for name, task in results["tasks"].items():
        info = task["targets"]["rows"].get(row)
        if info:
            lines += [f"{TITLES.get(name, name)}:", "", *_checks_lines(info["checks"])]
    pooled = results.get("pooled", {}).get(row)
    if pooled:
        lines += ["Pooled over the tasks (stratified bootstrap):", "", *_checks_lines(pooled)]
    return lines


def calibration(results: Mapping[str, Any], rows: tuple[str, ...]) -> list[str]:
    lines = [
        "| row | task | modality | ECE | predicted >= 0.1: mean predicted / observed (pairs) "
        "| gap [95% CI] |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        for name, task in results["tasks"].items():
            cal = task["calibration"].get(row, {})
            for modality, fig in cal.get("test", {}).items():
                big = fig["above_0.1"]
                citl = (
                    f"{big['mean_predicted']:.3f} / {big['observed_rate']:.3f} ({big['pairs']})"
                    if big["pairs"]
                    else "none"
                )
                lines.append(
                    f"| {row} | {name} | {modality} | {fig['ece']:.3f} | {citl} | {_gap_cell(big)} |"
                )
    return [*lines, ""]


SUMMARY_ROWS = ("default", "default-no-routes", "adapted", "label-free")


def _citl_check(task: Mapping[str, Any], row: str, modality: str) -> Mapping[str, Any] | None:
    info = task["targets"]["rows"].get(row, {})
    return next(
        (
            c
            for c in info.get("checks", [])
            if c["name"].startswith(f"{row}: mean predicted vs observed among {modality} ")
        ),
        None,
    )


def calibration_summary(results: Mapping[str, Any], rows: tuple[str, ...] = SUMMARY_ROWS) -> list[str]:
    """Issue 19's calibration targets, one line per row x task x modality, and a count per row.

    "met": the whole 95% CI of predicted/observed - 1 is inside +-25%; "tie": it crosses an edge (the
    target, an overlapping interval, still holds); "missed": wholly outside; "n/a": nothing predicted
    >= 0.1 to measure.
    """
    lines = [
        "| row | task | modality | predicted / observed (pairs >= 0.1) | gap [95% CI] | band "
        f"| ECE (<= {TARGET_ECE}) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        for name, task in results["tasks"].items():
            for modality, fig in task["calibration"].get(row, {}).get("test", {}).items():
                check = _citl_check(task, row, modality)
                verdict = check["verdict"] if check else "n/a"
                ece_ok = fig["ece"] <= TARGET_ECE
                tally = counts.setdefault(
                    row, {"met": 0, "tie": 0, "missed": 0, "n/a": 0, "ece": 0, "cells": 0}
                )
                tally[verdict] += 1
                tally["ece"] += ece_ok
                tally["cells"] += 1
                big = fig["above_0.1"]
                shown = verdict if verdict != "missed" else "**missed**"
                figures = (
                    f"{big['mean_predicted']:.3f} / {big['observed_rate']:.3f} ({big['pairs']})"
                    if big.get("pairs")
                    else "no pair predicted >= 0.1"
                )
                lines.append(
                    f"| {row} | {name} | {modality} | {figures} | {_gap_cell(big)} | {shown} | "
                    f"{fig['ece']:.3f}"
                    f"{'' if ece_ok else ' **missed**'} |"
                )
    lines += ["", "| row | cells | CI inside +-25% | crosses an edge | wholly outside | n/a | ECE met |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for row, t in counts.items():
        lines.append(
            f"| {row} | {t['cells']} | {t['met']} | {t['tie']} | {t['missed']} | {t['n/a']} | {t['ece']} |"
        )
    return [*lines, ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results.json of an mm-rerank eval run")
    args = parser.parse_args()
    results = json.loads(args.results.read_text(encoding="utf-8"))
    out: list[str] = ["## Per task (held-out test queries)", ""]
    for name, task in results["tasks"].items():
        out += task_table(name, task)
    out += ["## The product default (label-free) against its targets", "", *checks(results, "default")]
    out += ["## Adapted against its targets", "", *checks(results, "adapted")]
    out += ["## Label-free adapted against its targets", "", *checks(results, "label-free")]
    out += ["## Without route signals against their targets", ""]
    out += [*checks(results, "default-no-routes"), *checks(results, "adapted-no-routes")]
    out += ["## Issue 19 calibration targets, per row x task x modality", "", *calibration_summary(results)]
    out += ["## Calibration, per modality, on held-out pairs", ""]
    out += calibration(
        results,
        (
            "starter",
            "default",
            "default-no-routes",
            "adapted",
            "adapted-no-routes",
            "label-free",
        ),
    )
    if results.get("same_score"):
        out += same_score_lines(results["same_score"])
    out += _depth_lines(results.get("depth_sweep", {}), results.get("latency"))
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
