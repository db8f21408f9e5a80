"""``mm-rerank ingest FOLDER``: embed a folder of passages and pictures into the two Chroma collections."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from mm_rerank_components.cli._common import connection_args, progress_bar, retriever_from_args

DEFAULT_MAX_BYTES = 20 * 1024 * 1024  # the same as mm_rerank_components.ingest.DEFAULT_MAX_BYTES


def register(sub: Any) -> None:
    ingest = sub.add_parser("ingest", help="embed a folder of passages and pictures into Chroma")
    ingest.add_argument(
        "folder", type=Path, help="folder of .txt/.md passages and png/jpg/webp/gif/bmp pictures"
    )
    connection_args(ingest)
    ingest.add_argument("--batch-size", type=int, default=32, help="records per embedding call (default 32)")
    ingest.add_argument("--max-chars", type=int, default=2000, help="split longer passages (default 2000)")
    ingest.add_argument("--non-recursive", action="store_true", help="ignore sub-folders")
    ingest.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="also ingest links that lead out of the folder (default: listed as skipped)",
    )
    ingest.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help=f"largest file read, in bytes (default {DEFAULT_MAX_BYTES}); larger ones are listed as failed",
    )
    ingest.add_argument(
        "--workers",
        type=int,
        default=None,
        help="threads decoding pictures (default: one per spare core, 2 to 4)",
    )
    ingest.add_argument(
        "--ray",
        action="store_true",
        help="decode, classify and embed on Ray Data (pip install 'mm-rerank-components[ray]'); "
        "--workers is then the Ray workers (default 2); see docs/scale.md",
    )
    ingest.add_argument(
        "--ray-address",
        default=None,
        help="with --ray: a Ray cluster (auto, ray://HOST:10001); default local",
    )
    ingest.add_argument("--fail-fast", action="store_true", help="stop at the first unreadable file")
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")
    ingest.set_defaults(handler=run)


class _ListedHere(logging.Filter):
    """Drops the ingest writer's per-file "not ingested" warnings: :func:`run` prints them as FAILED."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("not ingested:")


def run(args: argparse.Namespace) -> int:
    from mm_rerank_components.ingest import IngestError, scan_folder

    start = time.perf_counter()
    scan = scan_folder(
        args.folder,
        recursive=not args.non_recursive,
        max_chars=args.max_chars,
        follow_symlinks=args.follow_symlinks,
        max_bytes=args.max_bytes,
        documents=_document_options(args),
    )
    retriever = retriever_from_args(args)
    total = len(scan.texts) + len(scan.images)
    print(
        f"{args.folder}: {len(scan.texts)} passages, {len(scan.images)} pictures -> {retriever.describe()} "
        f"({retriever.text_collection_name}, {retriever.image_collection_name})"
    )
    bar = progress_bar(total, disable=args.no_progress)
    options: dict[str, Any] = {
        "batch_size": args.batch_size,
        "on_error": "raise" if args.fail_fast else "collect",
        "progress": bar.update if bar is not None else None,
        "scan": scan,
    }
    try:
        report = _ingest(args, retriever, options)
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


def _document_options(args: argparse.Namespace) -> Any:
    """PDF/HTML/DOCX figures go next to an embedded database (DB/figures) unless $MM_RERANK_FIGURES is set
    (issue 25; a Chroma server has no local folder: ~/.cache/mm-rerank/figures)."""
    from mm_rerank_components.ingest.documents import DocumentOptions, default_figures_dir

    remote = args.host is not None or args.server is not None
    db = None if remote else (args.db if args.db is not None else Path("chroma_db"))
    return DocumentOptions(figures_dir=default_figures_dir(db))


def _ingest(args: argparse.Namespace, retriever: Any, options: dict[str, Any]) -> Any:
    """The ingest itself (local or on Ray Data), each failure left for :func:`run` to print once."""
    from mm_rerank_components.ingest import ingest_folder

    listed_here = _ListedHere()
    writer_log = logging.getLogger("mm_rerank_components.ingest.write")
    writer_log.addFilter(listed_here)
    try:
        if args.ray:  # issue 21: the same writer, the embedding work on Ray Data
            from mm_rerank_components.ingest.ray import ingest_folder_ray

            workers = 2 if args.workers is None else args.workers
            return ingest_folder_ray(
                args.folder,
                retriever,
                workers=workers,
                embedder=args.embedder,
                address=args.ray_address,
                **options,
            )
        return ingest_folder(args.folder, retriever, workers=args.workers, **options)
    finally:
        writer_log.removeFilter(listed_here)
