"""The shared batching helper: cost-sorted, balanced batches, results back in input order."""

from __future__ import annotations

import pytest

from mm_rerank_components.scorers._batching import plan_batches, run_batched


def test_batches_are_sorted_by_cost_and_balanced() -> None:
    batches = plan_batches([9, 1, 8, 2, 7, 3, 6], max_items=3)
    assert [len(b) for b in batches] == [3, 2, 2]  # balanced, not 3 + 3 + 1
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(7))
    costs = [9, 1, 8, 2, 7, 3, 6]
    assert [costs[i] for i in flat] == sorted(costs)


def test_cost_budget_counts_padding() -> None:
    # padded cost = len(batch) * max cost in it; 3 * 4 = 12 > 10, so the 4 starts a new batch
    assert plan_batches([1, 1, 4, 1], max_cost=10) == [[0, 1, 3], [2]]
    # an item over the budget on its own still gets a batch
    assert plan_batches([50], max_cost=10) == [[0]]


def test_run_batched_restores_input_order() -> None:
    seen: list[list[str]] = []

    def score(batch: list[str]) -> list[int]:
        seen.append(batch)
        return [len(x) for x in batch]

    items = ["aaaa", "b", "ccc", "dd", "eeeee"]
    assert run_batched(items, score, costs=[len(x) for x in items], max_items=2) == [4, 1, 3, 2, 5]
    assert seen[0] == ["b", "dd"]


def test_run_batched_checks_lengths() -> None:
    with pytest.raises(ValueError, match="one cost per item"):
        run_batched(["a"], lambda b: [1], costs=[1, 2])
    with pytest.raises(ValueError, match="expected one each"):
        run_batched(["a", "b"], lambda b: [1], costs=[1, 2])


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_bad_max_items_is_named(bad: object) -> None:
    with pytest.raises(ValueError, match="max_items"):
        plan_batches([1, 2], max_items=bad)  # type: ignore[arg-type]
