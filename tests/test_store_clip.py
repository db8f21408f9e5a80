"""The Chroma retriever, ingest and the CLI with a CLIP-family first stage named ``clip:PATH``, on a tiny
random CLIP built from a config and loaded offline (plumbing only: random weights say nothing of quality)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("chromadb")

from PIL import Image

from mm_rerank_components import Query, cli
from mm_rerank_components.ingest import ingest_folder
from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever
from mm_rerank_components.retrievers.clip import CLIPEmbeddingFunction
from mm_rerank_components.testing import build_tiny_dual_encoder

WORDS = ["red", "fox", "snow", "owl", "den", "a", "photo", "of", "the", "square", "night"]


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_dual_encoder(tmp_path_factory.mktemp("tiny-clip"), WORDS, kind="clip")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "fox.txt").write_text("a red fox in the snow")
    (root / "owl.txt").write_text("the owl at night")
    Image.new("RGB", (40, 30), (220, 20, 20)).save(root / "red.png")
    (root / "red.caption.txt").write_text("a red square")
    return root


def test_clip_by_path_ingests_and_retrieves_in_one_space(
    clip_path: Path, folder: Path, tmp_path: Path
) -> None:
    r = ChromaMultiCollectionRetriever(path=tmp_path / "db", embedder=f"clip:{clip_path}")
    assert isinstance(r.text_embedding_function, CLIPEmbeddingFunction) and r.image_query_searches_text
    report = ingest_folder(folder, r)
    assert report.ok and report.added == 3
    hits = r.retrieve(Query(text="red fox", image=str(folder / "red.png")))
    routes = {route for c in hits for route in c.metadata["routes"].split(",")}
    assert routes == {"text->mm_text", "text->mm_images", "image->mm_images", "image->mm_text"}
    picture = next(c for c in hits if c.source == "mm_images")
    assert picture.retrieval_score == pytest.approx(1.0, abs=1e-4)  # the query picture is the stored one
    # the collection records the CLIP function's settings; other settings are refused
    other = ChromaMultiCollectionRetriever(
        path=tmp_path / "db",
        text_embedding_function=CLIPEmbeddingFunction(clip_path, dtype="float16"),
        image_embedding_function=CLIPEmbeddingFunction(clip_path, dtype="float16"),
    )
    with pytest.raises(ValueError, match=r"configured differently \(dtype: 'float32' -> 'float16'\)"):
        other.retrieve("red")
    # another batch size embeds the same: accepted
    same = ChromaMultiCollectionRetriever(
        path=tmp_path / "db",
        text_embedding_function=CLIPEmbeddingFunction(clip_path, batch_size=2),
        image_embedding_function=CLIPEmbeddingFunction(clip_path, batch_size=2),
    )
    assert same.count() == {"mm_text": 2, "mm_images": 1}


def test_the_cli_takes_clip_by_path(
    clip_path: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", str(tmp_path / "db"), "--embedder", f"clip:{clip_path}"]
    assert cli.main(["ingest", str(folder), *db, "--no-progress"]) == 0
    assert "3 added" in capsys.readouterr().out
    assert cli.main(["info", *db]) == 0
    assert "(embedder mm_rerank_clip" in capsys.readouterr().out
    assert cli.main(["query", "red fox", *db, "--scorer", "fake"]) == 0
    assert "fox.txt" in capsys.readouterr().out
