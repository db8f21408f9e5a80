"""``mm-rerank shell``: one process answers query after query, loading its models once.

Each line read from standard input is a question; ``:image PATH [QUESTION]`` searches with a picture;
``:quit`` (or end of input) leaves. The first answer pays for loading only the models it needs (see
:func:`warm_up_for`); every later one reuses them, so the second query costs a query, not a start-up.

Example (a terminal session)::

    $ mm-rerank shell --db .cache/quickstart_db
    mm-rerank> Which farm animal gives us milk?
    ...
    mm-rerank> :image photos/koala.webp What does this animal eat?
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from mm_rerank_components.cli._common import (
    connection_args,
    format_table,
    retriever_from_args,
)

PROMPT = "mm-rerank> "


def register(sub: Any) -> None:
    shell = sub.add_parser("shell", help="answer queries one per line from a warm process (models load once)")
    connection_args(shell)
    shell.add_argument("--k-text", type=int, default=16, help="hits from the text collection (default 16)")
    shell.add_argument("--k-image", type=int, default=16, help="hits from the image collection (default 16)")
    shell.add_argument("--top-n", type=int, default=10, help="rows to print (default 10; 0 = all)")
    shell.add_argument(
        "--scorer",
        default="starter",
        help="reranker: starter (default: the label-free default reranker), none, or any scorer spec",
    )
    shell.add_argument(
        "--reranker", type=Path, default=None, metavar="FOLDER", help="a saved adapted reranker"
    )
    shell.add_argument(
        "--images",
        choices=("preview", "original"),
        default="preview",
        help="what the reranker reads for a picture (default: the preview stored at ingest)",
    )
    shell.set_defaults(handler=run)


def warm_up_for(retriever: Any, query: Any) -> None:
    """Load what answering ``query`` needs, and nothing more: the collections and the text encoder for a
    question, the picture model only when the query has a picture. The reranker's scorer loads its own
    models when it first needs them (a picture whose class list is stored needs no picture model)."""
    if query.image is None and query.text is not None:
        retriever.embed_texts([query.text], kind="text", query=True)
        for kind in ("text", "image"):
            if retriever.store.collection_name(kind) is not None:
                retriever.store.collection(kind, create=False)
        return
    retriever.warm_up()


def parse_line(line: str) -> tuple[str | None, str | None] | None:
    """``(text, image)`` of one input line; None for a blank line. Raises ValueError for a bad command.

    Example:
        >>> parse_line(":image fox.jpg a red fox")
        ('a red fox', 'fox.jpg')
        >>> parse_line("red fox")
        ('red fox', None)
    """
    line = line.strip()
    if not line:
        return None
    if not line.startswith(":"):
        return line, None
    command, _, rest = line.partition(" ")
    if command == ":image":
        path, _, text = rest.strip().partition(" ")
        if not path:
            raise ValueError(":image needs a path, e.g. :image photos/fox.jpg a red fox")
        if not Path(path).is_file():
            raise ValueError(f"image not found: {path!r}")
        return text.strip() or None, path
    raise ValueError(f"unknown command {command!r}; use :image PATH [QUESTION] or :quit")


def answer(retriever: Any, reranker: Any, query: Any, args: argparse.Namespace) -> tuple[list[Any], float]:
    """The ranked rows of one query and the seconds it took (first stage and rerank)."""
    from mm_rerank_components.types import RankedCandidate

    t0 = time.perf_counter()
    candidates = retriever.retrieve(query, k_text=args.k_text, k_image=args.k_image)
    if reranker is not None:
        ranked: list[RankedCandidate] = reranker.rerank(query, candidates)
        rows = [(r.candidate, r.score) for r in ranked]
    else:
        rows = [(c, float("nan")) for c in candidates]
    return rows, time.perf_counter() - t0


def serve_lines(
    lines: Iterable[str], retriever: Any, reranker: Any, args: argparse.Namespace, out: TextIO
) -> int:
    """Answer each line; returns how many queries were answered."""
    from mm_rerank_components.types import Query

    answered = 0
    noted: set[str] = set()  # the notes said so far (picture query, captioned pictures): each once
    for line in lines:
        if line.strip() in (":quit", ":q", ":exit"):
            break
        try:
            parsed = parse_line(line)
        except ValueError as exc:
            print(f"error: {exc}", file=out, flush=True)
            continue
        if parsed is None:
            continue
        query = Query(text=parsed[0], image=parsed[1])
        start = time.perf_counter()
        if answered == 0:
            warm_up_for(retriever, query)
        rows, seconds = answer(retriever, reranker, query, args)
        shown = rows if args.top_n == 0 else rows[: args.top_n]
        print(format_table(shown), file=out)
        from mm_rerank_components.defaults import scores_note  # lazily, as the reranker is built

        note = scores_note(reranker, query, (c.modality for c, _ in shown)) if reranker is not None else None
        if note is not None and note not in noted:  # each note once a session
            print(textwrap.fill(note, 110), file=out)
            noted.add(note)
        elapsed = time.perf_counter() - start
        what = "first query (loads the models it needs)" if answered == 0 else "query"
        print(
            f"{what}: {elapsed * 1000:.0f} ms ({seconds * 1000:.0f} ms search and rerank)",
            file=out,
            flush=True,
        )
        answered += 1
    return answered


def run(args: argparse.Namespace) -> int:
    from mm_rerank_components.cli.query import _make_reranker

    retriever = retriever_from_args(args)
    reranker, label = _make_reranker(args)
    interactive = sys.stdin.isatty()
    print(f"{retriever.describe()}; reranker: {label}. One question per line; :quit leaves.", file=sys.stderr)

    def lines() -> Iterable[str]:
        while True:
            if interactive:
                print(PROMPT, end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            if not line:
                return
            yield line

    serve_lines(lines(), retriever, reranker, args, sys.stdout)
    return 0
