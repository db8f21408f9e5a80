"""Connecting to Chroma: server addresses, bounded waits on server requests, errors naming the server."""

from __future__ import annotations

import contextlib
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

from mm_rerank_components._deps import require

logger = logging.getLogger(__name__)

#: Seconds a request to a Chroma server may take before it fails (connect, send, answer).
DEFAULT_TIMEOUT = 60.0


def chromadb_module() -> Any:
    return require("chromadb", "chroma", "the Chroma retriever")


def parse_server(server: str) -> tuple[str, int]:
    """Split ``"HOST:PORT"`` (``PORT`` alone means localhost) into ``(host, port)``.

    Example:
        >>> parse_server("127.0.0.1:8000")
        ('127.0.0.1', 8000)
    """
    text = server.strip()
    for prefix in ("http://", "https://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "localhost", text
    host = host.strip("[]") or "localhost"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad Chroma server address {server!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
    return host, int(port_text)


def check_timeout(timeout: float | None) -> float | None:
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise ValueError(f"timeout must be a number of seconds > 0 or None, got {timeout!r}")
    return None if timeout is None else float(timeout)


def open_http_client(
    host: str, port: int, *, ssl: bool, headers: Mapping[str, str], timeout: float | None
) -> Any:
    """A ``chromadb.HttpClient`` whose every request gives up after ``timeout`` seconds.

    The server's heartbeat is asked first, with that deadline, so a server that is down, or that accepts
    connections and never answers, fails here with the address in the message instead of hanging.
    """
    chromadb = chromadb_module()
    url = f"{'https' if ssl else 'http'}://{host}:{port}"
    _heartbeat(url, dict(headers), timeout)
    with server_errors(url, timeout):
        client = chromadb.HttpClient(host=host, port=port, ssl=ssl, headers=dict(headers) or None)
    _bound_requests(client, timeout)
    return client


def _heartbeat(url: str, headers: dict[str, str], timeout: float | None) -> None:
    request = urllib.request.Request(f"{url}/api/v2/heartbeat", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(1024)
    except urllib.error.HTTPError:
        return  # it answers; chromadb reports what is wrong with the answer
    except TimeoutError as exc:
        raise TimeoutError(_timeout_message(url, timeout)) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise TimeoutError(_timeout_message(url, timeout)) from exc
        raise ConnectionError(
            f"cannot reach the Chroma server at {url}: {reason}; start it (chroma run --host HOST --port "
            "PORT) or fix the address (--server HOST:PORT, or host=/port=)"
        ) from exc


def _timeout_message(url: str, timeout: float | None) -> str:
    return (
        f"the Chroma server at {url} did not answer within {timeout:g} s; check that it is healthy, or "
        "allow longer with timeout= (CLI: --timeout)"
    )


def _bound_requests(client: Any, timeout: float | None) -> None:
    # chromadb's HTTP client waits forever (httpx timeout=None); its httpx session is the one place to
    # bound every later request
    import httpx

    session = getattr(getattr(client, "_server", None), "_session", None)
    if isinstance(session, httpx.Client):
        session.timeout = httpx.Timeout(timeout)
    else:
        logger.warning("cannot set a timeout on this chromadb version's HTTP client; requests may hang")


@contextlib.contextmanager
def server_errors(url: str | None, timeout: float | None) -> Iterator[None]:
    """Turn httpx timeouts and connection errors from a server request into errors naming the server."""
    if url is None:
        yield
        return
    import httpx

    try:
        yield
    except httpx.TimeoutException as exc:
        raise TimeoutError(_timeout_message(url, timeout)) from exc
    except httpx.TransportError as exc:
        raise ConnectionError(f"lost the Chroma server at {url}: {exc}") from exc
