"""Turning an image reference into a checked RGB PIL image, decoded only when a scorer reads its pixels.

Accepted references: a ``PIL.Image.Image``; a file path (``str`` or ``os.PathLike``) or ``file://`` URI; raw
``bytes``; a base64 string or ``data:image/...;base64,`` URI; an ``http(s)://`` URL, fetched only when
``ImageOptions(allow_urls=True)``. Every source is size-limited (bytes read and decoded pixels) before it is
decoded, and every failure raises :class:`ImageLoadError` saying what was wrong and what to do.

The package's parts:

* :mod:`~mm_rerank_components.media.load`: :func:`load_image` (decoding, at a reduced size for JPEG when
  the caller says how large a picture it reads; first frame only) and :func:`check_image` (the cheap check
  that stands in for a decode when the scorer reuses a stored signal instead of the pixels);
* :mod:`~mm_rerank_components.media.refs`: what a string reference is (:func:`classify`) and the bytes
  behind a reference (:func:`read_image_bytes`);
* :mod:`~mm_rerank_components.media.fetch`: URLs, with one total deadline;
* :mod:`~mm_rerank_components.media.keys`: content keys (:func:`text_key`, :func:`image_key`) and cache
  keys (:func:`cache_key`);
* :mod:`~mm_rerank_components.media.cancel`: cancellation (:class:`CancelToken`).

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

from mm_rerank_components.media.cancel import (
    CancelToken,
    OperationCancelled,
    cancel_scope,
    check_cancelled,
    current_token,
)
from mm_rerank_components.media.keys import cache_key, image_key, text_key
from mm_rerank_components.media.load import check_image, load_image, to_8bit
from mm_rerank_components.media.options import DEFAULT_IMAGE_OPTIONS, ImageLoadError, ImageOptions, is_url
from mm_rerank_components.media.refs import classify, has_base64_image_header, read_image_bytes

__all__ = [
    "DEFAULT_IMAGE_OPTIONS",
    "CancelToken",
    "ImageLoadError",
    "ImageOptions",
    "OperationCancelled",
    "cache_key",
    "cancel_scope",
    "check_cancelled",
    "check_image",
    "classify",
    "current_token",
    "has_base64_image_header",
    "image_key",
    "is_url",
    "load_image",
    "read_image_bytes",
    "text_key",
    "to_8bit",
]
