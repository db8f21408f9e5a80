"""The starter text model's int8 / ONNX backends: quality change on the built-in tasks, with CIs (issue 24).

all-MiniLM-L6-v2 has real weights, so its faster CPU backends (``MiniLMTextEncoder(backend=...)``, or
``MM_RERANK_TEXT_BACKEND`` for the whole starter stack) can be measured where it matters: on the five
training tasks (:data:`~mm_rerank_components.eval.sources.DEFAULT_SOURCES`), test queries, against the
fp32 ``torch`` reference. Per backend:

* **(a)** the first stage's text route, Recall@10 (``text-only`` pipeline);
* **(b)** the ``rerank:starter`` row (:class:`StarterScorer` on the union at ``k_text = k_image = 16``,
  ranked by its shipped calibration), Recall@10 and nDCG@10;
* each as the paired bootstrap 95% CI of ``backend - fp32`` over queries, per task and pooled across tasks
  (:func:`mm_rerank_components.eval.stats.paired_bootstrap` / :func:`~mm_rerank_components.eval.stats.pooled`);
* **(c)** ranking agreement with fp32: the share of queries with an identical top 10 (and the same top-10
  set), and the mean Kendall tau-b over the documents both rankings hold;
* **(d)** encode time per 1,000 passages (the tasks' text passages), rounds rotated, ratio to fp32 in the
  same process, with ``/proc/loadavg``.

The text backend changes more than the passages' vectors: the query's embedding, the ConSE class-prompt
embeddings (so the image route's vectors) and the scorer's class-match term all go through MiniLM, so a
picture's *score* moves with the backend too (its class probabilities do not). Every backend therefore runs
the whole stack in its own child process with ``MM_RERANK_TEXT_BACKEND`` set (what a user sets), no
evaluation cache (nothing read from or written to ``.cache/data/embeddings``: its keys do not name the
backend) and a fresh class-prompt cache (``MM_RERANK_MODEL_CACHE`` in a temporary folder, whose key does not
name the backend either). The report checks that each int8 run's vectors really differ from fp32's.

    OPENBLAS_NUM_THREADS=1 nice -n 10 python benchmarks/starter_int8_quality.py --threads 1
    python benchmarks/starter_int8_quality.py --backends torch,onnx-int8 --tasks gcompris-explore

The shipped int8 backends quantise weights per output channel (``starter._onnx.PER_CHANNEL``, chosen
from this benchmark's figures); ``--per-tensor`` measures the earlier setting (one scale per tensor),
patched into the processes of this run only.

Writes ``benchmarks/results/starter_int8_quality.json`` (git-ignored) or ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE = "torch"
DEFAULT_BACKENDS = ("torch", "torch-int8", "onnx-int8")
ROWS = ("text-route", "rerank:starter")
#: (row, metric) pairs compared with fp32
MEASURES = (("text-route", "recall@10"), ("rerank:starter", "recall@10"), ("rerank:starter", "ndcg@10"))

Run = dict[str, dict[str, float]]


# -- agreement helpers (pure; tested on synthetic data) -------------------------------------------------------
def kendall_tau_b(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two paired score lists (a pair tied in one list is neither concordant nor
    discordant; a pair tied in both is left out); 1.0 when no pair can be compared.

    Example:
        >>> kendall_tau_b([3, 2, 1], [3, 1, 2])
        0.3333333333333333
    """
    if len(a) != len(b):
        raise ValueError(f"kendall_tau_b needs paired lists, got {len(a)} and {len(b)} values")
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denom = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) ** 0.5
    return (concordant - discordant) / denom if denom else 1.0


def top_ids(scores: Mapping[str, float], k: int) -> list[str]:
    """The ``k`` best document ids of one query's run (ties broken by id, so the order is total).

    Example:
        >>> top_ids({"a": 1.0, "b": 3.0, "c": 2.0}, 2)
        ['b', 'c']
    """
    return [d for d, _ in sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:k]]


