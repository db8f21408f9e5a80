"""A batch-friendly fake scorer for serving tests and load tests: a fixed cost per scoring pass."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

from mm_rerank_components.scorers.fake import FakeScorer
from mm_rerank_components.types import Candidate, Query


class PerBatchCostScorer(FakeScorer):
    """:class:`~mm_rerank_components.scorers.FakeScorer`'s scores, at a fixed cost per pass.

    Every pass (one ``score`` call, or one ``score_many`` call over the candidates of several queries)
    sleeps ``per_batch_s`` seconds whatever its size, like one forward pass of an accelerator that is far
    from full. Sleeping, not spinning, keeps the CPU free: it stands for time the accelerator is busy.
    ``passes`` and ``pairs`` count the work done, so tests can see how calls were batched.

    Example:
        >>> scorer = PerBatchCostScorer(per_batch_s=0.0)
        >>> fox = [Candidate("a", text="fox")]
        >>> scorer.score_many([(Query("fox"), fox), (Query("owl"), fox)])
        [[1.0], [0.0]]
        >>> scorer.passes
        1
    """

    def __init__(
        self, per_batch_s: float = 0.02, overrides: Mapping[str, float] | None = None, name: str = "fake"
    ) -> None:
        if not per_batch_s >= 0:
            raise ValueError(f"per_batch_s must be >= 0, got {per_batch_s!r}")
        super().__init__(overrides=overrides, name=name)
        self.per_batch_s = float(per_batch_s)
        self.passes = 0
        self.pairs = 0
        self._lock = threading.Lock()

    def _pay(self, pairs: int) -> None:
        with self._lock:  # one device: passes run one after another
            time.sleep(self.per_batch_s)
            self.passes += 1
            self.pairs += pairs

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        self._pay(len(candidates))
        return super().score(query, candidates)

    def score_many(self, calls: Sequence[tuple[Query, Sequence[Candidate]]]) -> list[list[float]]:
        """Scores for several ``(query, candidates)`` calls in one pass."""
        self._pay(sum(len(c) for _, c in calls))
        return [FakeScorer.score(self, query, candidates) for query, candidates in calls]
