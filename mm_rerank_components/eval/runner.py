"""``mm-rerank eval``: every pipeline side by side on real mixed corpora (or yours), in one run.

Example (from a clean checkout, with the ``starter`` and ``eval`` extras)::

    mm-rerank eval --out reports/eval                # Tux Paint + GCompris, all scorers
    mm-rerank eval --data my_labels.jsonl --scorer starter --out my-report

Python::

    from mm_rerank_components.eval.runner import run_evaluation
    results = run_evaluation([task], embedder, {"fake": FakeScorer()})
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mm_rerank_components.calibration import (
    METHODS,
    Calibrator,
    expected_calibration_error,
    fit_calibrator,
    reliability_plot,
)
from mm_rerank_components.eval.embeddings import Embedder
from mm_rerank_components.eval.metrics import evaluate_run
from mm_rerank_components.eval.pipelines import (
    FUSION_PIPELINES,
    ORACLE_PIPELINE,
    FirstStageScorer,
    ScoredUnion,
    calibrated_run,
    compute_first_stage,
    fusion_run,
    oracle_merge_run,
    score_union,
)
from mm_rerank_components.eval.tasks import EvalTask

logger = logging.getLogger(__name__)

__all__ = ["TASKS", "build_scorer", "fit_shipped_calibration", "main", "run_evaluation"]

TASKS = ("tuxpaint-mixed", "gcompris-explore")
SCORERS = ("fake", "first-stage", "starter")
DEFAULT_METHODS = ("platt", "isotonic", "standardize", "standardize+platt")
#: Relative Recall@10 gain over the best single route that the unified pipeline must reach.
TARGET_GAIN = 0.25
TARGET_ECE = 0.05


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_scorer(name: str) -> Any:
    """``"fake"``, ``"first-stage"`` or ``"starter"`` (needs the ``starter`` extra)."""
    if name == "fake":
        from mm_rerank_components.scorers.fake import FakeScorer

        return FakeScorer()
    if name == "first-stage":
        return FirstStageScorer()
    if name == "starter":
        from mm_rerank_components.scorers.starter import StarterScorer

        return StarterScorer()
    raise ValueError(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)}")


def _default_calibrator(scorer: Any) -> Calibrator | None:
    factory = getattr(scorer, "default_calibrator", None)
    return factory() if callable(factory) else None


def _ece_by_modality(
    calibrator: Calibrator, scored: ScoredUnion, task: EvalTask, query_ids: Sequence[str]
) -> dict[str, Any]:
    probs, mods, labels = _calibrated_pairs(calibrator, scored, task, query_ids)
    out: dict[str, Any] = {}
    for modality in sorted(set(mods)):
        mask = np.asarray(mods, dtype=object) == modality
        out[modality] = expected_calibration_error(np.asarray(probs)[mask], np.asarray(labels)[mask])
    return out


def _calibrated_pairs(
    calibrator: Calibrator | None, scored: ScoredUnion, task: EvalTask, query_ids: Sequence[str]
) -> tuple[list[float], list[str], list[int]]:
    probs: list[float] = []
    mods: list[str] = []
    labels: list[int] = []
    for qid in query_ids:
        items = scored.items[qid]
        raw = [s for _, _, s in items]
        item_mods = [m for _, m, _ in items]
        probs += calibrator.calibrate(raw, item_mods) if calibrator is not None else raw
        mods += item_mods
        labels += [1 if task.qrels[qid].get(d, 0) > 0 else 0 for d, _, _ in items]
    return probs, mods, labels


def run_evaluation(
    tasks: Sequence[EvalTask],
    embedder: Embedder,
    scorers: Mapping[str, Any],
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    k_text: int = 16,
    k_image: int = 16,
    cache_dir: Path | None = None,
    out_dir: Path | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Run every pipeline on every task; return the results (and write them when ``out_dir`` is given).

    For each scorer: ``rerank:<name>`` uses the scorer's own calibration (its ``default_calibrator()``,
    or its raw scores when it has none and already outputs probabilities); ``rerank:<name>+<method>``
    uses a calibrator fitted on the task's dev queries. The pipeline reported as "two-stage unified" is
    the rerank pipeline with the best dev Recall@10; targets are checked on the held-out test queries.
    """
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    results: dict[str, Any] = {
        "config": {
            "embedder": embedder.name,
            "k_text": k_text,
            "k_image": k_image,
            "scorers": list(scorers),
            "methods": list(methods),
            "split": "test",
        },
        "tasks": {},
    }
    scored_by_task: dict[str, dict[str, ScoredUnion]] = {}
    img_dir = out_dir / "img" if out_dir is not None else None
    if img_dir is not None and plots:
        img_dir.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        started = time.perf_counter()
        _say(f"[{task.name}] {task.summary()}")
        first = compute_first_stage(task, embedder, cache_dir)
        dev, test = task.query_ids("dev"), task.query_ids("test")
        if not dev or not test:
            raise ValueError(
                f"task {task.name!r} needs dev and test queries (has {len(dev)} dev, {len(test)} test); "
                'mark some queries "split": "test" or add queries'
            )
        entry: dict[str, Any] = {
            "summary": task.summary(),
            "description": task.description,
            "pipelines": {},
            "calibration": {},
            "plots": {},
        }
        runs_all: dict[str, dict[str, dict[str, float]]] = {}
        for pipeline in FUSION_PIPELINES:
            runs_all[pipeline] = fusion_run(first, pipeline, dev + test, k_text, k_image)
        calibrators: dict[str, tuple[str, Calibrator | None]] = {}
        scored_by_task[task.name] = {}
        for scorer_name, scorer in scorers.items():
            t0 = time.perf_counter()
            scored = score_union(task, first, scorer, dev + test, k_text, k_image, cache_dir=cache_dir)
            scored_by_task[task.name][scorer_name] = scored
            _say(f"[{task.name}] scored the unions with {scorer_name} in {time.perf_counter() - t0:.1f}s")
            own = _default_calibrator(scorer)
            if own is not None or (
                getattr(scorer, "outputs_probabilities", False) and scorer_name != "first-stage"
            ):
                calibrators[f"rerank:{scorer_name}"] = (scorer_name, own)
            for method in methods:
                raw, mods, labels, qids = scored.pairs(task, dev)
                try:
                    fitted = fit_calibrator(
                        raw, mods, labels, method=method, query_ids=qids, scorer=scored.scorer
                    )
                except ValueError as exc:
                    _say(f"[{task.name}] {scorer_name}+{method}: not fitted ({exc})")
                    entry["calibration"][f"{scorer_name}+{method}"] = {"error": str(exc)}
                    continue
                calibrators[f"rerank:{scorer_name}+{method}"] = (scorer_name, fitted)
        for name, (scorer_name, calibrator) in calibrators.items():
            scored = scored_by_task[task.name][scorer_name]
            runs_all[name] = calibrated_run(scored, calibrator, dev + test)
            if calibrator is not None:
                test_pairs = sum(len(scored.items[q]) for q in test)
                entry["calibration"][name.removeprefix("rerank:")] = {
                    "ece_test": _ece_by_modality(calibrator, scored, task, test),
                    "ece_dev": _ece_by_modality(calibrator, scored, task, dev),
                    "test_pairs": test_pairs,
                }
        runs_all[ORACLE_PIPELINE] = oracle_merge_run(first, task, dev + test, k_text, k_image)
        for name, run in runs_all.items():
            entry["pipelines"][name] = {
                "dev": evaluate_run(task, {q: run[q] for q in dev}, dev),
                "test": evaluate_run(task, {q: run[q] for q in test}, test),
            }
        entry["targets"] = _targets(entry, calibrators)
        if plots and img_dir is not None:
            entry["plots"] = _plots(task, entry, calibrators, scored_by_task[task.name], img_dir)
        entry["seconds"] = round(time.perf_counter() - started, 1)
        results["tasks"][task.name] = entry
    if out_dir is not None:
        from mm_rerank_components.eval.report import write_json, write_markdown

        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(results, out_dir / "results.json")
        write_markdown(results, out_dir / "report.md", image_dir="img" if plots else None)
    results["_scored"] = scored_by_task  # for fit_shipped_calibration; not written to JSON
    return results


