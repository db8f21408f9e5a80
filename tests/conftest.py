from __future__ import annotations

import base64
import io
from pathlib import Path

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