def ranking_agreement(
    reference: Mapping[str, Mapping[str, float]], other: Run, k: int = 10
) -> dict[str, Any]:
    """How far ``other`` ranks each query as ``reference`` does.

    Per query: is the top ``k`` identical (same documents, same order), is it the same set, and Kendall's
    tau-b over the documents both runs hold (each run is a query's candidate list, which may differ when the
    first stage moved). Queries are those of ``reference``; a query ``other`` lacks is an error.

    Example:
        >>> out = ranking_agreement({"q": {"a": 2.0, "b": 1.0}}, {"q": {"a": 2.0, "b": 1.0}})
        >>> out["top_identical_share"], out["kendall_tau_mean"]
        (1.0, 1.0)
    """
    if not reference:
        raise ValueError("ranking_agreement needs at least one query in the reference run")
    missing = sorted(set(reference) - set(other))
    if missing:
        raise ValueError(
            f"{len(missing)} queries of the reference are not in the other run, e.g. {missing[0]!r}"
        )
    same, same_set, taus = [], [], []
    for qid, ref in reference.items():
        mine = other[qid]
        ref_top, my_top = top_ids(ref, k), top_ids(mine, k)
        same.append(ref_top == my_top)
        same_set.append(set(ref_top) == set(my_top))
        common = sorted(set(ref) & set(mine))
        taus.append(kendall_tau_b([ref[d] for d in common], [mine[d] for d in common]))
    return {
        "queries": len(same),
        "top_identical_share": sum(same) / len(same),
        "top_same_set_share": sum(same_set) / len(same_set),
        "kendall_tau_mean": float(np.mean(taus)),
        "kendall_tau_min": float(np.min(taus)),
    }


def vector_change(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Row cosines and the largest element difference between two ``(n, d)`` unit-vector matrices: the
    check that a backend's run really computed its own vectors (a run that read fp32's gives 0 and 1).

    Example:
        >>> vector_change(np.eye(2), np.eye(2))["max_abs_difference"]
        0.0
    """
    if reference.shape != other.shape:
        raise ValueError(f"vector shapes differ: {reference.shape} and {other.shape}")
    if reference.size == 0:
        return {"rows": 0, "cosine_min": 1.0, "cosine_mean": 1.0, "max_abs_difference": 0.0}
    cos = (reference * other).sum(axis=1)
    return {
        "rows": int(reference.shape[0]),
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "max_abs_difference": float(np.abs(reference - other).max()),
    }


def metric_differences(
    reference: Mapping[str, Mapping[str, float]], other: Mapping[str, Mapping[str, float]]
) -> dict[str, Any]:
    """``other - reference`` of one per-query metric: a paired bootstrap per task and pooled over tasks.

    Both arguments are ``{task: {query_id: value}}`` over the same queries.

    Example:
        >>> ref = {"t": {"q1": 1.0, "q2": 0.0}}
        >>> metric_differences(ref, ref)["pooled"]["diff"]
        0.0
    """
    from mm_rerank_components.eval.stats import paired_bootstrap, pooled

    if set(reference) != set(other):
        raise ValueError(f"tasks differ: {sorted(reference)} and {sorted(other)}")
    per_task: dict[str, tuple[list[float], list[float]]] = {}
    for task, ref in reference.items():
        if set(ref) != set(other[task]):
            raise ValueError(f"task {task!r}: the two runs measured different queries")
        qids = sorted(ref)
        per_task[task] = ([other[task][q] for q in qids], [ref[q] for q in qids])
    return {
        "per_task": {t: paired_bootstrap(a, b) for t, (a, b) in per_task.items()},
        "pooled": pooled(per_task),
    }


# -- one backend, in its own process ------------------------------------------------------------------------
def _child_env(backend: str, threads: int, model_cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "MM_RERANK_TEXT_BACKEND": backend,
            "MM_RERANK_TEXT_RUNTIME": "torch",
            "MM_RERANK_MODEL_CACHE": str(model_cache),
            "MM_RERANK_THREADS": str(threads),
            "OMP_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
        }
    )
    return env


def use_per_tensor() -> None:
    """Quantise weights with one scale per tensor (the setting before per channel shipped), for
    ``--per-tensor``: patched into this process only (``starter._onnx.PER_CHANNEL``, which both the torch
    and the ONNX Runtime int8 paths read at call time)."""
    from mm_rerank_components.starter import _onnx

    _onnx.PER_CHANNEL = False


def run_backend_child(args: argparse.Namespace) -> None:
    """The child: every task's first stage and rerank with the text backend the environment names."""
    import torch

    torch.set_num_threads(args.threads)
    if args.per_tensor:
        use_per_tensor()
    from mm_rerank_components.eval.embeddings import StarterEmbedder
    from mm_rerank_components.eval.metrics import evaluate_run
    from mm_rerank_components.eval.pipelines import (
        calibrated_run,
        compute_first_stage,
        fusion_run,
        score_union,
    )
    from mm_rerank_components.eval.sources import load_builtin_task
    from mm_rerank_components.scorers.starter import StarterScorer
    from mm_rerank_components.starter.models import StarterModels

    out_dir = Path(args.child_out)
    models = StarterModels(threads=args.threads)
    backend = models.text_encoder.backend
    if backend != os.environ["MM_RERANK_TEXT_BACKEND"]:
        raise RuntimeError(f"the child's text encoder runs {backend!r}, not the requested backend")
    scorer = StarterScorer(models=models)
    calibrator = scorer.default_calibrator()
    result: dict[str, Any] = {"backend": backend, "tasks": {}, "seconds": {}}
    for name in args.tasks:
        start = time.perf_counter()
        task = load_builtin_task(name, Path(args.cache))
        test = task.query_ids("test")
        first = compute_first_stage(task, StarterEmbedder(models), cache_dir=None)
        routed = fusion_run(first, "text-only", test, args.k, args.k)
        scored = score_union(task, first, scorer, test, args.k, args.k, cache_dir=None)
        reranked = calibrated_run(scored, calibrator, test)
        entry: dict[str, Any] = {"runs": {"text-route": routed, "rerank:starter": reranked}, "per_query": {}}
        for row, run in entry["runs"].items():
            per_query = evaluate_run(task, run, test)["per_query"]
            entry["per_query"][row] = {m: per_query[m] for m in ("recall@10", "ndcg@10")}
        result["tasks"][name] = entry
        if first.text_vectors is None or first.image_vectors is None:
            raise RuntimeError(f"{name}: the first stage kept no document vectors")
        np.savez(out_dir / f"{name}.npz", text=first.text_vectors, image=first.image_vectors)
        result["seconds"][name] = time.perf_counter() - start
    (out_dir / "result.json").write_text(json.dumps(result), encoding="utf-8")


