"""Ingest throughput and query latency of the Chroma retriever + reranker on the GCompris sample.

Measures, on a fresh embedded Chroma database:

* ingest: records per second (82 passages + 82 photos: read, decode, embed, upsert);
* query latency, p50 and p95 over the queries: the first stage (embed the query, 16 hits from each
  collection) and the rerank of the 32 merged candidates, for text queries (the 82 titles and 82
  paraphrased questions) and for image queries (each photo).

Prints a table and writes JSON to ``benchmarks/results/retrieval.json`` (git-ignored)::

    python benchmarks/retrieval.py                  # starter models, as in the quickstart
    python benchmarks/retrieval.py --threads 2      # pin torch to 2 threads (the 2-core target)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mm_rerank_components import MultimodalReranker, Query
from mm_rerank_components.eval.datasets import export_gcompris_explore
from mm_rerank_components.ingest import ingest_folder, scan_folder
from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _stats(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(_percentile(ms, 0.5), 2),
        "p95_ms": round(_percentile(ms, 0.95), 2),
        "mean_ms": round(statistics.fmean(ms), 2) if ms else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path(".cache/gcompris_explore"))
    parser.add_argument("--embedder", choices=("starter", "hashing"), default="starter")
    parser.add_argument(
        "--scorer",
        choices=("starter", "fake", "none"),
        default="starter",
        help="starter: StarterScorer() as in the quickstart; fake: FakeScorer; none: first stage only",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--k", type=int, default=16, help="hits per collection (default 16: 32 candidates)")
    parser.add_argument(
        "--images", choices=("preview", "original"), default="preview", help="what the reranker decodes"
    )
    parser.add_argument(
        "--limit", type=int, default=24, help="N text and N image queries, spread over the sample (0 = all)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/retrieval.json"))
    args = parser.parse_args(argv)

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    folder = export_gcompris_explore(args.data)
    scan = scan_folder(folder)
    kwargs: dict[str, Any] = {}
    if args.embedder == "hashing":
        ef = HashingEmbeddingFunction()
        kwargs = {"text_embedding_function": ef, "image_embedding_function": ef}
    reranker: MultimodalReranker | None = None
    if args.scorer == "fake":
        from mm_rerank_components.scorers.fake import FakeScorer

        reranker = MultimodalReranker(FakeScorer())
    elif args.scorer == "starter":
        from mm_rerank_components.scorers.starter import StarterScorer

        reranker = MultimodalReranker(StarterScorer())

    with tempfile.TemporaryDirectory(prefix="mm-rerank-bench-") as tmp:
        retriever = ChromaMultiCollectionRetriever(
            path=Path(tmp) / "db", k_text=args.k, k_image=args.k, candidate_image=args.images, **kwargs
        )
        t = time.perf_counter()
        retriever.create_collections()
        retriever.warm_up()
        load = getattr(getattr(reranker, "scorer", None), "load", None)
        if callable(load):
            load()
        load_s = time.perf_counter() - t

        report = ingest_folder(folder, retriever, scan=scan)
        if not report.ok:
            print("ingest failures:", *report.failed, sep="\n  ", file=sys.stderr)
        ingest = {
            "records": report.written,
            "texts": report.texts,
            "images": report.images,
            "seconds": round(report.seconds, 3),
            "records_per_s": round(report.written / report.seconds, 2) if report.seconds else None,
        }

        titles = [str(r.metadata["title"]) for r in scan.texts]
        questions = [f"Tell me about the {title.lower()}" for title in titles]
        text_queries = [Query(text=q) for q in titles + questions]
        image_queries = [Query(image=r.path) for r in scan.images]
        if args.limit:
            text_queries = text_queries[:: max(1, len(text_queries) // args.limit)][: args.limit]
            image_queries = image_queries[:: max(1, len(image_queries) // args.limit)][: args.limit]

        # warm-up: first queries pay for lazy initialisation (HNSW load, kernels), not measured
        for query in text_queries[:3] + image_queries[:2]:
            candidates = retriever.retrieve(query)
            if reranker is not None:
                reranker.rerank(query, candidates)

        results: dict[str, Any] = {}
        for name, queries in (("text", text_queries), ("image", image_queries)):
            first, rerank, total, sizes = [], [], [], []
            for query in queries:
                t0 = time.perf_counter()
                candidates = retriever.retrieve(query)
                t1 = time.perf_counter()
                if reranker is not None:
                    reranker.rerank(query, candidates)
                t2 = time.perf_counter()
                first.append((t1 - t0) * 1000)
                rerank.append((t2 - t1) * 1000)
                total.append((t2 - t0) * 1000)
                sizes.append(len(candidates))
            results[name] = {
                "first_stage": _stats(first),
                "rerank": _stats(rerank),
                "total": _stats(total),
                "candidates_mean": round(statistics.fmean(sizes), 1),
            }

    threads: int | None = None
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:
        pass
    payload = {
        "benchmark": "retrieval",
        "dataset": "gcompris-explore",
        "embedder": args.embedder,
        "scorer": args.scorer,
        "candidate_images": args.images,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "k_text": args.k,
        "k_image": args.k,
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "model_load_s": round(load_s, 2),
        "ingest": ingest,
        "query": results,
    }

    print(
        f"GCompris explore: {ingest['texts']} passages + {ingest['images']} photos; "
        f"embedder={args.embedder}, scorer={args.scorer}, images={args.images}, cpus={os.cpu_count()}, "
        f"torch threads={threads}, load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print(f"models loaded in {load_s:.1f} s")
    print(
        f"ingest: {ingest['records']} records in {ingest['seconds']:.1f} s = {ingest['records_per_s']} records/s"
    )
    print(f"\n{'query':<6} {'stage':<12} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}   candidates")
    for name, block in results.items():
        for stage in ("first_stage", "rerank", "total"):
            s = block[stage]
            extra = f"   {block['candidates_mean']}" if stage == "total" else ""
            print(
                f"{name:<6} {stage:<12} {s['n']:>4} {s['p50_ms']:>8.1f} {s['p95_ms']:>8.1f} {s['mean_ms']:>8.1f}{extra}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