def _targets(
    entry: dict[str, Any], calibrators: Mapping[str, tuple[str, Calibrator | None]]
) -> dict[str, Any]:
    pipes = entry["pipelines"]
    reranks = [p for p in pipes if p.startswith("rerank:")]
    if not reranks:
        return {}

    def r10(name: str, split: str) -> float:
        return float(pipes[name][split]["overall"]["recall@10"])

    chosen = max(reranks, key=lambda p: (r10(p, "dev"), -reranks.index(p)))
    best_route = max(("text-only", "image-only"), key=lambda p: r10(p, "test"))
    unified, route = r10(chosen, "test"), r10(best_route, "test")
    gain = unified / route - 1 if route > 0 else float("inf")
    checks = [
        {
            "name": f"{chosen} vs best single route ({best_route})",
            "detail": (
                f"R@10 {unified:.3f} vs {route:.3f} ({100 * gain:+.1f}%, target >= +{100 * TARGET_GAIN:.0f}%)"
            ),
            "met": gain >= TARGET_GAIN,
        }
    ]
    for baseline in ("raw-merge", "rrf", "minmax", "zscore"):
        other = r10(baseline, "test")
        checks.append(
            {
                "name": f"{chosen} vs {baseline}",
                "detail": f"R@10 {unified:.3f} vs {other:.3f} ({unified - other:+.3f})",
                "met": unified > other,
            }
        )
    cal = entry["calibration"].get(chosen.removeprefix("rerank:"), {})
    for modality, ece in sorted(cal.get("ece_test", {}).items()):
        checks.append(
            {
                "name": f"ECE of {chosen} on {modality} candidates",
                "detail": f"{ece:.3f} (target <= {TARGET_ECE})",
                "met": ece <= TARGET_ECE,
            }
        )
    return {"chosen_on_dev": chosen, "best_single_route": best_route, "relative_gain": gain, "checks": checks}


