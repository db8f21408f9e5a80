"""Turning an image reference into a checked RGB PIL image.

Accepted references: a ``PIL.Image.Image``; a file path (``str`` or ``os.PathLike``) or ``file://`` URI; raw
``bytes``; a base64 string or ``data:image/...;base64,`` URI; an ``http(s)://`` URL, fetched only when
``ImageOptions(allow_urls=True)``. Every source is size-limited (bytes read and decoded pixels) before it is
decoded, and every failure raises :class:`ImageLoadError` saying what was wrong and what to do.

What guards what (see ``docs/security.md``):

* files: only regular files are read (a device, FIFO or socket fails at once), and never more than
  ``max_bytes + 1`` bytes;
* strings are told apart by cheap checks (prefix, length, characters, the first decoded bytes), so a long
  base64 string never reaches the filesystem;
* URLs: off unless allowed; ``url_timeout`` is a total deadline for connecting, redirects and the body,
  and only ``http``/``https`` redirects are followed;
* 16/32-bit and float greyscale pictures are scaled to 8 bits, not clipped.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import http.client
import io
import logging
import os
import re
import socket
import stat
import sys
import threading
import time
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image as PILImage

logger = logging.getLogger(__name__)

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


class ImageLoadError(ValueError):
    """An image reference could not be turned into an image (missing, too large, corrupt, not allowed)."""


class OperationCancelled(RuntimeError):
    """The caller cancelled the work (an ``arerank`` task was cancelled); nothing more is read or scored."""


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


# -- cancellation ----------------------------------------------------------------------------------------


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


# -- loading -------------------------------------------------------------------------------------------------


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
    if isinstance(ref, (str, os.PathLike)):
        return repr(os.fspath(ref))
    return f"<{type(ref).__name__}>"


_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _reason(exc: BaseException) -> str:
    """An exception's message without ``<_io.BytesIO object at 0x...>`` noise."""
    return _OBJECT_REPR.sub("", str(exc)) or type(exc).__name__