def run_backend(args: argparse.Namespace, backend: str, work: Path) -> dict[str, Any]:
    """Runs one backend's child process; returns its result with its vectors."""
    out_dir = work / backend
    out_dir.mkdir(parents=True)
    cmd = [sys.executable, __file__, "--child", "--child-out", str(out_dir), "--threads", str(args.threads)]
    cmd += ["--cache", args.cache, "--k", str(args.k), "--tasks", ",".join(args.tasks)]
    cmd += ["--per-tensor"] if args.per_tensor else []
    start = time.perf_counter()
    subprocess.run(cmd, env=_child_env(backend, args.threads, work / f"model-cache-{backend}"), check=True)
    result: dict[str, Any] = json.loads((out_dir / "result.json").read_text(encoding="utf-8"))
    result["wall_s"] = time.perf_counter() - start
    result["vectors"] = {t: dict(np.load(out_dir / f"{t}.npz")) for t in args.tasks}
    print(f"  {backend}: {result['wall_s']:.0f} s (load {_loadavg()})", flush=True)
    return result


# -- comparing with fp32 ------------------------------------------------------------------------------------
def compare(reference: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """One backend against fp32: metric CIs, ranking agreement and the check that its vectors differ."""
    tasks = list(reference["tasks"])
    out: dict[str, Any] = {"metrics": {}, "agreement": {}, "vectors": {}}
    for row, metric in MEASURES:
        ref = {t: reference["tasks"][t]["per_query"][row][metric] for t in tasks}
        mine = {t: other["tasks"][t]["per_query"][row][metric] for t in tasks}
        out["metrics"][f"{row} {metric}"] = metric_differences(ref, mine)
    for row in ROWS:
        ref_runs = {f"{t}/{q}": r for t in tasks for q, r in reference["tasks"][t]["runs"][row].items()}
        my_runs = {f"{t}/{q}": r for t in tasks for q, r in other["tasks"][t]["runs"][row].items()}
        out["agreement"][row] = ranking_agreement(ref_runs, my_runs)
    for kind in ("text", "image"):
        ref_v = np.concatenate([reference["vectors"][t][kind] for t in tasks])
        my_v = np.concatenate([other["vectors"][t][kind] for t in tasks])
        out["vectors"][kind] = vector_change(ref_v, my_v)
    return out


def check_vectors_differ(backend: str, comparison: Mapping[str, Any]) -> None:
    """An int8 run whose passage vectors equal fp32's read a cache it should not have: stop there."""
    if "int8" in backend and comparison["vectors"]["text"]["max_abs_difference"] == 0.0:
        raise RuntimeError(
            f"{backend}: the passage vectors equal fp32's bit for bit; the run read fp32 embeddings "
            "(check MM_RERANK_MODEL_CACHE and the evaluation caches)"
        )


# -- encode time --------------------------------------------------------------------------------------------
def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3])
    except OSError:
        return "n/a"