def _plots(
    task: EvalTask,
    entry: dict[str, Any],
    calibrators: Mapping[str, tuple[str, Calibrator | None]],
    scored: Mapping[str, ScoredUnion],
    img_dir: Path,
) -> dict[str, str]:
    from mm_rerank_components.eval.report import plot_recall, plot_score_distributions

    plots: dict[str, str] = {}
    targets = entry.get("targets") or {}
    best_route = targets.get("best_single_route")
    line = (
        entry["pipelines"][best_route]["test"]["overall"]["recall@10"] * (1 + TARGET_GAIN)
        if best_route
        else None
    )
    name = f"{task.name}-recall.png"
    plot_recall(task.name, entry["pipelines"], img_dir / name, target=line)
    plots[f"{task.name}: Recall@10 per pipeline (held-out queries)"] = name
    chosen = targets.get("chosen_on_dev")
    if chosen and calibrators.get(chosen, (None, None))[1] is not None:
        scorer_name, calibrator = calibrators[chosen]
        test = task.query_ids("test")
        raw, mods, labels, _ = scored[scorer_name].pairs(task, test)
        probs, _, _ = _calibrated_pairs(calibrator, scored[scorer_name], task, test)
        name = f"{task.name}-scores.png"
        plot_score_distributions(
            f"{task.name}: {chosen}, held-out pairs, before and after calibration",
            raw,
            probs,
            mods,
            labels,
            img_dir / name,
        )
        plots[f"{task.name}: score distributions per modality before and after calibration"] = name
        groups: dict[str, tuple[list[float], list[int]]] = {
            m: (
                [p for p, mm in zip(probs, mods, strict=True) if mm == m],
                [y for y, mm in zip(labels, mods, strict=True) if mm == m],
            )
            for m in sorted(set(mods))
        }
        name = f"{task.name}-reliability.png"
        reliability_plot(groups, img_dir / name, title=f"{task.name}: {chosen}\nheld-out pairs")
        plots[f"{task.name}: reliability diagram (held-out pairs)"] = name
    return plots


def fit_shipped_calibration(
    results: Mapping[str, Any],
    tasks: Sequence[EvalTask],
    scorer_name: str,
    method: str,
    path: Path,
) -> Path:
    """Fit ``method`` for ``scorer_name`` on the dev pairs of all ``tasks`` pooled, and save it as JSON."""
    raw: list[float] = []
    mods: list[Any] = []
    labels: list[int] = []
    qids: list[str] = []
    for task in tasks:
        scored = results["_scored"][task.name][scorer_name]
        r, m, y, q = scored.pairs(task, task.query_ids("dev"))
        raw += r
        mods += m
        labels += y
        qids += [f"{task.name}/{x}" for x in q]
    calibrator = fit_calibrator(raw, mods, labels, method=method, query_ids=qids, scorer=scored.scorer)
    stats = getattr(calibrator, "stats", None)
    if isinstance(stats, dict):
        stats["fitted_on"] = [f"{t.name} (dev queries)" for t in tasks]
    return calibrator.save(path)


