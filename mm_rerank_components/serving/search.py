"""Search over a database in the rerank service: retrieve and rerank in process, the rows of ``query --json``.

``mm-rerank serve --db DB`` adds ``POST /v1/search``: the query goes through the same two stages as
``mm-rerank query`` (:class:`~mm_rerank_components.retrievers.ChromaMultiCollectionRetriever` over the
text and image collections, then the served reranker: :func:`~mm_rerank_components.defaults.default_reranker`
unless the server was started with another one), and the response's ``results`` are the rows
``mm-rerank query --json`` prints, field for field (:func:`search_row`).

The routes are added by :func:`add_search_routes`, a hook separate from the rerank app
(:mod:`.app`): the app knows nothing of databases, and this module nothing of micro-batching.

Also here: :func:`default_factory`, how the engine builds the product default around its micro-batching
scorer (``ServeConfig(scorer="default")``, what ``mm-rerank serve`` runs with no flags).

Example:
    >>> row = search_row(1, Candidate("a", text="Foxes", source="mm_text", retrieval_score=0.5), 0.25)
    >>> row["rank"], row["score"], row["route"]
    (1, 0.25, 'mm_text')
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mm_rerank_components.media import ImageLoadError, load_image
from mm_rerank_components.serving.protocol import Limits, RequestError, _parse_query, parse_body
from mm_rerank_components.types import Candidate, Query

if TYPE_CHECKING:
    from mm_rerank_components.serving.engine import RerankEngine, ServeConfig

logger = logging.getLogger(__name__)

__all__ = ["SEARCH_FIELDS", "SearchService", "add_search_routes", "default_factory", "search", "search_row"]

#: The fields a search request may carry (``model`` is accepted and ignored, as on the rerank routes).
SEARCH_FIELDS = ("query", "k_text", "k_image", "top_n", "model")
_MAX_K = 1000


def search_row(rank: int, candidate: Candidate, score: float) -> dict[str, Any]:
    """One result row, as ``mm-rerank query --json`` prints it and ``POST /v1/search`` returns it.

    ``score`` is the unified score at full precision (``None`` when nothing reranked), ``route`` the
    routes that found the record (``"text->mm_text,image->mm_text"``) or its collection.

    Example:
        >>> search_row(2, Candidate("b", text="Owls"), float("nan"))["score"] is None
        True
    """
    metadata = candidate.metadata
    return {
        "rank": rank,
        "id": candidate.id,
        "modality": candidate.modality,
        "score": None if math.isnan(score) else float(score),
        "route": metadata.get("routes") or candidate.source,
        "retrieval_score": candidate.retrieval_score,
        "title": metadata.get("title"),
        "path": metadata.get("path") or metadata.get("image_path"),
    }


def search(
    retriever: Any,
    reranker: Any,
    query: Query,
    *,
    k_text: int | None = None,
    k_image: int | None = None,
    top_n: int = 10,
) -> list[dict[str, Any]]:
    """Retrieve ``query``'s candidates, rerank them (``reranker`` None: first-stage order) and return rows.

    ``top_n`` 0 returns every row.

    Example:
        >>> rows = search(retriever, default_reranker(), Query("red fox"), top_n=5)  # doctest: +SKIP
    """
    candidates = retriever.retrieve(query, k_text=k_text, k_image=k_image)
    if reranker is None:
        pairs = [(c, math.nan) for c in candidates]
    else:
        pairs = [(r.candidate, r.score) for r in reranker.rerank(query, candidates)]
    shown = pairs if top_n == 0 else pairs[:top_n]
    return [search_row(rank, c, score) for rank, (c, score) in enumerate(shown, start=1)]


@dataclass
class SearchService:
    """What ``POST /v1/search`` searches: a retriever (its database, collections and embedders).

    Attributes:
        retriever: a :class:`~mm_rerank_components.retrievers.ChromaMultiCollectionRetriever` (or anything
            with its ``retrieve(query, k_text=, k_image=)``).
        k_text, k_image: default hits per collection (16 each, as ``mm-rerank query``).
        top_n: default rows returned (10, as ``mm-rerank query``; 0 = all).

    Example:
        >>> service = SearchService(ChromaMultiCollectionRetriever(path="chroma_db"))  # doctest: +SKIP
    """

    retriever: Any
    k_text: int = 16
    k_image: int = 16
    top_n: int = 10


def _count(value: object, name: str, default: int, *, low: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= _MAX_K:
        raise RequestError(
            f'"{name}" must be an integer from {low} to {_MAX_K}, got {value!r}', kind="invalid_value"
        )
    return value


def parse_search(
    data: Mapping[str, Any], service: SearchService, limits: Limits
) -> tuple[Query, int, int, int]:
    """``(query, k_text, k_image, top_n)`` of a search body, or :class:`RequestError`.

    The query takes the rerank routes' shapes (a string, ``{"text", "image"}``, ``{"content": [parts]}``);
    an image is a data URI or base64 (a URL only when the server allows URLs), never a server path.

    Example:
        >>> parse_search({"query": "red fox", "top_n": 3}, SearchService(None), Limits())[1:]
        (16, 16, 3)
    """
    unknown = sorted(set(data) - set(SEARCH_FIELDS))
    if unknown:
        raise RequestError(
            f"unknown field(s) {unknown} in a search request; the fields are {list(SEARCH_FIELDS)}",
            kind="invalid_value",
        )
    if "query" not in data:
        raise RequestError('the request has no "query"; send {"query": "...", "top_n": 10}', kind="missing")
    query = _parse_query(data["query"], limits)
    k_text = _count(data.get("k_text"), "k_text", service.k_text, low=0)
    k_image = _count(data.get("k_image"), "k_image", service.k_image, low=0)
    top_n = _count(data.get("top_n"), "top_n", service.top_n, low=0)
    return query, k_text, k_image, top_n


def default_factory(config: ServeConfig) -> tuple[Any, Callable[[Any, Any], Any]]:
    """``(scorer, factory)`` for ``ServeConfig(scorer="default")``: the product default reranker.

    The scorer is the starter scorer the default was fitted on (loaded now); ``factory(proxy, on_error)``
    wraps the engine's micro-batching proxy of it in :func:`~mm_rerank_components.defaults.default_reranker`,
    so requests get the same scores as ``mm-rerank query`` and the framework adapters.

    Example:
        >>> scorer, factory = default_factory(ServeConfig(scorer="default"))  # doctest: +SKIP
    """
    from mm_rerank_components.defaults import default_reranker
    from mm_rerank_components.scorers.starter import StarterScorer

    scorer = StarterScorer(device=config.device, **dict(config.scorer_kwargs))
    scorer.load()

    def factory(proxy: Any, on_error: Any) -> Any:
        return default_reranker(
            proxy,
            on_error=on_error,
            batch_size=config.max_documents,
            image_options=config.image_options,
            read_captions=config.read_captions,
        )

    return scorer, factory


async def _read_limited(request: Any, limit: int, timeout_s: float) -> bytes:
    """The body, refused with 413 past ``limit`` bytes and 408 when it takes longer than ``timeout_s``."""
    too_big = RequestError(
        f"the request body is over this server's limit of {limit} bytes; send a smaller query image",
        kind="body_too_large",
        status=413,
    )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_big

    async def read() -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), timeout_s)
    except TimeoutError:
        raise RequestError(
            f"the request body did not arrive within {timeout_s:g} s", kind="body_timeout", status=408
        ) from None


def _search_failed(current: RerankEngine, exc: RequestError) -> Any:
    from fastapi.responses import JSONResponse

    current.metrics.errors.labels(kind=exc.kind).inc()
    current.metrics.requests.labels(route="search", status=str(exc.status)).inc()
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.status == 503:
        headers = {"Retry-After": "1"}
    return JSONResponse(exc.payload(), status_code=exc.status, headers=headers)


def _run_search(service: SearchService, current: RerankEngine, data: dict[str, Any]) -> dict[str, Any]:
    """Parse, retrieve and rerank one search (in a worker thread)."""
    config = current.config
    query, k_text, k_image, top_n = parse_search(data, service, config.limits)
    if query.image is not None:
        try:
            query = Query(text=query.text, image=load_image(query.image, config.image_options))
        except ImageLoadError as exc:
            raise RequestError(f"query: unreadable image: {exc}", kind="invalid_image") from None
    rows = search(
        service.retriever, current.rerankers["raise"], query, k_text=k_text, k_image=k_image, top_n=top_n
    )
    return {
        "model": current.model,
        "results": rows,
        "scores_calibrated": current.scores_calibrated(query, (row["modality"] for row in rows)),
    }


async def _handle_search(current: RerankEngine, service: SearchService, request: Any) -> dict[str, Any]:
    """The answer to one ``POST /v1/search``, or :class:`RequestError` (auth, body, busy, timeout)."""
    timeout_s = current.config.request_timeout_s
    current.check_auth(request.headers.get("authorization"))
    body = await _read_limited(request, current.config.max_body_bytes, timeout_s)
    data = parse_body(body)
    if current.pending >= current.config.max_pending:
        raise RequestError(
            f"the server is busy ({current.pending} requests in flight); retry shortly",
            kind="overloaded",
            status=503,
        )
    # the engine's micro-batching proxy hands score calls to this event loop
    current.proxy.loop = asyncio.get_running_loop()
    current.pending += 1
    try:
        return await asyncio.wait_for(asyncio.to_thread(_run_search, service, current, data), timeout_s)
    except TimeoutError:
        raise RequestError(
            f"the search took longer than {timeout_s:g} s; retry later", kind="timeout", status=504
        ) from None
    finally:
        current.pending -= 1


def add_search_routes(
    app: Any, engine: RerankEngine | Callable[[], RerankEngine], service: SearchService
) -> None:
    """Add ``POST /v1/search`` to a rerank app (:func:`~mm_rerank_components.serving.app.create_app`).

    The search reranks with the engine's own reranker (so its micro-batching, deadline and scores), after
    retrieving from ``service.retriever`` in a worker thread; the whole request has the engine's
    ``request_timeout_s`` (504 past it), the engine's API key and body limit.

    Example:
        >>> app = create_app(engine)  # doctest: +SKIP
        >>> add_search_routes(app, engine, SearchService(retriever))  # doctest: +SKIP
    """
    from fastapi import Request
    from fastapi.responses import JSONResponse

    from mm_rerank_components.serving.engine import RerankEngine

    get_engine: Callable[[], RerankEngine] = (lambda: engine) if isinstance(engine, RerankEngine) else engine

    async def search_route(request: Request) -> Any:
        current = get_engine()
        started = time.monotonic()
        try:
            payload = await _handle_search(current, service, request)
        except RequestError as exc:
            return _search_failed(current, exc)
        except Exception as exc:  # the client gets a 500 without internals; the log has them
            logger.exception("a search request failed")
            error = f"the search failed ({type(exc).__name__}); the server log has details"
            return _search_failed(current, RequestError(error, kind="search_error", status=500))
        current.metrics.requests.labels(route="search", status="200").inc()
        current.metrics.latency.labels(route="search").observe(time.monotonic() - started)
        return JSONResponse(payload)

    # FastAPI reads the parameter's class from the annotation, which is a string under postponed
    # annotations and names a class imported here, not at module level (FastAPI stays an optional extra)
    search_route.__annotations__["request"] = Request
    app.post(
        "/v1/search",
        summary="Search the served database: retrieve and rerank (the rows of mm-rerank query --json)",
    )(search_route)
