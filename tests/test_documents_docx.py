"""DOCX ingest: paragraphs in sections at headings, tables' text, embedded pictures with their captions
(Caption style or "Figure N", else the alternative text), and hostile files (not a zip, zip bombs, broken
parts, bomb pictures) that fail alone."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytest.importorskip("docx")

from mm_rerank_components.ingest import scan_folder
from mm_rerank_components.ingest.documents import DocumentError, DocumentOptions, read_document
from mm_rerank_components.media import ImageOptions


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    buffer.seek(0)
    return buffer


def _docx(build: Any = None) -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = "Fox report"
    document.add_heading("Red foxes", level=1)
    document.add_paragraph("Foxes live in dens at the edge of forests.")
    document.add_picture(_png((220, 20, 20)))
    document.add_paragraph("Figure 1: A red fox in the snow.", style="Caption")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Species", "Count"
    table.cell(1, 0).text, table.cell(1, 1).text = "Fox", "12"
    document.add_heading("Owls", level=1)
    document.add_paragraph("Owls hunt at night.")
    document.add_picture(_png((20, 20, 220)))
    document.add_picture(_png((0, 0, 0), (8, 8)))
    if build is not None:
        build(document)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _options(tmp_path: Path, **kwargs: Any) -> DocumentOptions:
    return DocumentOptions(figures_dir=tmp_path / "figures", **kwargs)


def test_docx_sections_tables_and_captioned_figures(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "report.docx").write_bytes(_docx())
    scan = scan_folder(root, documents=_options(tmp_path))
    assert scan.failed == []
    assert [t.text for t in scan.texts] == [
        "Red foxes\n\nFoxes live in dens at the edge of forests.\n\nFigure 1: A red fox in the snow.\n\n"
        "Species | Count\nFox | 12",
        "Owls\n\nOwls hunt at night.",
    ]
    assert {t.metadata["document"] for t in scan.texts} == {"report.docx"}
    figures = [(i.metadata["figure"], i.caption, i.metadata.get("figure_label")) for i in scan.images]
    assert figures == [(1, "Figure 1: A red fox in the snow.", "Figure 1"), (2, None, None)]
    assert scan.images[0].metadata["citation"] == "report.docx, figure 1"
    with Image.open(scan.images[1].path) as image:
        assert image.size == (64, 48) and image.convert("RGB").getpixel((1, 1)) == (20, 20, 220)
    assert any("under 32 px" in s.reason for s in scan.skipped)


def test_docx_alt_text_is_the_caption_when_none_is_written(tmp_path: Path) -> None:
    def alt(document: Any) -> None:
        document.add_picture(_png((20, 200, 20)))
        document.inline_shapes[-1]._inline.docPr.set("descr", "A green meadow")

    out = read_document("a.docx", _docx(alt), _options(tmp_path))
    assert out.figures[-1].caption == "A green meadow"


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in entries.items():
            archive.writestr(name, body)
    return buffer.getvalue()


def test_hostile_docx_files_fail_alone(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "good.docx").write_bytes(_docx())
    (root / "notazip.docx").write_bytes(b"\xd0\xcf\x11\xe0 an OLE file: encrypted or old Word")
    bomb = _zip({"word/document.xml": b"\0" * 3_000_000})
    (root / "bomb.docx").write_bytes(bomb)
    (root / "broken.docx").write_bytes(_zip({"word/document.xml": b"<not-xml"}))
    scan = scan_folder(root, documents=_options(tmp_path, max_unzipped_bytes=1_000_000))
    reasons = {Path(f.path).name: f.reason for f in scan.failed}
    assert set(reasons) == {"notazip.docx", "bomb.docx", "broken.docx"}
    assert "save it as .docx without a password" in reasons["notazip.docx"]
    assert "unzips to 3000000 bytes" in reasons["bomb.docx"] and "zip bomb" in reasons["bomb.docx"]
    assert reasons["broken.docx"].startswith("malformed DOCX")
    assert len(bomb) < 10_000 and {t.metadata["document"] for t in scan.texts} == {"good.docx"}


def test_docx_picture_over_max_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    options = _options(tmp_path, image_options=ImageOptions(max_pixels=2000))
    out = read_document("a.docx", _docx(), options)
    assert out.figures == [] and len(out.failed) == 2
    assert all("over max_pixels=2000" in reason for _, reason in out.failed)
    with pytest.raises(DocumentError, match="not a DOCX"):
        read_document("x.docx", b"", options)
