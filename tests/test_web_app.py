"""The web chat app: page, ask API, thumbnails served only for returned evidence."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mm_rerank_components import MultimodalReranker
from mm_rerank_components.answer import Answer, Evidence, ExtractiveAnswerer, RAGPipeline
from mm_rerank_components.scorers import FakeScorer

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mm_rerank_components.web import ImageRegistry, create_app  # noqa: E402


def write_corpus(folder: Path) -> Path:
    """Three passages and three pictures (plain colours, captioned in metadata.jsonl)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fox.txt").write_text("Red fox\n\nThe red fox hunts voles in the snow.\n", encoding="utf-8")
    (folder / "owl.txt").write_text("Owls\n\nOwls hunt small animals at night.\n", encoding="utf-8")
    (folder / "sea.txt").write_text("The sea\n\nThe blue sea covers most of the planet.\n", encoding="utf-8")
    lines = []
    for name, colour, caption in (
        ("red.png", (220, 30, 30), "a red apple"),
        ("blue.png", (30, 30, 220), "the blue sea"),
        ("green.png", (30, 180, 30), "a green meadow"),
    ):
        Image.new("RGB", (96, 64), colour).save(folder / name)
        lines.append(f'{{"file_name": "{name}", "caption": "{caption}"}}')
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def pipeline(tmp_path: Path) -> RAGPipeline:
    from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction

    ef = HashingEmbeddingFunction()
    retriever = ChromaMultiCollectionRetriever(
        path=tmp_path / "db", text_embedding_function=ef, image_embedding_function=ef, k_text=3, k_image=3
    )
    report = retriever.ingest_folder(write_corpus(tmp_path / "corpus"))
    assert report.failed == []
    return RAGPipeline(retriever, MultimodalReranker(FakeScorer()), answerer=ExtractiveAnswerer(), top_n=4)


@pytest.fixture
def client(pipeline: RAGPipeline) -> TestClient:
    return TestClient(create_app(pipeline, title="Test chat"))


def test_page_and_health(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "<title>Test chat</title>" in page.text
    assert 'id="question"' in page.text and "/api/ask" in page.text
    assert client.get("/api/health").json() == {"ok": True, "answerer": "extractive"}


def test_ask_returns_answer_evidence_and_thumbnails(client: TestClient) -> None:
    response = client.post("/api/ask", json={"question": "the blue sea"})
    assert response.status_code == 200
    data = response.json()
    assert data["extractive"] is True and data["answerer"] == "extractive"
    assert data["answer"].startswith("Extractive answer (no LLM configured)")
    evidence = data["evidence"]
    assert 1 <= len(evidence) <= 4
    assert [e["rank"] for e in evidence] == list(range(1, len(evidence) + 1))
    scores = [e["score"] for e in evidence]
    assert scores == sorted(scores, reverse=True)
    assert evidence[0]["text"].startswith("The sea") or evidence[0]["text"] == "the blue sea"
    pictures = [e for e in evidence if e["modality"] != "text"]
    assert pictures, "the image route should contribute at least one picture"
    for e in evidence:
        assert "image" not in e  # server paths never reach the browser
        if e["modality"] == "text":
            assert e["thumbnail"] is None
    thumb = client.get(pictures[0]["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(thumb.content))
    assert image.size == (96, 64)


def test_image_endpoint_serves_only_registered_pictures(client: TestClient, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(secret)
    for path in (
        "/api/image/unknown-token",
        f"/api/image/{secret}",
        "/api/image/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/image/../../etc/passwd",
        "/api/image/%2Fetc%2Fpasswd",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] != "image/jpeg"


def test_ask_rejects_empty_and_too_long_questions(client: TestClient) -> None:
    assert client.post("/api/ask", json={"question": ""}).status_code == 422
    assert client.post("/api/ask", json={"question": "   "}).status_code == 400
    assert client.post("/api/ask", json={"question": "x" * 2001}).status_code == 422


def test_picture_that_disappeared_gives_404_not_500(tmp_path: Path) -> None:
    picture = tmp_path / "gone.png"
    Image.new("RGB", (8, 8), (9, 9, 9)).save(picture)

    class OnePicture:
        answerer = ExtractiveAnswerer()

        def ask(self, question: str) -> Answer:
            ev = [Evidence(rank=1, id="p", modality="image", score=0.5, image=str(picture))]
            return self.answerer.answer(question, ev)

    client = TestClient(create_app(OnePicture()))
    url = client.post("/api/ask", json={"question": "q"}).json()["evidence"][0]["thumbnail"]
    assert client.get(url).status_code == 200
    picture.unlink()
    assert client.get(url).status_code == 404


def test_create_app_checks_pipeline() -> None:
    with pytest.raises(TypeError, match=r"pipeline must have ask\(question\)"):
        create_app(object())


def test_image_registry_is_bounded_and_stable() -> None:
    registry = ImageRegistry(max_entries=2)
    a = registry.register("/a.png")
    assert registry.register("/a.png") == a
    registry.register("/b.png")
    registry.register("/c.png")
    assert len(registry) == 2 and registry.resolve(a) is None
    with pytest.raises(ValueError, match="max_entries must be >= 1"):
        ImageRegistry(max_entries=0)


def test_value_error_from_pipeline_is_a_400() -> None:
    class Bad:
        def ask(self, question: str) -> Any:
            raise ValueError("the query bundle is odd")

    response = TestClient(create_app(Bad())).post("/api/ask", json={"question": "q"})
    assert response.status_code == 400 and response.json()["detail"] == "the query bundle is odd"
