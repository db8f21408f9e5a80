"""PDF pages rendered as pictures (DocumentOptions(render_pages=True), pypdfium2): one picture record per
page, linked to its document and page, off by default, within the pixel and page caps; a missing
pypdfium2 or a page that cannot be drawn fails that part alone."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pypdf")
pytest.importorskip("pypdfium2")

from PIL import Image

from mm_rerank_components.ingest import scan_folder
from mm_rerank_components.ingest.documents import DocumentOptions, read_document
from mm_rerank_components.ingest.documents.render import render_scale
from mm_rerank_components.ingest.documents.synthetic import SyntheticPage, make_pdf
from mm_rerank_components.media import ImageOptions

PAGES = [
    SyntheticPage(["Introduction", "Foxes live in dens."]),
    SyntheticPage(["Figure 1: A red fox."], [(64, 48, (220, 20, 20))]),
]


def _options(tmp_path: Path, **kwargs: Any) -> DocumentOptions:
    return DocumentOptions(figures_dir=tmp_path / "figures", **kwargs)


def test_pages_are_not_rendered_by_default(tmp_path: Path) -> None:
    out = read_document("a.pdf", make_pdf(PAGES), _options(tmp_path))
    assert out.rendered == []
    assert len(out.figures) == 1


def test_each_page_becomes_a_picture_linked_to_its_page(tmp_path: Path) -> None:
    out = read_document("a.pdf", make_pdf(PAGES), _options(tmp_path, render_pages=True, render_dpi=72))
    assert [(r.number, r.page) for r in out.rendered] == [(1, 1), (2, 2)]
    with Image.open(out.rendered[1].path) as page:
        assert page.size == (612, 792)  # US letter at 72 dpi
        # the red figure is drawn on the page (rendering, not a blank sheet)
        rgb = np.asarray(page.convert("RGB")).astype(int)
        assert bool(((rgb[..., 0] > 150) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)).any())
    with Image.open(out.rendered[0].path) as page:
        assert int(np.asarray(page.convert("L")).min()) < 128  # text is drawn dark on white
    # the figures and passages are read as before
    assert len(out.figures) == 1 and [p.page for p in out.passages] == [1, 2]


def test_render_size_is_capped_by_max_pixels(tmp_path: Path) -> None:
    options = _options(
        tmp_path, render_pages=True, render_dpi=300, image_options=ImageOptions(max_pixels=100_000)
    )
    out = read_document("a.pdf", make_pdf(PAGES[:1]), options)
    with Image.open(out.rendered[0].path) as page:
        assert page.size[0] * page.size[1] <= 100_000
        assert page.size[0] > 200  # scaled down, not refused
    assert render_scale(612, 792, 100, 10**9) == pytest.approx(100 / 72)


def test_page_cap_applies_before_rendering(tmp_path: Path) -> None:
    from mm_rerank_components.ingest.documents import DocumentError

    with pytest.raises(DocumentError, match="max_pages=1"):
        read_document("a.pdf", make_pdf(PAGES), _options(tmp_path, render_pages=True, max_pages=1))


def test_folder_ingest_writes_page_records_with_citations(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "paper.pdf").write_bytes(make_pdf(PAGES))
    scan = scan_folder(root, documents=_options(tmp_path, render_pages=True))
    pages = [r for r in scan.images if r.metadata.get("page_image")]
    assert [(r.metadata["page"], r.metadata["citation"]) for r in pages] == [
        (1, "paper.pdf p. 1 (page)"),
        (2, "paper.pdf p. 2 (page)"),
    ]
    assert all(r.metadata["path"] == str(root / "paper.pdf") for r in pages)
    assert all(Path(r.path).is_file() and r.caption is None for r in pages)
    assert len({r.id for r in scan.images}) == len(scan.images) == 3  # 2 pages + 1 figure


def test_missing_pypdfium2_fails_the_page_pictures_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_pdfium(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "pypdfium2":
            raise ImportError("No module named 'pypdfium2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pdfium)
    out = read_document("a.pdf", make_pdf(PAGES), _options(tmp_path, render_pages=True))
    assert out.rendered == [] and len(out.passages) == 2 and len(out.figures) == 1
    assert out.failed == [
        (
            "page pictures",
            "rendering PDF pages needs pypdfium2: pip install 'mm-rerank-components[documents]' "
            "(or pip install pypdfium2), or leave DocumentOptions(render_pages=False)",
        )
    ]


def test_render_options_are_checked() -> None:
    with pytest.raises(ValueError, match="render_pages must be True or False"):
        DocumentOptions(render_pages="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="render_dpi must be an int >= 1"):
        DocumentOptions(render_dpi=0)


def test_reingest_of_a_shorter_pdf_drops_its_old_page_pictures(tmp_path: Path) -> None:
    pytest.importorskip("chromadb")
    from mm_rerank_components.ingest import ingest_folder
    from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction

    root = tmp_path / "docs"
    root.mkdir()
    paper = root / "paper.pdf"
    paper.write_bytes(make_pdf(PAGES))
    ef = HashingEmbeddingFunction()
    retriever = ChromaMultiCollectionRetriever(
        path=tmp_path / "db", text_embedding_function=ef, image_embedding_function=ef
    )
    options = _options(tmp_path, render_pages=True, render_dpi=36)

    def page_pictures() -> list[int]:
        got = retriever.store.collection("image", create=False).get(include=["metadatas"])
        return sorted(int(m["page"]) for m in got["metadatas"] if m.get("page_image"))

    assert ingest_folder(root, retriever, scan=scan_folder(root, documents=options)).ok
    assert page_pictures() == [1, 2]
    paper.write_bytes(make_pdf(PAGES[:1]))
    assert ingest_folder(root, retriever, scan=scan_folder(root, documents=options)).ok
    assert page_pictures() == [1]
