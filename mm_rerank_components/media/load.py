"""Decoding an image reference into a checked RGB PIL image, and the cheap check that stands in for a decode.

The reranker decodes a picture only when its scorer reads the pixels (:meth:`BaseScorer.needs_pixels
<mm_rerank_components.scorers.base.BaseScorer.needs_pixels>`); otherwise :func:`check_image` confirms the
reference is there (a ``stat`` for a file, a length for bytes and base64) without reading it. When the
scorer says how large a picture it reads (``image_side``), a JPEG is decoded at a reduced DCT scale that
still covers that size (Pillow's draft mode), and an animated WebP or GIF gives its first frame only.
"""

from __future__ import annotations

import io
import math
import os
from typing import TYPE_CHECKING, Any

from mm_rerank_components.media.cancel import check_cancelled
from mm_rerank_components.media.options import (
    DEFAULT_IMAGE_OPTIONS,
    ImageLoadError,
    ImageOptions,
    _check_bytes,
    _check_pixels,
    _describe,
    _reason,
)
from mm_rerank_components.media.refs import check_file, classify, read_image_bytes, uri_path

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["check_image", "load_image", "to_8bit"]


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow is a core dependency
        raise ImportError("Reading images needs pillow: pip install pillow") from exc
    return Image


def load_image(
    ref: object,
    options: ImageOptions = DEFAULT_IMAGE_OPTIONS,
    *,
    longest_side: int | None = None,
) -> PILImage.Image:
    """Decode ``ref`` into an RGB image, enforcing ``options``.

    Transparent pixels are composited onto white (product shots and cut-outs read better that way than on
    black). Animated images give their first frame, and only that frame is decoded. 16-bit, 32-bit and
    float greyscale pictures are scaled to 8 bits (see :func:`to_8bit`).

    ``longest_side`` is the longest side, in pixels, of the picture the caller reads (a scorer's
    ``image_side``): a JPEG whose longest side is at least twice that is decoded at 1/2, 1/4 or 1/8 scale
    (JPEG's DCT scaling: the largest reduction that keeps the longest side at least ``longest_side``),
    a fraction of the cost of a full decode. Other formats, and ``None``, decode in full.

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
    if longest_side is not None and image.format == "JPEG":
        _draft(image, longest_side)
    try:
        image.load()  # the current frame only: an animated file stays at its first frame
    except Exception as exc:
        raise ImageLoadError(f"image {_describe(ref)} is truncated or corrupt: {_reason(exc)}") from exc
    return _to_rgb(image)


def _draft(image: Any, longest_side: int) -> None:
    """Ask the JPEG decoder for the smallest DCT scale whose longest side is still ``longest_side``."""
    if isinstance(longest_side, bool) or not isinstance(longest_side, int) or longest_side < 1:
        raise ValueError(f"longest_side must be a positive int of pixels, got {longest_side!r}")
    width, height = image.size
    scale = longest_side / max(width, height)
    if scale > 0.5:
        return  # no DCT reduction (1/2 at least) keeps enough pixels
    # draft() keeps both sides at least what is asked: ask for the proportional size
    image.draft(image.mode, (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))


def check_image(ref: object, options: ImageOptions = DEFAULT_IMAGE_OPTIONS) -> None:
    """Raise :class:`ImageLoadError` for what can be known about ``ref`` without reading or decoding it.

    A file must exist, be a regular file and be within ``max_bytes`` (one ``stat``); bytes and base64
    must be within ``max_bytes`` (by length); a URL must be allowed; a PIL image must be within
    ``max_pixels``. Content that does not decode is only found by :func:`load_image`.

    Example:
        >>> try:
        ...     check_image("no/such/picture.png")
        ... except ImageLoadError as exc:
        ...     print(exc)
        image file not found: 'no/such/picture.png'; check the path
    """
    Image = _pil()
    if isinstance(ref, Image.Image):
        _check_pixels(ref.size, ref, options)
        return
    if isinstance(ref, (bytes, bytearray, memoryview)):
        _check_bytes(len(ref), ref, options)
        return
    if isinstance(ref, os.PathLike):
        check_file(os.fspath(ref), ref, options)
        return
    if not isinstance(ref, str):
        read_image_bytes(ref, options)  # raises the unsupported-type error
        return
    text = ref.strip()
    kind = classify(text)
    if kind == "path":
        check_file(os.path.expanduser(text), ref, options)
    elif kind == "file-uri":
        check_file(uri_path(text), ref, options)
    elif kind == "url":
        if not options.allow_urls:
            read_image_bytes(text, options)  # raises the URLs-are-off error
    else:  # base64 or a data URI: about 3 bytes per 4 characters
        _check_bytes(len(text) * 3 // 4, ref, options)


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
