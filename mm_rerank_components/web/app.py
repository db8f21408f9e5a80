"""The FastAPI app behind the web chat page: :func:`create_app`.

Routes:

* ``GET /`` the page (``static/index.html`` in the package);
* ``POST /api/ask`` with ``{"question": "..."}``: the answer, who wrote it (``extractive`` or
  ``llm:<model>``) and the ranked evidence, each picture with a ``thumbnail`` URL;
* ``GET /api/image/{token}``: a JPEG thumbnail of a picture. Tokens are random and issued only for
  pictures that the pipeline returned as evidence, so the endpoint cannot be used to read any other file;
* ``GET /api/health``: ``{"ok": true, "answerer": ...}``.
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
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, Response
    from pydantic import BaseModel, Field
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('The web chat needs FastAPI: pip install "mm-rerank-components[web]"') from exc

from mm_rerank_components.media import ImageLoadError, ImageOptions, load_image

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
    question: str = Field(min_length=1, max_length=2000, description="The user's question.")


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
) -> FastAPI:
    """A FastAPI app that answers questions with ``pipeline`` and shows the ranked evidence.

    Args:
        pipeline: a :class:`~mm_rerank_components.answer.RAGPipeline`, or any object whose
            ``ask(question)`` returns an :class:`~mm_rerank_components.answer.Answer`.
        title: the page title.
        image_options: limits for reading pictures when making thumbnails.
        registry: the token registry for thumbnails (a fresh one by default).

    Example:
        >>> app = create_app(pipeline)  # doctest: +SKIP
        >>> # uvicorn.run(app, host="127.0.0.1", port=8000), then open http://127.0.0.1:8000/
    """
    if not callable(getattr(pipeline, "ask", None)):
        raise TypeError(f"pipeline must have ask(question) -> Answer (e.g. RAGPipeline), got {pipeline!r}")
    images = registry or ImageRegistry()
    options = image_options or ImageOptions()
    lock = threading.Lock()  # one question at a time: the models use every core anyway
    page = _page().replace("{{TITLE}}", _html_escape(title))
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        answerer = getattr(getattr(pipeline, "answerer", None), "name", None)
        return {"ok": True, "answerer": answerer}

    @app.post("/api/ask")
    def ask(request: AskRequest) -> dict[str, Any]:
        question = request.question.strip()
        if not question:
            raise HTTPException(status_code=400, detail="the question is empty")
        with lock:
            try:
                answer = pipeline.ask(question)
            except ValueError as exc:
                raise HTTPException(status_code=400, detail=str(exc)) from exc
        payload: dict[str, Any] = answer.to_dict()
        for item, evidence in zip(payload["evidence"], answer.evidence, strict=True):
            local = _local_file(evidence.image) if evidence.image else None
            item["thumbnail"] = f"/api/image/{images.register(local)}" if local else None
            item["image_name"] = Path(local).name if local else None
            item.pop("image", None)  # never send server paths to the browser
        return payload

    @app.get("/api/image/{token}")
    def image(token: str) -> Response:
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

    return app


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
