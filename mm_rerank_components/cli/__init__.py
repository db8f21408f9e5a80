"""The ``mm-rerank`` command line: one module per command, each with ``register(sub)`` and ``run(args)``.

Commands (``mm-rerank COMMAND --help`` lists every option):

* ``ingest FOLDER``: embed a folder of passages and pictures into Chroma (:mod:`.ingest`);
* ``query "TEXT" [--image PATH]``: first stage over both collections, then rerank (:mod:`.query`);
* ``info``: records per collection (:mod:`.info`);
* ``eval ...``: the benchmark runner (:mod:`.eval`), which parses its own options;
* ``serve``: the rerank HTTP service, optionally on Ray Serve (:mod:`.serve`).

Global options (``-v``, ``--threads N``) go before the command. ``--server HOST:PORT`` talks to a Chroma
server instead of the embedded database.

To add a command, write ``cli/NAME.py`` with ``register(sub)`` (add a sub-parser and
``set_defaults(handler=run)``) and ``run(args) -> int``, and add NAME to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from mm_rerank_components.cli._common import exit_now, format_table, set_threads

__all__ = ["COMMANDS", "ONE_THREAD_COMMANDS", "format_table", "main", "set_threads"]

#: One-shot commands that run on one torch thread unless ``--threads`` or ``OMP_NUM_THREADS`` is given:
#: a cold ``mm-rerank query`` on the quickstart database took 3.3-3.5 s with one thread against
#: 4.6-6.3 s with torch's default two on a quiet 2-core machine, with the same output.
ONE_THREAD_COMMANDS = frozenset({"query"})

#: Command modules under ``mm_rerank_components.cli``, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("ingest", "query", "shell", "info", "eval", "serve", "adapt")

#: Commands whose arguments are handed over untouched to their ``run_raw(argv)``.
_RAW = frozenset({"eval"})


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failures, 2 bad usage)."""
    # transformers' per-load progress bars would interleave with our tables; the CLI has its own bar
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    raw_at = next((i for i, a in enumerate(args_list) if a in _RAW), None)
    if raw_at is not None and _only_global_options(args_list[:raw_at]):
        args = parser.parse_args([*args_list[:raw_at], args_list[raw_at]])
        rest = args_list[raw_at + 1 :]
    else:
        args, rest = parser.parse_args(args_list), []
    _configure_logging(args.verbose)
    command = args.command
    try:
        if args.threads is not None:
            set_threads(args.threads)
        elif command in ONE_THREAD_COMMANDS and "OMP_NUM_THREADS" not in os.environ:
            set_threads(1)  # one query's matrices are small: a second thread costs more than it gives
        if command in _RAW:
            module = importlib.import_module(f"{__name__}.{command}")
            return int(module.run_raw(rest))
        handler = getattr(args, "handler", None)
        if handler is None:
            parser.print_help()
            return 2
        code = int(handler(args))
        if argv is None and command in ONE_THREAD_COMMANDS:
            exit_now(code)  # the program itself, one query done: skip the module teardown (cli/_common.py)
        return code
    except (ValueError, TypeError, OSError, ImportError) as exc:
        print(f"mm-rerank {command}: error: {exc}", file=sys.stderr)
        return 1


def _only_global_options(tokens: list[str]) -> bool:
    """True when everything before a raw command is a global option (so ``eval`` is the command)."""
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if (token.startswith("-v") and set(token[1:]) == {"v"}) or token == "--verbose":
            i += 1
        elif token == "--threads":
            i += 2
        elif token.startswith("--threads="):
            i += 1
        else:
            return False
    return True


def _configure_logging(verbose: int) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mm-rerank",
        description="Ingest passages and pictures into Chroma and query them, reranked on one scale.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for the models (torch.set_num_threads); 1 is much faster on a busy machine "
        "(query uses 1 unless this or OMP_NUM_THREADS says otherwise)",
    )
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
