"""``mm-rerank eval ...``: the benchmark runner (:mod:`mm_rerank_components.eval.runner`).

Its options belong to the runner, so this command hands over its arguments untouched.
"""

from __future__ import annotations

import sys
from typing import Any


def register(sub: Any) -> None:
    sub.add_parser("eval", help="run the benchmark runner (mm-rerank eval --help)", add_help=False)


def run_raw(argv: list[str]) -> int:
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
