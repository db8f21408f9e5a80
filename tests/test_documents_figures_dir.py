"""Where figures of documents go: next to the database (``DB/figures``) for ``mm-rerank ingest --db DB`` and
``add_documents`` on an embedded retriever; ``$MM_RERANK_FIGURES`` still overrides; otherwise the cache."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("pypdf")
pytest.importorskip("chromadb")

from mm_rerank_components import cli
from mm_rerank_components.ingest.documents import FIGURES_ENV, default_figures_dir
from mm_rerank_components.ingest.documents.synthetic import SyntheticPage, make_pdf
from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction

FAST = ["--embedder", "hashing", "--no-progress", "--workers", "1"]


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    page = SyntheticPage(["Results", "Figure 1: A red fox."], [(48, 40, (220, 20, 20))])
    (root / "paper.pdf").write_bytes(make_pdf([page]))
    return root


def _figure_uris(db: Path) -> list[str]:
    ef = HashingEmbeddingFunction()
    retriever = ChromaMultiCollectionRetriever(
        path=db, text_embedding_function=ef, image_embedding_function=ef
    )
    got = retriever.store.collection("image", create=False).get(include=["uris"])
    return list(got["uris"] or [])


def test_cli_ingest_writes_figures_next_to_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(FIGURES_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    db = tmp_path / "db"
    assert cli.main(["ingest", str(_folder(tmp_path)), "--db", str(db), *FAST]) == 0
    (uri,) = _figure_uris(db)
    assert Path(uri).parent == db / "figures" and Path(uri).is_file()
    assert not (tmp_path / "cache").exists()


def test_the_environment_variable_still_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(FIGURES_ENV, str(tmp_path / "elsewhere"))
    db = tmp_path / "db"
    assert cli.main(["ingest", str(_folder(tmp_path)), "--db", str(db), *FAST]) == 0
    (uri,) = _figure_uris(db)
    assert Path(uri).parent == tmp_path / "elsewhere" and not (db / "figures").exists()


def test_default_figures_dir_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FIGURES_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_figures_dir(tmp_path / "db") == tmp_path / "db" / "figures"
    assert default_figures_dir() == tmp_path / "cache" / "mm-rerank" / "figures"
    monkeypatch.setenv(FIGURES_ENV, str(tmp_path / "env"))
    assert default_figures_dir(tmp_path / "db") == tmp_path / "env"


def test_add_documents_on_an_embedded_retriever_saves_inline_pictures_next_to_its_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    monkeypatch.delenv(FIGURES_ENV, raising=False)
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), (20, 20, 220)).save(buffer, format="PNG")
    inline = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    ef = HashingEmbeddingFunction()
    db = tmp_path / "db"
    retriever = ChromaMultiCollectionRetriever(
        path=db, text_embedding_function=ef, image_embedding_function=ef
    )
    report = retriever.add_documents([Document("A blue square", metadata={"image": inline})])
    assert report.ok and report.images == 1
    (uri,) = _figure_uris(db)
    assert Path(uri).parent == db / "figures"
