"""Cancellation of work in progress: a token per call, checked between steps, closing open connections.

Example:
    >>> token = CancelToken()
    >>> with cancel_scope(token):
    ...     check_cancelled()  # nothing happens until token.cancel()
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

__all__ = ["CancelToken", "OperationCancelled", "cancel_scope", "check_cancelled", "current_token"]


class OperationCancelled(RuntimeError):
    """The caller cancelled the work (an ``arerank`` task was cancelled); nothing more is read or scored."""


class CancelToken:
    """A flag that stops work in progress: checked between steps, and it closes open URL connections.

    ``arerank`` sets one for the worker thread it runs in and cancels it when its task is cancelled.

    Example:
        >>> token = CancelToken()
        >>> with cancel_scope(token):
        ...     check_cancelled()  # nothing happens until token.cancel()
    """

    def __init__(self) -> None:
        self._cancelled = False
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    @contextlib.contextmanager
    def on_cancel(self, callback: Callable[[], None]) -> Iterator[None]:
        """Run ``callback`` if the token is cancelled while the block runs (at once if it already is)."""
        with self._lock:
            already = self._cancelled
            if not already:
                self._callbacks.append(callback)
        if already:
            callback()
        try:
            yield
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._callbacks.remove(callback)


_scope = threading.local()


@contextlib.contextmanager
def cancel_scope(token: CancelToken) -> Iterator[CancelToken]:
    """Make ``token`` the current thread's cancellation token while the block runs."""
    previous = getattr(_scope, "token", None)
    _scope.token = token
    try:
        yield token
    finally:
        _scope.token = previous


def current_token() -> CancelToken | None:
    """The current thread's cancellation token, if any."""
    token: CancelToken | None = getattr(_scope, "token", None)
    return token


def check_cancelled() -> None:
    """Raise :class:`OperationCancelled` when the current thread's work was cancelled."""
    token: CancelToken | None = getattr(_scope, "token", None)
    if token is not None and token.cancelled:
        raise OperationCancelled("the reranking call was cancelled")
