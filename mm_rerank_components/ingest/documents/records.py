"""One document's passages and figures as ingest records, with ``document``/``page``/``figure`` metadata.

Every record of a document carries ``document`` (the file name), ``document_path``, ``page`` (formats
with pages) and, for figures, ``figure`` (its number in the document), ``figure_label`` (``"Figure 2"``
when a caption names it) and ``caption``. Its ``title`` and ``rel_path`` cite it the way a reader would:
``"paper.pdf p. 4"`` for a passage, ``"paper.pdf p. 4, figure 2"`` for a figure, so the CLI's result rows
and the answers' sources show where the evidence is.

A figure's picture file is its URI and ``image_path``; an extracted figure's ``path`` is its document's,
like its passages', so the writer replaces a changed document's figures (a folder picture an HTML page
shows keeps its own ``path``: re-ingest replaces it by that file's stale-record rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mm_rerank_components.ingest.documents.base import Extracted, Figure
from mm_rerank_components.ingest.records import (
    ImageRecord,
    TextRecord,
    chunk_text,
    image_metadata,
    record_id,
    text_metadata,
)


def citation(document: str, page: int | None, figure: Figure | None = None) -> str:
    """How a record is cited: ``"paper.pdf p. 4, figure 2"``.

    Example:
        >>> citation("paper.pdf", 4, Figure(path="f.png", number=2, page=4))
        'paper.pdf p. 4, figure 2'
        >>> citation("notes.docx", None)
        'notes.docx'
    """
    where = f"{document} p. {page}" if page is not None else document
    if figure is None:
        return where
    label = figure.label.lower() if figure.label else f"figure {figure.number}"
    return f"{where}, {label}"


def text_records(
    path: Path, rel_path: str, data: bytes, extracted: Extracted, extra: Mapping[str, Any], max_chars: int
) -> list[TextRecord]:
    """The passages of a document, chunked to ``max_chars``, numbered across the document."""
    pieces = [(p.page, chunk) for p in extracted.passages for chunk in chunk_text(p.text, max_chars)]
    records: list[TextRecord] = []
    for i, (page, chunk) in enumerate(pieces):
        cite = citation(path.name, page)
        own = {**extra, "document": path.name, "document_path": str(path), "page": page, "citation": cite}
        own = {k: v for k, v in own.items() if v is not None}
        cid = record_id("text", data, str(path), str(i), own)
        title = str(extra.get("title") or cite)
        where = rel_path if page is None else f"{rel_path} p. {page}"
        metadata = text_metadata(
            own, cid=cid, path=str(path), rel_path=where, title=title, chunk=(i, len(pieces))
        )
        records.append(TextRecord(id=cid, path=str(path), text=chunk, metadata=metadata))
    return records


def figure_records(
    path: Path, rel_path: str, data: bytes, extracted: Extracted, extra: Mapping[str, Any]
) -> list[ImageRecord]:
    """The figures of a document as picture records pointing to their files."""
    records: list[ImageRecord] = []
    for figure in extracted.figures:
        cite = citation(path.name, figure.page, figure)
        own: dict[str, Any] = {
            **extra,
            "document": path.name,
            "document_path": str(path),
            "page": figure.page,
            "figure": figure.number,
            "figure_label": figure.label,
            "citation": cite,
            "title": cite,
        }
        own = {k: v for k, v in own.items() if v is not None}
        cid = record_id("image", data, figure.path, f"{figure.number}:{figure.caption or ''}", own)
        where = citation(rel_path, figure.page, figure)
        metadata = image_metadata(own, cid=cid, path=figure.path, rel_path=where, caption=figure.caption)
        metadata["image_path"] = figure.path
        if not figure.local:  # an extracted figure is a version of its document (the stale-record rule)
            metadata["path"] = str(path)
        records.append(ImageRecord(id=cid, path=figure.path, caption=figure.caption, metadata=metadata))
    return records


def page_records(
    path: Path, rel_path: str, data: bytes, extracted: Extracted, extra: Mapping[str, Any]
) -> list[ImageRecord]:
    """The pages drawn as pictures (``DocumentOptions(render_pages=True)``): one picture record per page,
    ``page_image: True``, cited ``"paper.pdf p. 4 (page)"``, a version of its document like its figures.

    Example:
        >>> out = Extracted(rendered=[Figure(path="/f/p1.png", number=1, page=1)])
        >>> record = page_records(Path("a.pdf"), "a.pdf", b"%PDF", out, {})[0]
        >>> record.metadata["citation"], record.metadata["page_image"], record.metadata["path"]
        ('a.pdf p. 1 (page)', True, 'a.pdf')
    """
    records: list[ImageRecord] = []
    for render in extracted.rendered:
        cite = f"{citation(path.name, render.page)} (page)"
        own: dict[str, Any] = {
            **extra,
            "document": path.name,
            "document_path": str(path),
            "page": render.page,
            "page_image": True,
            "citation": cite,
            "title": cite,
        }
        own = {k: v for k, v in own.items() if v is not None}
        cid = record_id("image", data, render.path, f"page:{render.page}", own)
        where = f"{rel_path} p. {render.page} (page)"
        metadata = image_metadata(own, cid=cid, path=render.path, rel_path=where, caption=None)
        metadata["image_path"] = render.path
        metadata["path"] = str(path)  # a version of its document (the stale-record rule)
        records.append(ImageRecord(id=cid, path=render.path, caption=None, metadata=metadata))
    return records
