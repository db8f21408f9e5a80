"""Image preprocessing for the starter classifier: RGB on white, letterbox, views for test-time augmentation.

Pure PIL + numpy (no torch), so the geometry is easy to test on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

IMAGE_SIZE = 224
_WHITE = (255, 255, 255)


_WIDE_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")


def to_8bit(image: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit or float greyscale image to 8 bits (mode ``"L"``); other modes pass through.

    Pillow's ``convert("RGB")`` *clips* such pixels at 255, so a 16-bit photo turns white. The scale
    follows the mode and the values' range: ``I;16`` modes and integers up to 65,535 are 16-bit (divided
    by 257), floats within ``[0, 1]`` are multiplied by 255, values within ``[0, 255]`` stay, anything else
    is stretched from its minimum and maximum.

    Example:
        >>> import numpy as np
        >>> wide = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
        >>> list(to_8bit(wide).getdata())
        [0, 128, 255]
    """
    if image.mode not in _WIDE_MODES:
        return image
    arr = np.asarray(image).astype(np.float64)
    finite = arr[np.isfinite(arr)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if image.mode.startswith("I;16"):
        scaled = arr / 257.0
    elif lo >= 0 and hi <= 255 and (image.mode != "F" or hi > 1):
        scaled = arr
    elif image.mode == "F" and lo >= 0 and hi <= 1:
        scaled = arr * 255.0
    elif lo >= 0 and hi <= 65535 and image.mode != "F":
        scaled = arr / 257.0
    else:
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def to_rgb_on_white(image: Image.Image) -> Image.Image:
    """Return an RGB copy; transparency (RGBA, LA, palette with alpha) is composited onto white, and
    16-bit, 32-bit and float greyscale is scaled to 8 bits (:func:`to_8bit`), not clipped.

    Stamp-like images with transparent backgrounds otherwise turn black, which the classifier reads as
    night scenes.

    Example:
        >>> to_rgb_on_white(Image.new("RGBA", (2, 2), (0, 0, 0, 0))).getpixel((0, 0))
        (255, 255, 255)
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}")
    image = to_8bit(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def letterbox(image: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """Fit the whole image into ``size x size`` keeping its aspect ratio, padding with white.

    A centre crop would cut off the ends of long objects (a train, a pencil), which are often what the
    picture is about.

    Example:
        >>> letterbox(Image.new("RGB", (400, 100)), 224).size
        (224, 224)
    """
    rgb = to_rgb_on_white(image)
    w, h = rgb.size
    if w <= 0 or h <= 0:
        raise ValueError(f"image has no pixels (size {rgb.size})")
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = rgb.resize((nw, nh), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (size, size), _WHITE)
    canvas.paste(resized, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def views(image: Image.Image, n_views: int = 1, size: int = IMAGE_SIZE) -> list[Image.Image]:
    """The full letterboxed image, then (for ``n_views > 1``) zoomed crops and a mirror image.

    The order is fixed so results are deterministic: full, centre 80%, mirrored full, then the four
    corner crops at 70% of the longer side.

    Example:
        >>> len(views(Image.new("RGB", (64, 48)), n_views=3))
        3
    """
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    rgb = to_rgb_on_white(image)
    full = letterbox(rgb, size)
    out = [full]
    if n_views == 1:
        return out
    w, h = rgb.size

    def crop(frac: float, fx: float, fy: float) -> Image.Image:
        cw, ch = max(1, round(w * frac)), max(1, round(h * frac))
        left, top = round((w - cw) * fx), round((h - ch) * fy)
        return letterbox(rgb.crop((left, top, left + cw, top + ch)), size)

    candidates: list[Any] = [
        lambda: crop(0.8, 0.5, 0.5),
        lambda: full.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        lambda: crop(0.7, 0.0, 0.0),
        lambda: crop(0.7, 1.0, 0.0),
        lambda: crop(0.7, 0.0, 1.0),
        lambda: crop(0.7, 1.0, 1.0),
    ]
    for make in candidates[: n_views - 1]:
        out.append(make())
    return out


def to_array(images: Sequence[Image.Image]) -> np.ndarray:
    """Stack ``size x size`` RGB images into a float32 ``(N, 3, H, W)`` array scaled to ``[-1, 1]``.

    EfficientNet-Lite was trained on ``(pixel - 127) / 128``.
    """
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return np.ascontiguousarray(((arr - 127.0) / 128.0).transpose(0, 3, 1, 2))


MAX_VIEWS = 7
