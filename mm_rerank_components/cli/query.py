"""``mm-rerank query "TEXT" [--image PATH]``: first stage over both collections, then the reranker.

The timings it prints are measured, and labelled for what they are: the **cold** query is the first one
after the models loaded (nothing about this corpus is cached yet), the **warm** one asks the same query
again in the same process: no reranker score cache, but the models, the database's files and the
scorer's own caches (the starter scorer keeps passage and picture embeddings) are warm.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from mm_rerank_components.cli._common import (
    connection_args,
    format_table,
    query_scorer_arg,
    read_captions_error,
    reranker_from_spec,
    retriever_from_args,
    scorer_help,
)
from mm_rerank_components.cli.shell import warm_up_for


def register(sub: Any) -> None:
    query = sub.add_parser("query", help="search both collections and rerank the merged hits")
    query.add_argument("text", nargs="?", default=None, help="the question (optional with --image)")
    query.add_argument("--image", type=str, default=None, help="an image to search with (path)")
    connection_args(query)
    query.add_argument("--k-text", type=int, default=16, help="hits from the text collection (default 16)")
    query.add_argument("--k-image", type=int, default=16, help="hits from the image collection (default 16)")
    query.add_argument("--top-n", type=int, default=10, help="rows to print (default 10; 0 = all)")
    query.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="drop hits whose unified score (a probability of relevance, 0..1) is below this",
    )
    query.add_argument(
        "--scorer",
        type=query_scorer_arg,
        default="starter",
        help=scorer_help(
            "reranker: starter is the offline starter models fused with the first stage's signals (default; "
            "mm_rerank_components.defaults.default_reranker), none skips reranking; any scorer spec"
        ),
    )
    query.add_argument(
        "--reranker",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="a saved adapted reranker (written by mm-rerank adapt); replaces --scorer",
    )
    query.add_argument(
        "--images",
        choices=("preview", "original"),
        default="preview",
        help="what the reranker reads for a picture: the small preview stored at ingest (default; the "
        "starter scorer reads 224 px) or the original file",
    )
    query.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="ask the same query this many more times and print the warm timings (default 1; 0 = only cold)",
    )
    query.add_argument(
        "--text-runtime",
        choices=("numpy", "torch"),
        default=None,
        help="what embeds the texts: numpy (default here; the starter's MiniLM without importing torch, "
        "about 1.3 s less for a text query, same scores to 1e-6) or torch (the reference the Python API and "
        "serve use); default: $MM_RERANK_TEXT_RUNTIME, else numpy",
    )
    query.add_argument(
        "--read-captions",
        action="store_true",
        help="also read each captioned picture's caption as a passage (learned fusion only: the default "
        "or --reranker FOLDER; ranks captioned pictures higher, over-trusts near-miss captions; see "
        "docs/calibration.md)",
    )
    query.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    query.set_defaults(handler=run)


def _usage_error(args: argparse.Namespace) -> str | None:
    if args.text is None and args.image is None:
        return "give a question, --image PATH, or both"
    if args.image is not None and not Path(args.image).is_file():
        return f"image not found: {args.image!r}"
    if args.reranker is not None and not args.reranker.is_dir():
        return f"--reranker {str(args.reranker)!r} is not a folder (write one with mm-rerank adapt)"
    if args.repeat < 0:
        return f"--repeat must be >= 0, got {args.repeat}"
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        return f"--threshold must be a unified score between 0 and 1, got {args.threshold}"
    if (captions := read_captions_error(args)) is not None:
        return captions
    if args.threshold is not None and args.scorer == "none" and args.reranker is None:
        return "--threshold needs a reranker (the first stage's scores are not on the unified scale)"
    return _missing_database(args)


def _missing_database(args: argparse.Namespace) -> str | None:
    """An embedded database that is not there is a mistake (a mistyped --db), never a new empty one."""
    if getattr(args, "server", None) or getattr(args, "host", None):
        return None
    db = Path(args.db if args.db is not None else "chroma_db")
    if not (db / "chroma.sqlite3").is_file():
        what = "is not a folder" if not db.is_dir() else "holds no Chroma database"
        return f"--db {str(db)!r} {what}: ingest into it first (mm-rerank ingest FOLDER --db {db})"
    return None


def _make_reranker(args: argparse.Namespace) -> tuple[Any, str]:
    """The reranker and a label for it; ``starter`` is the label-free product default."""
    reranker, label = _reranker_and_label(args)
    if getattr(args, "read_captions", False):
        from mm_rerank_components.adapt import LearnedFusionReranker

        if not isinstance(reranker, LearnedFusionReranker):
            raise SystemExit(f"--read-captions needs a learned-fusion reranker; {label} is not one")
        reranker.read_captions = True
        label += ", captions read as passages"
    return reranker, label


def _reranker_and_label(args: argparse.Namespace) -> tuple[Any, str]:
    if args.reranker is not None:
        from mm_rerank_components.adapt.folder import load_reranker

        return load_reranker(args.reranker), f"reranker folder {args.reranker}"
    if args.scorer == "starter":
        return reranker_from_spec("starter"), "the default reranker (starter scorer + learned fusion)"
    return reranker_from_spec(args.scorer), args.scorer


def _timed_query(
    retriever: Any, reranker: Any, query: Any, args: argparse.Namespace
) -> tuple[list[Any], dict[str, float]]:
    t0 = time.perf_counter()
    candidates = retriever.retrieve(query, k_text=args.k_text, k_image=args.k_image)
    t1 = time.perf_counter()
    if reranker is not None:
        ranked = reranker.rerank(query, candidates, threshold=args.threshold)
        rows = [(r.candidate, r.score) for r in ranked]
    else:
        rows = [(c, math.nan) for c in candidates]
    t2 = time.perf_counter()
    return rows, {"first_stage": t1 - t0, "rerank": t2 - t1, "total": t2 - t0}


def _ms(timing: dict[str, float]) -> str:
    return (
        f"first stage {timing['first_stage'] * 1000:.0f} ms, rerank {timing['rerank'] * 1000:.0f} ms, "
        f"total {timing['total'] * 1000:.0f} ms"
    )


def timing_report(
    candidates: int, cold: dict[str, float], warm: list[dict[str, float]], load_s: float, label: str
) -> str:
    """The timing lines ``query`` prints: cold, warm (median of the repeats), model load and machine load.

    Example:
        >>> t = {"first_stage": 0.02, "rerank": 0.3, "total": 0.32}
        >>> print(timing_report(32, t, [], 2.5, "starter").splitlines()[1])
        cold (first query after loading): first stage 20 ms, rerank 300 ms, total 320 ms
    """
    lines = [
        f"{candidates} candidates, reranked by {label}",
        f"cold (first query after loading): {_ms(cold)}",
    ]
    if warm:
        median = {k: sorted(t[k] for t in warm)[len(warm) // 2] for k in cold}
        times = f"median of {len(warm)}" if len(warm) > 1 else "once"
        lines.append(f"warm (same query again, {times}; the scorer's own caches are warm): {_ms(median)}")
    load = f"load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "load n/a"
    lines.append(f"models loaded in {load_s:.1f} s; {os.cpu_count()} CPUs, {load}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from mm_rerank_components.starter.models import TEXT_RUNTIME_ENV, text_runtime

    problem = _usage_error(args)
    if problem is not None:
        print(f"mm-rerank query: error: {problem}", file=sys.stderr)
        return 2
    runtime = args.text_runtime or os.environ.get(TEXT_RUNTIME_ENV, "").strip().lower() or "numpy"
    if runtime not in ("numpy", "torch"):
        print(f"mm-rerank query: error: {TEXT_RUNTIME_ENV}={runtime!r}: use numpy or torch", file=sys.stderr)
        return 2
    with text_runtime("numpy" if runtime == "numpy" else "torch"):
        return _answer(args)


def _answer(args: argparse.Namespace) -> int:
    from mm_rerank_components.types import Query

    t0 = time.perf_counter()
    retriever = retriever_from_args(args)
    reranker, label = _make_reranker(args)
    query = Query(text=args.text, image=args.image)
    warm_up_for(retriever, query)  # only what this query needs: a picture model only for a picture
    load_s = time.perf_counter() - t0

    rows, cold = _timed_query(retriever, reranker, query, args)
    warm = [_timed_query(retriever, reranker, query, args)[1] for _ in range(args.repeat)]
    shown = rows if args.top_n == 0 else rows[: args.top_n]

    if args.json:
        from mm_rerank_components.serving.search import search_row  # the rows POST /v1/search returns too

        for rank, (candidate, score) in enumerate(shown, start=1):
            print(json.dumps(search_row(rank, candidate, score), ensure_ascii=False))
    else:
        print(format_table(shown))
    from mm_rerank_components.defaults import scores_note  # lazily: the CLI starts without the models

    note = scores_note(reranker, query, (c.modality for c, _ in shown)) if reranker is not None else None
    if note is not None:  # the scores are not one calibrated scale here: say so, and why
        print("\n" + textwrap.fill(note, 110), file=sys.stderr if args.json else sys.stdout)
    report = timing_report(len(rows), cold, warm, load_s, label if reranker is not None else "none")
    print("\n" + report, file=sys.stderr if args.json else sys.stdout)
    return 0
