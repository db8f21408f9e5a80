"""PDF ingest: pages as passages, embedded figures as pictures linked to page and document, captions from
"Figure N" lines, and hostile files (encrypted, malformed, huge, decompression bombs, 10,000 pages) that
fail alone with a clear reason."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pypdf")

from mm_rerank_components.ingest import scan_folder
from mm_rerank_components.ingest.documents import DocumentOptions, read_document
from mm_rerank_components.ingest.documents.synthetic import SyntheticPage, make_pdf
from mm_rerank_components.media import ImageOptions

PAPER = [
    SyntheticPage(["Introduction", "Foxes live in dens at the edge of forests."]),
    SyntheticPage(
        ["Results", "Figure 1: A red fox in the snow.", "Fig. 2. Owl counts per night."],
        [(64, 48, (220, 20, 20)), (40, 40, (20, 20, 220)), (8, 8, (0, 0, 0))],
    ),
    SyntheticPage(["Appendix without captions"], [(50, 50, (20, 200, 20))]),
]


def _options(tmp_path: Path, **kwargs: Any) -> DocumentOptions:
    return DocumentOptions(figures_dir=tmp_path / "figures", **kwargs)


def _reasons(scan: Any, name: str) -> list[str]:
    return [f.reason for f in scan.failed if f.path.endswith(name)]


def test_pdf_pages_become_passages_and_figures_keep_page_caption_and_number(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "paper.pdf").write_bytes(make_pdf(PAPER))
    scan = scan_folder(root, documents=_options(tmp_path))
    assert scan.failed == []
    assert [(t.metadata["page"], t.text.splitlines()[0]) for t in scan.texts] == [
        (1, "Introduction"),
        (2, "Results"),
        (3, "Appendix without captions"),
    ]
    text = scan.texts[1].metadata
    assert (text["document"], text["title"], text["rel_path"]) == (
        "paper.pdf",
        "paper.pdf p. 2",
        "paper.pdf p. 2",
    )
    figures = [
        (i.metadata["page"], i.metadata["figure"], i.metadata.get("figure_label"), i.caption)
        for i in scan.images
    ]
    assert figures == [
        (2, 1, "Figure 1", "Figure 1: A red fox in the snow."),
        (2, 2, "Figure 2", "Fig. 2. Owl counts per night."),
        (3, 3, None, "Appendix without captions"),  # no caption line: its nearby text
    ]
    red = scan.images[0]
    assert red.metadata["rel_path"] == "paper.pdf p. 2, figure 1"
    assert red.metadata["document_path"] == str(root / "paper.pdf")
    assert Path(red.path).parent == tmp_path / "figures" and Path(red.path).suffix == ".png"
    from PIL import Image

    with Image.open(red.path) as image:
        assert image.size == (64, 48) and image.convert("RGB").getpixel((3, 3)) == (220, 20, 20)
    # the 8 px picture is a decoration: left out, and said so
    assert any("1 pictures under 32 px" in s.reason for s in scan.skipped)


def test_pdf_figures_written_once_and_ids_stable(tmp_path: Path) -> None:
    options = _options(tmp_path)
    first = read_document("p.pdf", make_pdf(PAPER), options)
    second = read_document("p.pdf", make_pdf(PAPER), options)
    assert [f.path for f in first.figures] == [f.path for f in second.figures]
    assert len(list((tmp_path / "figures").iterdir())) == 3


@pytest.mark.slow
def test_pdf_ingest_into_chroma_cites_page_and_figure(tmp_path: Path) -> None:
    pytest.importorskip("chromadb")
    from mm_rerank_components.ingest import ingest_folder
    from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction

    root = tmp_path / "docs"
    root.mkdir()
    (root / "paper.pdf").write_bytes(make_pdf(PAPER))
    (root / "notes.txt").write_text("Plain notes about badgers.")
    ef = HashingEmbeddingFunction()
    retriever = ChromaMultiCollectionRetriever(
        path=tmp_path / "db", text_embedding_function=ef, image_embedding_function=ef
    )
    scan = scan_folder(root, documents=_options(tmp_path))
    report = ingest_folder(root, retriever, scan=scan)
    assert report.ok and (report.texts, report.images, report.added) == (4, 3, 7)
    got = retriever.store.collection("image", create=False).get(include=["metadatas", "uris", "documents"])
    by_cite = {
        m["citation"]: (m, u, d)
        for m, u, d in zip(got["metadatas"], got["uris"], got["documents"], strict=True)
    }
    meta, uri, caption = by_cite["paper.pdf p. 2, figure 1"]
    assert (meta["page"], meta["figure"], meta["document"]) == (2, 1, "paper.pdf")
    assert uri.endswith(".png") and caption == "Figure 1: A red fox in the snow."
    assert meta["width"] == 64 and meta["preview"].startswith("data:image/jpeg")
    again = ingest_folder(root, retriever, scan=scan_folder(root, documents=_options(tmp_path)))
    assert (again.added, again.updated, again.unchanged) == (0, 0, 7)


def _encrypted(user_password: str) -> bytes:
    import pypdf

    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(make_pdf(PAPER[:1]))))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def test_hostile_pdfs_fail_alone_with_clear_reasons(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "good.pdf").write_bytes(make_pdf(PAPER))
    (root / "locked.pdf").write_bytes(_encrypted("secret"))
    (root / "restricted.pdf").write_bytes(_encrypted(""))  # no password to open, only permissions
    (root / "garbage.pdf").write_bytes(b"%PDF-1.4\n this is not a pdf at all \x00\xff")
    (root / "empty.pdf").write_bytes(b"")
    (root / "huge.pdf").write_bytes(make_pdf(PAPER) + b"\n%" + b"x" * 5000)
    (root / "notes.txt").write_text("Notes stay.")
    options = _options(tmp_path)
    scan = scan_folder(root, documents=options, max_bytes=len(make_pdf(PAPER)) + 1000)
    assert "encrypted with a password" in _reasons(scan, "locked.pdf")[0]
    assert "qpdf --decrypt" in _reasons(scan, "locked.pdf")[0]
    assert _reasons(scan, "restricted.pdf") == []
    assert (
        "malformed PDF" in _reasons(scan, "garbage.pdf")[0] or "no pages" in _reasons(scan, "garbage.pdf")[0]
    )
    assert _reasons(scan, "empty.pdf") and _reasons(scan, "huge.pdf")[0].endswith("or shrink the file")
    docs = {t.metadata.get("document") for t in scan.texts}
    assert docs == {"good.pdf", "restricted.pdf", None}  # None: notes.txt
    assert len(scan.images) == 3


def test_decompression_bomb_figures_are_refused_before_decoding(tmp_path: Path) -> None:
    # 4000 x 4000 RGB zeros: 48 MB of pixels in 47 KB of PDF; and a picture that lies about its size
    bomb = SyntheticPage(
        ["Figure 1: bomb"],
        [(4000, 4000, (0, 0, 0)), (40, 40, (9, 9, 9))],
        claimed=[(4000, 4000), (60000, 60000)],
    )
    options = _options(tmp_path, image_options=ImageOptions(max_pixels=1_000_000))
    data = make_pdf([bomb, PAPER[2]])
    start = time.perf_counter()
    out = read_document("bomb.pdf", data, options)
    assert time.perf_counter() - start < 5.0  # nothing decoded (48 MB of pixels would be)
    reasons = [reason for _, reason in out.failed]
    assert len(reasons) == 2 and all("over max_pixels=1000000" in r for r in reasons)
    assert "16000000 pixels" in reasons[0] and "3600000000 pixels" in reasons[1]
    assert [f.page for f in out.figures] == [2] and out.passages[0].text.startswith("Figure 1")


@pytest.mark.slow
def test_pdf_with_10000_pages_fails_fast_naming_the_cap(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "long.pdf").write_bytes(make_pdf([SyntheticPage(["page"]) for _ in range(10_000)]))
    (root / "paper.pdf").write_bytes(make_pdf(PAPER))
    start = time.perf_counter()
    scan = scan_folder(root, documents=_options(tmp_path))
    assert time.perf_counter() - start < 30  # no page is read: only the page tree is counted
    assert _reasons(scan, "long.pdf") == [
        "PDF has 10000 pages, over max_pages=2000; raise DocumentOptions(max_pages=...) (mm-rerank ingest --max-pages) "
        "or split the file"
    ]
    assert len(scan.texts) == 3 and len(scan.images) == 3


def test_caps_on_figures_and_text_keep_what_fits(tmp_path: Path) -> None:
    out = read_document("p.pdf", make_pdf(PAPER), _options(tmp_path, max_figures=1, max_chars=60))
    assert len(out.figures) <= 1
    reasons = " ".join(reason for _, reason in out.failed)
    assert "max_chars=60" in reasons
    assert out.passages and out.chars <= 60


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="max_pages must be an int >= 1"):
        DocumentOptions(max_pages=0)


def test_scanned_pdf_without_text_or_figures_is_named(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "blank.pdf").write_bytes(make_pdf([SyntheticPage([])]))
    scan = scan_folder(root, documents=_options(tmp_path))
    assert _reasons(scan, "blank.pdf") == [
        "no text and no figures found (a scanned document needs OCR first)"
    ]


def test_caption_drawn_after_a_picture_wins_and_nearby_text_is_the_fallback() -> None:
    from mm_rerank_components.ingest.documents.pdf import _around

    events = [
        ("t", "Setup of the trap\n"),
        ("do", "/Im0"),
        ("t", "Figure 7: The trap at dawn.\n"),
        ("do", "/Im1"),
        ("t", "Unrelated paragraph.\n"),
    ]
    assert _around(events, "/Im0") == ([("Figure 7", "Figure 7: The trap at dawn.")], "Setup of the trap")
    assert _around(events, "/Im1") == ([], "Figure 7: The trap at dawn.")
    assert _around([("do", "/Im0"), ("t", "Below it\n")], "/Im0") == ([], "Below it")
    assert _around([("do", "/Im0"), ("do", "/Im1"), ("t", "Text\n")], "/Im0") == ([], "Text")
    assert _around(events, "/Missing") == ([], None)


def test_pypdf_repair_warnings_are_silenced_unless_asked_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    broken = make_pdf(PAPER[:1]).replace(b"/Type /Catalog", b"/Type /Catalog /Type /Catalog")
    with caplog.at_level(logging.WARNING):
        out = read_document("dup.pdf", broken, _options(tmp_path))
    assert out.passages and not [r for r in caplog.records if r.name.startswith("pypdf")]
    assert logging.getLogger("pypdf").level == logging.NOTSET
    caplog.clear()
    logging.getLogger("pypdf").setLevel(logging.WARNING)  # a user who wants them gets them
    try:
        with caplog.at_level(logging.WARNING):
            read_document("dup.pdf", broken, _options(tmp_path))
        assert [r for r in caplog.records if r.name.startswith("pypdf")]
    finally:
        logging.getLogger("pypdf").setLevel(logging.NOTSET)


def test_missing_pypdf_fails_each_pdf_with_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    root = tmp_path / "docs"
    root.mkdir()
    (root / "paper.pdf").write_bytes(make_pdf(PAPER))
    (root / "notes.txt").write_text("Notes stay.")
    monkeypatch.setitem(sys.modules, "pypdf", None)  # as if the documents extra were not installed
    scan = scan_folder(root, documents=_options(tmp_path))
    assert _reasons(scan, "paper.pdf") == [
        "reading PDF files needs pypdf: pip install 'mm-rerank-components[documents]'"
    ]
    assert [t.text for t in scan.texts] == ["Notes stay."]


def test_pdf_caption_ignores_a_page_number_line(tmp_path: Path) -> None:
    pdf = make_pdf([SyntheticPage(["Text", "Figure 2: XFig Editing Tools", "6"], [(40, 40, (0, 0, 255))])])
    out = read_document(tmp_path / "p.pdf", pdf, DocumentOptions(figures_dir=tmp_path / "figs"))
    assert [(f.caption, f.passage, f.page) for f in out.figures] == [("Figure 2: XFig Editing Tools", 0, 1)]
