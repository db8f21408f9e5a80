"""``mm-rerank eval``: every pipeline side by side on real mixed corpora (or yours), in one run.

Example (from a clean checkout, with the ``starter`` and ``eval`` extras)::

    mm-rerank eval --out reports/eval                # Tux Paint + GCompris, all scorers
    mm-rerank eval --data my_labels.jsonl --scorer starter --out my-report

Python::

    from mm_rerank_components.eval.runner import run_evaluation
    results = run_evaluation([task], embedder, {"fake": FakeScorer()})
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_rerank_components.calibration import (
    METHODS,
    Calibrator,
    fit_calibrator,
    reliability_plot,
)
from mm_rerank_components.eval.embeddings import Embedder
from mm_rerank_components.eval.learned import PreparedTask, label_free_union, learned_rows, training_summary
from mm_rerank_components.eval.metrics import evaluate_run, per_query_values
from mm_rerank_components.eval.pipelines import (
    FUSION_PIPELINES,
    ScoredUnion,
    calibrated_run,
    compute_first_stage,
    fusion_run,
    score_union,
    union_recall,
)
from mm_rerank_components.eval.sources import TASK_NAMES
from mm_rerank_components.eval.stats import paired_bootstrap
from mm_rerank_components.eval.targets import (
    TARGET_GAIN,
    PooledPairs,
    calibration_checks,
    calibration_figures,
    pooled_checks,
    row_checks,
)
from mm_rerank_components.eval.tasks import EvalTask

logger = logging.getLogger(__name__)

__all__ = [
    "DEPTHS",
    "TASKS",
    "build_scorer",
    "compare_results",
    "fit_shipped_calibration",
    "measure_latency",
    "run_evaluation",
]

TASKS = TASK_NAMES
#: The scorers the built-in eval runs by default (any spec of the scorer registry also works).
SCORERS = ("fake", "first-stage", "starter")
DEFAULT_METHODS = ("platt", "isotonic", "temperature", "standardize", "standardize+platt")
#: Candidate depths (``k_text = k_image``) of the depth sweep.
DEPTHS = (16, 32, 64, 100)
#: The scorer the learned rows (default, adapted) fuse; they are skipped when it is not run.
LEARNED_SCORER = "starter"
Progress = Callable[[str], None]


def build_scorer(name: str, *, cache: bool = True, image_model: str | None = None) -> Any:
    """The scorer a spec names (:func:`~mm_rerank_components.scorers.scorer_from_spec`: ``"fake"``,
    ``"first-stage"``, ``"starter"`` (needs the ``starter`` extra), ``"cross-encoder:PATH"``, ...).

    ``cache=False`` turns off the starter scorer's in-memory caches (for cold latency figures);
    ``image_model`` picks the starter's classifier (``"efficientnet-lite0"`` or ``"efficientnet-lite2"``).
    """
    from mm_rerank_components.scorers.registry import scorer_from_spec

    options: dict[str, Any] = {}
    if name == "starter":
        options = {} if cache else {"image_cache_size": 0, "text_cache_size": 0}
        if image_model is not None:
            options["image_model"] = image_model
    return scorer_from_spec(name, **options)


def _default_calibrator(scorer: Any) -> Calibrator | None:
    from mm_rerank_components.scorers.base import BaseScorer

    # the hook is declared on BaseScorer; a plain protocol scorer ships no calibration
    return scorer.default_calibrator() if isinstance(scorer, BaseScorer) else None


def _is_probability(calibrator: Calibrator | None) -> bool:
    return calibrator is not None and getattr(calibrator, "outputs_probabilities", True) is not False


def _calibrated_pairs(
    calibrator: Calibrator | None, scored: ScoredUnion, task: EvalTask, query_ids: Sequence[str]
) -> tuple[list[float], list[str], list[int], list[str]]:
    """Probability, modality, label and query id of every candidate of ``query_ids``.

    The query ids let the calibration interval resample whole queries.
    """
    probs: list[float] = []
    mods: list[str] = []
    labels: list[int] = []
    queries: list[str] = []
    for qid in query_ids:
        items = scored.items[qid]
        raw = [s for _, _, s in items]
        item_mods = [m for _, m, _ in items]
        probs += calibrator.calibrate(raw, item_mods) if calibrator is not None else raw
        mods += item_mods
        labels += [1 if task.qrels[qid].get(d, 0) > 0 else 0 for d, _, _ in items]
        queries += [qid] * len(items)
    return probs, mods, labels, queries


class _Reporter:
    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress

    def __call__(self, message: str, *args: Any) -> None:
        text = message % args if args else message
        logger.info(text)
        if self.progress is not None:
            self.progress(text)


def _prepare(
    tasks: Sequence[EvalTask],
    embedder: Embedder,
    scorers: Mapping[str, Any],
    deepest: tuple[int, int],
    cache_dir: Path | None,
    say: _Reporter,
) -> list[PreparedTask]:
    names = [t.name for t in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f'two tasks are named {duplicates[0]!r}; name them apart (a "task" line with a "name" in '
            "each JSONL, or load_labelled_jsonl(path, name=...))"
        )
    prepared = []
    for task in tasks:
        dev, test = task.query_ids("dev"), task.query_ids("test")
        if not dev or not test:
            raise ValueError(
                f"task {task.name!r} needs dev and test queries (has {len(dev)} dev, {len(test)} test); "
                'mark some queries "split": "test" or add queries'
            )
        say("[%s] %s", task.name, task.summary())
        first = compute_first_stage(task, embedder, cache_dir)
        scored = {}
        for scorer_name, scorer in scorers.items():
            t0 = time.perf_counter()
            scored[scorer_name] = score_union(task, first, scorer, dev + test, *deepest, cache_dir=cache_dir)
            say("[%s] scored the unions with %s in %.1fs", task.name, scorer_name, time.perf_counter() - t0)
        prepared.append(PreparedTask(task, first, scored))
    return prepared


def _fit_calibrators(
    prep: PreparedTask,
    scorers: Mapping[str, Any],
    scored: Mapping[str, ScoredUnion],
    methods: Sequence[str],
    entry: dict[str, Any],
    say: _Reporter,
) -> dict[str, tuple[str, Calibrator | None]]:
    task = prep.task
    dev = task.query_ids("dev")
    calibrators: dict[str, tuple[str, Calibrator | None]] = {}
    for scorer_name, scorer in scorers.items():
        own = _default_calibrator(scorer)
        if own is not None or (
            getattr(scorer, "outputs_probabilities", False) and scorer_name != "first-stage"
        ):
            calibrators[f"rerank:{scorer_name}"] = (scorer_name, own)
        raw, mods, labels, qids = scored[scorer_name].pairs(task, dev)
        for method in methods:
            try:
                fitted = fit_calibrator(
                    raw, mods, labels, method=method, query_ids=qids, scorer=scored[scorer_name].scorer
                )
            except ValueError as exc:
                say("[%s] %s+%s: not fitted (%s)", task.name, scorer_name, method, exc)
                entry["calibration"][f"{scorer_name}+{method}"] = {"error": str(exc)}
                continue
            calibrators[f"rerank:{scorer_name}+{method}"] = (scorer_name, fitted)
    return calibrators


def _task_rows(
    prep: PreparedTask,
    everything: Sequence[PreparedTask],
    scorers: Mapping[str, Any],
    methods: Sequence[str],
    depth: tuple[int, int],
    train_depth: tuple[int, int],
    models: dict[tuple[str, str], Any],
    entry: dict[str, Any],
    say: _Reporter,
    learned_scorer: str | None = LEARNED_SCORER,
) -> tuple[
    dict[str, dict[str, dict[str, float]]], dict[str, tuple[str, Calibrator | None]], dict[str, ScoredUnion]
]:
    """Every pipeline's run at ``depth`` (fusions, reranks, learned rows), with the reranks' calibration
    figures (the learned rows': :func:`_learned_calibration`)."""
    task, first = prep.task, prep.first
    qids = task.query_ids("dev") + task.query_ids("test")
    test = task.query_ids("test")
    runs: dict[str, dict[str, dict[str, float]]] = {
        p: fusion_run(first, p, qids, *depth) for p in FUSION_PIPELINES
    }
    scored = {name: su.restrict(first, *depth) for name, su in prep.scored.items()}
    calibrators = _fit_calibrators(prep, scorers, scored, methods, entry, say)
    for name, (scorer_name, calibrator) in calibrators.items():
        runs[name] = calibrated_run(scored[scorer_name], calibrator, qids)
        if calibrator is None:
            continue
        key = name.removeprefix("rerank:")
        cal: dict[str, Any] = {"test_pairs": sum(len(scored[scorer_name].items[q]) for q in test)}
        if _is_probability(calibrator):
            probs, mods, labels, pair_queries = _calibrated_pairs(calibrator, scored[scorer_name], task, test)
            cal["test"] = calibration_figures(probs, mods, labels, pair_queries)
        else:
            cal["probability"] = False
            cal["note"] = "label-free per-query standardisation: orders a list, is not P(relevant)"
        entry["calibration"][key] = cal
    learned: dict[str, ScoredUnion] = {}
    if learned_scorer is not None and learned_scorer in prep.scored:
        try:
            learned = learned_rows(
                prep, everything, learned_scorer, *depth, train_depth=train_depth, models=models
            )
        except ImportError as exc:  # the learned rows need the adapt extra (bm25s)
            say("[%s] no default/adapted rows: %s", prep.task.name, exc)
        for name, su in learned.items():
            runs[name] = calibrated_run(su, None, qids)  # its calibration: _learned_calibration
    return runs, calibrators, learned


def _chosen(pipes: Mapping[str, Any]) -> str | None:
    reranks = [p for p in pipes if p.startswith("rerank:")]
    if not reranks:
        return None

    def dev_r10(name: str) -> float:
        return float(pipes[name]["dev"]["overall"]["recall@10"])

    return max(reranks, key=lambda p: (dev_r10(p), -reranks.index(p)))


def _targets(entry: dict[str, Any], test: Sequence[str]) -> dict[str, Any]:
    pipes = entry["pipelines"]
    chosen = _chosen(pipes)
    rows: dict[str, Any] = {}
    if chosen is not None:
        rows[chosen] = {"role": "chosen on dev", "checks": row_checks(pipes, chosen, "chosen", test)}
    default = (
        "default"
        if "default" in pipes
        else f"rerank:{LEARNED_SCORER}"
        if f"rerank:{LEARNED_SCORER}" in pipes
        else None
    )
    if default is not None:
        rows.setdefault(default, {"role": "product default", "checks": []})
        rows[default]["role"] = "product default" if default != chosen else "chosen on dev; product default"
        rows[default]["checks"] += row_checks(pipes, default, "default", test)
    if "adapted" in pipes:
        rows["adapted"] = {"role": "adapted on dev", "checks": row_checks(pipes, "adapted", "chosen", test)}
    if "label-free" in pipes:
        checks = row_checks(pipes, "label-free", "label-free", test)
        rows["label-free"] = {"role": "adapted to the corpus without labels", "checks": checks}
    for row in ("default-no-routes", "adapted-no-routes"):
        if row in pipes:  # the same model on candidates without route signals: its calibration
            rows[row] = {"role": f"{row.split('-')[0]}, candidates without route signals", "checks": []}
    for row, info in rows.items():
        cal = entry["calibration"].get(row.removeprefix("rerank:"), {})
        if "test" in cal:
            info["checks"] += calibration_checks(row, cal["test"])
    from mm_rerank_components.eval.targets import best_route

    return {
        "chosen_on_dev": chosen,
        "product_default": default,
        "best_single_route": best_route(pipes, test) if "text-only" in pipes else None,
        "rows": rows,
    }


def _depth_sweep(
    prepared: Sequence[PreparedTask],
    depths: Sequence[int],
    base: tuple[int, int],
    scorers: Mapping[str, Any],
    models: dict[tuple[str, str], Any],
    say: _Reporter,
    learned_scorer: str | None,
) -> dict[str, Any]:
    """Per task and depth: the union's recall (the ceiling) and each pipeline's R@10 and nDCG@10 with
    a bootstrap 95% CI of its difference from the shallowest depth."""
    out: dict[str, Any] = {}
    for prep in prepared:
        task = prep.task
        test = task.query_ids("test")
        per_depth: dict[int, dict[str, Any]] = {}
        for depth in depths:
            scratch: dict[str, Any] = {"calibration": {}}
            runs, _, _ = _task_rows(
                prep, prepared, scorers, (), (depth, depth), base, models, scratch, say, learned_scorer
            )
            ceiling = union_recall(prep.first, task, test, depth, depth)
            metrics = {
                name: evaluate_run(task, {q: run[q] for q in test}, test) for name, run in runs.items()
            }
            per_depth[depth] = {"ceiling": ceiling, "metrics": metrics}
            say("[%s] depth %d: union recall %.3f", task.name, depth, float(np.mean(list(ceiling.values()))))
        first_depth = depths[0]
        table: dict[str, Any] = {}
        for depth, data in per_depth.items():
            row: dict[str, Any] = {}
            row["union_recall"] = _vs(
                [data["ceiling"][q] for q in test], [per_depth[first_depth]["ceiling"][q] for q in test]
            )
            for name, metrics in data["metrics"].items():
                row[name] = {
                    metric: _vs(
                        per_query_values(metrics, metric, test),
                        per_query_values(per_depth[first_depth]["metrics"][name], metric, test),
                    )
                    for metric in ("recall@10", "ndcg@10")
                }
            table[str(depth)] = row
        out[task.name] = {"test_queries": len(test), "depths": table}
    return out


def _vs(values: Sequence[float], reference: Sequence[float]) -> dict[str, Any]:
    result = paired_bootstrap(values, reference)
    return {
        "value": result["a"],
        "vs_first_depth": result["diff"],
        "lo": result["lo"],
        "hi": result["hi"],
        "verdict": result["verdict"],
    }


def measure_latency(
    prepared: Sequence[PreparedTask],
    make_reranker: Callable[[], Any],
    depths: Sequence[int],
    n_queries: int = 5,
) -> dict[str, Any]:
    """Seconds per query to rerank the union at each depth, with a fresh (cold) reranker per depth.

    ``make_reranker()`` must return something with ``rerank(query, candidates)``; each depth gets a new
    one so no cache carries over. The first ``n_queries`` test queries of each task are timed.
    """
    from dataclasses import replace

    out: dict[str, Any] = {}
    for prep in prepared:
        qids = prep.task.query_ids("test")[:n_queries]
        per_depth = {}
        for depth in depths:
            reranker = make_reranker()
            reranker.rerank("warm-up", [prep.task.docs[next(iter(prep.task.docs))]])
            times = []
            for qid in qids:
                candidates = [
                    replace(prep.task.docs[d], source=route, retrieval_score=s)
                    for d, route, s in prep.first.union(qid, depth, depth)
                ]
                t0 = time.perf_counter()
                reranker.rerank(prep.task.queries[qid], candidates)
                times.append(time.perf_counter() - t0)
            per_depth[str(depth)] = {
                "seconds_per_query": float(np.median(times)),
                "candidates": float(np.mean([len(prep.first.union(q, depth, depth)) for q in qids])),
                "queries": len(qids),
            }
        out[prep.task.name] = per_depth
    return out


def run_evaluation(
    tasks: Sequence[EvalTask],
    embedder: Embedder,
    scorers: Mapping[str, Any],
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    k_text: int = 16,
    k_image: int = 16,
    depths: Sequence[int] = (),
    cache_dir: Path | None = None,
    out_dir: Path | None = None,
    plots: bool = True,
    progress: Progress | None = None,
    scored_out: dict[str, dict[str, ScoredUnion]] | None = None,
    latency: Callable[[], Any] | None = None,
    learned_scorer: str | None = LEARNED_SCORER,
    label_free: bool = False,
) -> dict[str, Any]:
    """Run every pipeline on every task; return the results (and write them when ``out_dir`` is given).

    For each scorer: ``rerank:<name>`` uses the scorer's own calibration (its ``default_calibrator()``,
    or its raw scores when it has none and already outputs probabilities); ``rerank:<name>+<method>``
    uses a calibrator fitted on the task's dev queries. With the ``starter`` scorer two learned rows
    join (:mod:`mm_rerank_components.eval.learned`): ``default`` (the label-free product default,
    refitted leave-one-task-out on built-in tasks) and ``adapted`` (fitted on the task's dev queries).
    Targets (:mod:`mm_rerank_components.eval.targets`) are checked on the held-out test queries with
    a paired bootstrap 95% CI for every comparison, for the row chosen on dev, the product default and
    the adapted row; ``results["pooled"]`` pools the learned rows over tasks (their issue 19 targets).

    Size: its 13 options and their documentation take half of it; the body is about 35 lines.

    Args:
        depths: also sweep ``k_text = k_image`` over these depths (union recall, R@10, nDCG@10).
        progress: called with each progress line (they also go to this module's logger).
        scored_out: filled with ``{task: {scorer: ScoredUnion}}`` (raw scores at ``k_text``/``k_image``).
        latency: a factory of a fresh reranker, timed per query at each depth (``results["latency"]``).
        learned_scorer: the scorer whose raw scores the learned rows fuse (``None``: no learned rows).
        label_free: also the ``label-free`` row (:func:`~mm_rerank_components.eval.learned.label_free_union`:
            ``adapt_from_corpus`` on each task's documents, no labels); it scores pseudo-query pools.

    Example:
        >>> results = run_evaluation([task], HashingEmbedder(), {"fake": FakeScorer()})  # doctest: +SKIP
        >>> results["tasks"][task.name]["targets"]["rows"]  # doctest: +SKIP
    """
    _check_options(methods, k_text, k_image, depths)
    say = _Reporter(progress)
    base = (k_text, k_image)
    deepest = (max([k_text, *depths]), max([k_image, *depths]))
    config = {"embedder": embedder.name, "k_text": k_text, "k_image": k_image, "depths": list(depths)}
    config |= {"scorers": list(scorers), "methods": list(methods), "split": "test"}
    results: dict[str, Any] = {"config": config, "tasks": {}}
    prepared = _prepare(tasks, embedder, scorers, deepest, cache_dir, say)
    if scored_out is not None:
        scored_out.update(
            {p.task.name: {n: su.restrict(p.first, *base) for n, su in p.scored.items()} for p in prepared}
        )
    img_dir = out_dir / "img" if out_dir is not None and plots else None
    if img_dir is not None:
        img_dir.mkdir(parents=True, exist_ok=True)
    models: dict[tuple[str, str], Any] = {}
    pairs: dict[str, PooledPairs] = {}
    for prep in prepared:
        context = _TaskContext(
            prepared, scorers, methods, base, models, say, learned_scorer, embedder, label_free, pairs
        )
        results["tasks"][prep.task.name] = _task_entry(prep, context, img_dir)
    results["pooled"] = _pooled(results["tasks"])
    # per learned row, pooled over tasks: do pictures and passages mean the same at the same score?
    results["same_score"] = {row: pool.table() for row, pool in pairs.items()}
    results["learned_models"] = training_summary(models)
    if depths:
        results["depth_sweep"] = _depth_sweep(prepared, depths, base, scorers, models, say, learned_scorer)
        if latency is not None:
            results["latency"] = measure_latency(prepared, latency, depths)
    if out_dir is not None:
        from mm_rerank_components.eval.report import EvalReport

        EvalReport(results).write(out_dir, image_dir="img" if plots else None)
    return results


def _pooled(entries: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each learned row's pooled targets (:data:`~mm_rerank_components.eval.targets.POOLED_TARGETS`)."""
    rows = ("default", "adapted", "label-free")
    return {
        row: pooled_checks(entries, row)
        for row in rows
        if any(row in e["pipelines"] for e in entries.values())
    }


def _check_options(methods: Sequence[str], k_text: int, k_image: int, depths: Sequence[int]) -> None:
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    if k_text < 1 or k_image < 1 or any(d < 1 for d in depths):
        raise ValueError(
            f"depths must be >= 1, got k_text={k_text}, k_image={k_image}, depths={list(depths)}"
        )


@dataclass
class _TaskContext:
    """What every task's rows share in one run (the other tasks, scorers, fitted models, progress)."""

    prepared: Sequence[PreparedTask]
    scorers: Mapping[str, Any]
    methods: Sequence[str]
    base: tuple[int, int]
    models: dict[tuple[str, str], Any]
    say: _Reporter
    learned_scorer: str | None
    embedder: Embedder | None = None
    label_free: bool = False
    #: every learned row's held-out test pairs so far, over tasks, for the pooled same-score table
    #: (filled by :func:`_learned_calibration`)
    pairs: dict[str, PooledPairs] = field(default_factory=dict)


def _label_free_row(
    prep: PreparedTask,
    ctx: _TaskContext,
    runs: dict[str, Any],
    learned: dict[str, ScoredUnion],
) -> None:
    """The ``label-free`` row: ``adapt_from_corpus`` on the task's documents, no labels (its calibration:
    :func:`_learned_calibration`)."""
    if ctx.embedder is None or ctx.learned_scorer is None:
        return
    task = prep.task
    ctx.say("[%s] label-free adaptation on the task's %d documents", task.name, len(task.docs))
    su = label_free_union(
        prep,
        ctx.scorers[ctx.learned_scorer],
        ctx.embedder.embed_texts,
        ctx.learned_scorer,
        *ctx.base,
        ctx.models,
    )
    learned["label-free"] = su
    runs["label-free"] = calibrated_run(su, None, task.query_ids("all"))


def _task_entry(prep: PreparedTask, ctx: _TaskContext, img_dir: Path | None) -> dict[str, Any]:
    """One task's results: every pipeline on dev and test, union recall, targets, plots."""
    task = prep.task
    started = time.perf_counter()
    dev, test = task.query_ids("dev"), task.query_ids("test")
    entry: dict[str, Any] = {
        "summary": task.summary(),
        "description": task.description,
        "test_queries": test,
        "pipelines": {},
        "calibration": {},
        "plots": {},
    }
    runs, calibrators, learned = _task_rows(
        prep,
        ctx.prepared,
        ctx.scorers,
        ctx.methods,
        ctx.base,
        ctx.base,
        ctx.models,
        entry,
        ctx.say,
        ctx.learned_scorer,
    )
    if ctx.label_free and ctx.learned_scorer in prep.scored:
        _label_free_row(prep, ctx, runs, learned)
    _learned_calibration(task, learned, entry, ctx.pairs)
    for name, run in runs.items():
        entry["pipelines"][name] = {
            "dev": evaluate_run(task, {q: run[q] for q in dev}, dev),
            "test": evaluate_run(task, {q: run[q] for q in test}, test),
        }
    ceiling = union_recall(prep.first, task, test, *ctx.base)
    entry["union_recall"] = {"mean": float(np.mean(list(ceiling.values()))), "per_query": ceiling}
    entry["targets"] = _targets(entry, test)
    if img_dir is not None:
        scored = {n: su.restrict(prep.first, *ctx.base) for n, su in prep.scored.items()}
        entry["plots"] = _plots(task, entry, calibrators, scored, learned, img_dir, ctx.learned_scorer)
    entry["seconds"] = round(time.perf_counter() - started, 1)
    return entry


def _learned_calibration(
    task: EvalTask, learned: Mapping[str, ScoredUnion], entry: dict[str, Any], pairs: dict[str, PooledPairs]
) -> None:
    """Each learned row's held-out test pairs, read once: its calibration figures in ``entry``, and the
    pairs added to ``pairs`` for the pooled same-score table."""
    test = task.query_ids("test")
    for name, su in learned.items():
        probs, mods, labels, pair_queries = _calibrated_pairs(None, su, task, test)
        entry["calibration"][name] = {
            "test_pairs": len(probs),
            "test": calibration_figures(probs, mods, labels, pair_queries),
        }
        pairs.setdefault(name, PooledPairs()).add(probs, mods, labels, pair_queries, task.name)


def compare_results(current: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """Paired comparisons of the rows two runs share, on the test queries both hold (this minus other).

    For comparing settings (an image model, a depth) on the same tasks: each shared task and pipeline
    gets a paired bootstrap 95% CI of the difference in Recall@10 and nDCG@10.

    Example:
        >>> compare_results(run_b, run_a)["gcompris-explore"]["rrf"]["recall@10"]["verdict"]  # doctest: +SKIP
        'tie'
    """
    out: dict[str, Any] = {}
    for task_name, entry in current["tasks"].items():
        theirs = other.get("tasks", {}).get(task_name)
        if theirs is None:
            continue
        qids = [q for q in entry["test_queries"] if q in set(theirs.get("test_queries", []))]
        if not qids:
            continue
        rows: dict[str, Any] = {}
        for name, pipe in entry["pipelines"].items():
            if name not in theirs["pipelines"]:
                continue
            rows[name] = {
                metric: paired_bootstrap(
                    per_query_values(pipe["test"], metric, qids),
                    per_query_values(theirs["pipelines"][name]["test"], metric, qids),
                )
                for metric in ("recall@10", "ndcg@10")
            }
        out[task_name] = rows
    return out


def _plots(
    task: EvalTask,
    entry: dict[str, Any],
    calibrators: Mapping[str, tuple[str, Calibrator | None]],
    scored: Mapping[str, ScoredUnion],
    learned: Mapping[str, ScoredUnion],
    img_dir: Path,
    learned_scorer: str | None,
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
    test = task.query_ids("test")
    row = targets.get("product_default")
    if row == "default" and "default" in learned and learned_scorer is not None:
        probs, mods, labels, _ = _calibrated_pairs(None, learned["default"], task, test)
        raw, _, _, _ = scored[learned_scorer].pairs(task, test)
    elif row is not None and calibrators.get(row, (None, None))[1] is not None:
        scorer_name, calibrator = calibrators[row]
        raw, _, _, _ = scored[scorer_name].pairs(task, test)
        probs, mods, labels, _ = _calibrated_pairs(calibrator, scored[scorer_name], task, test)
    else:
        return plots
    name = f"{task.name}-scores.png"
    plot_score_distributions(
        f"{task.name}: {row}, held-out pairs, raw score and probability",
        raw,
        probs,
        mods,
        labels,
        img_dir / name,
    )
    plots[f"{task.name}: score distributions per modality, raw and calibrated ({row})"] = name
    groups: dict[str, tuple[list[float], list[int]]] = {
        m: (
            [p for p, mm in zip(probs, mods, strict=True) if mm == m],
            [y for y, mm in zip(labels, mods, strict=True) if mm == m],
        )
        for m in sorted(set(mods))
    }
    name = f"{task.name}-reliability.png"
    reliability_plot(groups, img_dir / name, title=f"{task.name}: {row}\nheld-out pairs")
    plots[f"{task.name}: reliability diagram ({row}, held-out pairs)"] = name
    return plots


def fit_shipped_calibration(
    scored: Mapping[str, Mapping[str, ScoredUnion]],
    tasks: Sequence[EvalTask],
    scorer_name: str,
    method: str,
    path: Path,
) -> Path:
    """Fit ``method`` for ``scorer_name`` on the dev pairs of all ``tasks`` pooled, and save it as JSON.

    ``scored`` is what ``run_evaluation(..., scored_out=...)`` filled.
    """
    raw: list[float] = []
    mods: list[Any] = []
    labels: list[int] = []
    qids: list[str] = []
    name = scorer_name
    for task in tasks:
        union = scored[task.name][scorer_name]
        name = union.scorer
        r, m, y, q = union.pairs(task, task.query_ids("dev"))
        raw += r
        mods += m
        labels += y
        qids += [f"{task.name}/{x}" for x in q]
    calibrator = fit_calibrator(raw, mods, labels, method=method, query_ids=qids, scorer=name)
    stats = getattr(calibrator, "stats", None)
    if isinstance(stats, dict):
        stats["fitted_on"] = [f"{t.name} (dev queries)" for t in tasks]
    return calibrator.save(path)
