"""The serving engine: configuration, the scorer, micro-batching, limits and metrics, without HTTP.

:class:`RerankEngine` owns the threads and the batching; the package's reranker owns scoring and
calibration. The FastAPI app (:mod:`.app`) and the Ray Serve deployment (:mod:`.ray`) both drive one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import dataclasses
import importlib
import io
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_rerank_components.calibration import SigmoidCalibrator
from mm_rerank_components.defaults import scores_note
from mm_rerank_components.media import ImageLoadError, ImageOptions
from mm_rerank_components.reranker import CandidateError, MultimodalReranker, OnError
from mm_rerank_components.scorers.base import BaseScorer
from mm_rerank_components.scorers.registry import scorer_from_spec
from mm_rerank_components.serving._json import decode_body, encode_body
from mm_rerank_components.serving.batching import BatchingScorer, MicroBatcher, ScoreCall, Submit, score_many
from mm_rerank_components.serving.metrics import Metrics
from mm_rerank_components.serving.model_id import model_info
from mm_rerank_components.serving.protocol import (
    Api,
    Limits,
    RequestError,
    RerankRequest,
    build_response,
    decode_images,
    parse_request,
)
from mm_rerank_components.types import Query

logger = logging.getLogger(__name__)

# the core names a candidate by id and position; the service names the request's document instead
_CANDIDATE_PREFIX = re.compile(r"^candidate '[^']*' \(index \d+\): ")

RerankerFactory = Callable[[BatchingScorer, OnError], Any]


@dataclass(frozen=True)
class ServeConfig:
    """Everything the service is configured with (plain values, so Ray can ship it to replicas).

    Attributes:
        scorer: ``"default"`` (:func:`~mm_rerank_components.defaults.default_reranker`, what
            ``mm-rerank serve`` runs with no flags), or a scorer spec
            (:func:`~mm_rerank_components.scorers.scorer_from_spec`): ``"starter"`` (the bare starter
            scorer), ``"fake"``, ``"cross-encoder:PATH"``, ... or a factory ``"module:callable"`` returning
            a scorer (or a :class:`~mm_rerank_components.MultimodalReranker`, whose calibrator is kept).
        scorer_kwargs: keyword arguments for that scorer or factory.
        reranker_folder: a saved reranker folder (``mm-rerank adapt``); overrides ``scorer``.
        read_captions: also read each captioned picture's caption as a passage (learned fusion only:
            ``scorer="default"`` or ``reranker_folder``), as ``mm-rerank query --read-captions`` and
            ``default_reranker(read_captions=True)`` do; off by default.
        device: torch device for model scorers (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        threads: torch CPU threads (``torch.set_num_threads``) in the process that scores; None leaves it.
        model: the model id echoed in responses (default: a short id, :func:`.model_id.short_model_id`;
            the scorer's full name is in ``GET /info`` and ``/metrics``).
        micro_batching: gather the calls of concurrent requests into one scoring pass.
        max_batch_size: most candidates per scoring pass.
        max_wait_ms: how long a pass waits for more calls after the first arrived.
        score_workers: scoring passes that may run at once (1 for one model on one device).
        max_concurrency: requests handled at once in worker threads (most of them wait for their scores).
        cpu_slots: of those, how many may parse and decode at once (default: the CPU count).
        max_pending: requests admitted at once; more get 503 with ``Retry-After``.
        request_timeout_s: most seconds a request may take (then 504).
        pass_timeout_s: most seconds one scoring pass may run before it is abandoned (its callers get
            504) and its worker thread replaced; default half of ``request_timeout_s``, so requests
            queued behind a stuck pass still get their scores within their own deadline.
        max_stuck_passes: abandoned passes still running in the background before the server stops
            taking requests (503, ``/ready`` 503) until one of them returns.
        max_body_bytes: largest request body (413).
        max_documents: most documents per request (413).
        max_document_chars: longest text of one document or query (413): a model reads a few thousand
            characters, and one huge string would hold the interpreter (and ``/health``) in C calls.
        max_image_bytes, max_image_pixels: per image (413 or a per-document error).
        max_request_pixels: decoded pixels of all the images of one request together (413), checked from
            the image headers before anything is decoded.
        header_timeout_s: most seconds a client may take to send a request's headers, or an idle
            connection may stay open without one (then it is closed); see :func:`.app.uvicorn_options`.
        body_timeout_s: most seconds a client may take to send a request body (408).
        allow_urls: fetch ``http(s)://`` images (off by default).
        api_key: when set, requests need ``Authorization: Bearer <api_key>`` (401 otherwise).

    Example:
        >>> ServeConfig(scorer="fake", max_batch_size=128).image_options.allow_urls
        False
    """

    scorer: str = "default"
    scorer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    reranker_folder: str | None = None
    read_captions: bool = False
    device: str = "cpu"
    threads: int | None = None
    model: str | None = None
    micro_batching: bool = True
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    score_workers: int = 1
    max_concurrency: int = 64
    cpu_slots: int | None = None
    max_pending: int = 1024
    request_timeout_s: float = 60.0
    pass_timeout_s: float | None = None
    max_stuck_passes: int = 2
    max_body_bytes: int = 32 * 1024 * 1024
    max_documents: int = 1000
    max_document_chars: int = 1_000_000
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_request_pixels: int = 100_000_000
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    allow_urls: bool = False
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        positive = {
            "max_batch_size": self.max_batch_size,
            "score_workers": self.score_workers,
            "max_concurrency": self.max_concurrency,
            "max_pending": self.max_pending,
            "max_body_bytes": self.max_body_bytes,
            "max_documents": self.max_documents,
            "max_stuck_passes": self.max_stuck_passes,
            "max_request_pixels": self.max_request_pixels,
            "max_document_chars": self.max_document_chars,
        }
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServeConfig.{name} must be a positive int, got {value!r}")
        if self.cpu_slots is not None and (isinstance(self.cpu_slots, bool) or self.cpu_slots < 1):
            raise ValueError(f"ServeConfig.cpu_slots must be a positive int or None, got {self.cpu_slots!r}")
        if not self.max_wait_ms >= 0:
            raise ValueError(f"ServeConfig.max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
        for name in ("request_timeout_s", "header_timeout_s", "body_timeout_s", "pass_timeout_s"):
            value = getattr(self, name)
            if value is None and name == "pass_timeout_s":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"ServeConfig.{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(self.read_captions, bool):
            raise ValueError(f"ServeConfig.read_captions must be True or False, got {self.read_captions!r}")
        if self.read_captions and self.reranker_folder is None and self.scorer != "default":
            raise ValueError(
                "ServeConfig.read_captions needs learned fusion: the product default (scorer='default') or a "
                f"reranker_folder, not scorer={self.scorer!r}"
            )
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("ServeConfig.api_key is empty; give a real key or None to turn auth off")

    @property
    def image_options(self) -> ImageOptions:
        return ImageOptions(
            allow_urls=self.allow_urls, max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels
        )

    @property
    def limits(self) -> Limits:
        return Limits(max_documents=self.max_documents, image_options=self.image_options)


def load_scorer(config: ServeConfig) -> tuple[Any, Any]:
    """``(scorer, calibrator or None)`` named by ``config.scorer``, weights loaded.

    Example:
        >>> load_scorer(ServeConfig(scorer="fake"))[0].name
        'fake'
    """
    # the one scorer registry: every spec the CLI and adapt accept (a factory's MultimodalReranker comes
    # back as its scorer, with the reranker's calibrator as the scorer's shipped one)
    scorer = scorer_from_spec(config.scorer, device=config.device, **dict(config.scorer_kwargs))
    calibrator = None
    if isinstance(scorer, BaseScorer):
        scorer.load()
    return scorer, calibrator


def _resolve_scorer(
    config: ServeConfig, scorer: Any, calibrator: Any
) -> tuple[Any, Any, RerankerFactory | None]:
    """``(scorer, calibrator, factory or None)``: the one passed, else a saved folder's, the product
    default (issue 19) or the scorer ``config.scorer`` names; a factory builds the reranker around the
    engine's batching proxy (None: a plain :class:`MultimodalReranker`)."""
    if scorer is not None:
        return scorer, calibrator, None
    if config.reranker_folder is not None:
        scorer, factory = _folder_factory(config)
        return scorer, None, factory
    if config.scorer == "default":
        from mm_rerank_components.serving.search import default_factory

        scorer, factory = default_factory(config)
        return scorer, None, factory
    scorer, calibrator = load_scorer(config)
    return scorer, calibrator, None


def _folder_factory(config: ServeConfig) -> tuple[Any, RerankerFactory]:
    try:
        folder_module = importlib.import_module("mm_rerank_components.adapt.folder")
    except ImportError as exc:
        raise ImportError(
            f"--reranker needs mm_rerank_components.adapt.folder, which did not import: {exc}"
        ) from exc
    folder = Path(config.reranker_folder or "")
    spec = folder_module.read_config(folder).get("scorer") or {}
    scorer = folder_module.rebuild_scorer(spec, where=f"reranker folder {folder.name}", folder=folder)
    if isinstance(scorer, BaseScorer):
        scorer.load()

    def factory(proxy: BatchingScorer, on_error: OnError) -> Any:
        reranker = folder_module.load_reranker(
            folder, scorer=proxy, on_error=on_error, batch_size=config.max_documents
        )
        reranker.base.image_options = config.image_options
        reranker.read_captions = config.read_captions  # load_reranker gives a LearnedFusionReranker
        return reranker

    return scorer, factory


class PoolStuckError(RuntimeError):
    """Too many scoring passes are stuck past their deadline; the server takes no work until one returns."""


class ScoringPool(concurrent.futures.Executor):
    """Scoring threads with a deadline per pass: a pass that overruns it is abandoned, its thread replaced.

    Python cannot stop a thread, so a pass stuck in a model (or a hung remote call) keeps its thread. At
    its deadline the pool fails the pass's future with :class:`TimeoutError`, so its caller stops
    waiting, and starts a fresh thread in its place, so the calls queued behind it are scored. The
    abandoned thread ends when its pass returns (the result is dropped). At most ``max_stuck`` abandoned
    passes may be running; past that, :meth:`submit` fails fast with :class:`PoolStuckError` (the
    server answers 503 and ``/ready`` says not ready) until one of them returns.

    A replacement thread may call the scorer while the stuck pass is still inside it: the scorers of this
    package are safe to call from several threads (the HTTP server already does).

    Example:
        >>> pool = ScoringPool(workers=1, deadline_s=0.2)
        >>> pool.submit(sum, [1, 2]).result()
        3
        >>> pool.shutdown()
    """

    def __init__(
        self,
        workers: int = 1,
        *,
        deadline_s: float = 60.0,
        max_stuck: int = 2,
        on_abandon: Callable[[], None] | None = None,
    ) -> None:
        if workers < 1 or max_stuck < 1 or not deadline_s > 0:
            raise ValueError(
                "workers and max_stuck must be >= 1 and deadline_s > 0, got "
                f"{workers}, {max_stuck}, {deadline_s}"
            )
        self.workers = workers
        self.deadline_s = float(deadline_s)
        self.max_stuck = max_stuck
        self.on_abandon = on_abandon
        self.abandoned_total = 0
        self._tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # thread ident -> (started, future) of the pass it runs; abandoned: idents given up on
        self._running: dict[int, tuple[float, concurrent.futures.Future[Any]]] = {}
        self._abandoned: dict[int, float] = {}
        self._closed = threading.Event()
        self._serial = 0
        for _ in range(workers):
            self._spawn()
        self._watchdog = threading.Thread(target=self._watch, name="score-watchdog", daemon=True)
        self._watchdog.start()

    # -- state -----------------------------------------------------------------------------------------
    @property
    def stuck(self) -> int:
        """Abandoned passes still running."""
        with self._lock:
            return len(self._abandoned)

    @property
    def saturated(self) -> bool:
        """True while ``max_stuck`` abandoned passes are running (new work is refused)."""
        return self.stuck >= self.max_stuck

    def oldest_pass_s(self) -> float:
        """Age of the oldest pass still running, abandoned ones included (0 when idle)."""
        now = time.monotonic()
        with self._lock:
            starts = [start for start, _ in self._running.values()] + list(self._abandoned.values())
        return max((now - start for start in starts), default=0.0)

    # -- Executor --------------------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if self._closed.is_set():
            raise RuntimeError("ScoringPool is shut down")
        if self.saturated:
            future.set_exception(
                PoolStuckError(
                    f"{self.stuck} scoring passes are stuck past the deadline of {self.deadline_s:g} s; the "
                    "server takes no work until one returns"
                )
            )
            return future
        self._tasks.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed.set()
        for _ in range(self.workers):
            self._tasks.put(None)
        if cancel_futures:
            while True:
                try:
                    item = self._tasks.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()

    # -- threads ---------------------------------------------------------------------------------------
    def _spawn(self) -> None:
        self._serial += 1
        threading.Thread(target=self._work, name=f"score-{self._serial}", daemon=True).start()

    def _work(self) -> None:
        me = threading.get_ident()
        while True:
            item = self._tasks.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            with self._lock:
                self._running[me] = (time.monotonic(), future)
            try:
                result, error = fn(*args, **kwargs), None
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                result, error = None, exc
            with self._lock:
                self._running.pop(me, None)
                gave_up = self._abandoned.pop(me, None) is not None
            if gave_up:  # the watchdog already answered the caller and started a replacement
                logger.warning("an abandoned scoring pass returned after all; its thread ends")
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    def _watch(self) -> None:
        while not self._closed.wait(min(0.05, self.deadline_s / 10)):
            now = time.monotonic()
            late: list[concurrent.futures.Future[Any]] = []
            with self._lock:
                for ident, (start, future) in list(self._running.items()):
                    if now - start > self.deadline_s:
                        del self._running[ident]
                        self._abandoned[ident] = start
                        late.append(future)
            for future in late:
                # count, log and replace the thread before the caller wakes, so whatever the caller reads
                # next (metrics, health) already shows this pass as abandoned
                self.abandoned_total += 1
                if self.on_abandon is not None:
                    self.on_abandon()
                logger.error(
                    "a scoring pass ran past its deadline of %.3g s: abandoned (its thread keeps running "
                    "until the scorer returns); a fresh scoring thread takes its place",
                    self.deadline_s,
                )
                self._spawn()
                future.set_exception(
                    TimeoutError(f"the scoring pass took longer than {self.deadline_s:g} s and was abandoned")
                )


class RerankEngine:
    """Serve one scorer: parse a request, rerank it with micro-batched scoring, build the response.

    Args:
        config: the :class:`ServeConfig`.
        scorer: a ready scorer (tests, notebooks); default: the one ``config`` names.
        calibrator: the calibration for ``scorer``; default: the scorer's own (or none for probabilities).
        submit: the batcher to hand score calls to (Ray's ``@serve.batch`` method); default: a
            :class:`~mm_rerank_components.serving.batching.MicroBatcher` of this engine.

    Example:
        >>> import asyncio
        >>> engine = RerankEngine(ServeConfig(scorer="fake"))
        >>> body = b'{"query": "fox", "documents": ["owl", "a fox"]}'
        >>> status, body = asyncio.run(engine.handle("jina", body))
        >>> status, [r["index"] for r in body["results"]]
        (200, [1, 0])
    """

    def __init__(
        self,
        config: ServeConfig | None = None,
        *,
        scorer: Any = None,
        calibrator: Any = None,
        submit: Submit | None = None,
    ) -> None:
        self.config = config or ServeConfig()
        if self.config.threads is not None:
            from mm_rerank_components.starter.threads import set_process_threads

            set_process_threads(self.config.threads)
        given = scorer is not None
        scorer, calibrator, factory = _resolve_scorer(self.config, scorer, calibrator)
        self.scorer = scorer
        #: the short id responses carry, the scorer's full name and what wraps it (``GET /info``)
        self.info = model_info(self.config, str(scorer.name), plain=given)
        self.model = self.info["model"]
        self.metrics = Metrics()
        self.metrics.model.info(self.info)
        self.batcher: MicroBatcher | None = None
        self.pool: ScoringPool | None = None
        self.warmed = False
        self.warm_error: str | None = None
        self._warm_task: asyncio.Task[None] | None = None
        self.pending = 0
        submit = submit or self._start_batching()
        self.proxy = BatchingScorer(
            scorer, submit, timeout_s=self.config.request_timeout_s, max_call_size=self.config.max_batch_size
        )
        factory = factory or self._plain_factory(calibrator)
        self.rerankers: dict[str, Any] = {
            "raise": factory(self.proxy, "raise"),
            "keep": factory(self.proxy, "keep"),
        }
        #: whether text-query scores are calibrated probabilities (False: a scorer served with the plain
        #: sigmoid, no calibration); see :meth:`scores_calibrated`
        self.calibrated = not isinstance(
            getattr(self.rerankers["raise"], "calibrator", None), SigmoidCalibrator
        )
        self._requests = concurrent.futures.ThreadPoolExecutor(
            self.config.max_concurrency, thread_name_prefix="rerank-request"
        )
        self._cpu = threading.BoundedSemaphore(self.config.cpu_slots or os.cpu_count() or 1)

    def scores_calibrated(self, query: Query, modalities: Iterable[str] = ()) -> bool:
        """What responses say as ``scores_calibrated``: the scores are calibrated probabilities unless the
        scorer is served uncalibrated, the query holds a picture (every shipped calibration was fitted on
        text queries) or the results (``modalities``) hold a captioned picture the served reranker was
        not calibrated on (:func:`~mm_rerank_components.defaults.scores_note`; docs/calibration.md)."""
        return self.calibrated and scores_note(self.rerankers["raise"], query, modalities) is None

    def _start_batching(self) -> Submit:
        """Start the scoring pool and the micro-batcher; return their ``submit``."""
        self.pool = ScoringPool(
            self.config.score_workers,
            deadline_s=self.config.pass_timeout_s or self.config.request_timeout_s / 2,
            max_stuck=self.config.max_stuck_passes,
            on_abandon=self.metrics.abandoned_passes.inc,
        )
        self.metrics.watch_pool(self.pool)
        self.batcher = MicroBatcher(
            self.run_batch,
            max_batch_size=self.config.max_batch_size,
            max_wait_s=self.config.max_wait_ms / 1000.0,
            enabled=self.config.micro_batching,
            workers=self.config.score_workers,
            executor=self.pool,
            in_flight=lambda: self.pending,
        )
        return self.batcher.submit

    def _plain_factory(self, calibrator: Any) -> RerankerFactory:
        """A :class:`MultimodalReranker` over the proxy, with the calibrator resolved once from the real
        scorer (its shipped calibration, or none needed)."""
        resolved = MultimodalReranker(self.scorer, calibrator).calibrator

        def factory(proxy: BatchingScorer, on_error: OnError) -> Any:
            return MultimodalReranker(
                proxy,
                resolved,
                batch_size=self.config.max_documents,
                on_error=on_error,
                image_options=self.config.image_options,
            )

        return factory

    # -- batching --------------------------------------------------------------------------------------
    def run_batch(self, calls: list[ScoreCall]) -> list[list[float]]:
        """Score one micro-batch (runs on a scoring worker thread)."""
        started = time.monotonic()
        for call in calls:
            self.metrics.queue_wait.observe(started - call.enqueued)
        out = score_many(self.scorer, calls)
        self.metrics.batch_candidates.observe(sum(len(c) for c in calls))
        self.metrics.batch_requests.observe(len(calls))
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        return out

    # -- requests --------------------------------------------------------------------------------------
    def check_auth(self, authorization: str | None) -> None:
        """Raise a 401 :class:`RequestError` unless ``authorization`` carries the configured key."""
        import secrets

        key = self.config.api_key
        if key is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), key.encode()):
            raise RequestError(
                "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                kind="unauthorized",
                status=401,
            )

    async def handle(self, api: Api, body: bytes) -> tuple[int, dict[str, Any]]:
        """``(status, JSON body)`` for one rerank request; never raises for a bad request."""
        status, payload, _ = await self._handle(api, body, encode=False)
        return status, payload

    async def handle_bytes(self, api: Api, body: bytes) -> tuple[int, bytes]:
        """``(status, encoded JSON body)``: the response is encoded on a request thread, not the event loop
        (a response echoing a 28 MB document would otherwise hold ``/health`` up while it is encoded)."""
        status, payload, encoded = await self._handle(api, body, encode=True)
        return status, encoded if encoded is not None else encode_body(payload)

    async def _handle(
        self, api: Api, body: bytes, *, encode: bool
    ) -> tuple[int, dict[str, Any], bytes | None]:
        started = time.monotonic()
        route = "v2" if api == "cohere" else "v1"
        encoded: bytes | None = None
        try:
            payload, encoded = await self._admit(api, body, encode)
            status = 200
        except RequestError as exc:
            status, payload = exc.status, exc.payload()
            self.metrics.errors.labels(kind=exc.kind).inc()
            logger.info("rejected a %s request: %s %s", route, exc.status, exc)
        self.metrics.requests.labels(route=route, status=str(status)).inc()
        self.metrics.latency.labels(route=route).observe(time.monotonic() - started)
        return status, payload, encoded

    async def _admit(self, api: Api, body: bytes, encode: bool) -> tuple[dict[str, Any], bytes | None]:
        loop = asyncio.get_running_loop()
        self.proxy.loop = loop
        if self.pending >= self.config.max_pending:
            raise RequestError(
                f"the server is busy ({self.pending} requests in flight); retry shortly",
                kind="overloaded",
                status=503,
            )
        if self.pool is not None and self.pool.saturated:
            raise RequestError(
                f"the server is not ready: {self.pool.stuck} scoring passes are stuck past their deadline; "
                "retry shortly",
                kind="stuck",
                status=503,
            )
        self.pending += 1
        self.metrics.in_flight.set(self.pending)
        try:
            work = loop.run_in_executor(self._requests, self._handle_sync, api, body, encode)
            # the request's own deadline: its thread may go on (until its score call times out), the
            # caller does not wait for it
            return await asyncio.wait_for(work, self.config.request_timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(
                f"the request took longer than {self.config.request_timeout_s:g} s; retry later",
                kind="timeout",
                status=504,
            ) from None
        finally:
            self.pending -= 1
            self.metrics.in_flight.set(self.pending)

    def _handle_sync(
        self, api: Api, body: bytes, encode: bool = False
    ) -> tuple[dict[str, Any], bytes | None]:
        # parsing and decoding are CPU work: a few threads at a time, or they only fight over the GIL and
        # starve the event loop (and /health) while the other requests just wait for their scores
        with self._cpu:
            request = parse_request(decode_body(body), self.config.limits, api)
            _check_text_sizes(request, self.config.max_document_chars)
            request = _check_pixel_budget(request, self.config.max_request_pixels)
            request = decode_images(request, self.config.image_options)
        for candidate in request.candidates:
            self.metrics.documents.labels(modality=candidate.modality).inc()
        ranked: list[Any] = []
        if request.candidates:
            reranker = self.rerankers[request.on_error]
            try:
                ranked = reranker.rerank(
                    request.query, request.candidates, top_n=request.top_n, threshold=request.threshold
                )
            except CandidateError as exc:
                index = request.positions[exc.index]
                message = _CANDIDATE_PREFIX.sub("", str(exc))
                raise RequestError(
                    f"documents[{index}]: {message}", kind="unreadable_document", index=index
                ) from None
            except ImageLoadError as exc:  # the query's image
                raise RequestError(str(exc), kind="invalid_image") from None
            except Exception as exc:  # noqa: BLE001 - 504, 503 or a 500 without internals
                raise _scoring_failure(exc) from None
        payload = build_response(
            request,
            ranked,
            model=self.model,
            api=api,
            calibrated=self.scores_calibrated(request.query, (r.candidate.modality for r in ranked)),
        )
        if not encode:
            return payload, None
        try:
            return payload, encode_body(payload)
        except (ValueError, UnicodeEncodeError) as exc:  # a bug, not the client's fault; never a raw 500
            logger.error("cannot encode a response: %s", exc)
            raise RequestError(
                f"the server could not encode its answer ({type(exc).__name__}); the server log has details",
                kind="encode_error",
                status=500,
            ) from None

    # -- liveness and readiness ------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """What ``GET /health`` (liveness) answers: cheap, no scoring; stuck work shows here."""
        out: dict[str, Any] = {"status": "ok", "model": self.model, "in_flight": self.pending}
        if self.pool is not None:
            out["stuck_passes"] = self.pool.stuck
            out["oldest_pass_s"] = round(self.pool.oldest_pass_s(), 3)
        out["ready"] = self.readiness()[0]
        return out

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``(ready, body)`` for ``GET /ready``: models loaded, one warm-up request run, nothing stuck."""
        if self.pool is not None and self.pool.saturated:
            return False, {
                "status": "not ready",
                "reason": f"{self.pool.stuck} scoring passes are stuck past their deadline",
            }
        if self.warm_error is not None:
            return False, {"status": "not ready", "reason": f"the warm-up request failed: {self.warm_error}"}
        if not self.warmed:
            return False, {"status": "not ready", "reason": "warming up (one request through the models)"}
        return True, {"status": "ready", "model": self.model}

    def start_warm_up(self) -> None:
        """Run :meth:`warm_up` in the background on the running event loop (once)."""
        if self._warm_task is None and not self.warmed:
            self._warm_task = asyncio.get_running_loop().create_task(self.warm_up())

    async def warm_up(self) -> None:
        """Send one request through parsing, decoding, scoring and calibration, so that the first real
        request finds every model loaded, every lazy initialisation done and the threads started."""
        body = encode_body(_warm_up_request(self.scorer))
        started = time.monotonic()
        try:
            await self._admit("jina", body, True)
        except Exception as exc:  # noqa: BLE001 - reported by /ready, logged here
            self.warm_error = str(exc)[:300]
            logger.error("the warm-up request failed: %s", exc)
            return
        self.warmed = True
        logger.info("warm-up request done in %.2f s; ready", time.monotonic() - started)

    def close(self) -> None:
        """Stop the batcher, the scoring threads and the request threads."""
        if self.batcher is not None:
            self.batcher.close()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        self._requests.shutdown(wait=False, cancel_futures=True)


def _scoring_failure(exc: Exception) -> RequestError:
    """The client's error for a scoring failure: 504 for a deadline, 503 when stuck, else a 500."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, PoolStuckError):
            return RequestError(f"the server is not ready: {cause}; retry shortly", kind="stuck", status=503)
        if isinstance(cause, TimeoutError):
            return RequestError(f"{cause}; retry later", kind="timeout", status=504)
        cause = cause.__cause__  # a ScorerError wraps the scorer's own exception
    logger.error("the scorer failed on a request", exc_info=exc)
    return RequestError(
        f"the scorer failed on this request ({type(exc).__name__}); the server log has details",
        kind="scorer_error",
        status=500,
    )


def _check_text_sizes(request: RerankRequest, limit: int) -> None:
    """413 for a query or document text over ``limit`` characters."""
    texts = [("query", request.query.text)] + [
        (f"documents[{index}]", candidate.text)
        for candidate, index in zip(request.candidates, request.positions, strict=True)
    ]
    for where, text in texts:
        if text is not None and len(text) > limit:
            raise RequestError(
                f"{where} has {len(text)} characters, over this server's limit of {limit}; send the "
                "passage a model reads (split long documents into passages)",
                kind="document_too_long",
                status=413,
                index=None if where == "query" else int(where[10:-1]),
            )


def _image_bytes(ref: Any) -> bytes | None:
    """The encoded bytes of an inline image (bytes or a base64 data URI); None for anything else."""
    if isinstance(ref, (bytes, bytearray)):
        return bytes(ref)
    if isinstance(ref, str) and ref[:5].lower() == "data:":
        header, _, data = ref.partition(",")
        if ";base64" not in header.lower():
            return None
        try:
            return base64.b64decode(data + "=" * (-len(data) % 4))
        except (binascii.Error, ValueError):
            return None
    return None


def _pixels(data: bytes) -> int:
    """Pixels of an encoded image from its header (nothing decoded); 0 when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return 0  # decoding reports it, with the document's index
    return int(width) * int(height)


def _check_pixel_budget(request: RerankRequest, budget: int) -> RerankRequest:
    """413 before decoding when the request's images hold more than ``budget`` pixels together; data
    URIs come back as bytes, so they are not base64-decoded twice."""
    total = 0
    query = request.query
    data = _image_bytes(query.image)
    if data is not None:
        total += _pixels(data)
        query = dataclasses.replace(query, image=data)
    candidates = []
    for candidate in request.candidates:
        data = _image_bytes(candidate.image)
        if data is not None:
            total += _pixels(data)
            candidate = dataclasses.replace(candidate, image=data)
        candidates.append(candidate)
        if total > budget:
            raise RequestError(
                f"the request's images hold over {budget} pixels together (this server's limit per request, "
                f"counted before decoding); send fewer or smaller images, or split the documents over "
                "several requests",
                kind="too_many_pixels",
                status=413,
            )
    return dataclasses.replace(request, query=query, candidates=candidates)


def _warm_up_request(scorer: Any) -> dict[str, Any]:
    """A small request with a passage and a picture of the modalities ``scorer`` reads."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (224, 224), (180, 60, 40)).save(buffer, format="PNG")
    picture = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    modalities = set(getattr(scorer, "modalities", ()) or ("text",))
    documents: list[Any] = []
    if "text" in modalities:
        documents += [{"text": "a red fox runs across the snow"}, {"text": "an owl sleeps in a tree"}]
    if "image" in modalities:
        documents.append({"image": picture})
    if "text+image" in modalities:
        documents.append({"text": "a red square", "image": picture})
    return {"query": "a red fox", "documents": documents or ["warm-up"], "on_error": "keep"}


def replace_config(config: ServeConfig, **changes: Any) -> ServeConfig:
    """A copy of ``config`` with ``changes`` (validated again)."""
    return dataclasses.replace(config, **changes)
