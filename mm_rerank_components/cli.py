"""The ``mm-rerank`` command line.

Commands:

* ``mm-rerank ingest FOLDER --db PATH``: embed a folder of passages and pictures into Chroma;
* ``mm-rerank query "TEXT" [--image PATH] --db PATH``: first stage over both collections, then rerank
  with the starter scorer, printed as a table (rank, modality, unified score, source route, title or
  path) with timings;
* ``mm-rerank info --db PATH``: records per collection;
* ``mm-rerank eval ...``: the benchmark runner (``mm_rerank_components.eval.runner``).

``--server HOST:PORT`` (or ``--host`` and ``--port``) talks to a Chroma server instead of the embedded
database. Run ``mm-rerank COMMAND --help`` for every option.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EMBEDDERS = ("starter", "hashing")
SCORERS = ("starter", "fake", "none")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failures, 2 bad usage)."""
    # transformers' per-load progress bars would interleave with our tables; the CLI has its own bar
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "eval":
        return _eval(args_list[1:])
    parser = _parser()
    args = parser.parse_args(args_list)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.threads is not None:
            set_threads(args.threads)
        if args.command == "ingest":
            return _ingest(args)
        if args.command == "query":
            return _query(args)
        if args.command == "info":
            return _info(args)
    except (ValueError, TypeError, OSError, ImportError) as exc:
        print(f"mm-rerank {args.command}: error: {exc}", file=sys.stderr)
        return 1
    parser.print_help()
    return 2


# -- arguments ----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mm-rerank",
        description="Ingest passages and pictures into Chroma and query them, reranked on one scale.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{ingest,query,info,eval}")

    ingest = sub.add_parser("ingest", help="embed a folder of passages and pictures into Chroma")
    ingest.add_argument(
        "folder", type=Path, help="folder of .txt/.md passages and png/jpg/webp/gif/bmp pictures"
    )
    _connection_args(ingest)
    ingest.add_argument("--batch-size", type=int, default=32, help="records per embedding call (default 32)")
    ingest.add_argument("--max-chars", type=int, default=2000, help="split longer passages (default 2000)")
    ingest.add_argument("--non-recursive", action="store_true", help="ignore sub-folders")
    ingest.add_argument("--fail-fast", action="store_true", help="stop at the first unreadable file")
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")

    query = sub.add_parser("query", help="search both collections and rerank the merged hits")
    query.add_argument("text", nargs="?", default=None, help="the question (optional with --image)")
    query.add_argument("--image", type=str, default=None, help="an image to search with (path)")
    _connection_args(query)
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

    info = sub.add_parser("info", help="records per collection")
    _connection_args(info)

    sub.add_parser("eval", help="run the benchmark runner (mm-rerank eval --help)", add_help=False)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for the models (torch.set_num_threads); 1 is much faster on a busy machine",
    )
    return parser


def _connection_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("database")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--db", type=Path, default=None, help="embedded Chroma folder (default ./chroma_db)")
    where.add_argument("--server", default=None, help="a Chroma server as HOST:PORT (e.g. 127.0.0.1:8000)")
    where.add_argument("--host", default=None, help="Chroma server host (with --port)")
    group.add_argument("--port", type=int, default=None, help="Chroma server port (default 8000)")
    group.add_argument("--ssl", action="store_true", help="use https for the Chroma server")
    group.add_argument("--text-collection", default="mm_text", help="text collection name (default mm_text)")
    group.add_argument(
        "--image-collection", default="mm_images", help="image collection name (default mm_images)"
    )
    group.add_argument(
        "--embedder",
        choices=EMBEDDERS,
        default="starter",
        help="embedding functions: the offline starter models (default) or model-free hashing (for tests)",
    )


def _retriever(args: argparse.Namespace) -> Any:
    from mm_rerank_components.retrievers.chroma import ChromaMultiCollectionRetriever, parse_server

    host, port = args.host, args.port
    if args.server is not None:
        host, port = parse_server(args.server)
    elif args.port is not None and host is None:
        raise ValueError("--port needs --host (or use --server HOST:PORT)")
    kwargs: dict[str, Any] = {
        "text_collection": args.text_collection,
        "image_collection": args.image_collection,
        "candidate_image": getattr(args, "images", "original"),
    }
    if args.embedder == "hashing":
        from mm_rerank_components.retrievers.fake import HashingEmbeddingFunction

        ef = HashingEmbeddingFunction()
        kwargs.update(text_embedding_function=ef, image_embedding_function=ef, image_query_searches_text=True)
    if host is not None:
        return ChromaMultiCollectionRetriever(host=host, port=port, ssl=args.ssl, **kwargs)
    return ChromaMultiCollectionRetriever(path=args.db if args.db is not None else "chroma_db", **kwargs)


# -- commands -----------------------------------------------------------------------------------------


