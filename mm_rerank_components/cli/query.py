"""``mm-rerank query "TEXT" [--image PATH]``: first stage over both collections, then the reranker."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from mm_rerank_components.cli._common import (
    SCORERS,
    connection_args,
    format_table,
    reranker_by_name,
    retriever_from_args,
    row_dict,
    warm_up,
)


def register(sub: Any) -> None:
    query = sub.add_parser("query", help="search both collections and rerank the merged hits")
    query.add_argument("text", nargs="?", default=None, help="the question (optional with --image)")
    query.add_argument("--image", type=str, default=None, help="an image to search with (path)")
    connection_args(query)
    query.add_argument("--k-text", type=int, default=16, help="hits from the text collection (default 16)")
    query.add_argument("--k-image", type=int, default=16, help="hits from the image collection (default 16)")
    query.add_argument("--top-n", type=int, default=10, help="rows to print (default 10; 0 = all)")
    query.add_argument(
        "--scorer",
        choices=SCORERS,
        default="starter",
        help="reranker scorer: the offline starter models (default), the model-free fake, or none",
    )
    query.add_argument(
        "--images",
        choices=("preview", "original"),
        default="preview",
        help="what the reranker reads for a picture: the small preview stored at ingest (default; the "
        "starter scorer reads 224 px) or the original file",
    )
    query.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    query.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mm_rerank_components.types import Query

    if args.text is None and args.image is None:
        print("mm-rerank query: error: give a question, --image PATH, or both", file=sys.stderr)
        return 2
    if args.image is not None and not Path(args.image).is_file():
        print(f"mm-rerank query: error: image not found: {args.image!r}", file=sys.stderr)
        return 2
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    retriever = retriever_from_args(args)
    reranker = reranker_by_name(args.scorer)
    warm_up(retriever, reranker)
    timings["load"] = time.perf_counter() - t0

    query = Query(text=args.text, image=args.image)
    t1 = time.perf_counter()
    candidates = retriever.retrieve(query, k_text=args.k_text, k_image=args.k_image)
    timings["first_stage"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    if reranker is not None:
        ranked = reranker.rerank(query, candidates)
        rows = [(r.candidate, r.score) for r in ranked]
    else:
        rows = [(c, math.nan) for c in candidates]
    timings["rerank"] = time.perf_counter() - t2
    shown = rows if args.top_n == 0 else rows[: args.top_n]

    if args.json:
        for rank, (candidate, score) in enumerate(shown, start=1):
            print(json.dumps(row_dict(rank, candidate, score), ensure_ascii=False))
    else:
        print(format_table(shown))
    print(
        f"\n{len(candidates)} candidates; first stage {timings['first_stage'] * 1000:.0f} ms, "
        f"rerank {timings['rerank'] * 1000:.0f} ms ({args.scorer}), "
        f"models loaded in {timings['load']:.1f} s",
        file=sys.stderr if args.json else sys.stdout,
    )
    return 0
