"""The HTTP routes (FastAPI): the same app runs under uvicorn and inside the Ray Serve deployment.

* ``POST /v1/rerank`` and ``POST /rerank``: Jina / vLLM shape (multimodal documents);
* ``POST /v2/rerank``: Cohere v2 shape (``cohere.ClientV2(base_url=...)`` works unchanged);
* ``GET /health`` (and ``/livez``): liveness, async, answered on the event loop, never queued behind
  scoring; it shows stuck scoring passes;
* ``GET /ready`` (and ``/readyz``): 200 only once the models are loaded, one warm-up request has run
  and no more than the allowed number of scoring passes are stuck; 503 with the reason otherwise;
* ``GET /metrics``: Prometheus text format; ``GET /info``: the served model (short id, full scorer
  name), the package version and the limits (both need the API key when one is set);
* ``GET /docs`` (Swagger UI) and ``GET /redoc``: the API pages, served offline with their assets
  (:mod:`.docs_ui`); ``GET /openapi.json``: the schema.

Run it under uvicorn with :func:`uvicorn_options`, which closes connections that send no request
headers in time (idle or slow clients).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from mm_rerank_components._deps import require
from mm_rerank_components.serving._json import encode_body
from mm_rerank_components.serving.engine import RerankEngine, ServeConfig
from mm_rerank_components.serving.protocol import Api, RequestError

require("fastapi", "serve", "the rerank HTTP service")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

from mm_rerank_components.serving.docs_ui import add_offline_docs  # noqa: E402

EngineSource = RerankEngine | Callable[[], RerankEngine]


class _Precomputed(BaseModel):
    """A signal the first stage computed from this very content (the starter scorer reuses it)."""

    model_config = ConfigDict(extra="forbid")
    kind: str = Field(description='"text_embedding", "image_classes", ... (starts with "text" or "image")')
    producer: str = Field(description="fingerprint of the model that computed it")
    content: str = Field(description="mm_rerank_components.media.text_key(text) or image_key(image string)")
    value: list[float] | str


class _Signals(BaseModel):
    """Our own shape: the first stage's signals of one document, so the served reranker scores it exactly
    as the same reranker in process (``serving.protocol.document_with_signals`` builds it)."""

    model_config = ConfigDict(extra="forbid")
    source: str | None = Field(
        None, max_length=200, description='the route that found it, e.g. "mm_text" or "mm_images"'
    )
    retrieval_score: float | None = Field(None, description="the route's similarity (a finite number)")
    retrieval_rank: int | None = Field(None, ge=0, description="0-based rank within its route")
    metadata: dict[str, str | float | bool | None] | None = Field(
        None, max_length=64, description="at most 64 plain fields (title, file, ...)"
    )
    precomputed: dict[str, _Precomputed] | None = None


class _Document(BaseModel):
    text: str | None = None
    image: str | None = Field(None, description="a data URI, bare base64, or a URL (--allow-urls)")
    content: list[dict[str, Any]] | None = Field(None, description="OpenAI chat parts (vLLM shape)")
    signals: _Signals | None = Field(None, description="optional first-stage signals (our own shape)")


class _JinaRequest(BaseModel):
    """For the OpenAPI page only; requests are parsed by :mod:`.protocol` (precise, indexed errors)."""

    model: str | None = Field(None, description="ignored; the response names the served model")
    query: Annotated[str, Field(min_length=1, pattern=r"\S")] | dict[str, Any] = Field(
        description='a non-empty string, {"text"}, {"image"} or {"content": [parts]}'
    )
    documents: list[str | _Document] = Field(
        min_length=1,
        description='strings, {"text"}, {"image": data URI | base64 | URL}, {"text", "image"} '
        'or {"content": [parts]}; any object may carry "signals"',
    )
    top_n: int | None = Field(
        None, ge=1, le=10**18, description="return the best N (kept failures come after them)"
    )
    return_documents: bool | None = Field(
        None, description="echo each document's text (default true on /v1/rerank and /rerank, false on /v2)"
    )
    return_images: bool = Field(
        False, description="with return_documents, echo inline pictures too (data URIs, base64); URLs always"
    )
    threshold: float | None = Field(None, description="drop results with a unified score below this")
    on_error: Literal["raise", "keep"] = Field(
        "raise", description='"keep": rank unreadable documents last with their error instead of a 400'
    )


class _CohereRequest(_JinaRequest):
    max_tokens_per_doc: int | None = Field(None, description="accepted and ignored")
    priority: int | None = Field(None, description="accepted and ignored")


class _ErrorDetail(BaseModel):
    type: str = Field(description="a short kind, e.g. malformed_json, invalid_document, too_many_pixels")
    message: str
    index: int | None = Field(None, description="the document concerned, when there is one")


class _Error(BaseModel):
    """Every refused request: ``detail`` (FastAPI/Jina clients), ``message`` (Cohere), ``error``."""

    detail: str
    message: str
    error: _ErrorDetail


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": _Error, "description": text}
    for status, text in {
        400: "Bad request: not acceptable JSON (also nesting over 16 levels, integers over 20 digits, lone "
        "surrogates, NaN), a missing or empty query, a bad document or field; the message names it",
        401: "Missing or wrong API key",
        408: "The request body did not arrive in time",
        413: "Body, document count, an image or the request's total image pixels over the server's limits",
        500: "The scorer failed (no internals in the message)",
        503: "Busy, or not ready (scoring passes stuck past their deadline); retry after Retry-After",
        504: "Scoring took longer than the server's timeout",
    }.items()
}


def service_info(engine: RerankEngine) -> dict[str, Any]:
    """What ``GET /info`` answers: the short model id, the scorer's full name, the package version and
    the limits a client must respect.

    Example:
        >>> from mm_rerank_components.serving import RerankEngine, ServeConfig
        >>> service_info(RerankEngine(ServeConfig(scorer="fake")))["model"]
        'fake'
    """
    from mm_rerank_components import __version__

    config = engine.config
    limits = (
        "max_documents",
        "max_body_bytes",
        "max_document_chars",
        "max_image_bytes",
        "max_image_pixels",
        "max_request_pixels",
        "request_timeout_s",
    )
    return {
        **engine.info,
        "package_version": __version__,
        "auth": config.api_key is not None,
        "image_urls": config.allow_urls,
        "limits": {name: getattr(config, name) for name in limits},
    }


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every ``{"$ref": "#/$defs/X"}`` replaced by ``defs["X"]`` (the models hold no cycle),
    so the schema stands on its own inside the OpenAPI document."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline_refs(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline_refs(value, defs) for value in node]
    return node


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema = _inline_refs(schema, schema.pop("$defs", {}))
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def uvicorn_options(config: ServeConfig) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config`` that bound idle and slow clients.

    A connection that has not sent complete request headers ``config.header_timeout_s`` after it opened
    (or after its previous response) is closed; an idle keep-alive connection is closed after 5 s.
    Slow bodies are refused by the routes themselves (408 after ``config.body_timeout_s``).

    Example:
        >>> sorted(uvicorn_options(ServeConfig(scorer="fake")))
        ['http', 'timeout_keep_alive']
    """
    return {"http": _guarded_h11(config.header_timeout_s), "timeout_keep_alive": 5}