def load_image(ref: object, options: ImageOptions = DEFAULT_IMAGE_OPTIONS) -> PILImage.Image:
    """Decode ``ref`` into an RGB image, enforcing ``options``.

    Transparent pixels are composited onto white (product shots and cut-outs read better that way than on
    black). Animated images give their first frame. 16-bit, 32-bit and float greyscale pictures are scaled
    to 8 bits (see :func:`to_8bit`).

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
    check_cancelled()
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(
            f"image {_describe(ref)} is over the pixel limit of ImageOptions.max_pixels "
            f"({options.max_pixels}) and Pillow's: {_reason(exc)}; downscale the image"
        ) from exc
    except Exception as exc:  # PIL raises several unrelated types for undecodable data
        raise ImageLoadError(
            f"cannot decode image {_describe(ref)}: {_reason(exc)}; pass a PNG, JPEG, WebP, GIF, BMP or "
            "TIFF image"
        ) from exc
    _check_pixels(image.size, ref, options)
    try:
        image.load()
    except Exception as exc:
        raise ImageLoadError(f"image {_describe(ref)} is truncated or corrupt: {_reason(exc)}") from exc
    return _to_rgb(image)


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
        return _fetch_url(text, options)
    if kind == "file-uri":
        return _read_file(urllib.request.url2pathname(urllib.parse.urlparse(text).path), ref, options)
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


def _read_file(path: str, ref: object, options: ImageOptions) -> bytes:
    """Read a regular file, never more than ``max_bytes + 1`` bytes; anything else fails at once."""
    if "\x00" in path:
        raise ImageLoadError(
            f"image path {_describe(ref)} contains a NUL byte, which no file name can hold; check the path"
        )
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below anyway
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ImageLoadError(_not_found(path, ref)) from None
    except OSError as exc:
        raise ImageLoadError(f"cannot read image file {path!r}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ImageLoadError(f"image path {path!r} is a directory, not an image file")
        if not stat.S_ISREG(info.st_mode):
            raise ImageLoadError(
                f"image path {path!r} is not a regular file (a device, FIFO or socket); pass an image file"
            )
        _check_bytes(info.st_size, ref, options)
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


# -- URLs ------------------------------------------------------------------------------------------


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


def _fetch_url(url: str, options: ImageOptions) -> bytes:
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


# -- checks and conversion -----------------------------------------------------------------------------------


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


def to_8bit(image: PILImage.Image) -> PILImage.Image:
    """A greyscale ``"L"`` image from a 16-bit, 32-bit or float one, scaled rather than clipped.

    ``I;16`` modes map 0..65535 to 0..255. ``I`` (32-bit integers) is read as 16-bit when its values fit
    0..65535, which is what Pillow gives for 16-bit files, else its own range is stretched to 0..255.
    ``F`` (float) is read as 0..1 when its values fit, else stretched. Other modes are returned unchanged.

    Example:
        >>> from PIL import Image
        >>> to_8bit(Image.new("I;16", (2, 2), 65535)).getpixel((0, 0))
        255
    """
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    import numpy as np

    values = np.asarray(image.convert("F") if image.mode != "F" else image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and high <= 65535):
        low, scale = 0.0, 255.0 / 65535.0
    elif image.mode == "F" and low >= 0 and high <= 1.0:
        low, scale = 0.0, 255.0
    else:
        scale = 255.0 / (high - low) if high > low else 0.0
    scaled = np.nan_to_num((values - low) * scale, nan=0.0, posinf=255.0, neginf=0.0)
    return _pil().fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _to_rgb(image: PILImage.Image) -> PILImage.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return to_8bit(image).convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if not has_alpha:
        return image.convert("RGB")
    Image = _pil()
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


# -- content keys ----------------------------------------------------------------------------------


def text_key(text: str) -> str:
    """The content key of a passage: what :class:`~mm_rerank_components.types.Precomputed` text signals
    carry in ``content``, so a signal is reused only for exactly this text.

    Example:
        >>> text_key("a red fox") == text_key("a red fox") != text_key("a red fox.")
        True
    """
    return "text:" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _file_stat(ref: object) -> tuple[str, os.stat_result] | None:
    """The path and ``stat`` of a reference that names an existing file, without touching the filesystem
    for a string that cannot be a path."""
    if isinstance(ref, str):
        text = ref.strip()
        kind = classify(text)
        if kind == "file-uri":
            text = urllib.request.url2pathname(urllib.parse.urlparse(text).path)
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


def image_key(ref: object) -> str:
    """A stable content key of an image reference, for the ``content`` of
    :class:`~mm_rerank_components.types.Precomputed` image signals (the same reference gives the same key,
    in any process).

    Files are keyed by resolved path, size and modification time (no read); bytes, base64 and PIL images by
    a hash of their content; URLs by the URL.

    Example:
        >>> image_key(b"GIF89a...") == image_key(b"GIF89a...")
        True
    """
    Image = _pil()
    if isinstance(ref, Image.Image):
        return "pil:" + _PIXEL_KEYS.get(ref)
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return "bytes:" + hashlib.blake2b(ref, digest_size=16).hexdigest()
    found = _file_stat(ref)
    if found is not None:
        path, info = found
        return f"file:{Path(path).resolve()}:{info.st_size}:{info.st_mtime_ns}"
    if isinstance(ref, str):
        if is_url(ref):
            return "url:" + ref
        return "str:" + hashlib.blake2b(ref.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return f"obj:{type(ref).__name__}:{id(ref)}"


def _pixel_digest(image: PILImage.Image) -> str:
    digest = hashlib.blake2b(image.tobytes(), digest_size=16)
    digest.update(f"{image.mode}{image.size}".encode())
    return digest.hexdigest()


class _PixelKeys:
    """Pixel digests of PIL images, computed once per image object (held weakly)."""

    def __init__(self) -> None:
        self._keys: dict[int, tuple[weakref.ref[Any], str]] = {}
        self._lock = threading.Lock()

    def get(self, image: PILImage.Image) -> str:
        ident = id(image)
        with self._lock:
            entry = self._keys.get(ident)
        if entry is not None and entry[0]() is image:
            return entry[1]
        key = _pixel_digest(image)

        def forget(_: object, ident: int = ident) -> None:
            with self._lock:
                self._keys.pop(ident, None)

        with self._lock:
            self._keys[ident] = (weakref.ref(image, forget), key)
        return key


_PIXEL_KEYS = _PixelKeys()


def cache_key(ref: object) -> Hashable:
    """A fast in-process key of an image reference, for score caches; never hashes pixels twice.

    Unlike :func:`image_key` it is only valid inside this process: a file is keyed by its identity (device,
    inode, size, modification time), bytes and strings by Python's own hash of the object (computed once
    per object) with the length and both ends, a PIL image by a digest of its pixels computed once per
    image object (so an image must not be changed in place between calls that share a cache).

    Example:
        >>> cache_key(b"GIF89a...") == cache_key(b"GIF89a...")
        True
    """
    Image = _pil()
    if isinstance(ref, Image.Image):
        return ("pil", _PIXEL_KEYS.get(ref))
    if isinstance(ref, (bytearray, memoryview)):
        ref = bytes(ref)
    if isinstance(ref, bytes):
        return ("bytes", len(ref), hash(ref), ref[:32], ref[-32:])
    found = _file_stat(ref)
    if found is not None:
        info = found[1]
        return ("file", info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if isinstance(ref, str):
        return ("str", len(ref), hash(ref), ref[:32], ref[-32:])
    return ("obj", type(ref).__name__, id(ref))
