"""What every ``mm-rerank`` command shares: database arguments, the retriever, threads, the result table."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mm_rerank_components.starter.threads import set_process_threads

#: ``--threads N``: torch's thread count and the starter models' own policy (kept here for the commands).
set_threads = set_process_threads

#: First-stage embedders by name; ``clip:PATH`` takes a local CLIP-family model folder.
EMBEDDERS = ("starter", "hashing", "clip:PATH")


def connection_args(parser: argparse.ArgumentParser) -> None:
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
        type=embedder_spec,
        default="starter",
        metavar="{starter,hashing,clip:PATH}",
        help="embedding functions: the offline starter models (default), model-free hashing (for tests), "
        "or a local CLIP-family model folder (clip:PATH; CLIP, SigLIP)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds a Chroma server may take to answer a request (default 60)",
    )


def embedder_spec(text: str) -> str:
    """``--embedder``'s value, checked: ``starter``, ``hashing`` or ``clip:PATH`` with an existing PATH.

    Example:
        >>> embedder_spec("hashing")
        'hashing'
    """
    if text in ("starter", "hashing"):
        return text
    if text.startswith("clip:") and len(text) > len("clip:"):
        path = Path(text[len("clip:") :]).expanduser()
        if not path.exists():
            raise argparse.ArgumentTypeError(f"no CLIP model folder at {str(path)!r} (from {text!r})")
        return f"clip:{path}"
    raise argparse.ArgumentTypeError(f"unknown embedder {text!r}; use starter, hashing or clip:PATH")


def retriever_from_args(args: argparse.Namespace) -> Any:
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
        "embedder": args.embedder,
    }
    if host is not None:
        timeout = getattr(args, "timeout", 60.0)
        return ChromaMultiCollectionRetriever(host=host, port=port, ssl=args.ssl, timeout=timeout, **kwargs)
    return ChromaMultiCollectionRetriever(path=args.db if args.db is not None else "chroma_db", **kwargs)


def scorer_arg(text: str) -> str:
    """``--scorer``'s value, checked by the scorer registry (a model folder must exist, a URL be http(s)).

    Example:
        >>> scorer_arg("fake")
        'fake'
    """
    from mm_rerank_components.scorers.registry import ScorerSpecError, parse_spec

    try:
        kind, arg = parse_spec(text)
    except ScorerSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if kind is None:  # a module:callable factory, imported when the scorer is built
        return text.strip()
    return kind.kind if arg is None else f"{kind.kind}:{arg}"


def query_scorer_arg(text: str) -> str:
    """``mm-rerank query --scorer``: a scorer spec, or ``none`` (first stage only)."""
    return "none" if text == "none" else scorer_arg(text)


def reranker_from_spec(spec: str) -> Any:
    """The reranker ``mm-rerank query --scorer`` names: ``starter`` is the product default (starter scorer
    fused with the first stage's signals), ``none`` is no reranker, any other spec its scorer, calibrated.

    Example:
        >>> reranker_from_spec("fake").scorer.name
        'fake'
    """
    if spec == "none":
        return None
    if spec == "starter":
        from mm_rerank_components.defaults import default_reranker

        return default_reranker()
    from mm_rerank_components.reranker import MultimodalReranker
    from mm_rerank_components.scorers.registry import scorer_from_spec

    return MultimodalReranker(scorer_from_spec(spec))


def scorer_help(intro: str) -> str:
    """A ``--scorer`` help text that lists every spec the registry accepts."""
    from mm_rerank_components.scorers.registry import scorer_kinds

    return f"{intro}: {', '.join(scorer_kinds())} (PATH: a local model folder)"


def exit_now(code: int) -> None:
    """End a one-shot command's process with ``code`` at once: flush the output and the log handlers, then
    ``os._exit``, skipping the interpreter's teardown of every imported module (about 0.2 s of wall time
    after a cold ``mm-rerank query``, most of it chromadb's; ``atexit`` hooks are skipped too, so only a
    command that has nothing left to write may call it). ``mm-rerank`` calls it only when it runs as the
    program itself (``main()`` without an argument list), never when a caller passes one in-process.
    Under a profiler, a tracer or coverage, which write their results at exit, it returns instead.
    """
    import contextlib
    import os

    if sys.getprofile() is not None or sys.gettrace() is not None or "coverage" in sys.modules:
        return

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing more reaches it
            stream.flush()
    logging.shutdown()
    os._exit(code)


def warm_up(retriever: Any, reranker: Any) -> None:
    """Open the database and load every model before the timed query, so timings are those of a warm
    service (``reranker`` may be None: no reranking)."""
    retriever.warm_up()
    if reranker is not None:
        reranker.warm_up()


def progress_bar(total: int, *, disable: bool) -> Any:
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


def row_dict(rank: int, candidate: Any, score: float) -> dict[str, Any]:
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


def read_captions_error(args: argparse.Namespace) -> str | None:
    """The usage error of ``--read-captions`` without learned fusion (``mm-rerank query`` and ``serve``),
    or None: the default (``--scorer starter``) or ``--reranker FOLDER`` can read captions.

    Example:
        >>> read_captions_error(argparse.Namespace(read_captions=True, reranker=None, scorer="fake"))[:40]
        '--read-captions needs learned fusion (t'
    """
    if getattr(args, "read_captions", False) and args.reranker is None and args.scorer != "starter":
        return (
            "--read-captions needs learned fusion (the default, --scorer starter, or --reranker FOLDER), "
            f"not --scorer {args.scorer}"
        )
    return None


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