def _guarded_h11(header_timeout_s: float) -> type[Any]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        """uvicorn's h11 protocol with a deadline on the request headers (uvicorn has none)."""

        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            idle = self.cycle is None or self.cycle.response_complete
            if idle and self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the headers are in
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


async def _read_body(request: Request, limit: int, timeout_s: float = 30.0) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes, 408 when it has not
    arrived ``timeout_s`` after the headers."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_body_unbounded(request, limit)
    except TimeoutError:
        raise RequestError(
            f"the request body did not arrive within {timeout_s:g} s; send it at once",
            kind="body_timeout",
            status=408,
        ) from None


async def _read_body_unbounded(request: Request, limit: int) -> bytes:
    too_big = RequestError(
        f"the request body is over this server's limit of {limit} bytes; send fewer or smaller documents "
        "(downscale images)",
        kind="body_too_large",
        status=413,
    )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _error_response(engine: RerankEngine, exc: RequestError, route: str) -> JSONResponse:
    engine.metrics.errors.labels(kind=exc.kind).inc()
    engine.metrics.requests.labels(route=route, status=str(exc.status)).inc()
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.status == 408:
        headers = {"Connection": "close"}
    return JSONResponse(exc.payload(), status_code=exc.status, headers=headers)


def create_app(engine: EngineSource, *, title: str = "mm-rerank") -> FastAPI:
    """The rerank service's FastAPI app around ``engine`` (or a callable returning it, for Ray replicas).

    Example:
        >>> from mm_rerank_components.serving import RerankEngine, ServeConfig
        >>> app = create_app(RerankEngine(ServeConfig(scorer="fake")))
        >>> # uvicorn.run(app, host="127.0.0.1", port=8080)
    """
    get_engine: Callable[[], RerankEngine] = (lambda: engine) if isinstance(engine, RerankEngine) else engine

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        get_engine().start_warm_up()  # in the background: /health answers meanwhile, /ready says 503
        yield

    app = FastAPI(
        title=title,
        description="Rerank mixed text and image documents on one calibrated relevance scale "
        "(Jina/vLLM and Cohere request shapes).",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load Swagger UI from a CDN: ours are served offline
        redoc_url=None,
    )
    add_offline_docs(app)
    _add_rerank_routes(app, get_engine)
    _add_status_routes(app, get_engine)
    return app