def time_encoders(backends: Sequence[str], passages: list[str], rounds: int, threads: int) -> dict[str, Any]:
    """Median seconds per 1,000 passages per backend, rounds rotated, in this one process."""
    import torch

    from mm_rerank_components.starter.text import MiniLMTextEncoder

    torch.set_num_threads(threads)  # before the ONNX sessions: they take torch's thread count
    encoders = {b: MiniLMTextEncoder(backend=b) for b in backends}  # type: ignore[arg-type]
    for enc in encoders.values():
        enc.encode(passages[:64])  # warm-up
    per_round: dict[str, list[float]] = {b: [] for b in backends}
    loads = [_loadavg()]
    for r in range(rounds):
        order = list(backends[r % len(backends) :]) + list(backends[: r % len(backends)])
        for b in order:
            start = time.perf_counter()
            encoders[b].encode(passages)
            per_round[b].append((time.perf_counter() - start) * 1000 / len(passages))
        loads.append(_loadavg())
    ref = per_round.get(REFERENCE)
    out: dict[str, Any] = {"passages": len(passages), "rounds": rounds, "threads": threads, "loadavg": loads}
    for b, times in per_round.items():
        ratios = [t / r for t, r in zip(times, ref, strict=True)] if ref else []
        out[b] = {
            "s_per_1000": statistics.median(times),
            "rounds_s_per_1000": times,
            "ratio_to_fp32": statistics.median(ratios) if ratios else None,
            "rounds_ratio_to_fp32": ratios,
        }
    return out


def task_passages(tasks: Sequence[str], cache: str) -> list[str]:
    """The text passages (text-only documents) of the tasks, in task order."""
    from mm_rerank_components.eval.sources import load_builtin_task

    out: list[str] = []
    for name in tasks:
        task = load_builtin_task(name, Path(cache))
        out += [c.text or "" for c in task.docs.values() if c.image is None]
    return out


# -- report -------------------------------------------------------------------------------------------------
def _ci(m: Mapping[str, Any]) -> str:
    return f"{m['diff']:+.4f} [{m['lo']:+.4f}, {m['hi']:+.4f}] {m['verdict']}"


