"""Torch threads for the starter models: one thread vs the default, one request vs concurrent requests.

Runs the real starter models (MiniLM-L6 + EfficientNet-Lite) on real GCompris photos and paragraphs:

* **request**: one ``StarterScorer.score`` call over ``--passages`` passages and ``--pictures`` pictures,
  caches off, so every call does the model work a first-time rerank does;
* **batch**: one ``StarterModels.image_probabilities`` call over ``--batch`` pictures (ingest-like);
* **reused**: the request again, with the first stage's stored passage vectors and compact class lists
  attached (``Candidate.precomputed``), as the Chroma route hands them over; it also checks that the
  reused scores equal the computed ones.

Each is timed with ``threads=1``, ``threads=<torch default>`` (the cores, unless ``OMP_NUM_THREADS``
says less) and the package's auto policy (``threads=None``), with one caller at a time and with
``--concurrency`` callers at once. The settings take turns round by round, so a change in the load
from other processes hits them alike. Prints a table with the machine load, and writes JSON to
``benchmarks/results/starter_threads.json`` (git-ignored)::

    python benchmarks/starter_threads.py                 # a few minutes on 2 busy cores
    python benchmarks/starter_threads.py --repeats 3 --image-model efficientnet-lite2

Do not set ``OMP_NUM_THREADS=1`` for this run: it caps the default (the script warns).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from mm_rerank_components import Candidate, Query


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _data(cache_dir: str, n_pictures: int, n_passages: int) -> tuple[list[Image.Image], list[str], list[str]]:
    """Decoded GCompris photos, its paragraphs and titles (queries); generated pictures if unavailable."""
    from mm_rerank_components.eval.datasets import DatasetUnavailableError
    from mm_rerank_components.eval.tasks import gcompris_explore_task
    from mm_rerank_components.media import load_image

    try:
        task = gcompris_explore_task(cache_dir)
    except DatasetUnavailableError as exc:
        print(f"GCompris unavailable ({exc}); using generated pictures", file=sys.stderr)
        pictures = [Image.effect_mandelbrot((320, 240), (-2 + i / 50, -1.2, 1, 1.2), 60) for i in range(40)]
        texts = [
            f"Passage {i}. It has a few sentences. Here is another one. And one more." for i in range(40)
        ]
        return [p.convert("RGB") for p in pictures], texts, [f"query {i}" for i in range(40)]
    docs = list(task.docs.values())
    pictures = [load_image(c.image) for c in docs if c.image is not None][: max(n_pictures, 1) * 4]
    texts = [c.text for c in docs if c.image is None and c.text][: max(n_passages, 1) * 4]
    return pictures, texts, list(task.queries.values())


def _round(fn: Any, first: int, concurrency: int) -> tuple[list[float], float]:
    """One round: ``concurrency`` calls of ``fn`` at once; their latencies and the round's wall time."""
    latencies: list[float] = []

    def one(i: int) -> None:
        start = time.perf_counter()
        fn(i)
        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    if concurrency == 1:
        one(first)
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(first, first + concurrency)))
    return latencies, time.perf_counter() - start


