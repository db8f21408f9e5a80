"""Pixels on demand (issue 21): scores equal to decoding every picture, on the built-in tasks.

For each built-in task, up to ``--pictures`` of its pictures (spread over the task) become candidates as the
retriever hands them over: the file path plus the compact class list ingest stores
(``Precomputed("image_classes")``, computed here the way ingest computes it: decoded, shrunk to 1024 px,
classified). Each of ``--queries`` text queries is reranked by

* ``decode-all``: ``default_reranker()`` whose scorer reads every picture's pixels, decoded in full (the
  behaviour before pixels on demand), and
* ``on-demand``: ``default_reranker()`` as shipped (a picture is decoded only when no stored class list
  stands in for it, and then at the scorer's size),

and the largest difference of raw and calibrated scores is reported, with the decodes each made. The same
is done without stored class lists (every picture must be decoded), where a JPEG at least twice the
scorer's 224 px is decoded at a reduced scale: those differences are reported apart, never hidden.

Prints a table and writes JSON (git-ignored)::

    python benchmarks/pixels_on_demand.py --pictures 40 --queries 10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mm_rerank_components import Candidate, Query


def _tasks(names: list[str] | None) -> list[Any]:
    try:
        from mm_rerank_components.eval.sources import TASK_NAMES, load_builtin_task
    except ImportError:  # before the task registry
        from mm_rerank_components.eval import tasks

        builders = {
            "tuxpaint-mixed": tasks.tuxpaint_mixed_task,
            "gcompris-explore": tasks.gcompris_explore_task,
            "wesnoth-units": tasks.wesnoth_units_task,
        }
        return [builders[n]() for n in (names or list(builders))]
    return [load_builtin_task(n) for n in (names or list(TASK_NAMES))]


def _spread(items: list[Any], limit: int) -> list[Any]:
    if not limit or len(items) <= limit:
        return list(items)
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def _candidates(task: Any, models: Any, limit: int, stored: bool) -> list[Candidate]:
    from mm_rerank_components.ingest.records import shrink
    from mm_rerank_components.media import load_image
    from mm_rerank_components.starter.precomputed import image_signal

    docs = [d for d in task.docs.values() if d.image is not None and isinstance(d.image, str)]
    out = []
    for doc in _spread(docs, limit):
        signals = {}
        if stored:
            _, classes = models.embed_images_and_classes([shrink(load_image(doc.image))])
            signals = {"image_classes": image_signal(models, doc.image, classes[0])}
        out.append(Candidate(doc.id, text=doc.text, image=doc.image, precomputed=signals, source="image"))
    return out


def _decode_all_scorer(models: Any) -> Any:
    from mm_rerank_components.scorers.starter import StarterScorer

    class DecodeAll(StarterScorer):
        """Every picture decoded in full, as before pixels on demand."""

        image_side = None

        def needs_pixels(self, candidate: Candidate) -> bool:
            return candidate.image is not None

    return DecodeAll(models=models)


def _compare(models: Any, candidates: list[Candidate], queries: list[str]) -> dict[str, Any]:
    import mm_rerank_components.reranker as reranker_module
    from mm_rerank_components.defaults import default_reranker
    from mm_rerank_components.scorers.starter import StarterScorer

    real = reranker_module.load_image
    decodes = {"decode-all": 0, "on-demand": 0}
    current = ["decode-all"]

    def counting(*args: Any, **kwargs: Any) -> Any:
        decodes[current[0]] += 1
        return real(*args, **kwargs)

    rerankers = {
        "decode-all": default_reranker(_decode_all_scorer(models)),
        "on-demand": default_reranker(StarterScorer(models=models)),
    }
    seconds = {name: 0.0 for name in rerankers}
    raw_diff = score_diff = 0.0
    worst: tuple[str, str] | None = None
    reranker_module.load_image = counting
    try:
        for text in queries:
            results = {}
            for name, reranker in rerankers.items():
                current[0] = name
                t = time.perf_counter()
                results[name] = {r.id: r for r in reranker.rerank(Query(text), candidates)}
                seconds[name] += time.perf_counter() - t
            for id_, old in results["decode-all"].items():
                new = results["on-demand"][id_]
                d = abs(old.raw_score - new.raw_score)
                if d > raw_diff:
                    raw_diff, worst = d, (text, id_)
                score_diff = max(score_diff, abs(old.score - new.score))
    finally:
        reranker_module.load_image = real
    return {
        "max_raw_diff": raw_diff,
        "max_score_diff": score_diff,
        "worst": worst,
        "decodes": decodes,
        "rerank_ms_per_query": {k: round(v * 1000 / max(1, len(queries)), 1) for k, v in seconds.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="*", default=None, help="built-in task names (default: all)")
    parser.add_argument("--pictures", type=int, default=40, help="pictures per task (0 = all)")
    parser.add_argument("--queries", type=int, default=10, help="queries per task (0 = all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pixels_on_demand.json"))
    args = parser.parse_args(argv)
    import torch

    from mm_rerank_components.starter import get_starter_models

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    models = get_starter_models()
    rows = []
    for task in _tasks(args.tasks):
        queries = _spread([task.queries[q] for q in task.query_ids("all")], args.queries)
        for stored in (True, False):
            candidates = _candidates(task, models, args.pictures, stored)
            formats = sorted({Path(str(c.image)).suffix.lower() for c in candidates})
            row = {
                "task": task.name,
                "stored_classes": stored,
                "pictures": len(candidates),
                "formats": formats,
            }
            row.update(_compare(models, candidates, queries))
            rows.append(row)
    payload = {
        "benchmark": "pixels_on_demand",
        "rows": rows,
        "load_average": [round(x, 2) for x in load_before],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "torch_threads": args.threads,
    }
    print(
        f"load average {payload['load_average'][0]:.1f} -> {payload['load_average_end'][0]:.1f}, {os.cpu_count()} CPUs"
    )
    print(
        f"{'task':<18}{'stored':>7}{'pics':>6}{'max |raw diff|':>16}{'max |p diff|':>14}{'decodes old/new':>17}  formats"
    )
    for r in rows:
        print(
            f"{r['task']:<18}{r['stored_classes']!s:>7}{r['pictures']:>6}{r['max_raw_diff']:>16.2e}"
            f"{r['max_score_diff']:>14.2e}{r['decodes']['decode-all']:>9}/{r['decodes']['on-demand']:<7}  "
            f"{' '.join(r['formats'])}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
