"""Fetching ``http(s)://`` images: one total deadline for connecting, redirects and the body; at most
``max_bytes + 1`` bytes; only http(s) redirects; a cancelled call shuts its connections at once."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from mm_rerank_components.media.cancel import CancelToken, check_cancelled, current_token
from mm_rerank_components.media.options import ImageLoadError, ImageOptions, _check_bytes, _reason, is_url

__all__ = ["fetch_url"]


class _Connections:
    """The connections one fetch opened, so a deadline or a cancellation can shut them."""

    def __init__(self) -> None:
        self.open: list[http.client.HTTPConnection] = []
        self.shut = False

    def track(self, cls: type[http.client.HTTPConnection]) -> Callable[..., http.client.HTTPConnection]:
        def factory(*args: Any, **kwargs: Any) -> http.client.HTTPConnection:
            connection = cls(*args, **kwargs)
            connect = connection.connect

            def connect_then_check() -> None:
                connect()
                if self.shut:  # the deadline or a cancellation came while connecting
                    self._shutdown(connection)

            connection.connect = connect_then_check  # type: ignore[method-assign]
            self.open.append(connection)
            return connection

        return factory

    def shut_all(self) -> None:
        self.shut = True  # set first: a connection still connecting checks it when done
        for connection in list(self.open):
            self._shutdown(connection)

    @staticmethod
    def _shutdown(connection: http.client.HTTPConnection) -> None:
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, connections: _Connections) -> None:
        super().__init__()
        self._connections = connections

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connections.track(http.client.HTTPConnection), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, connections: _Connections) -> None:
        super().__init__()
        self._connections = connections

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        factory = self._connections.track(http.client.HTTPSConnection)
        return self.do_open(factory, req, context=self._context)  # type: ignore[attr-defined]


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    max_redirections = 5

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        if not is_url(newurl):
            raise ImageLoadError(
                f"image URL {req.full_url!r} redirects to {newurl!r}; only http(s) is followed"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_url(url: str, options: ImageOptions) -> bytes:
    """Fetch ``url`` within ``url_timeout`` seconds in total, reading at most ``max_bytes + 1`` bytes."""
    limit = options.url_timeout
    connections = _Connections()
    opener = urllib.request.build_opener(
        _HTTPHandler(connections), _HTTPSHandler(connections), _RedirectHandler()
    )
    request = urllib.request.Request(url, headers={"User-Agent": "mm-rerank-components"})
    token = current_token() or CancelToken()
    watchdog = threading.Timer(limit, connections.shut_all)
    watchdog.daemon = True
    start = time.monotonic()
    watchdog.start()
    try:
        with token.on_cancel(connections.shut_all), opener.open(request, timeout=limit) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit():
                _check_bytes(int(length), url, options)
            data = _read_response(response, options.max_bytes + 1, start + limit)
    except ImageLoadError:
        raise
    except Exception as exc:  # urllib raises URLError, HTTPError, timeouts, socket errors
        check_cancelled()
        if connections.shut or time.monotonic() - start >= limit:
            raise ImageLoadError(
                f"image URL {url!r} timed out after {limit:g} s; raise ImageOptions(url_timeout=...) "
                "or download the image first"
            ) from exc
        raise ImageLoadError(f"cannot fetch image URL {url!r}: {_reason(exc)}") from exc
    finally:
        watchdog.cancel()
    check_cancelled()
    if connections.shut:  # the deadline cut the body short
        raise ImageLoadError(
            f"image URL {url!r} timed out after {limit:g} s; raise ImageOptions(url_timeout=...) "
            "or download the image first"
        )
    _check_bytes(len(data), url, options)
    return data


def _read_response(response: Any, limit: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        if time.monotonic() >= deadline:
            raise TimeoutError("deadline passed")
        chunk = response.read1(min(limit - size, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
