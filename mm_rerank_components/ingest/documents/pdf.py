"""PDF: each page's text as a passage, each embedded picture as a figure of its page, with its caption.

The library is pypdf (BSD-3-Clause, pure Python, maintained by the py-pdf organisation): it installs
anywhere without a compiler or a bundled C library, decrypts the common "no password, restricted
permissions" files, and lets every picture's declared size be read from its dictionary before any pixel
is decoded, so a decompression bomb is refused unopened. (PyMuPDF is AGPL and is not used.)

Captions, in the order the page draws its text and pictures: a ``Figure N``/``Fig. N`` line drawn right
after a picture (before the next one) is its caption; the page's other caption lines go to the remaining
pictures in order; a picture with none left takes its nearby text, the line drawn just before it (else
just after it), as caption, without a ``figure_label``.

With ``DocumentOptions(render_pages=True)`` each page is also drawn as a picture by :mod:`.render`
(pypdfium2: pypdf cannot draw pages).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
_MAX_NEARBY = 200


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
            "DocumentOptions(max_pages=...) (mm-rerank ingest --max-pages) or split the file"
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
    with _quiet_pypdf():
        return _read(data, options)


@contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """Silence pypdf's warnings about problems it repairs (hundreds per file in real manuals: "Multiple
    definitions in dictionary ...") while reading, unless the ``pypdf`` logger was given a level."""
    log = logging.getLogger("pypdf")
    if log.level != logging.NOTSET:
        yield
        return
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(logging.NOTSET)


def _read(data: bytes, options: DocumentOptions) -> Extracted:
    reader = open_pdf(data, options)
    out = Extracted(title=_title(reader))
    seen: set[Any] = set()
    counts = {"small": 0, "repeat": 0}
    for number, page in enumerate(reader.pages, start=1):
        read = _page_text(page, number, out)
        if not out.add_text(read.text, number, options):
            break
        images = _page_images(page, number, seen, counts, out, options)
        kept = bool(out.passages) and out.passages[-1].page == number
        _attach(images, read, number, out, options, len(out.passages) - 1 if kept else None)
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
    if options.render_pages:
        from mm_rerank_components.ingest.documents.render import render_pages

        render_pages(data, len(reader.pages), out, options)
    return out


def _title(reader: Any) -> str | None:
    try:
        title = reader.metadata.title if reader.metadata is not None else None
    except Exception:  # noqa: BLE001 - a broken info dictionary only loses the title
        return None
    return str(title).strip() or None if title else None


@dataclass
class _PageText:
    """A page's text, and the order in which its text and pictures are drawn (``("t", text)`` and
    ``("do", name)`` events), which places each picture among the lines around it."""

    text: str = ""
    events: list[tuple[str, str]] = field(default_factory=list)


def _page_text(page: Any, number: int, out: Extracted) -> _PageText:
    read = _PageText()

    def on_text(text: Any, *_: Any) -> None:
        if isinstance(text, str) and text.strip():
            read.events.append(("t", text))

    def on_operator(operator: Any, operands: Any, *_: Any) -> None:
        if operator == b"Do" and operands:
            read.events.append(("do", str(operands[0])))

    try:
        read.text = str(page.extract_text(visitor_text=on_text, visitor_operand_before=on_operator) or "")
    except Exception as exc:  # noqa: BLE001 - one broken content stream loses one page's text
        out.failed.append((f"p. {number}", f"cannot extract text ({type(exc).__name__}: {exc})"))
    return read


def _around(events: list[tuple[str, str]], name: str) -> tuple[list[tuple[str, str]], str | None]:
    """The captions drawn after picture ``name`` (before the next picture), and the nearest line of text
    before it (else after it): its nearby text."""
    index = next((i for i, (kind, value) in enumerate(events) if kind == "do" and value == name), None)
    if index is None:
        return [], None
    after: list[str] = []
    for kind, value in events[index + 1 :]:
        if kind == "do":
            break
        after.append(value)
    before = [v for k, v in events[:index] if k == "t"]
    lines = [line.strip() for line in "".join(before).splitlines() if line.strip()]
    if not lines:  # drawn before any text: the first line drawn after it, past other pictures too
        rest = "".join(v for k, v in events[index + 1 :] if k == "t")
        lines = [line.strip() for line in rest.splitlines() if line.strip()][:1]
    nearby = lines[-1][:_MAX_NEARBY] if lines else None
    return captions_in("".join(after)), nearby


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
                        found.append((str(name), image))
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
    images: list[tuple[str, Any]],
    read: _PageText,
    page: int,
    out: Extracted,
    options: DocumentOptions,
    passage: int | None,
) -> None:
    """Caption each picture: a ``Figure N`` line drawn right after it; else the page's unused caption
    lines in order; else its nearby text (the line drawn before it). ``passage``: the page's passage."""
    around = {name: _around(read.events, name) for name, _ in images}
    used: set[str] = set()
    chosen: dict[str, tuple[str | None, str | None]] = {}
    for name, _ in images:
        after = around[name][0]
        if after:
            chosen[name] = after[0]
            used.add(after[0][1])
    spare = [c for c in captions_in(read.text) if c[1] not in used]
    for name, _ in images:
        if name not in chosen:
            chosen[name] = spare.pop(0) if spare else (None, around[name][1])
    for name, image in images:
        if len(out.figures) >= options.max_figures:
            out.failed.append(
                (
                    f"p. {page}",
                    f"more than max_figures={options.max_figures} figures; the rest are not ingested "
                    "(raise DocumentOptions(max_figures=...), mm-rerank ingest --max-figures)",
                )
            )
            return
        label, caption = chosen[name]
        path = save_figure(image, options)
        out.figures.append(
            Figure(
                path=path,
                number=len(out.figures) + 1,
                page=page,
                caption=caption,
                label=label,
                passage=passage,
            )
        )
