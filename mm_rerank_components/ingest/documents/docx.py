"""DOCX: paragraphs in sections at headings, and embedded pictures with their captions.

The library is python-docx (MIT). Before it opens the file, the zip's declared sizes are added up, so a
zip bomb fails unread (``DocumentOptions.max_unzipped_bytes``). A picture's caption is the paragraph that
follows it when that paragraph has the ``Caption`` style or starts with ``Figure N``; else the one before
it, when it is such a caption; else the picture's alternative text (Word's ``descr``).
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

from mm_rerank_components.ingest.documents.base import (
    DocumentError,
    DocumentOptions,
    Extracted,
    Figure,
    caption_label,
    check_size,
    save_figure,
)

_MAX_ENTRIES = 10_000
_BLIP = "{http://schemas.openxmlformats.org/drawingml/2006/main}blip"
_EMBED = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}embed"
_DOCPR = "{http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing}docPr"


def docx_module() -> Any:
    """The python-docx module, or an ImportError naming the extra to install."""
    try:
        import docx
    except ImportError as exc:
        raise ImportError(
            "reading DOCX files needs python-docx: pip install 'mm-rerank-components[documents]'"
        ) from exc
    return docx


def _check_zip(data: bytes, options: DocumentOptions) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DocumentError(
            f"not a DOCX file ({exc}); an encrypted or old .doc file: save it as .docx without a password"
        ) from None
    total = sum(e.file_size for e in entries)
    if len(entries) > _MAX_ENTRIES or total > options.max_unzipped_bytes:
        raise DocumentError(
            f"DOCX unzips to {total} bytes in {len(entries)} parts, over max_unzipped_bytes="
            f"{options.max_unzipped_bytes} (a zip bomb?); raise DocumentOptions(max_unzipped_bytes=...)"
        )


def read_docx(data: bytes, options: DocumentOptions) -> Extracted:
    """Sections of text and captioned figures of a DOCX file.

    Raises:
        DocumentError: not a zip, a zip bomb, or a file python-docx cannot open.
    """
    _check_zip(data, options)
    docx = docx_module()
    try:
        document = docx.Document(io.BytesIO(data))
        blocks = list(_blocks(document))
    except Exception as exc:  # noqa: BLE001 - python-docx/lxml raise many types for broken parts
        raise DocumentError(f"malformed DOCX ({type(exc).__name__}: {exc}); open and save it again") from None
    title = (document.core_properties.title or "").strip() or None
    out = Extracted(title=title)
    sections: list[list[str]] = []
    for i, (text, heading, pictures) in enumerate(blocks):
        if text and (heading or not sections):
            sections.append([])
        if text:
            sections[-1].append(text)
        for blob, alt in pictures:
            caption = _caption(blocks, i) or alt
            _add_picture(blob, caption, document, out, options)
    for section in sections:
        if not out.add_text("\n\n".join(section), None, options):
            break
    return out


def _blocks(document: Any) -> Any:
    """``(text, is_heading, [(picture part, alt text)])`` of each paragraph and table, in order."""
    for item in document.iter_inner_content():
        if hasattr(item, "rows"):  # a table: its cells' text, row by row
            rows = [" | ".join(c.text.strip() for c in row.cells) for row in item.rows]
            yield "\n".join(r for r in rows if r.strip(" |")), False, []
            continue
        style = (item.style.name if item.style is not None else "") or ""
        heading = style.startswith(("Heading 1", "Heading 2", "Heading 3", "Title"))
        pictures = []
        for blip in item._p.iter(_BLIP):
            rel = blip.get(_EMBED)
            if rel:
                pictures.append((rel, _alt(blip)))
        yield item.text.strip(), heading, [(document.part.related_parts.get(r), a) for r, a in pictures]


def _alt(blip: Any) -> str | None:
    node = blip
    while node is not None and node.tag.rsplit("}", 1)[-1] not in ("inline", "anchor"):
        node = node.getparent()
    if node is None:
        return None
    pr = node.find(_DOCPR)
    return (pr.get("descr") or pr.get("title") or "").strip() or None if pr is not None else None


def _caption(blocks: list[tuple[str, bool, list[Any]]], i: int) -> str | None:
    for j in (i + 1, i - 1):
        if 0 <= j < len(blocks) and blocks[j][0] and caption_label(blocks[j][0].splitlines()[0]):
            return blocks[j][0][:300]
    return None


def _add_picture(
    part: Any, caption: str | None, document: Any, out: Extracted, options: DocumentOptions
) -> None:
    number = len(out.figures) + 1
    where = f"picture {number}"
    if len(out.figures) >= options.max_figures:
        out.failed.append((where, f"more than max_figures={options.max_figures}; not ingested"))
        return
    blob = getattr(part, "blob", None)
    if not blob:
        out.failed.append((where, "its image part is missing from the file"))
        return
    if len(blob) > options.image_options.max_bytes:
        out.failed.append((where, f"{len(blob)} bytes, over max_bytes={options.image_options.max_bytes}"))
        return
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(blob))
        refused = check_size(image.size[0], image.size[1], options.image_options)
        if refused is None and min(image.size) >= options.min_figure_side:
            image.load()
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types (EMF/WMF drawings, broken data)
        out.failed.append((where, f"cannot decode the picture ({type(exc).__name__}: {exc})"))
        return
    if refused is not None:
        out.failed.append((where, f"picture {refused}"))
        return
    if min(image.size) < options.min_figure_side:
        out.skipped.append((where, f"under {options.min_figure_side} px (an icon)"))
        return
    labelled = caption_label(caption) if caption else None
    figure = Figure(
        path=save_figure(image, options),
        number=number,
        caption=caption,
        label=labelled[0] if labelled else None,
    )
    out.figures.append(figure)