def _load_tasks(names: Sequence[str], data: Sequence[str], cache_dir: Path | None) -> list[EvalTask]:
    from mm_rerank_components.eval.tasks import (
        gcompris_explore_task,
        load_labelled_jsonl,
        tuxpaint_mixed_task,
    )

    tasks: list[EvalTask] = []
    for name in names:
        if name == "tuxpaint-mixed":
            tasks.append(tuxpaint_mixed_task(cache_dir))
        elif name == "gcompris-explore":
            tasks.append(gcompris_explore_task(cache_dir))
        else:  # argparse restricts choices; kept for the Python API
            raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    tasks.extend(load_labelled_jsonl(path) for path in data)
    return tasks


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mm-rerank eval",
        description=(
            "Compare text-only, image-only, raw-score merge, RRF, per-list normalisation and two-stage "
            "unified reranking on mixed text+image corpora. Writes report.md, results.json and img/*.png."
        ),
    )
    parser.add_argument(
        "--task",
        action="append",
        choices=TASKS,
        help="built-in task (repeatable; default: both unless --data is given). Data comes from Debian "
        "packages via apt-get download, cached under --cache-dir",
    )
    parser.add_argument(
        "--data", action="append", default=[], metavar="JSONL", help="your labelled data (repeatable)"
    )
    parser.add_argument(
        "--scorer",
        action="append",
        choices=SCORERS,
        help="second-stage scorer (repeatable; default: fake, first-stage and starter)",
    )
    parser.add_argument(
        "--calibration",
        action="append",
        choices=METHODS,
        help=f"calibration fitted on dev queries (repeatable; default: {' '.join(DEFAULT_METHODS)})",
    )
    parser.add_argument("--k-text", type=int, default=16, help="text route hits per query (default 16)")
    parser.add_argument("--k-image", type=int, default=16, help="image route hits per query (default 16)")
    parser.add_argument(
        "--embedder", choices=("starter", "hashing"), default="starter", help="first-stage embeddings"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("reports/eval"), help="output folder (default reports/eval)"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="data and embedding cache (default ./.cache/data)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--write-calibration",
        type=Path,
        default=None,
        metavar="JSON",
        help="also fit the starter scorer's calibration on the pooled dev queries and save it here",
    )
    parser.add_argument(
        "--write-calibration-method", choices=METHODS, default="platt", help="method for --write-calibration"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mm-rerank eval``; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.k_text < 1 or args.k_image < 1:
        parser.error(f"--k-text and --k-image must be >= 1, got {args.k_text} and {args.k_image}")
    from mm_rerank_components.eval.datasets import DatasetUnavailableError, default_cache_dir

    cache_dir = args.cache_dir or default_cache_dir()
    task_names = args.task or ([] if args.data else list(TASKS))
    scorer_names = args.scorer or list(SCORERS)
    try:
        tasks = _load_tasks(task_names, args.data, cache_dir)
        from mm_rerank_components.eval.embeddings import HashingEmbedder, StarterEmbedder

        embedder: Embedder = StarterEmbedder() if args.embedder == "starter" else HashingEmbedder()
        scorers = {name: build_scorer(name) for name in scorer_names}
        results = run_evaluation(
            tasks,
            embedder,
            scorers,
            methods=args.calibration or list(DEFAULT_METHODS),
            k_text=args.k_text,
            k_image=args.k_image,
            cache_dir=cache_dir / "embeddings",
            out_dir=args.out,
            plots=not args.no_plots,
        )
        if args.write_calibration is not None:
            if "starter" not in scorers:
                parser.error("--write-calibration fits the starter scorer: add --scorer starter")
            path = fit_shipped_calibration(
                results, tasks, "starter", args.write_calibration_method, args.write_calibration
            )
            _say(f"wrote the starter calibration to {path}")
    except (DatasetUnavailableError, ImportError, ValueError, FileNotFoundError, TypeError) as exc:
        print(f"mm-rerank eval: error: {exc}", file=sys.stderr)
        return 2
    for name, task in results["tasks"].items():
        targets = task.get("targets") or {}
        print(f"\n{name} (held-out test queries)")
        print(f"{'pipeline':34s} {'R@10':>6s} {'nDCG@10':>8s} {'MRR':>6s} {'img@10':>7s}")
        for pipeline, entry in task["pipelines"].items():
            o = entry["test"]["overall"]
            print(
                f"{pipeline:34s} {o['recall@10']:6.3f} {o['ndcg@10']:8.3f} {o['mrr']:6.3f} "
                f"{100 * entry['test']['image_share@10']:6.0f}%"
            )
        for check in targets.get("checks", []):
            print(f"  [{'met' if check['met'] else 'MISSED'}] {check['name']}: {check['detail']}")
    print(f"\nreport: {args.out / 'report.md'}  results: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