def print_report(report: Mapping[str, Any]) -> None:
    """The pooled table (per-task figures are in the JSON)."""
    ref = report["fp32_means"]
    print(f"\nfp32 reference, pooled test queries ({report['queries']}):")
    for key, value in ref.items():
        print(f"  {key:<28} {value:.4f}")
    print(f"\nint8 weights quantised {report['int8_weights']}")
    print("\nbackend - fp32, pooled paired bootstrap 95% CI (tie = interval spans 0):")
    print(f"{'backend':<11} " + " | ".join(f"{k:<42}" for k in ref))
    for backend, comp in report["backends"].items():
        cells = [_ci(comp["metrics"][k]["pooled"]) for k in ref]
        print(f"{backend:<11} " + " | ".join(f"{c:<42}" for c in cells))
    print(
        "\nagreement with fp32 (top-10 identical / same set / mean tau / min tau), vectors' cosine to fp32:"
    )
    for backend, comp in report["backends"].items():
        for row, a in comp["agreement"].items():
            print(
                f"{backend:<11} {row:<15} {a['top_identical_share']:.3f} / {a['top_same_set_share']:.3f} / "
                f"{a['kendall_tau_mean']:.3f} / {a['kendall_tau_min']:.3f}"
            )
        v = comp["vectors"]
        print(
            f"{backend:<11} vectors: passages cos min {v['text']['cosine_min']:.4f} mean "
            f"{v['text']['cosine_mean']:.4f}; pictures (ConSE) min {v['image']['cosine_min']:.4f} mean "
            f"{v['image']['cosine_mean']:.4f}"
        )
    timing = report.get("timing")
    if timing:
        print(
            f"\nencode time, {timing['passages']} passages, {timing['threads']} thread(s), load {timing['loadavg']}:"
        )
        for b in report["backends_run"]:
            t = timing[b]
            print(f"  {b:<11} {t['s_per_1000']:.2f} s per 1,000   x fp32 {t['ratio_to_fp32']:.2f}")


# -- main ---------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from mm_rerank_components.eval.sources import DEFAULT_SOURCES
    from mm_rerank_components.starter._onnx import BACKENDS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--backends", default=",".join(DEFAULT_BACKENDS), help="comma-separated; torch first")
    p.add_argument("--tasks", default=",".join(DEFAULT_SOURCES))
    p.add_argument("--cache", default=".cache/data", help="the built-in tasks' data folder (read only)")
    p.add_argument("--k", type=int, default=16, help="k_text = k_image of the union")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="encode-time rounds (0: no timing)")
    p.add_argument(
        "--per-tensor",
        action="store_true",
        help="int8 weights with one scale per tensor (the earlier setting; the shipped backends are per channel)",
    )
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "starter_int8_quality.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [b for b in args.backends if b not in BACKENDS]
    if bad or not args.backends or args.backends[0] != REFERENCE:
        p.error(
            f"--backends: the first must be {REFERENCE!r} (the reference), all from {BACKENDS}; got {args.backends}"
        )
    unknown = [t for t in args.tasks if t not in DEFAULT_SOURCES]
    if unknown or not args.tasks:
        p.error(f"--tasks: choose from {', '.join(DEFAULT_SOURCES)}; got {args.tasks}")
    if args.threads < 1 or args.k < 1 or args.rounds < 0:
        p.error("--threads and --k must be >= 1, --rounds >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        run_backend_child(args)
        return {}
    print(
        f"tasks {args.tasks}, backends {args.backends}, k {args.k}, {args.threads} thread(s), "
        f"int8 weights per {'tensor' if args.per_tensor else 'channel'}, load {_loadavg()}"
    )
    with tempfile.TemporaryDirectory(prefix="starter-int8-") as tmp:
        results = {b: run_backend(args, b, Path(tmp)) for b in args.backends}
    ref = results[REFERENCE]
    report: dict[str, Any] = {
        "backends_run": args.backends,
        "tasks": args.tasks,
        "k": args.k,
        "threads": args.threads,
        "int8_weights": "per tensor (--per-tensor)" if args.per_tensor else "per channel (as shipped)",
    }
    report["queries"] = sum(len(ref["tasks"][t]["runs"]["text-route"]) for t in args.tasks)
    report["fp32_means"] = {
        f"{row} {metric}": float(
            np.mean([v for t in args.tasks for v in ref["tasks"][t]["per_query"][row][metric].values()])
        )
        for row, metric in MEASURES
    }
    report["backends"] = {}
    for backend in args.backends[1:]:
        comparison = compare(ref, results[backend])
        check_vectors_differ(backend, comparison)
        report["backends"][backend] = comparison
    report["child_seconds"] = {b: r["seconds"] | {"wall": r["wall_s"]} for b, r in results.items()}
    if args.rounds:
        if args.per_tensor:
            use_per_tensor()
        report["timing"] = time_encoders(
            args.backends, task_passages(args.tasks, args.cache), args.rounds, args.threads
        )
    report["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_end": _loadavg(),
    }
    print_report(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"\nwrote {out}")
    return report


if __name__ == "__main__":
    main()
