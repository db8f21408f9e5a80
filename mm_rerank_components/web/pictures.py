"""Picture questions in the web chat: ``POST /api/picture`` takes the bytes of one uploaded picture and
returns a random token; ``POST /api/ask`` with ``{"question": "...", "picture": TOKEN}`` asks with it.

The upload has its own size cap (:attr:`WebLimits.max_picture_bytes`) so the question body keeps its
small one; the picture is decoded once, in a worker thread, under the pixel cap, shrunk to at most
:data:`KEEP_SIDE` pixels on its longest side and kept in memory in a bounded LRU (:class:`PictureStore`):
nothing is written to disk and a token is never a path. A body that is not a picture gets a 400 whose
text never echoes it.

Example:
    >>> from PIL import Image
    >>> store = PictureStore(max_entries=1)
    >>> token = store.add(Image.new("RGB", (8, 8)))
    >>> store.get(token).size
    (8, 8)
    >>> store.get(store.add(Image.new("RGB", (2, 2)))) is not None and store.get(token) is None
    True
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import FastAPI, HTTPException, Request

from mm_rerank_components.media import ImageLoadError, ImageOptions, load_image

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from mm_rerank_components.web.limits import WebLimits

logger = logging.getLogger(__name__)

#: an uploaded picture is kept at most this many pixels on its longest side (the starter models read
#: 224-260 pixels; a VLM reads about 1000)
KEEP_SIDE = 1024
#: the upload route's path, which gets the picture cap instead of the question body's
UPLOAD_PATH = "/api/picture"


def not_a_picture(limits: WebLimits) -> str:
    """The fixed 400 text for an upload that cannot be read as a picture."""
    megabytes = limits.max_picture_bytes / (1024 * 1024)
    return (
        "the upload is not a picture this chat can read: "
        f"send a PNG, JPEG, WebP or GIF up to {megabytes:g} MB"
    )


#: the 400 text for an ask naming a token that is unknown or was evicted
UNKNOWN_PICTURE = "the picture is no longer here (or was never uploaded): upload it again"


class PictureStore:
    """Uploaded pictures by random token, decoded, in a bounded LRU (oldest evicted first)."""

    def __init__(self, max_entries: int = 64) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"PictureStore max_entries must be an int >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self._pictures: OrderedDict[str, PILImage] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, picture: PILImage) -> str:
        """Keep ``picture``; its token."""
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._pictures[token] = picture
            while len(self._pictures) > self.max_entries:
                self._pictures.popitem(last=False)
        return token

    def get(self, token: str) -> PILImage | None:
        """The picture for ``token``, or ``None`` when unknown or evicted."""
        with self._lock:
            picture = self._pictures.get(token)
            if picture is not None:
                self._pictures.move_to_end(token)
            return picture


def decode_upload(data: bytes, limits: WebLimits) -> PILImage:
    """``data`` decoded under the picture caps and shrunk to :data:`KEEP_SIDE`; ImageLoadError if not."""
    options = ImageOptions(max_bytes=limits.max_picture_bytes, max_pixels=limits.max_picture_pixels)
    picture = load_image(data, options, longest_side=KEEP_SIDE)
    if max(picture.size) > KEEP_SIDE:
        picture.thumbnail((KEEP_SIDE, KEEP_SIDE))
    return picture


def add_picture_route(app: FastAPI, store: PictureStore, limits: WebLimits) -> None:
    """``POST /api/picture``: one picture's raw bytes in, ``{"picture": token, "width", "height"}`` out."""

    @app.post(UPLOAD_PATH)
    async def upload(request: Request) -> dict[str, Any]:
        data = await request.body()  # already capped by BodySizeLimit's path cap
        if not data:
            raise HTTPException(status_code=400, detail="the upload is empty: send the picture's bytes")
        try:
            picture = await anyio.to_thread.run_sync(decode_upload, data, limits)
        except ImageLoadError as exc:
            logger.info("picture upload rejected: %s", exc)
            raise HTTPException(status_code=400, detail=not_a_picture(limits)) from exc
        width, height = picture.size
        return {"picture": store.add(picture), "width": width, "height": height}
