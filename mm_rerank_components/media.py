"""Turning an image reference into a checked RGB PIL image.

Accepted references: a ``PIL.Image.Image``; a file path (``str`` or ``os.PathLike``) or ``file://`` URI; raw
``bytes``; a base64 string or ``data:image/...;base64,`` URI; an ``http(s)://`` URL, fetched only when
``ImageOptions(allow_urls=True)``. Every source is size-limited (bytes read and decoded pixels) before it is
decoded, and every failure raises :class:`ImageLoadError` saying what was wrong and what to do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging
import os
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image as PILImage

logger = logging.getLogger(__name__)

_BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/_\-\s]+={0,2}\s*$")
_MIN_BASE64_LEN = 64  # shorter strings are treated as paths, never as inline images


class ImageLoadError(ValueError):
    """An image reference could not be turned into an image (missing, too large, corrupt, not allowed)."""


@dataclass(frozen=True)
class ImageOptions:
    """Limits and permissions for reading images.

    Attributes:
        allow_urls: fetch ``http(s)://`` references. Off by default: a URL in a candidate is an error
            until the caller opts in.
        max_bytes: largest encoded image accepted (file size, bytes, decoded base64, download).
        max_pixels: largest decoded image accepted (width x height), checked before pixels are decoded.
        url_timeout: seconds for connecting and reading a URL.

    Example:
        >>> ImageOptions(allow_urls=True, max_bytes=5_000_000).allow_urls
        True
    """

    allow_urls: bool = False
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    url_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError(f"ImageOptions.max_bytes must be > 0, got {self.max_bytes!r}")
        if self.max_pixels <= 0:
            raise ValueError(f"ImageOptions.max_pixels must be > 0, got {self.max_pixels!r}")
        if self.url_timeout <= 0:
            raise ValueError(f"ImageOptions.url_timeout must be > 0, got {self.url_timeout!r}")


DEFAULT_IMAGE_OPTIONS = ImageOptions()


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow is a core dependency
        raise ImportError("Reading images needs pillow: pip install pillow") from exc
    return Image


def is_url(ref: object) -> bool:
    return isinstance(ref, str) and ref[:8].lower().startswith(("http://", "https://"))


def _describe(ref: object) -> str:
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return f"<{len(ref)} bytes>"
    if isinstance(ref, str) and len(ref) > 80:
        return repr(ref[:60] + "...")
    return repr(ref)


def load_image(ref: object, options: ImageOptions = DEFAULT_IMAGE_OPTIONS) -> PILImage.Image:
    """Decode ``ref`` into an RGB image, enforcing ``options``.

    Transparent pixels are composited onto white (product shots and cut-outs read better that way than on
    black). Animated images give their first frame.

    Example:
        >>> from PIL import Image
        >>> load_image(Image.new("RGBA", (4, 4))).mode
        'RGB'
    """
    Image = _pil()
    if isinstance(ref, Image.Image):
        _check_pixels(ref.size, ref, options)
        return _to_rgb(ref)
    data = read_image_bytes(ref, options)
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as exc:  # PIL raises several unrelated types for undecodable data
        raise ImageLoadError(
            f"cannot decode image {_describe(ref)}: {exc}; pass a PNG, JPEG, WebP, GIF or BMP image"
        ) from exc
    _check_pixels(image.size, ref, options)
    try:
        image.load()
    except Exception as exc:
        raise ImageLoadError(f"image {_describe(ref)} is truncated or corrupt: {exc}") from exc
    return _to_rgb(image)


def read_image_bytes(ref: object, options: ImageOptions = DEFAULT_IMAGE_OPTIONS) -> bytes:
    """The encoded bytes behind a path, URI, URL, base64 string or bytes, size-checked."""
    if isinstance(ref, (bytes, bytearray, memoryview)):
        data = bytes(ref)
        _check_bytes(len(data), ref, options)
        return data
    if isinstance(ref, os.PathLike):
        return _read_file(Path(os.fspath(ref)), ref, options)
    if not isinstance(ref, str):
        raise ImageLoadError(
            f"unsupported image reference of type {type(ref).__name__}: pass a path, bytes, a base64 "
            "string, a data URI, a URL or a PIL image"
        )
    stripped = ref.strip()
    lowered = stripped[:16].lower()
    if lowered.startswith("data:"):
        return _decode_data_uri(stripped, options)
    if is_url(stripped):
        if not options.allow_urls:
            raise ImageLoadError(
                f"image {_describe(ref)} is a URL and fetching URLs is off; pass "
                "image_options=ImageOptions(allow_urls=True) to allow it, or give a local file"
            )
        return _fetch_url(stripped, options)
    if lowered.startswith("file://"):
        parsed = urllib.parse.urlparse(stripped)
        return _read_file(Path(urllib.request.url2pathname(parsed.path)), ref, options)
    # base64 never contains '.', and a path to an image almost always does (its extension)
    if (
        len(stripped) >= _MIN_BASE64_LEN
        and "." not in stripped
        and _BASE64_CHARS.match(stripped)
        and not _exists(stripped)
    ):
        return _decode_base64(stripped, ref, options)
    if len(stripped) < 4096 and "\n" not in stripped:
        path = Path(stripped).expanduser()
        if path.exists() or "." in path.name or os.sep in stripped:
            return _read_file(path, ref, options)
    raise ImageLoadError(
        f"image {_describe(ref)} is not an existing file, a URL, a data URI or base64 data; check the path"
    )


def _exists(text: str) -> bool:
    try:
        return Path(text).exists()
    except OSError:  # e.g. a long base64 string is "File name too long" as a path
        return False


def _read_file(path: Path, ref: object, options: ImageOptions) -> bytes:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageLoadError(f"image file not found: {str(path)!r}; check the path") from None
    except OSError as exc:
        raise ImageLoadError(f"cannot read image file {str(path)!r}: {exc}") from exc
    if path.is_dir():
        raise ImageLoadError(f"image path {str(path)!r} is a directory, not an image file")
    _check_bytes(size, ref, options)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageLoadError(f"cannot read image file {str(path)!r}: {exc}") from exc


def _decode_data_uri(uri: str, options: ImageOptions) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep or not header.lower().startswith("data:"):
        raise ImageLoadError(f"malformed data URI {_describe(uri)}: expected 'data:image/png;base64,...'")
    if not header.lower().endswith(";base64"):
        raise ImageLoadError(
            f"data URI {_describe(uri)} is not base64-encoded; use 'data:image/...;base64,<data>'"
        )
    return _decode_base64(payload, uri, options)


def _decode_base64(text: str, ref: object, options: ImageOptions) -> bytes:
    compact = re.sub(r"\s+", "", text)
    _check_bytes(len(compact) * 3 // 4, ref, options)
    try:
        if "-" in compact or "_" in compact:
            return base64.urlsafe_b64decode(compact + "=" * (-len(compact) % 4))
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageLoadError(f"invalid base64 image data {_describe(ref)}: {exc}") from exc


def _fetch_url(url: str, options: ImageOptions) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "mm-rerank-components"})
    try:
        with urllib.request.urlopen(request, timeout=options.url_timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit():
                _check_bytes(int(length), url, options)
            data = response.read(options.max_bytes + 1)
    except ImageLoadError:
        raise
    except Exception as exc:  # urllib raises URLError, HTTPError, timeouts, socket errors
        raise ImageLoadError(f"cannot fetch image URL {url!r}: {exc}") from exc
    _check_bytes(len(data), url, options)
    return bytes(data)


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


def _to_rgb(image: PILImage.Image) -> PILImage.Image:
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if not has_alpha:
        return image.convert("RGB")
    Image = _pil()
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def text_key(text: str) -> str:
    """The content key of a passage: what :class:`~mm_rerank_components.types.Precomputed` text signals
    carry in ``content``, so a signal is reused only for exactly this text.

    Example:
        >>> text_key("a red fox") == text_key("a red fox") != text_key("a red fox.")
        True
    """
    return "text:" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def image_key(ref: object) -> str:
    """A cheap content key of an image reference, for score caches and for the ``content`` of
    :class:`~mm_rerank_components.types.Precomputed` image signals (the same reference gives the same key).

    Files are keyed by resolved path, size and modification time (no read); bytes, base64 and PIL images by
    a hash of their content; URLs by the URL.
    """
    Image = _pil()
    if isinstance(ref, Image.Image):
        digest = hashlib.blake2b(ref.tobytes(), digest_size=16)
        digest.update(f"{ref.mode}{ref.size}".encode())
        return "pil:" + digest.hexdigest()
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return "bytes:" + hashlib.blake2b(bytes(ref), digest_size=16).hexdigest()
    if isinstance(ref, os.PathLike) or (
        isinstance(ref, str) and not is_url(ref) and len(ref) < 4096 and "\n" not in ref
    ):
        text = os.fspath(ref)
        if text.lower().startswith("file://"):
            text = urllib.request.url2pathname(urllib.parse.urlparse(text).path)
        path = Path(text).expanduser()
        try:
            stat = path.stat()
        except OSError:
            stat = None
        if stat is not None:
            return f"file:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if isinstance(ref, str):
        if is_url(ref):
            return "url:" + ref
        return "str:" + hashlib.blake2b(ref.encode(), digest_size=16).hexdigest()
    return f"obj:{type(ref).__name__}:{id(ref)}"
