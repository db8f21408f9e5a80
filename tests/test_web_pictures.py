"""Picture questions in the web chat (issue 23): ``POST /api/picture`` then ``POST /api/ask`` with the
token, through the real pipeline (embedded Chroma, FakeScorer), with the upload's own caps."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from test_web_app import write_corpus

from mm_rerank_components import Candidate, MultimodalReranker, Query
from mm_rerank_components.answer import ExtractiveAnswerer, RAGPipeline
from mm_rerank_components.scorers import FakeScorer

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from mm_rerank_components.web import WebLimits, create_app
from mm_rerank_components.web.pictures import UNKNOWN_PICTURE, PictureStore, not_a_picture


def png(colour: tuple[int, int, int], size: tuple[int, int] = (80, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def pipeline(tmp_path: Path) -> RAGPipeline:
    from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction

    ef = HashingEmbeddingFunction()
    retriever = ChromaMultiCollectionRetriever(
        path=tmp_path / "db", text_embedding_function=ef, image_embedding_function=ef, k_text=3, k_image=3
    )
    assert retriever.ingest_folder(write_corpus(tmp_path / "corpus")).failed == []
    return RAGPipeline(retriever, MultimodalReranker(FakeScorer()), answerer=ExtractiveAnswerer(), top_n=4)


def upload(client: TestClient, data: bytes, kind: str = "image/png") -> dict:
    response = client.post("/api/picture", content=data, headers={"content-type": kind})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_ask_with_an_uploaded_picture_ranks_the_matching_picture_first(pipeline: RAGPipeline) -> None:
    client = TestClient(create_app(pipeline))
    uploaded = upload(client, png((215, 35, 30)))
    assert (uploaded["width"], uploaded["height"]) == (80, 60) and len(uploaded["picture"]) >= 16
    # FakeScorer compares 8x8 thumbnails for a picture query: the red question picture matches red.png
    data = client.post("/api/ask", json={"picture": uploaded["picture"]}).json()
    top = data["evidence"][0]
    assert top["image_name"] == "red.png" and top["score"] > 0.9 and top["rank"] == 1
    assert data["scores_calibrated"] is False  # a picture question's scores are an order (the page says so)
    blue = upload(client, png((30, 30, 220)))["picture"]
    with_words = client.post("/api/ask", json={"question": "what is this?", "picture": blue}).json()
    assert with_words["evidence"][0]["image_name"] == "blue.png"
    # the same words without a picture score the pictures on text alone (FakeScorer: below 0.3)
    words_only = client.post("/api/ask", json={"question": "what is this?"}).json()
    assert with_words["scores_calibrated"] is False and "holds a picture" in with_words["scores_note"]
    # words only, but the evidence holds captioned pictures and no map of this reranker saw one
    assert any(e["modality"] == "text+image" for e in words_only["evidence"])
    assert words_only["scores_calibrated"] is False and "carry a caption" in words_only["scores_note"]
    one = RAGPipeline(
        pipeline.retriever, pipeline.reranker, answerer=ExtractiveAnswerer(), top_n=1, read_depth=1
    )
    passage = (
        TestClient(create_app(one)).post("/api/ask", json={"question": "Owls hunt small animals"}).json()
    )
    assert [e["modality"] for e in passage["evidence"]] == ["text"]
    assert passage["scores_calibrated"] is True and passage["scores_note"] is None
    assert all(e["score"] < 0.3 for e in words_only["evidence"] if e["modality"] != "text")


def test_bad_uploads_get_short_errors_that_never_echo(pipeline: RAGPipeline) -> None:
    limits = WebLimits(max_picture_bytes=50_000, max_picture_pixels=10_000)
    client = TestClient(create_app(pipeline, limits=limits))
    junk = client.post("/api/picture", content=b"<script>alert(1)</script>" * 10)
    assert junk.status_code == 400 and junk.json() == {"detail": not_a_picture(limits)}
    assert "script" not in junk.text
    too_many_pixels = client.post("/api/picture", content=png((1, 2, 3), (200, 100)))
    assert too_many_pixels.status_code == 400
    assert client.post("/api/picture", content=b"").status_code == 400
    too_big = client.post("/api/picture", content=b"\x89PNG" + b"z" * 60_000)
    assert too_big.status_code == 413 and "zzzz" not in too_big.text
    unknown = client.post("/api/ask", json={"question": "red", "picture": "no-such-token"})
    assert unknown.status_code == 400 and unknown.json() == {"detail": UNKNOWN_PICTURE}
    # the question body keeps its own small cap: the picture cap is for /api/picture only
    big_question = b'{"question": "' + b"x" * 20_000 + b'"}'
    response = client.post("/api/ask", content=big_question, headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_large_upload_is_kept_small_and_store_is_bounded() -> None:
    from mm_rerank_components.web.pictures import KEEP_SIDE, decode_upload

    picture = decode_upload(png((9, 9, 9), (3000, 1500)), WebLimits())
    assert max(picture.size) == KEEP_SIDE and picture.size[0] == 2 * picture.size[1]
    store = PictureStore(max_entries=2)
    first = store.add(picture)
    second = store.add(picture)
    store.get(first)  # used: the next addition evicts the second, the least recently used
    store.add(picture)
    assert store.get(first) is picture and store.get(second) is None
    with pytest.raises(ValueError, match="max_entries must be an int >= 1, got 0"):
        PictureStore(max_entries=0)


def test_pipeline_asks_with_a_picture_alone() -> None:
    class TwoHits:
        def retrieve(self, query: Query) -> list[Candidate]:
            assert query.image is not None  # the picture reaches the first stage
            return [
                Candidate("owl", text="Owls hunt at night."),
                Candidate("ball", image=Image.new("RGB", (8, 8), "red"), text="A red ball. It bounces."),
            ]

    rag = RAGPipeline(TwoHits(), MultimodalReranker(FakeScorer()), top_n=2)
    answer = rag.ask(Query(image=Image.new("RGB", (8, 8), "red")))
    assert answer.question == "" and [e.id for e in answer.evidence] == ["ball", "owl"]
    assert "A red ball. (picture [1])" in answer.text  # quoted first: it matches the picture
    with pytest.raises(ValueError, match="non-empty string or a Query"):
        rag.ask("   ")


def test_page_script_never_parses_text_as_html() -> None:
    """The browser test checks the rendering; this guards the page's source against HTML sinks."""
    from importlib import resources

    page = resources.files("mm_rerank_components.web").joinpath("static/index.html").read_text("utf-8")
    script = page[page.index("<script>") :]
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    assert 'id="picture" type="file"' in page and "/api/picture" in script
