"""Re-ingesting a changed document replaces its records: its figures are versions of the document (their
``path`` metadata is the document's, their PNG is the URI and ``image_path``), so figures the new version
no longer has are removed, and a document that now fails keeps its old records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pypdf")
pytest.importorskip("chromadb")

from mm_rerank_components.ingest import ingest_folder, scan_folder
from mm_rerank_components.ingest.documents import DocumentOptions
from mm_rerank_components.ingest.documents.synthetic import SyntheticPage, make_pdf
from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction

RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)


def _pdf(*colours: tuple[int, int, int], text: str = "Foxes live in dens.") -> bytes:
    figures = [(48, 40, colour) for colour in colours]
    lines = [text] + [f"Figure {n}: colour {c}" for n, c in enumerate(colours, 1)]
    return make_pdf([SyntheticPage(lines, figures)])


def _retriever(tmp_path: Path) -> ChromaMultiCollectionRetriever:
    ef = HashingEmbeddingFunction()
    return ChromaMultiCollectionRetriever(
        path=tmp_path / "db", text_embedding_function=ef, image_embedding_function=ef
    )


def _ingest(root: Path, retriever: ChromaMultiCollectionRetriever, tmp_path: Path) -> Any:
    scan = scan_folder(root, documents=DocumentOptions(figures_dir=tmp_path / "figures"))
    return ingest_folder(root, retriever, scan=scan)


def _stored(retriever: ChromaMultiCollectionRetriever, kind: str) -> list[dict[str, Any]]:
    got = retriever.store.collection(kind, create=False).get(include=["metadatas", "uris"])  # type: ignore[arg-type]
    uris = got.get("uris") or [None] * len(got["ids"])
    return [{**meta, "uri": uri} for meta, uri in zip(got["metadatas"], uris, strict=True)]


def _captions(retriever: ChromaMultiCollectionRetriever) -> list[str]:
    return sorted(str(m.get("caption")) for m in _stored(retriever, "image"))


def test_a_changed_pdf_replaces_its_figures(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    paper = root / "paper.pdf"
    paper.write_bytes(_pdf(RED, BLUE))
    retriever = _retriever(tmp_path)
    first = _ingest(root, retriever, tmp_path)
    assert first.ok and first.added == 3
    for meta in _stored(retriever, "image"):  # the figure is a version of its document
        assert meta["path"] == str(paper) and meta["image_path"] == meta["uri"]
        assert Path(meta["uri"]).parent == tmp_path / "figures"

    paper.write_bytes(_pdf(GREEN))  # figure 1 changed colour, figure 2 gone
    second = _ingest(root, retriever, tmp_path)
    assert second.ok and second.updated == 2
    assert _captions(retriever) == [f"Figure 1: colour {GREEN}"]
    assert retriever.count() == {"mm_text": 1, "mm_images": 1}
    (hit,) = [c for c in retriever.retrieve("colour", k_image=5) if c.image is not None]
    assert hit.image == _stored(retriever, "image")[0]["image_path"] and Path(str(hit.image)).exists()

    unchanged = _ingest(root, retriever, tmp_path)
    assert (unchanged.added, unchanged.updated, unchanged.unchanged) == (0, 0, 2)


def test_a_pdf_without_figures_now_loses_them_and_a_failing_one_keeps_its_records(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    paper, other = root / "paper.pdf", root / "other.pdf"
    paper.write_bytes(_pdf(RED, BLUE))
    other.write_bytes(_pdf(RED, text="Owls hunt at night."))  # the same red figure, another document
    retriever = _retriever(tmp_path)
    assert _ingest(root, retriever, tmp_path).ok
    assert retriever.count() == {"mm_text": 2, "mm_images": 3}

    paper.write_bytes(make_pdf([SyntheticPage(["Foxes live in dens, no pictures now."])]))
    report = _ingest(root, retriever, tmp_path)
    assert report.ok and report.images == 1
    assert [m["document"] for m in _stored(retriever, "image")] == ["other.pdf"]  # the shared figure stays
    assert retriever.count() == {"mm_text": 2, "mm_images": 1}

    other.write_bytes(b"%PDF-1.4 broken")  # a bad edit never loses the old version
    broken = _ingest(root, retriever, tmp_path)
    assert [Path(f.path).name for f in broken.failed] == ["other.pdf"]
    assert [m["document"] for m in _stored(retriever, "image")] == ["other.pdf"]
    assert sorted(m["document"] for m in _stored(retriever, "text")) == ["other.pdf", "paper.pdf"]
