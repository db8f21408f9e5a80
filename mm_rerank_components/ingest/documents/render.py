"""PDF pages rendered as pictures (``DocumentOptions(render_pages=True)``), for page-level scorers.

Late-interaction scorers such as ColPali read a whole page as one picture. pypdf parses PDFs but cannot
draw them, so rendering uses pypdfium2 (Apache-2.0 / BSD-3-Clause bindings to Google's PDFium, also
Apache-2.0 / BSD-3-Clause): a wheel for every common platform with PDFium inside and no system library,
maintained and released often. (PyMuPDF renders too but is AGPL; poppler's ``pdftoppm`` is a system
program under GPL.) It is part of the ``documents`` extra.

Caps: the pages rendered are those the reader accepted (``max_pages``); each page is drawn at
``render_dpi`` and scaled down so that it stays within ``image_options.max_pixels`` (a page declaring a
huge size is drawn small, never huge). PDFium is not thread-safe, so one page is drawn at a time in the
process.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

from mm_rerank_components.ingest.documents.base import DocumentOptions, Extracted, Figure, save_figure

logger = logging.getLogger(__name__)
_PDFIUM_LOCK = threading.Lock()
_POINTS_PER_INCH = 72.0


def pdfium_module() -> Any:
    """The pypdfium2 module, or an ImportError naming the extra to install."""
    try:
        import pypdfium2
    except ImportError as exc:
        raise ImportError(
            "rendering PDF pages needs pypdfium2: pip install 'mm-rerank-components[documents]' "
            "(or pip install pypdfium2), or leave DocumentOptions(render_pages=False)"
        ) from exc
    return pypdfium2


def render_scale(width_pt: float, height_pt: float, dpi: int, max_pixels: int) -> float:
    """The scale (pixels per point) to draw a page of this size at ``dpi`` within ``max_pixels``.

    Example:
        >>> round(render_scale(612, 792, 72, 10**9), 3)
        1.0
        >>> s = render_scale(612, 792, 300, 1_000_000)
        >>> math.ceil(612 * s) * math.ceil(792 * s) <= 1_000_000
        True
    """
    scale = dpi / _POINTS_PER_INCH
    pixels = (width_pt * scale) * (height_pt * scale)
    if pixels > max_pixels:
        scale *= math.sqrt(max_pixels / pixels)
    # PDFium rounds each side up: shrink until the rounded size fits too (a few steps at most)
    for _ in range(100):
        if math.ceil(width_pt * scale) * math.ceil(height_pt * scale) <= max_pixels:
            break
        scale *= 0.99
    return scale


def render_pages(data: bytes, n_pages: int, out: Extracted, options: DocumentOptions) -> None:
    """Draw the first ``n_pages`` pages of a PDF into the figures folder as ``out.rendered``; a page that
    fails is listed in ``out.failed``, a missing pypdfium2 once for the document (its text and figures are
    kept)."""
    try:
        pdfium = pdfium_module()
    except ImportError as exc:
        out.failed.append(("page pictures", str(exc)))
        return
    with _PDFIUM_LOCK:
        try:
            document = pdfium.PdfDocument(data)
        except Exception as exc:  # noqa: BLE001 - PdfiumError and friends for files pypdf repaired
            out.failed.append(("page pictures", f"PDFium cannot open the file ({type(exc).__name__}: {exc})"))
            return
        try:
            for index in range(min(n_pages, len(document))):
                _render_one(document, index, out, options)
        finally:
            document.close()


def _render_one(document: Any, index: int, out: Extracted, options: DocumentOptions) -> None:
    number = index + 1
    try:
        page = document[index]
        try:
            width, height = page.get_size()
            if width <= 0 or height <= 0:
                out.failed.append((f"p. {number}", f"page has no area ({width} x {height} points)"))
                return
            scale = render_scale(width, height, options.render_dpi, options.image_options.max_pixels)
            image = page.render(scale=scale).to_pil()
        finally:
            page.close()
        if min(image.size) < 1:
            out.failed.append((f"p. {number}", f"page renders to an empty picture {image.size}"))
            return
        path = save_figure(image, options)
    except Exception as exc:  # noqa: BLE001 - one broken page loses its picture only
        out.failed.append((f"p. {number}", f"cannot render the page ({type(exc).__name__}: {exc})"))
        return
    out.rendered.append(Figure(path=path, number=number, page=number))