def _ingest(args: argparse.Namespace) -> int:
    from mm_rerank_components.ingest import IngestError, ingest_folder, scan_folder

    start = time.perf_counter()
    scan = scan_folder(args.folder, recursive=not args.non_recursive, max_chars=args.max_chars)
    retriever = _retriever(args)
    total = len(scan.texts) + len(scan.images)
    print(
        f"{args.folder}: {len(scan.texts)} passages, {len(scan.images)} pictures -> {retriever.describe()} "
        f"({retriever.text_collection_name}, {retriever.image_collection_name})"
    )
    bar = _progress_bar(total, disable=args.no_progress)
    try:
        report = ingest_folder(
            args.folder,
            retriever,
            batch_size=args.batch_size,
            on_error="raise" if args.fail_fast else "collect",
            progress=bar.update if bar is not None else None,
            scan=scan,
        )
    except IngestError as exc:
        print(f"mm-rerank ingest: stopped (--fail-fast): {exc}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    rate = report.written / report.seconds if report.seconds > 0 and report.written else 0.0
    print(report.summary())
    print(f"took {seconds:.1f} s ({rate:.1f} new records/s)")
    for skipped in report.skipped:
        print(f"skipped {skipped}", file=sys.stderr)
    for failure in report.failed:
        print(f"FAILED {failure}", file=sys.stderr)
    if report.failed:
        print(
            f"mm-rerank ingest: {len(report.failed)} file(s) could not be ingested (listed above); "
            "everything else was. Fix them and run the same command again: unchanged files are skipped.",
            file=sys.stderr,
        )
        return 1
    return 0


def _query(args: argparse.Namespace) -> int:
    from mm_rerank_components.types import Query

    if args.text is None and args.image is None:
        print("mm-rerank query: error: give a question, --image PATH, or both", file=sys.stderr)
        return 2
    if args.image is not None and not Path(args.image).is_file():
        print(f"mm-rerank query: error: image not found: {args.image!r}", file=sys.stderr)
        return 2
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    retriever = _retriever(args)
    reranker = _reranker(args.scorer)
    _warm_up(retriever, reranker)
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
            print(json.dumps(_row_dict(rank, candidate, score), ensure_ascii=False))
    else:
        print(format_table(shown))
    print(
        f"\n{len(candidates)} candidates; first stage {timings['first_stage'] * 1000:.0f} ms, "
        f"rerank {timings['rerank'] * 1000:.0f} ms ({args.scorer}), "
        f"models loaded in {timings['load']:.1f} s",
        file=sys.stderr if args.json else sys.stdout,
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    retriever = _retriever(args)
    print(retriever.describe())
    for name, count in retriever.count().items():
        print(f"  {name}: {count} records")
    return 0


def _eval(argv: list[str]) -> int:
    try:
        from mm_rerank_components.eval.runner import main as eval_main
    except ImportError as exc:
        print(
            f"mm-rerank eval: error: the evaluation runner is not available ({exc}); "
            'pip install "mm-rerank-components[eval]"',
            file=sys.stderr,
        )
        return 1
    result = eval_main(argv)
    return int(result) if isinstance(result, int) else 0


# -- helpers ------------------------------------------------------------------------------------------


def set_threads(threads: int) -> None:
    """Set torch's CPU thread count (when torch is installed); a no-op for model-free runs."""
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)


def _reranker(scorer: str) -> Any:
    from mm_rerank_components.reranker import MultimodalReranker

    if scorer == "none":
        return None
    if scorer == "fake":
        from mm_rerank_components.scorers.fake import FakeScorer

        return MultimodalReranker(FakeScorer())
    from mm_rerank_components.scorers.starter import StarterScorer

    return MultimodalReranker(StarterScorer())


def _warm_up(retriever: Any, reranker: Any) -> None:
    """Load models and open the database before the timed query, so timings are those of a warm service."""
    retriever.warm_up()
    scorer = getattr(reranker, "scorer", None)
    load = getattr(scorer, "load", None)
    if callable(load):
        load()


def _progress_bar(total: int, *, disable: bool) -> Any:
    if disable or total == 0:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        logging.getLogger(__name__).info('no progress bar: pip install "mm-rerank-components[cli]"')
        return None
    # disable=None turns the bar off when stderr is not a terminal (CI logs, pipes)
    return tqdm(total=total, unit="rec", desc="ingest", disable=None, file=sys.stderr)


def _label(candidate: Any) -> str:
    meta = candidate.metadata
    title = meta.get("title")
    where = meta.get("rel_path") or meta.get("path") or meta.get("image_path") or candidate.id
    if title and str(title) != Path(str(where)).stem:
        return f"{title} ({where})"
    return str(where)


def _row_dict(rank: int, candidate: Any, score: float) -> dict[str, Any]:
    return {
        "rank": rank,
        "id": candidate.id,
        "modality": candidate.modality,
        "score": None if math.isnan(score) else round(score, 4),
        "route": candidate.metadata.get("routes") or candidate.source,
        "retrieval_score": candidate.retrieval_score,
        "title": candidate.metadata.get("title"),
        "path": candidate.metadata.get("path") or candidate.metadata.get("image_path"),
    }


def format_table(rows: Sequence[tuple[Any, float]], width: int = 110) -> str:
    """Rank, modality, unified score, source route and title/path as an aligned text table.

    Example:
        >>> from mm_rerank_components import Candidate
        >>> hit = Candidate("a", text="x", source="mm_text", metadata={"title": "Fox"})
        >>> print(format_table([(hit, 0.91)]))
        rank  modality    score  route                 title / path
           1  text        0.910  mm_text               Fox (a)
    """
    header = f"{'rank':>4}  {'modality':<10}  {'score':>5}  {'route':<20}  title / path"
    lines = [header]
    for rank, (candidate, score) in enumerate(rows, start=1):
        route = str(candidate.metadata.get("route") or candidate.source or "")
        shown = "  -  " if math.isnan(score) else f"{score:.3f}"
        label = _label(candidate)
        prefix = f"{rank:>4}  {candidate.modality:<10}  {shown:>5}  {route[:20]:<20}  "
        room = max(10, width - len(prefix))
        lines.append(prefix + (label if len(label) <= room else label[: room - 1] + "…"))
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
