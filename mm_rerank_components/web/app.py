"""The FastAPI app behind the web chat page: :func:`create_app`.

Routes:

* ``GET /`` the page (``static/index.html`` in the package);
* ``POST /api/ask`` with ``{"question": "..."}``, or ``{"question": "...", "picture": TOKEN}`` for a
  question with a picture (words optional then): the answer, who wrote it (``extractive`` or
  ``llm:<model>``), per-step timings and the ranked evidence, each picture with a ``thumbnail`` URL and
  its 1-based ``rank`` (the answer cites ``[rank]``), ``scores_calibrated`` and ``scores_note`` (false, and
  why, for a question with a picture or evidence holding captioned pictures the reranker was not
  calibrated on: :func:`~mm_rerank_components.defaults.scores_note`; the page shows the note);
* ``POST /api/picture`` with the bytes of one picture: ``{"picture": TOKEN, ...}`` (see
  :mod:`mm_rerank_components.web.pictures`);
* ``GET /api/image/{token}``: a JPEG thumbnail of a picture. Tokens are random and issued only for
  pictures that the pipeline returned as evidence, so the endpoint cannot be used to read any other file;
* ``GET /api/health``: ``{"ok": true, "answerer": ...}``, answered on the event loop, never behind questions.

Limits (:class:`~mm_rerank_components.web.limits.WebLimits`): a body size cap (413), at most
``max_concurrent`` questions answered at once in worker threads and ``max_waiting`` queued (else 503), 400
for text that is not text (a lone surrogate, control characters). Error bodies are short fixed texts that
never echo the request and never name a server path; the details go to the server log.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import threading
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any

try:
    import anyio
    import anyio.to_thread
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from pydantic import BaseModel, Field, model_validator
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('The web chat needs FastAPI: pip install "mm-rerank-components[web]"') from exc

from mm_rerank_components.defaults import scores_note
from mm_rerank_components.media import ImageLoadError, ImageOptions, load_image
from mm_rerank_components.types import Query
from mm_rerank_components.web.limits import (
    INVALID_REQUEST,
    NOT_TEXT,
    BodySizeLimit,
    WebLimits,
    question_problem,
)
from mm_rerank_components.web.pictures import UNKNOWN_PICTURE, UPLOAD_PATH, PictureStore, add_picture_route

logger = logging.getLogger(__name__)

THUMBNAIL_SIDE = 320


class ImageRegistry:
    """Maps random tokens to the local pictures that were returned as evidence (a bounded LRU).

    Only registered files can be served, so a token is a capability, never a path.

    Example:
        >>> registry = ImageRegistry(max_entries=2)
        >>> token = registry.register("/data/fox.webp")
        >>> registry.resolve(token)
        '/data/fox.webp'
        >>> registry.resolve("../../etc/passwd") is None
        True
    """

    def __init__(self, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self._by_token: OrderedDict[str, str] = OrderedDict()
        self._by_path: dict[str, str] = {}
        self._lock = threading.Lock()

    def register(self, path: str) -> str:
        """The token for ``path`` (the same token while the path stays registered)."""
        with self._lock:
            token = self._by_path.get(path)
            if token is not None:
                self._by_token.move_to_end(token)
                return token
            token = secrets.token_urlsafe(16)
            self._by_token[token] = path
            self._by_path[path] = token
            while len(self._by_token) > self.max_entries:
                _, old = self._by_token.popitem(last=False)
                self._by_path.pop(old, None)
            return token

    def resolve(self, token: str) -> str | None:
        """The registered path for ``token``, or ``None``."""
        with self._lock:
            return self._by_token.get(token)

    def __len__(self) -> int:
        return len(self._by_token)


class AskRequest(BaseModel):
    question: str = Field(default="", max_length=2000, description="The user's question.")
    picture: str | None = Field(
        default=None, max_length=64, description="A token from POST /api/picture: ask with that picture."
    )

    @model_validator(mode="after")
    def _words_or_picture(self) -> AskRequest:
        if not self.question and self.picture is None:
            raise ValueError("a question needs words or a picture")  # a 422 with INVALID_REQUEST's text
        return self


def _local_file(ref: str) -> str | None:
    if ref.startswith("file://"):
        import urllib.parse
        import urllib.request

        ref = urllib.request.url2pathname(urllib.parse.urlparse(ref).path)
    elif "://" in ref or ref.startswith("data:"):
        return None
    return ref if os.path.isfile(ref) else None


def _page() -> str:
    return resources.files("mm_rerank_components.web").joinpath("static/index.html").read_text("utf-8")


def create_app(
    pipeline: Any,
    *,
    title: str = "mm-rerank chat",
    image_options: ImageOptions | None = None,
    registry: ImageRegistry | None = None,
    limits: WebLimits | None = None,
    pictures: PictureStore | None = None,
) -> FastAPI:
    """A FastAPI app that answers questions with ``pipeline`` and shows the ranked evidence.

    Args:
        pipeline: a :class:`~mm_rerank_components.answer.RAGPipeline`, or any object whose
            ``ask(question)`` returns an :class:`~mm_rerank_components.answer.Answer`. Build its reranker
            with ``on_error="keep"``: a picture deleted after ingest is then shown as unreadable and the
            answer comes from the rest (with ``"raise"`` such a question fails with a 500).
        title: the page title.
        image_options: limits for reading pictures when making thumbnails.
        registry: the token registry for thumbnails (a fresh one by default).
        limits: body size cap, concurrency and queue, picture caps (see :class:`WebLimits`).
        pictures: where uploaded question pictures are kept (a fresh bounded store by default).

    Example:
        >>> app = create_app(pipeline)  # doctest: +SKIP
        >>> # uvicorn.run(app, host="127.0.0.1", port=8000), then open http://127.0.0.1:8000/
    """
    if not callable(getattr(pipeline, "ask", None)):
        raise TypeError(f"pipeline must have ask(question) -> Answer (e.g. RAGPipeline), got {pipeline!r}")
    _warn_if_raising(pipeline)
    limits = limits or WebLimits()
    images = registry or ImageRegistry()
    page = _page().replace("{{TITLE}}", _html_escape(title))
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_middleware(
        BodySizeLimit, max_bytes=limits.max_body_bytes, path_caps={UPLOAD_PATH: limits.max_picture_bytes}
    )

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        answerer = getattr(getattr(pipeline, "answerer", None), "name", None)
        return {"ok": True, "answerer": answerer}

    store = pictures or PictureStore()
    _add_ask_route(app, pipeline, limits, images, store)
    add_picture_route(app, store, limits)
    _add_image_route(app, images, image_options or ImageOptions())
    return app


def _warn_if_raising(pipeline: Any) -> None:
    from mm_rerank_components.reranker import MultimodalReranker

    reranker = getattr(pipeline, "reranker", None)
    core = getattr(reranker, "base", reranker)  # a learned-fusion reranker scores through its base
    if isinstance(core, MultimodalReranker) and core.on_error == "raise":
        logger.warning(
            "the web chat's reranker has on_error='raise': a question whose hits include an unreadable "
            "picture fails; build it with MultimodalReranker(..., on_error='keep') to answer from the rest"
        )


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's default body echoes the input (a 10 MB question came back whole, and a lone surrogate
    # could not even be encoded: a 500): fixed text instead
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    if any(error.get("type") == "string_unicode" for error in errors):
        return JSONResponse({"detail": NOT_TEXT}, status_code=400)
    return JSONResponse({"detail": INVALID_REQUEST}, status_code=422)


class _Queue:
    """Questions waiting or being answered; the async limit that replaced the in-thread lock."""

    def __init__(self, limits: WebLimits) -> None:
        self.limiter = anyio.CapacityLimiter(limits.max_concurrent)
        self.max_pending = limits.max_concurrent + limits.max_waiting
        self.pending = 0


def _question(request: AskRequest, store: PictureStore) -> str | Query:
    """The question to ask: its words, or a :class:`Query` with the uploaded picture; 400 when neither."""
    words = request.question.strip()
    problem = question_problem(words)
    if problem is not None:
        raise HTTPException(status_code=400, detail=problem)
    if request.picture is None:
        if not words:
            raise HTTPException(status_code=400, detail="the question is empty")
        return words
    picture = store.get(request.picture)
    if picture is None:
        raise HTTPException(status_code=400, detail=UNKNOWN_PICTURE)
    return Query(text=words or None, image=picture)


def _add_ask_route(
    app: FastAPI, pipeline: Any, limits: WebLimits, images: ImageRegistry, store: PictureStore
) -> None:
    queue = _Queue(limits)

    @app.post("/api/ask")
    async def ask(request: AskRequest) -> dict[str, Any]:
        question = _question(request, store)
        if queue.pending >= queue.max_pending:
            raise HTTPException(
                status_code=503, detail="busy: too many questions waiting", headers={"Retry-After": "2"}
            )
        queue.pending += 1
        try:
            # waits on the event loop for a slot, then runs the models in a worker thread
            answer = await anyio.to_thread.run_sync(_ask, pipeline, question, limiter=queue.limiter)
        finally:
            queue.pending -= 1
        payload = _payload(answer, images)
        # a picture question, or captioned pictures this reranker was not calibrated on: the scores are
        # not one calibrated scale (docs/calibration.md); the page shows the note under its evidence
        asked = question if isinstance(question, Query) else Query(question)
        reranker = getattr(pipeline, "reranker", None)  # a pipeline need only `ask`
        note = scores_note(reranker, asked, (e.modality for e in answer.evidence))
        payload["scores_calibrated"] = note is None
        payload["scores_note"] = note
        return payload


def _ask(pipeline: Any, question: str | Query) -> Any:
    """``pipeline.ask``, with failures logged in full here and reported to the browser in fixed words."""
    from mm_rerank_components.answer import LLMError
    from mm_rerank_components.reranker import CandidateError

    try:
        return pipeline.ask(question)
    except CandidateError as exc:
        logger.warning(
            "a search result could not be read (use on_error='keep' to answer from the rest): %s", exc
        )
        raise HTTPException(
            status_code=500, detail="a search result could not be read; see the server log"
        ) from exc
    except LLMError as exc:
        logger.warning("the language model failed: %s", exc)
        raise HTTPException(
            status_code=502, detail="the language model could not answer; see the server log"
        ) from exc
    except ValueError as exc:
        logger.info("question rejected: %s", exc)
        raise HTTPException(status_code=400, detail="the question could not be answered as asked") from exc


def _payload(answer: Any, images: ImageRegistry) -> dict[str, Any]:
    payload: dict[str, Any] = answer.to_dict()
    for item, evidence in zip(payload["evidence"], answer.evidence, strict=True):
        local = _local_file(evidence.image) if evidence.image else None
        item["thumbnail"] = f"/api/image/{images.register(local)}" if local else None
        item["image_name"] = Path(local).name if local else None
        item.pop("image", None)  # never send server paths to the browser
        if item.get("error"):  # the detail (often a path) is in the server log
            item["error"] = "could not be read"
    return payload


def _add_image_route(app: FastAPI, images: ImageRegistry, options: ImageOptions) -> None:
    @app.get("/api/image/{token}")
    def image(token: str) -> Response:  # sync: file I/O runs in a worker thread
        path = images.resolve(token)
        if path is None:
            raise HTTPException(status_code=404, detail="unknown image token")
        try:
            picture = load_image(path, options).copy()
        except ImageLoadError as exc:
            logger.warning("cannot make a thumbnail of %s: %s", path, exc)
            raise HTTPException(status_code=404, detail="image unavailable") from exc
        picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=85)
        return Response(
            buffer.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
        )


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
