"""Content keys of passages and image references: stable ones for precomputed signals, fast in-process ones
for score caches."""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mm_rerank_components.media.load import _pil
from mm_rerank_components.media.options import is_url
from mm_rerank_components.media.refs import file_stat

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["cache_key", "image_key", "text_key"]


def text_key(text: str) -> str:
    """The content key of a passage: what :class:`~mm_rerank_components.types.Precomputed` text signals
    carry in ``content``, so a signal is reused only for exactly this text.

    Example:
        >>> text_key("a red fox") == text_key("a red fox") != text_key("a red fox.")
        True
    """
    return "text:" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


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
    found = file_stat(ref)
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
    found = file_stat(ref)
    if found is not None:
        info = found[1]
        return ("file", info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if isinstance(ref, str):
        return ("str", len(ref), hash(ref), ref[:32], ref[-32:])
    return ("obj", type(ref).__name__, id(ref))
