"""PDF: each page's text as a passage, each embedded picture as a figure of its page, with its caption.

The library is pypdf (BSD-3-Clause, pure Python, maintained by the py-pdf organisation): it installs
anywhere without a compiler or a bundled C library, decrypts the common "no password, restricted
permissions" files, and lets every picture's declared size be read from its dictionary before any pixel
is decoded, so a decompression bomb is refused unopened. (PyMuPDF is AGPL and is not used.)

Captions: the lines of a page's text that start with ``Figure N``/``Fig. N`` are the captions of that
page's pictures, taken in order (the first caption for the first picture drawn); a picture with no caption
line left keeps none and is cited by its page and number.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from mm_rerank_components.ingest.documents.base import (
    DocumentError,
    DocumentOptions,
    Extracted,
    Figure,
    captions_in,
    check_size,
    save_figure,
)

logger = logging.getLogger(__name__)
_MAX_FORM_DEPTH = 3


def pypdf_module() -> Any:
    """The pypdf module, or an ImportError naming the extra to install."""
    try:
        import pypdf
    except ImportError as exc:
        raise ImportError(
            "reading PDF files needs pypdf: pip install 'mm-rerank-components[documents]'"
        ) from exc
    return pypdf


def open_pdf(data: bytes, options: DocumentOptions) -> Any:
    """A ``PdfReader`` of ``data``: decrypted when it opens without a password, its page count checked.

    Raises:
        DocumentError: malformed, encrypted with a password, no pages, or more than ``max_pages``.
    """
    pypdf = pypdf_module()
    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        encrypted = reader.is_encrypted
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types for broken files
        raise DocumentError(
            f"malformed PDF ({type(exc).__name__}: {exc}); repair it (qpdf) or remove it"
        ) from None
    if encrypted:
        _decrypt(reader)
    try:
        n_pages = len(reader.pages)
    except Exception as exc:  # noqa: BLE001 - a broken page tree
        raise DocumentError(f"malformed PDF: cannot read its pages ({type(exc).__name__}: {exc})") from None
    if n_pages == 0:
        raise DocumentError("PDF has no pages")
    if n_pages > options.max_pages:
        raise DocumentError(
            f"PDF has {n_pages} pages, over max_pages={options.max_pages}; raise "
            "DocumentOptions(max_pages=...) or split the file"
        )
    return reader


def _decrypt(reader: Any) -> None:
    try:
        opened = reader.decrypt("")
    except Exception as exc:  # noqa: BLE001 - unsupported algorithm, missing crypto library
        raise DocumentError(
            f"PDF is encrypted and cannot be opened without a password ({type(exc).__name__}: {exc}); "
            "decrypt it first (qpdf --decrypt --password=PASSWORD in.pdf out.pdf)"
        ) from None
    if not opened:
        raise DocumentError(
            "PDF is encrypted with a password; decrypt it first "
            "(qpdf --decrypt --password=PASSWORD in.pdf out.pdf)"
        )


def read_pdf(data: bytes, options: DocumentOptions) -> Extracted:
    """Pages' text and figures of a PDF; a page or figure that fails is listed, the rest is kept.

    Example:
        >>> from mm_rerank_components.ingest.documents.synthetic import SyntheticPage, make_pdf
        >>> pdf = make_pdf([SyntheticPage(["Hello", "Figure 1: red"], [(40, 40, (255, 0, 0))])])
        >>> out = read_pdf(pdf, DocumentOptions(figures_dir="/tmp/mm-figures-doctest"))
        >>> out.passages[0].page, out.figures[0].label
        (1, 'Figure 1')
    """
    reader = open_pdf(data, options)
    out = Extracted(title=_title(reader))
    seen: set[Any] = set()
    counts = {"small": 0, "repeat": 0}
    for number, page in enumerate(reader.pages, start=1):
        text = _page_text(page, number, out)
        if not out.add_text(text, number, options):
            break
        images = _page_images(page, number, seen, counts, out, options)
        _attach(images, captions_in(text), number, out, options)
    if counts["small"]:
        out.skipped.append(
            (
                "figures",
                f"{counts['small']} pictures under {options.min_figure_side} px "
                "(rules, bullets, masks) left out",
            )
        )
    if counts["repeat"]:
        out.skipped.append(
            ("figures", f"{counts['repeat']} repeats of a picture already taken (logos) left out")
        )
    return out


def _title(reader: Any) -> str | None:
    try:
        title = reader.metadata.title if reader.metadata is not None else None
    except Exception:  # noqa: BLE001 - a broken info dictionary only loses the title
        return None
    return str(title).strip() or None if title else None


def _page_text(page: Any, number: int, out: Extracted) -> str:
    try:
        return str(page.extract_text() or "")
    except Exception as exc:  # noqa: BLE001 - one broken content stream loses one page's text
        out.failed.append((f"p. {number}", f"cannot extract text ({type(exc).__name__}: {exc})"))
        return ""


def _page_images(
    page: Any, number: int, seen: set[Any], counts: dict[str, int], out: Extracted, options: DocumentOptions
) -> list[Any]:
    """The decoded pictures of a page, in resource order (forms searched a few levels deep)."""
    found: list[Any] = []
    try:
        stack = [(page.get("/Resources"), 0)]
        while stack:
            resources, depth = stack.pop(0)
            xobjects = _get(resources, "/XObject")
            for name, ref in (xobjects or {}).items():
                obj = ref.get_object()
                key = getattr(ref, "idnum", None) or id(obj)
                subtype = obj.get("/Subtype")
                if subtype == "/Form" and depth < _MAX_FORM_DEPTH:
                    stack.append((obj.get("/Resources"), depth + 1))
                elif subtype == "/Image":
                    if key in seen:
                        counts["repeat"] += 1
                        continue
                    seen.add(key)
                    image = _decode(obj, f"p. {number} picture {name}", counts, out, options)
                    if image is not None:
                        found.append(image)
    except Exception as exc:  # noqa: BLE001 - broken resources lose this page's pictures only
        out.failed.append((f"p. {number}", f"cannot read its pictures ({type(exc).__name__}: {exc})"))
    return found


def _get(mapping: Any, key: str) -> Any:
    if mapping is None:
        return None
    value = mapping.get_object().get(key) if hasattr(mapping, "get_object") else mapping.get(key)
    return value.get_object() if value is not None and hasattr(value, "get_object") else value


def _decode(obj: Any, where: str, counts: dict[str, int], out: Extracted, options: DocumentOptions) -> Any:
    """The picture as a PIL image, or None (too small: counted; refused or broken: listed)."""
    width, height = obj.get("/Width"), obj.get("/Height")
    refused = check_size(width, height, options.image_options)
    if refused is not None:
        out.failed.append((where, f"picture {refused}"))
        return None
    if min(int(width), int(height)) < options.min_figure_side:
        counts["small"] += 1
        return None
    raw = len(getattr(obj, "_data", b"") or b"")  # the encoded size: nothing is decoded yet
    if raw > options.image_options.max_bytes:
        out.failed.append(
            (where, f"picture is {raw} bytes encoded, over max_bytes={options.image_options.max_bytes}")
        )
        return None
    try:
        image = obj.decode_as_image()
        refused = check_size(
            image.size[0], image.size[1], options.image_options
        )  # the decoder's size, not the claimed one
        if refused is not None:
            out.failed.append((where, f"picture {refused}"))
            return None
        image.load()
    except Exception as exc:  # noqa: BLE001 - pypdf/Pillow raise many types (and LimitReachedError)
        out.failed.append((where, f"cannot decode the picture ({type(exc).__name__}: {exc})"))
        return None
    return image


def _attach(
    images: list[Any], captions: list[tuple[str, str]], page: int, out: Extracted, options: DocumentOptions
) -> None:
    for i, image in enumerate(images):
        if len(out.figures) >= options.max_figures:
            out.failed.append(
                (
                    f"p. {page}",
                    f"more than max_figures={options.max_figures} figures; the rest are not ingested "
                    "(raise DocumentOptions(max_figures=...))",
                )
            )
            return
        label, caption = captions[i] if i < len(captions) else (None, None)
        path = save_figure(image, options)
        out.figures.append(
            Figure(path=path, number=len(out.figures) + 1, page=page, caption=caption, label=label)
        )
