"""Limits and permissions for reading images, the error every failure raises, and the checks they share."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

__all__ = ["DEFAULT_IMAGE_OPTIONS", "ImageLoadError", "ImageOptions", "is_url"]


class ImageLoadError(ValueError):
    """An image reference could not be turned into an image (missing, too large, corrupt, not allowed)."""


@dataclass(frozen=True)
class ImageOptions:
    """Limits and permissions for reading images.

    Attributes:
        allow_urls: fetch ``http(s)://`` references. Off by default: a URL in a candidate is an error
            until the caller opts in.
        max_bytes: largest encoded image accepted (file size, bytes, decoded base64, download). At most
            ``max_bytes + 1`` bytes are ever read.
        max_pixels: largest decoded image accepted (width x height), checked before pixels are decoded.
        url_timeout: total seconds for one URL: connecting, redirects and the whole body.

    Example:
        >>> ImageOptions(allow_urls=True, max_bytes=5_000_000).allow_urls
        True
    """

    allow_urls: bool = False
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    url_timeout: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int) or self.max_bytes <= 0:
            raise ValueError(f"ImageOptions.max_bytes must be > 0 (an int of bytes), got {self.max_bytes!r}")
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) or self.max_pixels <= 0:
            raise ValueError(
                f"ImageOptions.max_pixels must be > 0 (an int of pixels), got {self.max_pixels!r}"
            )
        if not isinstance(self.url_timeout, (int, float)) or not self.url_timeout > 0:
            raise ValueError(f"ImageOptions.url_timeout must be > 0 seconds, got {self.url_timeout!r}")


DEFAULT_IMAGE_OPTIONS = ImageOptions()


def is_url(ref: object) -> bool:
    return isinstance(ref, str) and ref[:8].lower().startswith(("http://", "https://"))


def _describe(ref: object) -> str:
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return f"<{len(ref)} bytes>"
    if isinstance(ref, str) and len(ref) > 80:
        return repr(ref[:60] + "...")
    if isinstance(ref, (str, os.PathLike)):
        return repr(os.fspath(ref))
    return f"<{type(ref).__name__}>"


_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _reason(exc: BaseException) -> str:
    """An exception's message without ``<_io.BytesIO object at 0x...>`` noise."""
    return _OBJECT_REPR.sub("", str(exc)) or type(exc).__name__


def _check_bytes(n: int, ref: object, options: ImageOptions) -> None:
    if n > options.max_bytes:
        raise ImageLoadError(
            f"image {_describe(ref)} is {n} bytes, over the limit of {options.max_bytes}; raise "
            "ImageOptions(max_bytes=...) or downscale the image"
        )


def _check_pixels(size: tuple[int, int], ref: object, options: ImageOptions) -> None:
    width, height = size
    if width * height > options.max_pixels:
        raise ImageLoadError(
            f"image {_describe(ref)} is {width}x{height} pixels, over the limit of {options.max_pixels}; "
            "raise ImageOptions(max_pixels=...) or downscale the image"
        )
    if width == 0 or height == 0:
        raise ImageLoadError(f"image {_describe(ref)} is empty ({width}x{height} pixels)")
