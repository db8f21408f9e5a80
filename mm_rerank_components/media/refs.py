"""What an image reference is, and the encoded bytes behind it, by cheap checks and size-limited reads.

Strings are told apart by prefix, length, characters and the first decoded bytes, so a long base64 string
never reaches the filesystem; files are read only when regular and never past ``max_bytes + 1`` bytes.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
import sys
import urllib.parse
from typing import Any

from mm_rerank_components.media.options import (
    DEFAULT_IMAGE_OPTIONS,
    ImageLoadError,
    ImageOptions,
    _check_bytes,
    _describe,
)

__all__ = ["check_file", "classify", "file_stat", "has_base64_image_header", "read_image_bytes", "uri_path"]

_MAX_PATH = 4096  # longer strings cannot be a path on Linux, so they are never handed to the filesystem
_MAX_NAME = 255  # nor can a string with a longer path component
_WHITESPACE = (" ", "\n", "\r", "\t", "\f", "\v")
# first bytes of the image formats Pillow reads, to recognise base64 image data without decoding it all
_MAGIC: tuple[bytes, ...] = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF, little endian
    b"MM\x00*",  # TIFF, big endian
    b"\x00\x00\x01\x00",  # ICO
    b"\x00\x00\x00\x0cjP  ",  # JPEG 2000
    b"8BPS",  # Photoshop
    b"qoif",
)


def read_image_bytes(ref: object, options: ImageOptions = DEFAULT_IMAGE_OPTIONS) -> bytes:
    """The encoded bytes behind a path, URI, URL, base64 string or bytes, size-checked.

    Example:
        >>> read_image_bytes(b"GIF89a...")[:6]
        b'GIF89a'
    """
    if isinstance(ref, (bytes, bytearray, memoryview)):
        _check_bytes(len(ref), ref, options)
        return bytes(ref)
    if isinstance(ref, os.PathLike):
        return _read_file(os.fspath(ref), ref, options)
    if not isinstance(ref, str):
        raise ImageLoadError(
            f"unsupported image reference of type {type(ref).__name__}: pass a path, bytes, a base64 "
            "string, a data URI, a URL or a PIL image"
        )
    return _read_str(ref.strip(), ref, options)


def _read_str(text: str, ref: str, options: ImageOptions) -> bytes:
    kind = classify(text)
    if kind == "data":
        return _decode_data_uri(text, options)
    if kind == "url":
        if not options.allow_urls:
            raise ImageLoadError(
                f"image {_describe(ref)} is a URL and fetching URLs is off; pass "
                "image_options=ImageOptions(allow_urls=True) to allow it, or give a local file"
            )
        from mm_rerank_components.media.fetch import fetch_url  # http.client and ssl only when fetching

        return fetch_url(text, options)
    if kind == "file-uri":
        return _read_file(uri_path(text), ref, options)
    if kind == "base64":
        return _decode_base64(text, ref, options)
    return _read_file(os.path.expanduser(text), ref, options)


def classify(text: str) -> str:
    """What a string image reference is, by cheap checks only (prefix, length, characters, first bytes).

    Returns ``"data"`` (data URI), ``"url"``, ``"file-uri"``, ``"base64"`` or ``"path"``. A string that
    cannot be a path (4096 characters or more, a line break, or a part between slashes over 255
    characters) is base64; another is base64 when its first characters decode to the header of a known
    image format, otherwise a path.

    Example:
        >>> classify("photos/fox.jpg"), classify("R0lGODlhAQABAAAAACw="), classify("https://x.org/a.png")
        ('path', 'base64', 'url')
    """
    head = text[:16].lower()
    if head.startswith("data:"):
        return "data"
    if head.startswith(("http://", "https://")):
        return "url"
    if head.startswith("file://"):
        return "file-uri"
    if len(text) >= _MAX_PATH or "\n" in text or "\r" in text:
        return "base64"
    if len(text) > _MAX_NAME and max(map(len, text.split("/"))) > _MAX_NAME:
        return "base64"  # a name longer than any file name can be
    if "." not in text and has_base64_image_header(text):
        return "base64"  # base64 never holds a '.', and a file name almost always does
    return "path"


def has_base64_image_header(text: str) -> bool:
    """True when ``text`` starts with base64 of a known image header (decodes 24 characters at most).

    Example:
        >>> has_base64_image_header("R0lGODlhAQABAAAAACw="), has_base64_image_header("a red fox")
        (True, False)
    """
    head = text[:24]
    head = head[: len(head) - len(head) % 4]
    if len(head) < 8:
        return False
    try:
        if "-" in head or "_" in head:
            prefix = base64.urlsafe_b64decode(head)
        else:
            prefix = base64.b64decode(head, validate=True)
    except (binascii.Error, ValueError):
        return False
    if prefix.startswith(_MAGIC):
        return True
    if prefix.startswith(b"RIFF"):
        return prefix[8:12] == b"WEBP"
    if prefix[4:8] == b"ftyp":  # AVIF, HEIC
        return True
    # BMP: "BM", the file size, then four reserved zero bytes
    return prefix.startswith(b"BM") and len(prefix) >= 10 and prefix[6:10] == b"\x00\x00\x00\x00"


def uri_path(uri: str) -> str:
    """The local path of a ``file://`` URI.

    Example:
        >>> uri_path("file:///data/a%20fox.jpg")
        '/data/a fox.jpg'
    """
    path = urllib.parse.urlparse(uri).path
    if os.name == "nt":  # pragma: no cover - drive letters and backslashes
        from urllib.request import url2pathname

        return url2pathname(path)
    return urllib.parse.unquote(path)


def _check_path(path: str, ref: object) -> None:
    if "\x00" in path:
        raise ImageLoadError(
            f"image path {_describe(ref)} contains a NUL byte, which no file name can hold; check the path"
        )


def _check_info(info: os.stat_result, path: str, ref: object, options: ImageOptions) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise ImageLoadError(f"image path {path!r} is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageLoadError(
            f"image path {path!r} is not a regular file (a device, FIFO or socket); pass an image file"
        )
    _check_bytes(info.st_size, ref, options)


def check_file(path: str, ref: object, options: ImageOptions = DEFAULT_IMAGE_OPTIONS) -> None:
    """What :func:`read_image_bytes` would report about a file before reading it, from one ``stat``:
    missing, not a regular file, over ``max_bytes``.

    Example:
        >>> try:
        ...     check_file("no/such.png", "no/such.png")
        ... except ImageLoadError as exc:
        ...     print(exc)
        image file not found: 'no/such.png'; check the path
    """
    _check_path(path, ref)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ImageLoadError(_not_found(path, ref)) from None
    except OSError as exc:
        raise ImageLoadError(f"cannot read image file {path!r}: {exc.strerror or exc}") from exc
    _check_info(info, path, ref, options)


def _read_file(path: str, ref: object, options: ImageOptions) -> bytes:
    """Read a regular file, never more than ``max_bytes + 1`` bytes; anything else fails at once."""
    _check_path(path, ref)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below anyway
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ImageLoadError(_not_found(path, ref)) from None
    except OSError as exc:
        raise ImageLoadError(f"cannot read image file {path!r}: {exc.strerror or exc}") from exc
    try:
        _check_info(os.fstat(fd), path, ref, options)
        data = _read_fd(fd, options.max_bytes + 1)
    except OSError as exc:
        raise ImageLoadError(f"cannot read image file {path!r}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    _check_bytes(len(data), ref, options)  # the file grew after fstat
    return data


def _read_fd(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _not_found(path: str, ref: object) -> str:
    if "/" in path or os.sep in path or "." in path:
        return f"image file not found: {path!r}; check the path"
    return (
        f"image {_describe(ref)} is not an existing file, a URL, a data URI or base64 data of a PNG, JPEG, "
        "GIF, WebP, BMP or TIFF image; check the path"
    )


def _decode_data_uri(uri: str, options: ImageOptions) -> bytes:
    comma = uri.find(",", 0, 256)  # the header is short; the payload is never copied to find it
    header = uri[:comma] if comma >= 0 else ""
    if comma < 0 or not header.lower().startswith("data:"):
        raise ImageLoadError(f"malformed data URI {_describe(uri)}: expected 'data:image/png;base64,...'")
    if not header.lower().endswith(";base64"):
        raise ImageLoadError(
            f"data URI {_describe(uri)} is not base64-encoded; use 'data:image/...;base64,<data>'"
        )
    return _decode_base64(uri, uri, options, start=comma + 1)


def _decode_base64(text: str, ref: object, options: ImageOptions, *, start: int = 0) -> bytes:
    """Decode ``text[start:]``; whitespace is removed only when strict decoding fails (no regex pass
    over clean data)."""
    _check_bytes((len(text) - start) * 3 // 4, ref, options)
    try:
        return _b64decode(text, start)
    except (binascii.Error, ValueError) as exc:
        error: Exception = exc
    if any(ws in text for ws in _WHITESPACE):
        try:
            return _b64decode(re.sub(r"\s+", "", text[start:]), 0)
        except (binascii.Error, ValueError) as exc:
            error = exc
    raise ImageLoadError(f"invalid base64 image data {_describe(ref)}: {error}") from error


def _fast_base64() -> Any | None:
    """``pybase64`` (SIMD, 10 to 50 times the standard library's speed) when it is installed."""
    global _PYBASE64
    if _PYBASE64 is False:
        try:
            import pybase64
        except ImportError:
            _PYBASE64 = None
        else:
            _PYBASE64 = pybase64
    return _PYBASE64


_PYBASE64: Any = False  # not looked up yet


def _b64decode(text: str, start: int) -> bytes:
    """Strict base64 decoding of ``text[start:]`` (standard or URL-safe alphabet, padding optional)."""
    if not text.isascii():
        raise ValueError("only ASCII characters can be base64")
    encoded = text.encode("ascii")  # one plain copy; the decoders take bytes
    data: bytes | memoryview = memoryview(encoded)[start:] if start else encoded
    size = len(data)
    if encoded.find(b"-", start) >= 0 or encoded.find(b"_", start) >= 0:
        data = bytes(data).translate(_URLSAFE)
    if size % 4:
        data = bytes(data) + b"=" * (-size % 4)
    fast = _fast_base64()
    if fast is not None:
        decoded: bytes = fast.b64decode(data, validate=True)
        return decoded
    if sys.version_info >= (3, 11):
        return binascii.a2b_base64(data, strict_mode=True)
    return base64.b64decode(data, validate=True)  # pragma: no cover - Python 3.10


_URLSAFE = bytes.maketrans(b"-_", b"+/")


def file_stat(ref: object) -> tuple[str, os.stat_result] | None:
    """The path and ``stat`` of a reference that names an existing file, without touching the filesystem
    for a string that cannot be a path."""
    if isinstance(ref, str):
        text = ref.strip()
        kind = classify(text)
        if kind == "file-uri":
            text = uri_path(text)
        elif kind != "path":
            return None
    elif isinstance(ref, os.PathLike):
        text = os.fspath(ref)
        if not isinstance(text, str):
            return None
    else:
        return None
    if "\x00" in text:
        return None
    if text[:1] == "~":
        text = os.path.expanduser(text)
    try:
        return text, os.stat(text)
    except (OSError, ValueError):
        return None
