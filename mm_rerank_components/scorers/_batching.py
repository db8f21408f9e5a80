"""The one batching helper every scorer uses: sort by real cost, cut balanced batches, restore the order.

Padding makes a batch cost about ``len(batch) * max(cost in batch)``, so sorting by cost (tokens, pixels)
before cutting keeps like with like (FlagEmbedding's trick), and balanced cuts avoid a full batch followed
by a tiny remainder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def plan_batches(
    costs: Sequence[float], *, max_items: int | None = None, max_cost: float | None = None
) -> list[list[int]]:
    """Group item positions into batches, cheapest first.

    Each batch holds at most ``max_items`` items and its padded cost (``len(batch) * max(cost)``) stays at
    most ``max_cost``; a single item over ``max_cost`` gets a batch of its own. Batches cut by
    ``max_items`` alone are balanced (sizes differ by at most one).

    Example:
        >>> plan_batches([5, 1, 3, 2, 4], max_items=2)
        [[1, 3], [2, 4], [0]]
        >>> plan_batches([100, 1, 1, 1], max_cost=10)
        [[1, 2, 3], [0]]
    """
    bad_items = isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1
    if max_items is not None and bad_items:
        raise ValueError(f"max_items must be a positive int or None, got {max_items!r}")
    if max_cost is not None and not (isinstance(max_cost, (int, float)) and max_cost > 0):
        raise ValueError(f"max_cost must be a positive number or None, got {max_cost!r}")
    order = sorted(range(len(costs)), key=lambda i: costs[i])
    if not order:
        return []
    # first cut by the cost budget, then split each run into balanced pieces of at most max_items
    runs: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and max_cost is not None and (len(current) + 1) * costs[i] > max_cost:
            runs.append(current)
            current = []
        current.append(i)
    runs.append(current)
    if max_items is None:
        return runs
    batches: list[list[int]] = []
    for run in runs:
        pieces = math.ceil(len(run) / max_items)
        size, extra = divmod(len(run), pieces)
        start = 0
        for piece in range(pieces):
            end = start + size + (1 if piece < extra else 0)
            batches.append(run[start:end])
            start = end
    return batches


def run_batched(
    items: Sequence[T],
    score_batch: Callable[[list[T]], Sequence[R]],
    *,
    costs: Sequence[float],
    max_items: int | None = None,
    max_cost: float | None = None,
) -> list[R]:
    """Score ``items`` batch by batch (see :func:`plan_batches`) and return the results in input order.

    Example:
        >>> run_batched(["ccc", "a", "bb"], lambda b: [len(x) for x in b], costs=[3, 1, 2], max_items=2)
        [3, 1, 2]
    """
    if len(costs) != len(items):
        raise ValueError(f"got {len(costs)} costs for {len(items)} items; give one cost per item")
    results: list[R | None] = [None] * len(items)
    for batch in plan_batches(costs, max_items=max_items, max_cost=max_cost):
        outputs = list(score_batch([items[i] for i in batch]))
        if len(outputs) != len(batch):
            raise ValueError(f"a batch of {len(batch)} items gave {len(outputs)} results; expected one each")
        for i, output in zip(batch, outputs, strict=True):
            results[i] = output
    return results  # type: ignore[return-value]


def split_by_calls(
    flat: Sequence[float], calls: Sequence[tuple[object, Sequence[object]]]
) -> list[list[float]]:
    """Cut the scores of the concatenated candidates of ``calls`` back into one list per call.

    Example:
        >>> split_by_calls([1.0, 2.0, 3.0], [("q", ["a", "b"]), ("r", []), ("s", ["c"])])
        [[1.0, 2.0], [], [3.0]]
    """
    out: list[list[float]] = []
    start = 0
    for _, candidates in calls:
        out.append(list(flat[start : start + len(candidates)]))
        start += len(candidates)
    if start != len(flat):
        raise ValueError(f"{len(flat)} scores for {start} candidates; expected one each")
    return out