def _measure(
    workloads: dict[str, dict[str, Any]], repeats_arg: int, callers: int, results: dict[str, Any]
) -> None:
    """Time every workload under every setting; rows go to ``results["rows"]``."""
    # the settings take turns round by round, so a change in the machine's load hits them alike
    for workload, by_setting in workloads.items():
        for concurrency in (1,) if workload == "reused" else (1, callers):
            repeats = max(1, repeats_arg // 2) if workload == "batch" else repeats_arg
            latencies: dict[str, list[float]] = {label: [] for label in by_setting}
            walls = dict.fromkeys(by_setting, 0.0)
            for r in range(repeats):
                for label, fn in by_setting.items():
                    lat, wall = _round(fn, r * concurrency, concurrency)
                    latencies[label] += lat
                    walls[label] += wall
            for label in by_setting:
                row: dict[str, Any] = {
                    "workload": workload,
                    "threads": label,
                    "concurrency": concurrency,
                    "calls": len(latencies[label]),
                    "p50_s": statistics.median(latencies[label]),
                    "max_s": max(latencies[label]),
                    "calls_per_s": len(latencies[label]) / walls[label],
                    "load": _load(),
                }
                results["rows"].append(row)
                print(
                    f"{workload:8s} {label:12s} x{concurrency}: p50 {row['p50_s'] * 1000:7.0f} ms   "
                    f"{row['calls_per_s']:.2f} calls/s   load {row['load']}",
                    file=sys.stderr,
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passages", type=int, default=16)
    parser.add_argument("--pictures", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32, help="pictures in the big-batch call")
    parser.add_argument("--repeats", type=int, default=2, help="calls per caller and setting")
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--image-model", default="efficientnet-lite0")
    parser.add_argument("--cache-dir", default=".cache/data")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/starter_threads.json"))
    args = parser.parse_args(argv)

    import torch

    from mm_rerank_components.scorers.starter import StarterScorer
    from mm_rerank_components.starter import StarterModels

    default_threads = torch.get_num_threads()
    if default_threads == 1:
        print(
            "warning: torch uses 1 thread by default here (OMP_NUM_THREADS?); 'default' = 1", file=sys.stderr
        )
    pictures, texts, queries = _data(args.cache_dir, args.pictures, args.passages)
    settings: dict[str, int | None] = {
        "1 thread": 1,
        f"default ({default_threads})": default_threads,
        "auto": None,
    }
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "image_model": args.image_model,
        "load_before": _load(),
        "rows": [],
    }
    # load weights and class prompts once, outside the timings
    warm_models = StarterModels(image_model=args.image_model, threads=1)
    warm = StarterScorer(models=warm_models)
    warm.load()
    warm.score(Query("warm up"), [Candidate("w", text="warm up", image=pictures[0])])
    # what the first stage stores: passage vectors and compact class lists (computed once, untimed)
    from mm_rerank_components.starter.precomputed import compact_classes, image_signal, text_signal

    stored_text = [
        text_signal(warm_models, t, v) for t, v in zip(texts, warm_models.embed_texts(texts), strict=True)
    ]
    probs = warm_models.image_probabilities(pictures)
    stored_image = [
        image_signal(warm_models, p, compact_classes(row)) for p, row in zip(pictures, probs, strict=True)
    ]

    def candidates(i: int, reuse: bool) -> list[Candidate]:
        start = (i * 7) % max(1, len(texts) - args.passages)
        first = (i * 5) % max(1, len(pictures) - args.pictures)
        out = [
            Candidate(f"t{j}", text=texts[j], precomputed={"e": stored_text[j]} if reuse else {})
            for j in range(start, min(start + args.passages, len(texts)))
        ]
        out += [
            Candidate(f"i{j}", image=pictures[j], precomputed={"c": stored_image[j]} if reuse else {})
            for j in range(first, min(first + args.pictures, len(pictures)))
        ]
        return out

    workloads: dict[str, dict[str, Any]] = {"request": {}, "reused": {}, "batch": {}}
    for label, threads in settings.items():
        models = StarterModels(image_model=args.image_model, threads=threads)
        scorer = StarterScorer(models=models, image_cache_size=0, text_cache_size=0)

        def request(i: int, scorer: StarterScorer = scorer) -> None:
            scorer.score(Query(queries[i % len(queries)] + f" {i}"), candidates(i, reuse=False))

        def reused(i: int, scorer: StarterScorer = scorer) -> None:
            scorer.score(Query(queries[i % len(queries)] + f" r{i}"), candidates(i, reuse=True))

        def batch(i: int, models: StarterModels = models) -> None:
            chosen = [pictures[(i + j) % len(pictures)] for j in range(args.batch)]
            models.image_probabilities(chosen)

        workloads["request"][label], workloads["reused"][label], workloads["batch"][label] = (
            request,
            reused,
            batch,
        )

    _measure(workloads, args.repeats, args.concurrency, results)
    # reused scores must be the computed ones
    check = StarterScorer(models=warm_models, image_cache_size=0, text_cache_size=0)
    worst = 0.0
    for i in range(3):
        query = Query(queries[i % len(queries)])
        computed = check.score(query, candidates(i, reuse=False))
        again = check.score(query, candidates(i, reuse=True))
        worst = max(worst, max(abs(a - b) for a, b in zip(computed, again, strict=True)))
    results["reused_max_abs_difference"] = worst
    results["load_after"] = _load()
    _print_table(results)
    print(f"largest |reused - computed| score difference: {worst:.1e}")
    for row in results["rows"]:
        if row["workload"] == "reused" and row["threads"] == "1 thread":
            computed_row = next(
                r for r in results["rows"] if r["workload"] == "request" and r["threads"] == "1 thread"
            )
            speedup = computed_row["p50_s"] / row["p50_s"]
            results["reused_speedup_1_thread"] = speedup
            print(f"reused request vs computed request, 1 thread, p50: {speedup:.1f}x faster")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


def _print_table(results: dict[str, Any]) -> None:
    rows = results["rows"]
    base = {(r["workload"], r["concurrency"]): r for r in rows if r["threads"] == "1 thread"}
    print(
        f"{results['machine']}; image model {results['image_model']}; load {results['load_before']} -> "
        f"{results['load_after']} (1, 5, 15 min)"
    )
    print(
        f"{'workload':9s} {'callers':>7s} {'threads':>12s} {'p50 ms':>8s} {'calls/s':>8s} {'vs 1 thread':>11s}"
    )
    for r in rows:
        ref = base[(r["workload"], r["concurrency"])]
        print(
            f"{r['workload']:9s} {r['concurrency']:7d} {r['threads']:>12s} {r['p50_s'] * 1000:8.0f} "
            f"{r['calls_per_s']:8.2f} {r['calls_per_s'] / ref['calls_per_s']:10.2f}x"
        )


if __name__ == "__main__":
    raise SystemExit(main())
