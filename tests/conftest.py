from __future__ import annotations

import base64
import io
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image


def png_bytes(
    color: tuple[int, ...] = (200, 30, 30), size: tuple[int, int] = (16, 16), mode: str = "RGB"
) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def red_png(tmp_path: Path) -> Path:
    path = tmp_path / "red.png"
    path.write_bytes(png_bytes((220, 20, 20)))
    return path


@pytest.fixture
def blue_png(tmp_path: Path) -> Path:
    path = tmp_path / "blue.png"
    path.write_bytes(png_bytes((20, 20, 220)))
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def live_server() -> Iterator[Callable[..., Any]]:
    """Start ASGI apps under uvicorn on 127.0.0.1 (see tests/_live_server.py); all stop after the test.

    ``live_server(app, **uvicorn_config)`` returns the started :class:`LiveServer` (``.url``, ``.port``).
    """
    pytest.importorskip("uvicorn")
    from _live_server import LiveServer

    started: list[LiveServer] = []

    def start(app: Any, **config: Any) -> LiveServer:
        server = LiveServer(app, **config).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


# -- in CI a test file may not turn green by skipping: a missing extra is a failure there --------------

_MISSING_EXTRA = ("could not import", "No module named")


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    """Under CI=true, a module skipped by ``pytest.importorskip`` fails collection instead."""
    outcome = yield
    report = outcome.get_result()
    if _ci() and report.skipped and any(marker in str(report.longrepr) for marker in _MISSING_EXTRA):
        report.outcome = "failed"
        report.longrepr = (
            f"{collector.nodeid}: skipped because an extra did not import ({report.longrepr}); "
            "CI installs every extra (pip install -e '.[dev]'), so this is a broken install, not a skip"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under CI=true, a test that skips because an import failed is a failure, not a skip."""
    outcome = yield
    report = outcome.get_result()
    if _ci() and report.skipped and any(marker in str(report.longrepr) for marker in _MISSING_EXTRA):
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid}: skipped because an extra did not import ({report.longrepr})"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop a local Ray that a test left running (RayEngine starts one on demand), before the interpreter
    exits: Ray's threads torn down during interpreter finalization can crash the process after the
    summary (seen once as exit 139 in CI)."""
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        ray.shutdown()
