"""The serving engine: configuration, the scorer, micro-batching, limits and metrics, without HTTP.

:class:`RerankEngine` owns the threads and the batching; the package's reranker owns scoring and
calibration. The FastAPI app (:mod:`.app`) and the Ray Serve deployment (:mod:`.ray`) both drive one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import importlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_rerank_components.media import ImageLoadError, ImageOptions
from mm_rerank_components.reranker import CandidateError, MultimodalReranker, OnError
from mm_rerank_components.scorers.base import BaseScorer
from mm_rerank_components.serving.batching import BatchingScorer, MicroBatcher, ScoreCall, Submit, score_many
from mm_rerank_components.serving.metrics import Metrics
from mm_rerank_components.serving.protocol import (
    Api,
    Limits,
    RequestError,
    build_response,
    decode_images,
    parse_body,
    parse_request,
)

logger = logging.getLogger(__name__)

# the core names a candidate by id and position; the service names the request's document instead
_CANDIDATE_PREFIX = re.compile(r"^candidate '[^']*' \(index \d+\): ")

RerankerFactory = Callable[[BatchingScorer, OnError], Any]


@dataclass(frozen=True)
class ServeConfig:
    """Everything the service is configured with (plain values, so Ray can ship it to replicas).

    Attributes:
        scorer: ``"starter"``, ``"fake"``, or a factory ``"module:callable"`` returning a scorer (or a
            :class:`~mm_rerank_components.MultimodalReranker`, whose calibrator is kept).
        scorer_kwargs: keyword arguments for that factory.
        reranker_folder: a saved reranker folder (``mm-rerank adapt``); overrides ``scorer``.
        device: torch device for model scorers (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        threads: torch CPU threads (``torch.set_num_threads``) in the process that scores; None leaves it.
        model: the model name echoed in responses (default: the scorer's name).
        micro_batching: gather the calls of concurrent requests into one scoring pass.
        max_batch_size: most candidates per scoring pass.
        max_wait_ms: how long a pass waits for more calls after the first arrived.
        score_workers: scoring passes that may run at once (1 for one model on one device).
        max_concurrency: requests handled at once in worker threads (most of them wait for their scores).
        cpu_slots: of those, how many may parse and decode at once (default: the CPU count).
        max_pending: requests admitted at once; more get 503 with ``Retry-After``.
        request_timeout_s: most seconds a request may wait for its scores (then 504).
        max_body_bytes: largest request body (413).
        max_documents: most documents per request (413).
        max_image_bytes, max_image_pixels: per image (413 or a per-document error).
        allow_urls: fetch ``http(s)://`` images (off by default).
        api_key: when set, requests need ``Authorization: Bearer <api_key>`` (401 otherwise).

    Example:
        >>> ServeConfig(scorer="fake", max_batch_size=128).image_options.allow_urls
        False
    """

    scorer: str = "starter"
    scorer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    reranker_folder: str | None = None
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
    max_body_bytes: int = 32 * 1024 * 1024
    max_documents: int = 1000
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
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
        }
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServeConfig.{name} must be a positive int, got {value!r}")
        if self.cpu_slots is not None and (isinstance(self.cpu_slots, bool) or self.cpu_slots < 1):
            raise ValueError(f"ServeConfig.cpu_slots must be a positive int or None, got {self.cpu_slots!r}")
        if not self.max_wait_ms >= 0:
            raise ValueError(f"ServeConfig.max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
        if not self.request_timeout_s > 0:
            raise ValueError(f"ServeConfig.request_timeout_s must be > 0, got {self.request_timeout_s!r}")
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
    spec, kwargs = config.scorer, dict(config.scorer_kwargs)
    calibrator = None
    if spec == "fake":
        from mm_rerank_components.scorers.fake import FakeScorer

        scorer: Any = FakeScorer(**kwargs)
    elif spec == "starter":
        from mm_rerank_components.scorers.starter import StarterScorer

        scorer = StarterScorer(device=config.device, **kwargs)
    elif ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(
                f"cannot load scorer factory {spec!r}: {exc}; give it as module:callable"
            ) from exc
        made = factory(**kwargs)
        if isinstance(made, MultimodalReranker):
            scorer, calibrator = made.scorer, made.calibrator
        else:
            scorer = made
    else:
        raise ValueError(f"unknown scorer {spec!r}: use 'starter', 'fake' or a factory 'module:callable'")
    for attr in ("name", "outputs_probabilities", "modalities", "score"):
        if not hasattr(scorer, attr):
            raise TypeError(f"scorer {spec!r} made {scorer!r}, which lacks {attr!r}; return a Scorer")
    if isinstance(scorer, BaseScorer):
        scorer.load()
    return scorer, calibrator


def _folder_factory(config: ServeConfig) -> tuple[Any, RerankerFactory]:
    try:
        folder_module = importlib.import_module("mm_rerank_components.adapt.folder")
    except ImportError as exc:
        raise ImportError(
            f"--reranker needs mm_rerank_components.adapt.folder, which did not import: {exc}"
        ) from exc
    folder = Path(config.reranker_folder or "")
    spec = folder_module.read_config(folder).get("scorer") or {}
    scorer = folder_module.scorer_from_spec(spec, where=f"reranker folder {folder.name}")
    if isinstance(scorer, BaseScorer):
        scorer.load()

    def factory(proxy: BatchingScorer, on_error: OnError) -> Any:
        reranker = folder_module.load_reranker(
            folder, scorer=proxy, on_error=on_error, batch_size=config.max_documents
        )
        reranker.base.image_options = config.image_options
        return reranker

    return scorer, factory


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
            from mm_rerank_components.cli._common import set_threads

            set_threads(self.config.threads)
        factory: RerankerFactory | None = None
        if scorer is None and self.config.reranker_folder is not None:
            scorer, factory = _folder_factory(self.config)
        elif scorer is None:
            scorer, calibrator = load_scorer(self.config)
        self.scorer = scorer
        self.model = self.config.model or scorer.name
        self.metrics = Metrics()
        self.batcher: MicroBatcher | None = None
        if submit is None:
            self.batcher = MicroBatcher(
                self.run_batch,
                max_batch_size=self.config.max_batch_size,
                max_wait_s=self.config.max_wait_ms / 1000.0,
                enabled=self.config.micro_batching,
                workers=self.config.score_workers,
                in_flight=lambda: self.pending,
            )
            submit = self.batcher.submit
        self.proxy = BatchingScorer(
            scorer, submit, timeout_s=self.config.request_timeout_s, max_call_size=self.config.max_batch_size
        )
        if factory is None:
            # resolve the calibrator once from the real scorer (its shipped calibration, or none needed)
            resolved = MultimodalReranker(scorer, calibrator).calibrator

            def factory(proxy: BatchingScorer, on_error: OnError) -> Any:
                return MultimodalReranker(
                    proxy,
                    resolved,
                    batch_size=self.config.max_documents,
                    on_error=on_error,
                    image_options=self.config.image_options,
                )

        self.rerankers: dict[str, Any] = {
            "raise": factory(self.proxy, "raise"),
            "keep": factory(self.proxy, "keep"),
        }
        self._requests = concurrent.futures.ThreadPoolExecutor(
            self.config.max_concurrency, thread_name_prefix="rerank-request"
        )
        self._cpu = threading.BoundedSemaphore(self.config.cpu_slots or os.cpu_count() or 1)
        self.pending = 0

    # -- batching ---------------------------------------------------------------------------------------
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

    # -- requests ---------------------------------------------------------------------------------------
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
        started = time.monotonic()
        route = "v2" if api == "cohere" else "v1"
        try:
            status, payload = 200, await self._admit(api, body)
        except RequestError as exc:
            status, payload = exc.status, exc.payload()
            self.metrics.errors.labels(kind=exc.kind).inc()
            logger.info("rejected a %s request: %s %s", route, exc.status, exc)
        self.metrics.requests.labels(route=route, status=str(status)).inc()
        self.metrics.latency.labels(route=route).observe(time.monotonic() - started)
        return status, payload

    async def _admit(self, api: Api, body: bytes) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self.proxy.loop = loop
        if self.pending >= self.config.max_pending:
            raise RequestError(
                f"the server is busy ({self.pending} requests in flight); retry shortly",
                kind="overloaded",
                status=503,
            )
        self.pending += 1
        self.metrics.in_flight.set(self.pending)
        try:
            return await loop.run_in_executor(self._requests, self._handle_sync, api, body)
        finally:
            self.pending -= 1
            self.metrics.in_flight.set(self.pending)

    def _handle_sync(self, api: Api, body: bytes) -> dict[str, Any]:
        # parsing and decoding are CPU work: a few threads at a time, or they only fight over the GIL and
        # starve the event loop (and /health) while the other requests just wait for their scores
        with self._cpu:
            request = parse_request(parse_body(body), self.config.limits, api)
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
            except TimeoutError as exc:
                raise RequestError(f"{exc}; retry later", kind="timeout", status=504) from None
            except Exception as exc:  # the client gets a 500 without internals
                logger.exception("the scorer failed on a request")
                raise RequestError(
                    f"the scorer failed on this request ({type(exc).__name__}); the server log has details",
                    kind="scorer_error",
                    status=500,
                ) from None
        return build_response(request, ranked, model=self.model, api=api)

    def health(self) -> dict[str, Any]:
        """What ``GET /health`` answers (cheap, no scoring)."""
        return {"status": "ok", "model": self.model, "in_flight": self.pending}

    def close(self) -> None:
        """Stop the batcher and the request threads."""
        if self.batcher is not None:
            self.batcher.close()
        self._requests.shutdown(wait=False, cancel_futures=True)


def replace_config(config: ServeConfig, **changes: Any) -> ServeConfig:
    """A copy of ``config`` with ``changes`` (validated again)."""
    return dataclasses.replace(config, **changes)
