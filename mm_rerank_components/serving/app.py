"""The HTTP routes (FastAPI): the same app runs under uvicorn and inside the Ray Serve deployment.

* ``POST /v1/rerank`` and ``POST /rerank``: Jina / vLLM shape (multimodal documents);
* ``POST /v2/rerank``: Cohere v2 shape (``cohere.ClientV2(base_url=...)`` works unchanged);
* ``GET /health``: async, answered on the event loop, never queued behind scoring;
* ``GET /metrics``: Prometheus text format;
* ``GET /docs``: the OpenAPI page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from mm_rerank_components._deps import require
from mm_rerank_components.serving.engine import RerankEngine
from mm_rerank_components.serving.protocol import Api, RequestError

require("fastapi", "serve", "the rerank HTTP service")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

EngineSource = RerankEngine | Callable[[], RerankEngine]


class _JinaRequest(BaseModel):
    """For the OpenAPI page only; requests are parsed by :mod:`.protocol` (precise, indexed errors)."""

    model: str | None = Field(None, description="ignored; the response names the served model")
    query: str | dict[str, Any] = Field(description='a string, {"text"}, {"image"} or {"content": [parts]}')
    documents: list[str | dict[str, Any]] = Field(
        description='strings, {"text"}, {"image": data URI | base64 | URL}, {"text", "image"} '
        'or {"content": [parts]}'
    )
    top_n: int | None = Field(None, description="return the best N (kept failures come after them)")
    return_documents: bool | None = Field(None, description="echo each document (default true here)")
    threshold: float | None = Field(None, description="drop results with a unified score below this")
    on_error: Literal["raise", "keep"] = Field(
        "raise", description='"keep": rank unreadable documents last with their error instead of a 400'
    )


class _CohereRequest(_JinaRequest):
    max_tokens_per_doc: int | None = Field(None, description="accepted and ignored")
    priority: int | None = Field(None, description="accepted and ignored")


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
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
    return JSONResponse(exc.payload(), status_code=exc.status, headers=headers)


def create_app(engine: EngineSource, *, title: str = "mm-rerank") -> FastAPI:
    """The rerank service's FastAPI app around ``engine`` (or a callable returning it, for Ray replicas).

    Example:
        >>> from mm_rerank_components.serving import RerankEngine, ServeConfig
        >>> app = create_app(RerankEngine(ServeConfig(scorer="fake")))
        >>> # uvicorn.run(app, host="127.0.0.1", port=8080)
    """
    get_engine: Callable[[], RerankEngine] = (lambda: engine) if isinstance(engine, RerankEngine) else engine
    app = FastAPI(
        title=title,
        description="Rerank mixed text and image documents on one calibrated relevance scale "
        "(Jina/vLLM and Cohere request shapes).",
    )

    async def rerank(request: Request, api: Api) -> Response:
        current = get_engine()
        route = "v2" if api == "cohere" else "v1"
        try:
            current.check_auth(request.headers.get("authorization"))
            body = await _read_body(request, current.config.max_body_bytes)
        except RequestError as exc:
            return _error_response(current, exc, route)
        status, payload = await current.handle(api, body)
        headers = {"Retry-After": "1"} if status == 503 else None
        return JSONResponse(payload, status_code=status, headers=headers)

    @app.post("/v1/rerank", openapi_extra=_body_doc(_JinaRequest), summary="Rerank (Jina / vLLM shape)")
    async def rerank_v1(request: Request) -> Response:
        return await rerank(request, "jina")

    @app.post("/rerank", openapi_extra=_body_doc(_JinaRequest), summary="Rerank (Jina / vLLM shape)")
    async def rerank_plain(request: Request) -> Response:
        return await rerank(request, "jina")

    @app.post("/v2/rerank", openapi_extra=_body_doc(_CohereRequest), summary="Rerank (Cohere v2 shape)")
    async def rerank_v2(request: Request) -> Response:
        return await rerank(request, "cohere")

    @app.get("/health", summary="Liveness: answered on the event loop, never behind scoring")
    async def health() -> dict[str, Any]:
        return get_engine().health()

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        current = get_engine()
        try:
            current.check_auth(request.headers.get("authorization"))
        except RequestError as exc:
            return _error_response(current, exc, "metrics")
        body, content_type = current.metrics.render()
        return Response(body, media_type=content_type)

    return app
