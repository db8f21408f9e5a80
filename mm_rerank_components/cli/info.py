"""``mm-rerank info``: records per collection."""

from __future__ import annotations

import argparse
from typing import Any

from mm_rerank_components.cli._common import connection_args, retriever_from_args


def register(sub: Any) -> None:
    info = sub.add_parser("info", help="records per collection")
    connection_args(info)
    info.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    retriever = retriever_from_args(args)
    print(retriever.describe())
    for name, count in retriever.count().items():
        print(f"  {name}: {count} records")
    return 0
