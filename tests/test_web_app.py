"""The web chat app: page, ask API, thumbnails served only for returned evidence."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mm_rerank_components import MultimodalReranker
from mm_rerank_components.answer import Answer, Evidence, ExtractiveAnswerer, RAGPipeline
from mm_rerank_components.scorers import FakeScorer

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mm_rerank_components.web import ImageRegistry, WebLimits, create_app  # noqa: E402
from mm_rerank_components.web.limits import INVALID_REQUEST  # noqa: E402


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
    assert set(data["timings_ms"]) == {"first_stage", "rerank", "answer"}
    assert all(v >= 0 for v in data["timings_ms"].values())
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


def test_value_error_from_pipeline_is_a_400_without_echo(caplog: pytest.LogCaptureFixture) -> None:
    class Bad:
        def ask(self, question: str) -> Any:
            raise ValueError(f"the query bundle is odd: {question!r} at /srv/secret/db")

    with caplog.at_level("INFO", logger="mm_rerank_components.web.app"):
        response = TestClient(create_app(Bad())).post("/api/ask", json={"question": "q-marker"})
    assert response.status_code == 400
    assert response.json() == {"detail": "the question could not be answered as asked"}
    assert "q-marker" not in response.text and "/srv/secret" not in response.text
    assert "the query bundle is odd" in caplog.text  # the detail stays on the server


# -- issue #11 item 2: an unreadable picture is kept, the answer comes from the rest ---------------------


def _pipeline_over(tmp_path: Path, on_error: str) -> RAGPipeline:
    from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction

    ef = HashingEmbeddingFunction()
    retriever = ChromaMultiCollectionRetriever(
        path=tmp_path / "db",
        text_embedding_function=ef,
        image_embedding_function=ef,
        k_text=3,
        k_image=3,
        candidate_image="original",
    )
    assert retriever.ingest_folder(write_corpus(tmp_path / "corpus")).failed == []
    reranker = MultimodalReranker(FakeScorer(), on_error=on_error)  # type: ignore[arg-type]
    return RAGPipeline(retriever, reranker, answerer=ExtractiveAnswerer(), top_n=6)


def test_deleted_picture_is_kept_as_unreadable_and_answer_comes_from_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = TestClient(create_app(_pipeline_over(tmp_path, "keep")))
    gone = tmp_path / "corpus" / "red.png"
    gone.unlink()
    with caplog.at_level("WARNING"):
        response = client.post("/api/ask", json={"question": "a red apple"})
    assert response.status_code == 200
    assert str(tmp_path) not in response.text and "red.png" not in response.text
    data = response.json()
    unreadable = [e for e in data["evidence"] if e["error"]]
    assert len(unreadable) == 1 and unreadable[0]["error"] == "could not be read"
    assert unreadable[0]["thumbnail"] is None and unreadable[0]["image_name"] is None
    readable = [e for e in data["evidence"] if not e["error"]]
    assert readable and all(e["error"] is None for e in readable)
    cited = {int(n) for n in __import__("re").findall(r"\[(\d+)\]", data["answer"])}
    assert cited and unreadable[0]["rank"] not in cited  # the answer is written from the rest
    assert str(gone) in caplog.text  # the detail is logged on the server
    # an unrelated question still works
    assert client.post("/api/ask", json={"question": "owls at night"}).status_code == 200


def test_unreadable_picture_with_a_raising_reranker_never_leaks_the_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        client = TestClient(create_app(_pipeline_over(tmp_path, "raise")))
    assert "on_error='keep'" in caplog.text  # the operator is told at start-up
    (tmp_path / "corpus" / "red.png").unlink()
    response = client.post("/api/ask", json={"question": "a red apple"})
    assert response.status_code == 500
    assert response.json() == {"detail": "a search result could not be read; see the server log"}
    assert str(tmp_path) not in response.text


# -- issue #11 item 9: limits --------------------------------------------------------------------------


def test_body_over_the_cap_is_413_declared_or_streamed(client: TestClient) -> None:
    big = b'{"question": "' + b"x" * 20_000 + b'"}'
    response = client.post("/api/ask", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and len(response.content) < 200
    assert "xxxx" not in response.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams
        yield b'{"question": "'
        for _ in range(40):
            yield b"y" * 1000
        yield b'"}'

    streamed = client.post("/api/ask", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "yyyy" not in streamed.text
    small = TestClient(create_app(_Echo(), limits=WebLimits(max_body_bytes=64)))
    assert small.post("/api/ask", json={"question": "q" * 80}).status_code == 413
    assert small.post("/api/ask", json={"question": "short"}).status_code == 200


def test_error_bodies_are_short_and_never_echo_the_input(client: TestClient) -> None:
    for body in (
        {"question": "z" * 10_000},
        {"question": ""},
        {"wrong": "z" * 5000},
        ["z" * 5000],
    ):
        response = client.post("/api/ask", json=body)
        assert response.status_code == 422, body
        assert len(response.content) < 200 and "zzzz" not in response.text
        assert response.json() == {"detail": INVALID_REQUEST}
    broken = client.post(
        "/api/ask", content=b'{"question": "zzzz', headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422 and "zzzz" not in broken.text


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"question": "a \\ud800 b"}', "lone UTF-16 surrogate"),
        (b'{"question": "tab\\u0000null"}', "control character"),
        (b'{"question": "bell \\u0007"}', "control character"),
    ],
)
def test_bad_text_is_a_400(raw: bytes, reason: str) -> None:
    client = TestClient(create_app(_Echo()), raise_server_exceptions=False)
    response = client.post("/api/ask", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert reason in response.json()["detail"]
    fine = client.post("/api/ask", json={"question": "tabs\tand\nlines are fine"})
    assert fine.status_code == 200


class _Echo:
    answerer = ExtractiveAnswerer()

    def ask(self, question: str) -> Answer:
        return self.answerer.answer(
            question, [Evidence(rank=1, id="p", modality="text", score=0.5, text=question)]
        )


class _Blocking:
    """ask() blocks until released; counts how many run at once."""

    answerer = ExtractiveAnswerer()

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def ask(self, question: str) -> Answer:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.release.wait(30)
            return self.answerer.answer(question, [])
        finally:
            with self.lock:
                self.running -= 1


def _post(url: str, question: str) -> int:
    request = urllib.request.Request(
        url + "/api/ask",
        data=json.dumps({"question": question}).encode(),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.slow
def test_health_never_waits_behind_questions_and_the_queue_is_bounded(
    live_server: Callable[..., Any],
) -> None:
    pipeline = _Blocking()
    app = create_app(pipeline, limits=WebLimits(max_concurrent=1, max_waiting=50))
    url = live_server(app, lifespan="auto").url  # the shared harness (tests/_live_server.py)
    with ThreadPoolExecutor(max_workers=60) as pool:
        asks = [pool.submit(_post, url, f"question {i}") for i in range(60)]
        deadline = time.monotonic() + 10
        while pipeline.running == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # let every request arrive and queue
        started = time.perf_counter()
        with urllib.request.urlopen(url + "/api/health", timeout=5) as response:
            assert json.loads(response.read()) == {"ok": True, "answerer": "extractive"}
        assert time.perf_counter() - started < 1.0  # answered on the event loop, not behind the questions
        assert pipeline.running == 1  # the async limit: one question at a time, the rest wait
        pipeline.release.set()
        statuses = [f.result(timeout=60) for f in asks]
    assert pipeline.most == 1
    assert statuses.count(200) >= 51 and set(statuses) <= {200, 503}  # beyond 1 + 50 waiting: 503
