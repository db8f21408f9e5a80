"""The fixed held-out split: ``adapt`` trains on the queries the eval does not test on.

A query's split is a seeded SHA-256 hash of its key, so it never changes between runs or machines, and
``mm-rerank adapt --split dev`` and ``mm-rerank eval`` agree on it without sharing any state. The eval
(:mod:`mm_rerank_components.eval.tasks`) reads it from here; ``adapt`` never imports the eval.
"""

from __future__ import annotations

import hashlib
from typing import Literal

__all__ = ["SPLIT_SEED", "Split", "assign_split"]

Split = Literal["dev", "test"]
#: The split is a hash of this seed and the query's key, so it never changes between runs or machines.
SPLIT_SEED = "mm-rerank-eval-v1"


def assign_split(key: str, test_fraction: float = 0.5, seed: str = SPLIT_SEED) -> Split:
    """``"test"`` (held out) or ``"dev"`` for ``key``, fixed by a seeded SHA-256 hash.

    Example:
        >>> assign_split("animals/birds/owl") in ("dev", "test")
        True
        >>> assign_split("x", test_fraction=0.0)
        'dev'
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
    value = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64
    return "test" if value < test_fraction else "dev"
