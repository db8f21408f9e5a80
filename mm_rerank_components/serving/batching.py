"""Dynamic micro-batching across requests.

Each request runs the package's own :class:`~mm_rerank_components.MultimodalReranker` (validation, image
decoding, calibration, sorting) in a worker thread. Its scorer is a :class:`BatchingScorer`: a stand-in
whose ``score(query, candidates)`` hands the call to a batcher and waits. The batcher gathers the calls
of concurrent requests, up to ``max_batch_size`` candidates or ``max_wait_s`` after the first call, and
scores them in one pass on a bounded scoring worker; each request gets exactly its own scores back.

The batcher is either :class:`MicroBatcher` (the plain server) or Ray Serve's ``@serve.batch`` (the Ray
deployment); both call :func:`score_many`, so scores are the same either way, and the same as the
in-process reranker's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mm_rerank_components.scorers.base import BaseScorer
from mm_rerank_components.types import Candidate, Modality, Query

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreCall:
    """One ``scorer.score(query, candidates)`` call of one request, waiting to be batched."""

    query: Query
    candidates: Sequence[Candidate]
    enqueued: float = field(default_factory=time.monotonic, compare=False)

    def __len__(self) -> int:
        return len(self.candidates)


@runtime_checkable
class MultiQueryScorer(Protocol):
    """A scorer that scores the candidates of several queries in one pass (a batch-friendly model).

    A cross-encoder or VLM reranker scores ``(query, candidate)`` pairs, so pairs of different queries fit
    in one forward pass; a scorer that implements ``score_many`` gets the whole micro-batch at once. Any
    other scorer gets one ``score`` call per request in the batch.

    Example:
        >>> from mm_rerank_components.serving.fake import PerBatchCostScorer
        >>> isinstance(PerBatchCostScorer(), MultiQueryScorer)
        True
    """

    def score_many(self, calls: Sequence[tuple[Query, Sequence[Candidate]]]) -> list[list[float]]: ...


def score_many(scorer: Any, calls: Sequence[ScoreCall]) -> list[list[float]]:
    """Scores for every call, in order: one pass for a :class:`MultiQueryScorer`, else one call each.

    Example:
        >>> from mm_rerank_components.scorers import FakeScorer
        >>> call = ScoreCall(Query("fox"), [Candidate("a", text="a fox"), Candidate("b", text="owl")])
        >>> score_many(FakeScorer(), [call])
        [[1.0, 0.0]]
    """
    if isinstance(scorer, MultiQueryScorer):
        out = [list(s) for s in scorer.score_many([(c.query, c.candidates) for c in calls])]
    else:
        out = [list(scorer.score(c.query, c.candidates)) for c in calls]
    if len(out) != len(calls):
        raise RuntimeError(f"scorer {scorer.name!r} answered {len(out)} of {len(calls)} batched calls")
    for call, scores in zip(calls, out, strict=True):
        if len(scores) != len(call):
            raise RuntimeError(
                f"scorer {scorer.name!r} returned {len(scores)} scores for {len(call)} candidates"
            )
    return out


Submit = Callable[[ScoreCall], Awaitable[list[float]]]


class BatchingScorer(BaseScorer):
    """The scorer a request's reranker sees: forwards each call to the batcher and waits for its scores.

    It runs in a request's worker thread; ``submit`` runs on the server's event loop. A call larger than
    ``max_call_size`` candidates is cut into pieces, so no scoring pass exceeds the batch size. It declares
    what the wrapped scorer declares (the stored signals it reuses, the pictures it reads, its shipped
    calibration), so a served reranker scores exactly as the same reranker in process.

    Example:
        >>> from mm_rerank_components.scorers import FakeScorer
        >>> proxy = BatchingScorer(FakeScorer(), submit=None)
        >>> proxy.name, proxy.outputs_probabilities
        ('fake', True)
    """

    def __init__(
        self, scorer: Any, submit: Submit | None, *, timeout_s: float = 60.0, max_call_size: int | None = None
    ) -> None:
        self.scorer = scorer
        self.max_call_size = max_call_size
        self.name: str = scorer.name
        self.outputs_probabilities: bool = scorer.outputs_probabilities
        self.modalities: frozenset[Modality] = scorer.modalities
        # the wrapped scorer's declared hooks (issue 19: signals sent over HTTP are reused as in process)
        self.reuses = frozenset(scorer.reuses) if isinstance(scorer, BaseScorer) else frozenset()
        self.image_side = scorer.image_side if isinstance(scorer, BaseScorer) else None
        self.submit = submit
        self.timeout_s = timeout_s
        self.loop: asyncio.AbstractEventLoop | None = None

    def needs_pixels(self, candidate: Candidate) -> bool:
        return self.scorer.needs_pixels(candidate) if isinstance(self.scorer, BaseScorer) else True

    def default_calibrator(self) -> Any:
        return self.scorer.default_calibrator() if isinstance(self.scorer, BaseScorer) else None

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        if self.submit is None or self.loop is None:
            raise RuntimeError("BatchingScorer is not bound to a running batcher (call bind(loop) first)")
        future = asyncio.run_coroutine_threadsafe(self._call(ScoreCall(query, candidates)), self.loop)
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"scoring took longer than {self.timeout_s:g} s") from None

    async def _call(self, call: ScoreCall) -> list[float]:
        """Submit ``call``, cut into pieces of at most ``max_call_size`` candidates (scores are per pair)."""
        assert self.submit is not None
        size = self.max_call_size
        if size is None or len(call) <= size:
            return await self.submit(call)
        pieces = [call.candidates[i : i + size] for i in range(0, len(call), size)]
        parts = await asyncio.gather(*(self.submit(ScoreCall(call.query, piece)) for piece in pieces))
        return [score for part in parts for score in part]


class MicroBatcher:
    """Gathers :class:`ScoreCall` s from concurrent requests and scores them together.

    A batch closes when it holds ``max_batch_size`` candidates or ``max_wait_s`` after its first call
    arrived, whichever comes first; a single call larger than ``max_batch_size`` runs alone (the scorer
    batches inside it). At most ``workers`` batches run at once, on ``executor`` threads, so the event loop
    never scores; calls that arrive while the workers are busy wait and form the next, larger batch.
    With ``enabled=False`` every call is its own batch (the "off" setting of the benchmark).
    ``in_flight`` (the number of requests being handled) lets a batch close early when every request in
    flight already has a call in it, so a lone request never waits ``max_wait_s`` for company.

    Example:
        >>> from mm_rerank_components.scorers import FakeScorer
        >>> batcher = MicroBatcher(lambda calls: score_many(FakeScorer(), calls), max_batch_size=64)
        >>> call = ScoreCall(Query("fox"), [Candidate("a", text="a fox")])
        >>> asyncio.run(batcher.submit(call))
        [1.0]
    """

    def __init__(
        self,
        handler: Callable[[list[ScoreCall]], list[list[float]]],
        *,
        max_batch_size: int = 64,
        max_wait_s: float = 0.005,
        enabled: bool = True,
        workers: int = 1,
        executor: concurrent.futures.Executor | None = None,
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be a positive int, got {max_batch_size!r}")
        if not max_wait_s >= 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s!r}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        self.handler = handler
        self.in_flight = in_flight
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.enabled = enabled
        self.workers = workers
        self._own_executor = executor is None
        self.executor = executor or concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="score")
        self._queue: deque[tuple[ScoreCall, asyncio.Future[list[float]]]] = deque()
        self._arrived: asyncio.Event | None = None
        self._free: asyncio.Semaphore | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, call: ScoreCall) -> list[float]:
        """Queue ``call`` and wait for its scores (on the event loop that runs the batcher)."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            # first call, or a new event loop (a test client, a restarted server): start afresh there
            if self._task is not None and not self._task.done() and not self._task.get_loop().is_closed():
                self._task.get_loop().call_soon_threadsafe(self._task.cancel)
            self._queue.clear()
            self._arrived = asyncio.Event()
            self._free = asyncio.Semaphore(self.workers)
            self._task = loop.create_task(self._collect())
        future: asyncio.Future[list[float]] = loop.create_future()
        self._queue.append((call, future))
        assert self._arrived is not None
        self._arrived.set()
        return await future

    async def _collect(self) -> None:
        assert self._arrived is not None and self._free is not None
        while True:
            await self._free.acquire()
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            batch = await self._gather()
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _gather(self) -> list[tuple[ScoreCall, asyncio.Future[list[float]]]]:
        assert self._arrived is not None
        batch = [self._queue.popleft()]
        if not self.enabled:
            return batch
        size = len(batch[0][0])
        deadline = batch[0][0].enqueued + self.max_wait_s
        while size < self.max_batch_size:
            if self._queue:
                if size + len(self._queue[0][0]) > self.max_batch_size:
                    break
                item = self._queue.popleft()
                batch.append(item)
                size += len(item[0])
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.in_flight is not None and len(batch) >= self.in_flight()):
                break  # waited long enough, or every request in flight already has a call here
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self, batch: list[tuple[ScoreCall, asyncio.Future[list[float]]]]) -> None:
        assert self._free is not None
        loop = asyncio.get_running_loop()
        calls = [call for call, _ in batch]
        try:
            try:
                results = await loop.run_in_executor(self.executor, self.handler, calls)
                outcomes: list[list[float] | BaseException] = list(results)
            except Exception as exc:  # noqa: BLE001 - a batch failure is retried call by call below
                if len(batch) == 1 or isinstance(exc, TimeoutError):
                    # a pass past its deadline: its callers' deadlines have passed too, and scoring the
                    # calls again one by one would only wait it out once more
                    outcomes = [exc] * len(batch)
                else:
                    logger.warning(
                        "a batch of %d calls failed (%s); scoring them one by one", len(batch), exc
                    )
                    outcomes = [await self._alone(loop, call) for call in calls]
        finally:
            self._free.release()
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # the request gave up (timeout, client gone)
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _alone(self, loop: asyncio.AbstractEventLoop, call: ScoreCall) -> list[float] | BaseException:
        """One call's scores or its own error, so one bad request cannot fail the others in its batch."""
        try:
            return (await loop.run_in_executor(self.executor, self.handler, [call]))[0]
        except Exception as exc:  # noqa: BLE001 - handed to that request's future
            return exc

    def close(self) -> None:
        """Stop the collector and, when the batcher made its own executor, its threads."""
        if self._task is not None:
            self._task.cancel()
        if self._own_executor:
            self.executor.shutdown(wait=False, cancel_futures=True)
