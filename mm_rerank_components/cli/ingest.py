"""``mm-rerank ingest FOLDER``: embed a folder of passages and pictures into the two Chroma collections."""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
import time
from collections.abc import Callable
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
    _document_args(ingest)
    ingest.set_defaults(handler=run)


def _count(flag: str, unit: str = "") -> Callable[[str], int]:
    """An argparse type: an int >= 1, else an error naming the flag, the value and what to give."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be a whole number >= 1{unit}, got {value!r}")
        return number

    return parse


_DEFAULT_TIMEOUT: Any = object()  # --document-timeout not given (None means "no cap")


def _seconds(value: str) -> float | None:
    """``--document-timeout``: seconds > 0, or ``none`` for no cap."""
    if value.strip().lower() == "none":
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < 1e9:
        raise argparse.ArgumentTypeError(
            f"--document-timeout must be a number of seconds > 0 (or 'none' for no cap), got {value!r}"
        )
    return seconds


#: DocumentOptions' defaults, for the help text without importing the readers when the CLI starts (a test
#: checks they match)
DOCUMENT_DEFAULTS: dict[str, Any] = {
    "max_pages": 2000,
    "max_figures": 1000,
    "min_figure_side": 32,
    "max_chars": 5_000_000,
    "max_seconds": 300.0,
    "render_dpi": 100,
}


def _document_args(ingest: Any) -> None:
    """The caps of PDF, HTML and DOCX reading (``DocumentOptions``); unset flags keep its defaults."""
    d = DOCUMENT_DEFAULTS
    group = ingest.add_argument_group("documents (PDF, HTML, DOCX; see docs/documents.md)")
    group.add_argument(
        "--max-pages",
        type=_count("--max-pages"),
        help=f"a PDF with more pages fails as a whole (default {d['max_pages']})",
    )
    group.add_argument(
        "--max-figures",
        type=_count("--max-figures"),
        help=f"figures kept per document; the rest are listed as failed (default {d['max_figures']})",
    )
    group.add_argument(
        "--min-figure-side",
        type=_count("--min-figure-side", " (pixels)"),
        help=f"smaller pictures are decorations, left out and counted (default {d['min_figure_side']} px)",
    )
    group.add_argument(
        "--max-document-chars",
        type=_count("--max-document-chars"),
        help=f"text kept per document, in characters (default {d['max_chars']})",
    )
    group.add_argument(
        "--document-timeout",
        type=_seconds,
        default=_DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"longest time reading one document may take; 'none': no cap (default {d['max_seconds']:g})",
    )
    group.add_argument(
        "--render-pages",
        action="store_true",
        help="also store each PDF page as a picture (for page-level scorers such as ColPali; "
        "needs pypdfium2)",
    )
    group.add_argument(
        "--render-dpi",
        type=_count("--render-dpi"),
        help=f"resolution of --render-pages pictures (default {d['render_dpi']}; capped by the pixel limit)",
    )


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
    captioned = sum(1 for record in scan.images if record.caption)
    if captioned:  # measured: the default reads captioned pictures too low (docs/calibration.md)
        print(textwrap.fill(_captions_hint(args, captioned, len(scan.images)), 110))
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


def _captions_hint(args: argparse.Namespace, captioned: int, pictures: int) -> str:
    """What to do about captioned pictures: the default was not calibrated on them; adapting is."""
    if args.server is not None:
        where = f"--server {args.server}"
    elif args.host is not None:
        where = f"--host {args.host}" + (f" --port {args.port}" if args.port is not None else "")
    else:
        where = f"--db {args.db if args.db is not None else 'chroma_db'}"
    return (
        f"{captioned} of {pictures} pictures carry a caption: the default reranker was not calibrated on "
        f"captioned pictures (their scores run low). `mm-rerank adapt {where} --out FOLDER` calibrates "
        "it to this corpus without labels; then query with `--reranker FOLDER` (docs/calibration.md, "
        "'Same score, same meaning?')."
    )


def _document_options(args: argparse.Namespace) -> Any:
    """The document caps from the flags; PDF/HTML/DOCX figures go next to an embedded database (DB/figures)
    unless $MM_RERANK_FIGURES is set (issue 25; a Chroma server has no local folder:
    ~/.cache/mm-rerank/figures)."""
    from mm_rerank_components.ingest.documents import DocumentOptions, default_figures_dir

    remote = args.host is not None or args.server is not None
    db = None if remote else (args.db if args.db is not None else Path("chroma_db"))
    flags = {
        "max_pages": args.max_pages,
        "max_figures": args.max_figures,
        "min_figure_side": args.min_figure_side,
        "max_chars": args.max_document_chars,
        "render_dpi": args.render_dpi,
    }
    caps: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    if args.document_timeout != _DEFAULT_TIMEOUT:
        caps["max_seconds"] = args.document_timeout
    return DocumentOptions(figures_dir=default_figures_dir(db), render_pages=args.render_pages, **caps)


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
