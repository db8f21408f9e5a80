"""A time cap per document: a reader still running after ``max_seconds`` is stopped, and the file fails alone.

The readers are pure Python (pypdf, the standard library's HTML parser) apart from short C calls bounded
by the other caps (decompression of one stream, one zip member, ``max_pixels``), so the reading thread is
interrupted between two Python steps: a watchdog timer raises :class:`DocumentTimeout` in it through
``PyThreadState_SetAsyncExc`` (this works in any thread, unlike ``signal.alarm``). ``DocumentTimeout`` is a
``BaseException``, so the readers' and pypdf's own ``except Exception`` (which keep a document's other
pages when one fails) cannot swallow it. :func:`run_capped` turns it into a
:class:`~.base.DocumentError` naming the file and the cap; a timer that fires as the reader returns is
cleared, never raised later in unrelated code.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from mm_rerank_components.ingest.documents.base import DocumentError

logger = logging.getLogger(__name__)
T = TypeVar("T")


class DocumentTimeout(BaseException):
    """Raised inside a reader that ran past its document's ``max_seconds`` (never seen by callers)."""


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> bool:
    """Schedule ``exc`` in the thread (``None`` clears a scheduled one); False where not supported."""
    api = getattr(ctypes, "pythonapi", None)
    if api is None:  # not CPython
        return False
    target = ctypes.py_object(exc) if exc is not None else None
    return bool(api.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), target))


class _Watchdog:
    """Raises :class:`DocumentTimeout` in the starting thread after ``seconds``, and again every second
    (a reader's bare ``except:`` cannot outlast it), until stopped."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._thread_id = threading.get_ident()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._state = "running"
        self._thread = threading.Thread(target=self._run, name="mm-rerank-document-cap", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        wait = self._seconds
        while not self._stopped.wait(wait):
            with self._lock:
                if self._state == "done":
                    return
                if not _set_async_exc(self._thread_id, DocumentTimeout):
                    logger.warning("cannot stop a document reader on this Python; max_seconds is not applied")
                    return
                self._state = "fired"
            wait = 1.0

    def stop(self) -> bool:
        """Stop the watchdog and clear a timeout not yet delivered; True when the cap was reached."""
        self._stopped.set()
        with self._lock:
            fired = self._state == "fired"
            self._state = "done"
        if fired:
            _set_async_exc(self._thread_id, None)
        return fired


def run_capped(read: Callable[[], T], seconds: float | None, name: str) -> T:
    """``read()``, stopped after ``seconds`` (``None``: no cap) with a :class:`DocumentError` naming ``name``.

    Example:
        >>> run_capped(lambda: "read", 5.0, "paper.pdf")
        'read'
    """
    if seconds is None:
        return read()
    watchdog = _Watchdog(seconds)
    try:
        try:
            watchdog.start()
            result = read()
        finally:
            reached = watchdog.stop()
    except DocumentTimeout:
        reached = True
    if reached:
        raise DocumentError(
            f"reading {name} took longer than max_seconds={seconds:g} and was stopped (a hostile or "
            "pathological file); raise DocumentOptions(max_seconds=...) (mm-rerank ingest "
            "--document-timeout) for a large genuine document"
        )
    return result
