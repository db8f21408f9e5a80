"""``mm-rerank info``: records per collection, and the embedding function that built each."""

from __future__ import annotations

import argparse
from typing import Any

from mm_rerank_components.cli._common import connection_args, retriever_from_args


def register(sub: Any) -> None:
    info = sub.add_parser("info", help="records per collection and the embedder that built each")
    connection_args(info)
    info.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json

    retriever = retriever_from_args(args)
    print(retriever.describe())
    for kind in ("text", "image"):
        found = retriever.store.inspect(kind)
        if found["name"] is None:
            continue
        line = f"  {found['name']}: {found['count']} records"
        if found["embedder"] is not None:
            settings = json.dumps(found["config"], sort_keys=True) if found["config"] else ""
            line += f" (embedder {found['embedder']}{' ' + settings if settings else ''})"
        print(line)
    return 0
