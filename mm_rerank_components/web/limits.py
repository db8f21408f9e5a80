"""Request limits of the web chat: the body size cap (an ASGI middleware), question text checks, and the
short error bodies that never echo what the client sent.

Example:
    >>> WebLimits(max_body_bytes=4096).max_body_bytes
    4096
    >>> question_problem("fine question") is None
    True
    >>> question_problem("bad \\ud800 text")
    'the question is not valid text (it holds a lone UTF-16 surrogate)'
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: the 400 detail for a question that is not text (JSON allows escapes of lone surrogates)
NOT_TEXT = "the question is not valid text (it holds a lone UTF-16 surrogate)"
#: the 422 body for any malformed request: fixed text, so nothing the client sent is echoed back
INVALID_REQUEST = (
    'send JSON {"question": "..."} with up to 2000 characters of text, and/or "picture": a token from '
    "POST /api/picture"
)


@dataclass(frozen=True)
class WebLimits:
    """What one client may ask of the web chat.

    Attributes:
        max_body_bytes: requests with a larger body get 413 before anything parses them.
        max_concurrent: questions answered at the same time (each in a worker thread). The models use
            every core they are given, so 1 is usually fastest; raise it for a remote LLM that waits on
            the network.
        max_waiting: questions queued beyond those; more get 503 with ``Retry-After`` instead of piling up.
        max_picture_bytes: largest picture uploaded to ``POST /api/picture`` (its own cap: the question
            body stays at ``max_body_bytes``); larger gets 413.
        max_picture_pixels: largest uploaded picture, width x height, checked before its pixels are decoded.

    Example:
        >>> WebLimits().max_concurrent
        1
    """

    max_body_bytes: int = 16_384
    max_concurrent: int = 1
    max_waiting: int = 64
    max_picture_bytes: int = 8 * 1024 * 1024
    max_picture_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_concurrent",
            "max_waiting",
            "max_picture_bytes",
            "max_picture_pixels",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"WebLimits.{name} must be an int >= 1, got {value!r}")


def question_problem(question: str) -> str | None:
    """Why ``question`` is not acceptable text (a short reason that never quotes it), or ``None``.

    Rejects lone UTF-16 surrogates (valid JSON escapes, but not text: encoding them fails later) and
    control characters other than tab and line breaks.
    """
    try:
        question.encode("utf-8")
    except UnicodeEncodeError:
        return NOT_TEXT
    for char in question:
        if char not in "\t\n\r" and unicodedata.category(char) == "Cc":
            return "the question holds a control character; send plain text"
    return None


async def send_json_error(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    """Send ``{"detail": detail}`` with ``status`` straight from ASGI (before any route ran)."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413, whether declared or streamed.

    The body (at most ``max_bytes``) is read before the app runs and handed to it unchanged; a declared
    ``Content-Length`` over the cap is refused without reading anything.

    Example:
        >>> from fastapi import FastAPI
        >>> app = BodySizeLimit(FastAPI(), max_bytes=1024)
    """

    def __init__(self, app: ASGIApp, max_bytes: int, path_caps: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_caps = dict(path_caps or {})  # a larger cap for these exact paths (picture uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.path_caps.get(scope.get("path", ""), self.max_bytes)
        too_big = f"the request body is over {cap} bytes"
        declared = _content_length(scope)
        if declared == -1:
            await send_json_error(send, 400, "the Content-Length header is not a number", [])
            return
        if declared is not None and declared > cap:
            await send_json_error(send, 413, too_big, [(b"connection", b"close")])
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > cap:
                await send_json_error(send, 413, too_big, [(b"connection", b"close")])
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _content_length(scope: Scope) -> int | None:
    """The declared body length, ``None`` when not declared, ``-1`` when not a number."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else -1
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as the server would report it

    return replay