def _add_rerank_routes(app: FastAPI, get_engine: Callable[[], RerankEngine]) -> None:
    """``POST /v1/rerank``, ``/rerank`` (Jina / vLLM) and ``/v2/rerank`` (Cohere)."""

    async def rerank(request: Request, api: Api) -> Response:
        current = get_engine()
        route = "v2" if api == "cohere" else "v1"
        try:
            current.check_auth(request.headers.get("authorization"))
            body = await _read_body(request, current.config.max_body_bytes, current.config.body_timeout_s)
        except RequestError as exc:
            return _error_response(current, exc, route)
        status, content = await current.handle_bytes(api, body)
        headers = {"Retry-After": "1"} if status == 503 else None
        return Response(content, status_code=status, headers=headers, media_type="application/json")

    rerank_doc: dict[str, Any] = {"responses": _ERRORS}

    @app.post(
        "/v1/rerank",
        openapi_extra=_body_doc(_JinaRequest),
        summary="Rerank (Jina / vLLM shape)",
        **rerank_doc,
    )
    async def rerank_v1(request: Request) -> Response:
        return await rerank(request, "jina")

    @app.post(
        "/rerank", openapi_extra=_body_doc(_JinaRequest), summary="Rerank (Jina / vLLM shape)", **rerank_doc
    )
    async def rerank_plain(request: Request) -> Response:
        return await rerank(request, "jina")

    @app.post(
        "/v2/rerank",
        openapi_extra=_body_doc(_CohereRequest),
        summary="Rerank (Cohere v2 shape)",
        **rerank_doc,
    )
    async def rerank_v2(request: Request) -> Response:
        return await rerank(request, "cohere")


def _add_status_routes(app: FastAPI, get_engine: Callable[[], RerankEngine]) -> None:
    """``/health``, ``/livez``, ``/ready``, ``/readyz``, ``/info`` and ``/metrics``."""

    @app.get("/health", summary="Liveness: answered on the event loop, never behind scoring")
    async def health() -> dict[str, Any]:
        return get_engine().health()

    @app.get("/livez", summary="Liveness (Kubernetes name of /health)")
    async def livez() -> dict[str, Any]:
        return get_engine().health()

    async def ready() -> Response:
        current = get_engine()
        current.start_warm_up()  # when the server ran without its lifespan (tests, embedding)
        is_ready, body = current.readiness()
        return Response(
            encode_body(body),
            status_code=200 if is_ready else 503,
            headers=None if is_ready else {"Retry-After": "1"},
            media_type="application/json",
        )

    ready_doc: dict[str, Any] = {
        "responses": {503: {"description": "Not ready yet, or stuck; the body says why"}}
    }
    app.get("/ready", summary="Readiness: models loaded and warmed up, nothing stuck", **ready_doc)(ready)
    app.get("/readyz", summary="Readiness (Kubernetes name of /ready)", **ready_doc)(ready)

    @app.get("/info", summary="The served model (short id and full scorer name), version and limits")
    async def info(request: Request) -> Response:
        current = get_engine()
        try:
            current.check_auth(request.headers.get("authorization"))
        except RequestError as exc:
            return _error_response(current, exc, "info")
        return JSONResponse(service_info(current))

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        current = get_engine()
        try:
            current.check_auth(request.headers.get("authorization"))
        except RequestError as exc:
            return _error_response(current, exc, "metrics")
        body, content_type = current.metrics.render()
        return Response(body, media_type=content_type)
