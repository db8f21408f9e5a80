"""One live-server harness for the tests: an ASGI app under uvicorn on 127.0.0.1, in a thread.

Used by every test that talks to a real HTTP server (our rerank service, the web chat), so the free port,
the start-up wait and the clean stop are written once::

    with LiveServer(create_app(engine)) as live:
        httpx.get(live.url + "/health")
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

__all__ = ["LiveServer", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (nothing listens there once this returns)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a daemon thread; :meth:`stop` ends it through its handle.

    ``start()`` waits (up to ``start_timeout`` seconds) until uvicorn listens and raises if it does not;
    ``stop()`` asks uvicorn to exit and joins the thread. ``lifespan`` and other ``uvicorn.Config`` keyword
    arguments pass through ``config``.
    """

    def __init__(self, app: Any, *, start_timeout: float = 20.0, **config: Any) -> None:
        import uvicorn

        self.port = free_port()
        settings: dict[str, Any] = {"log_level": "warning", "lifespan": "off", **config}
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, **settings))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.stop()
                raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=10)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
