"""Writing evaluation results: ``results.json``, ``report.md`` and PNG plots (matplotlib, lazily)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mm_rerank_components._deps import pyplot

__all__ = ["EvalReport", "plot_recall", "plot_score_distributions", "write_json", "write_markdown"]

_FAMILY_COLORS = {"route": "#9e9e9e", "fusion": "#5b8def", "rerank": "#e8743b", "learned": "#2ca02c"}


def _plt() -> Any:
    return pyplot("evaluation plots")


def family(pipeline: str) -> str:
    """``"route"`` (one route), ``"fusion"`` (label-free merges), ``"rerank"`` or ``"learned"``."""
    if pipeline in ("text-only", "image-only"):
        return "route"
    if pipeline.split("-no-routes")[0] in ("default", "adapted", "label-free"):
        return "learned"
    return "rerank" if pipeline.startswith("rerank:") else "fusion"


def plot_recall(
    task_name: str,
    pipelines: Mapping[str, Mapping[str, Any]],
    path: Path,
    *,
    split: str = "test",
    metric: str = "recall@10",
    target: float | None = None,
) -> Path:
    """Horizontal bars of ``metric`` per pipeline on ``split``; an optional dashed target line."""
    plt = _plt()
    names = list(pipelines)
    values = [pipelines[n][split]["overall"][metric] for n in names]
    shares = [pipelines[n][split]["image_share@10"] for n in names]
    fig, ax = plt.subplots(figsize=(7.0, 0.3 * len(names) + 1.6), layout="constrained")
    y = np.arange(len(names))[::-1]
    ax.barh(y, values, color=[_FAMILY_COLORS[family(n)] for n in names])
    for yi, v, s in zip(y, values, shares, strict=True):
        ax.text(v + 0.005, yi, f"{v:.3f} | {100 * s:.0f}% img", va="center", fontsize=7)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlim(0, min(1.0, max(values) * 1.35 + 0.02))
    ax.set_xlabel(f"{metric}, {split} queries (n% img: share of images in the top 10)", fontsize=8)
    ax.set_title(f"{task_name}: {metric} per pipeline", fontsize=10, pad=30)
    if target is not None:
        ax.axvline(target, linestyle="--", color="black", linewidth=1)
        ax.text(target, y[-1] - 0.45, " best route +25%", fontsize=7, va="top")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in _FAMILY_COLORS.values()]
    ax.legend(
        handles,
        ["single route", "label-free merge", "two-stage rerank", "learned fusion (default, adapted)"],
        fontsize=7,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        ncols=2,
        frameon=False,
    )
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_score_distributions(
    title: str,
    raw: Sequence[float],
    calibrated: Sequence[float],
    modalities: Sequence[str],
    labels: Sequence[int],
    path: Path,
) -> Path:
    """Score histograms per modality and relevance, raw (left) and calibrated (right)."""
    plt = _plt()
    raw_a, cal_a = np.asarray(raw, float), np.asarray(calibrated, float)
    mods, y = np.asarray(modalities, dtype=object), np.asarray(labels)
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2), constrained_layout=True)
    styles = {
        ("text", 1): ("#1f77b4", "-"),
        ("text", 0): ("#1f77b4", ":"),
        ("image", 1): ("#d62728", "-"),
        ("image", 0): ("#d62728", ":"),
    }
    for ax, values, name in ((axes[0], raw_a, "raw score"), (axes[1], cal_a, "calibrated probability")):
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
        for (modality, label), (color, style) in styles.items():
            mask = (mods == modality) & (y == label)
            if mask.any():
                ax.hist(
                    values[mask],
                    bins=bins,
                    density=True,
                    histtype="step",
                    color=color,
                    linestyle=style,
                    linewidth=1.4,
                    label=f"{modality}, {'relevant' if label else 'not relevant'} ({int(mask.sum())})",
                )
        ax.set_xlabel(name)
        ax.set_yscale("log")
        ax.set_ylabel("density (log)")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_json(results: Mapping[str, Any], path: Path) -> Path:
    """Write results as JSON (NaN becomes ``null``)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            return clean(value.item())
        return value

    path.write_text(json.dumps(clean(results), indent=2) + "\n", encoding="utf-8")
    return path


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _pipeline_table(task: Mapping[str, Any], split: str) -> list[str]:
    lines = [
        "| pipeline | R@1 | R@5 | R@10 | nDCG@10 | MRR | hit@10 | text R@10 | image R@10 "
        "| images in top 10 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in task["pipelines"].items():
        m = entry[split]
        o = m["overall"]
        lines.append(
            f"| {name} | {_fmt(o['recall@1'])} | {_fmt(o['recall@5'])} | {_fmt(o['recall@10'])} | "
            f"{_fmt(o['ndcg@10'])} | {_fmt(o['mrr'])} | {_fmt(o.get('hit_rate@10'))} | "
            f"{_fmt(m['text'].get('recall@10'))} | {_fmt(m['image'].get('recall@10'))} | "
            f"{100 * m['image_share@10']:.0f}% |"
        )
    share = next(iter(task["pipelines"].values()))[split]["relevant_image_share"]
    lines += ["", f"Pictures are {100 * share:.0f}% of the relevant documents.", ""]
    return lines


def _checks_lines(checks: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["| check | goal | measured | verdict |", "| --- | --- | --- | --- |"]
    for check in checks:
        if check.get("measurable") is False:
            verdict = f"{check['verdict']} (not measurable)"
        elif check["passes"]:
            verdict = check["verdict"]
        else:
            verdict = f"**{check['verdict']}** (target not reached)"
        lines.append(f"| {check['name']} | {check['goal']} | {check['detail']} | {verdict} |")
    return [*lines, ""]


def _calibration_lines(task: Mapping[str, Any]) -> list[str]:
    lines = [
        "### Calibration on held-out test pairs",
        "",
        "ECE (10 bins) and calibration-in-the-large among pairs predicted >= 0.1 (mean predicted vs "
        "observed relevance rate, relative gap with its bootstrap 95% CI over queries), per modality.",
        "",
        "| row | modality | ECE | pairs (relevant) | predicted >= 0.1: mean predicted / observed (pairs) | "
        "gap [95% CI] |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, cal in task["calibration"].items():
        if "error" in cal:
            lines.append(f"| {name} | – | not fitted: {cal['error']} | – | – | – |")
            continue
        if cal.get("probability") is False:
            lines.append(f"| {name} | all | not a probability ({cal.get('note', '')}) | – | – | – |")
            continue
        for modality, fig in cal.get("test", {}).items():
            big = fig["above_0.1"]
            citl = (
                f"{big['mean_predicted']:.3f} / {big['observed_rate']:.3f} ({big['pairs']})"
                if big["pairs"]
                else "none"
            )
            lines.append(
                f"| {name} | {modality} | {fig['ece']:.3f} | {fig['pairs']} ({fig['positives']}) | {citl} | "
                f"{_gap_cell(big)} |"
            )
    return [*lines, ""]


def same_score_lines(same_score: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The pooled same-score tables (``results["same_score"]``): per row and score bin, pictures' and
    passages' observed relevance and their difference, each with its bootstrap 95% CI over queries."""
    lines = [
        "## Same score, same meaning? Pictures and passages pooled over tasks",
        "",
        "Among held-out test pairs in each score bin: pairs, mean predicted and observed relevance rate "
        "[95% CI] of pictures (a captioned picture counts as a picture) and of passages, and pictures "
        "minus passages in points [95% CI]; 0 on one scale. Queries resampled within each task.",
        "",
        "| row | score bin | pictures: pairs, predicted, observed [95% CI] | passages: pairs, predicted, "
        "observed [95% CI] | pictures minus passages (points) [95% CI] |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row, table in same_score.items():
        for b in table["bins"]:
            low, high = b["bin"]
            cells = [_same_score_cell(b[modality]) for modality in ("image", "text")]
            lines.append(
                f"| {row} | {low:.1f}-{high:.1f} | {cells[0]} | {cells[1]} | {_same_score_diff(b)} |"
            )
    return [*lines, ""]


def _same_score_cell(cell: Mapping[str, Any]) -> str:
    if not cell["pairs"]:
        return "0 pairs"
    ci = "" if _absent(cell["lo"]) else f" [{cell['lo']:.2f}, {cell['hi']:.2f}]"
    return f"{cell['pairs']}, {cell['predicted']:.2f}, {cell['observed']:.2f}{ci}"


def _same_score_diff(b: Mapping[str, Any]) -> str:
    if _absent(b["diff"]):
        return "–"
    ci = "" if _absent(b["lo"]) else f" [{100 * b['lo']:+.0f}, {100 * b['hi']:+.0f}]"
    return f"{100 * b['diff']:+.0f}{ci}"


def _absent(value: float | None) -> bool:
    """No figure: ``nan`` in memory, ``null`` once written to results.json."""
    return value is None or math.isnan(value)


def _gap_cell(big: Mapping[str, Any]) -> str:
    """The relative gap and its interval; "–" when there is nothing to measure (no interval)."""
    gap, lo, hi = big.get("relative_gap"), big.get("lo"), big.get("hi")
    if not big.get("pairs") or gap is None or lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "–"
    return f"{100 * gap:+.0f}% [{100 * lo:+.0f}%, {100 * hi:+.0f}%]"


def _depth_lines(sweep: Mapping[str, Any], latency: Mapping[str, Any] | None) -> list[str]:
    lines = [
        "## Candidate depth (k_text = k_image), held-out test queries",
        "",
        "Each cell: value, then the difference from the shallowest depth with its paired bootstrap 95% CI. "
        "Union recall is the ceiling of any reranker over that pool.",
        "",
    ]
    for task_name, data in sweep.items():
        depths = list(data["depths"])
        rows = [r for r in data["depths"][depths[0]] if r != "union_recall"]
        lines += [f"### {task_name} ({data['test_queries']} queries)", ""]
        lines.append("| pipeline | metric | " + " | ".join(f"k={d}" for d in depths) + " |")
        lines.append("| --- | --- |" + " --- |" * len(depths))

        def cell(c: Mapping[str, Any], first: bool) -> str:
            if first:
                return f"{c['value']:.3f}"
            return f"{c['value']:.3f} ({c['vs_first_depth']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}])"

        cells = [cell(data["depths"][d]["union_recall"], i == 0) for i, d in enumerate(depths)]
        lines.append("| union (ceiling) | recall | " + " | ".join(cells) + " |")
        for row in rows:
            for metric in ("recall@10", "ndcg@10"):
                cells = [cell(data["depths"][d][row][metric], i == 0) for i, d in enumerate(depths)]
                lines.append(f"| {row} | {metric} | " + " | ".join(cells) + " |")
        if latency and task_name in latency:
            per = latency[task_name]
            cells = [
                f"{1000 * per[d]['seconds_per_query']:.0f} ms ({per[d]['candidates']:.0f} cand.)"
                if d in per
                else "–"
                for d in depths
            ]
            lines.append(
                "| default reranker, cold | latency per query (median) | " + " | ".join(cells) + " |"
            )
        lines.append("")
    return lines


@dataclass
class EvalReport:
    """The results of :func:`~mm_rerank_components.eval.runner.run_evaluation`, formatting themselves.

    Example:
        >>> report = EvalReport(results)  # doctest: +SKIP
        >>> print(report.markdown())  # doctest: +SKIP
        >>> report.write(Path("reports/eval"))  # doctest: +SKIP
    """

    results: Mapping[str, Any]

    def markdown(self, image_dir: str | None = None) -> str:
        """Per task the tables, every target with its CI and verdict, calibration, the pooled checks,
        the depth sweep and plots."""
        lines = ["# mm-rerank evaluation", "", self._preamble(), ""]
        for task_name, task in self.results["tasks"].items():
            lines += _task_lines(task_name, task, image_dir)
        for row, checks in self.results.get("pooled", {}).items():
            if checks:
                lines += [f"## {row}: pooled over tasks (stratified bootstrap)", "", *_checks_lines(checks)]
        if self.results.get("same_score"):
            lines += same_score_lines(self.results["same_score"])
        if self.results.get("depth_sweep"):
            lines += _depth_lines(self.results["depth_sweep"], self.results.get("latency"))
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path, image_dir: str | None = None) -> Path:
        """``results.json`` and ``report.md`` into ``out_dir``; returns the markdown's path."""
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.results, out_dir / "results.json")
        path = out_dir / "report.md"
        path.write_text(self.markdown(image_dir), encoding="utf-8")
        return path

    def _preamble(self) -> str:
        config = self.results.get("config", {})
        return (
            f"First stage: `{config.get('embedder')}`, k_text={config.get('k_text')}, "
            f"k_image={config.get('k_image')}; the candidates are merged by the retriever's own merge "
            "(routes interleaved rank by rank). Metrics by ranx; the headline split is "
            f"**{config.get('split', 'test')}** (held-out queries that no calibration, choice or learned "
            "row was fitted on). Every comparison carries a paired bootstrap 95% CI over queries: met = "
            "the CI clears the target, missed = it falls short entirely, tie = it spans the target "
            "(calibration-in-the-large: met = the whole CI within +-25%, missed = wholly outside, n/a = no "
            "pair predicted >= 0.1 or all from one query, nothing measured)."
        )


def _task_lines(task_name: str, task: Mapping[str, Any], image_dir: str | None) -> list[str]:
    summary = task["summary"]
    lines = [f"## {task_name}", "", task["description"], ""]
    lines.append(
        f"{summary['documents']} documents ({summary['text_documents']} text, "
        f"{summary['image_documents']} image); {summary['queries']} queries "
        f"({summary['dev_queries']} dev, {summary['test_queries']} held-out test). Union recall "
        f"(the ceiling of any reranker over this pool): {task['union_recall']['mean']:.3f}."
    )
    lines.append("")
    lines += ["### Held-out test queries", "", *_pipeline_table(task, "test")]
    lines += [
        "### Dev queries",
        "",
        "(`adapted` is fitted on these, so its dev row is in-sample.)",
        "",
        *_pipeline_table(task, "dev"),
    ]
    for row, info in (task.get("targets") or {}).get("rows", {}).items():
        lines += [f"### Targets: {row} ({info['role']})", "", *_checks_lines(info["checks"])]
    if task.get("calibration"):
        lines += _calibration_lines(task)
    if image_dir is not None and task.get("plots"):
        for caption, file_name in task["plots"].items():
            lines += [f"![{caption}]({image_dir}/{file_name})", ""]
    return lines


def write_markdown(results: Mapping[str, Any], path: Path, image_dir: str | None = None) -> Path:
    """Write :meth:`EvalReport.markdown` to ``path``."""
    path.write_text(EvalReport(results).markdown(image_dir), encoding="utf-8")
    return path
