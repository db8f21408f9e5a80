"""The rerank service: request shapes, micro-batching, limits and safety, metrics, real clients.

Servers run on 127.0.0.1 on a free port: the shared harness (tests/_live_server.py), through the
``live_server`` fixture, or its ``LiveServer`` directly for the module-wide server.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from _live_server import LiveServer  # noqa: E402
from PIL import Image  # noqa: E402

from mm_rerank_components import Candidate, MultimodalReranker, Query  # noqa: E402
from mm_rerank_components.scorers import FakeScorer  # noqa: E402
from mm_rerank_components.serving import RerankEngine, ServeConfig, create_app  # noqa: E402
from mm_rerank_components.serving.batching import MicroBatcher, ScoreCall, score_many  # noqa: E402
from mm_rerank_components.serving.fake import PerBatchCostScorer  # noqa: E402


def png(color: tuple[int, int, int], size: tuple[int, int] = (16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


RED, BLUE = png((220, 20, 20)), png((20, 20, 220))


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    engine = RerankEngine(ServeConfig(scorer="fake", max_documents=1000))
    live = LiveServer(create_app(engine)).start()  # module-wide: the function-scoped fixture cannot serve it
    yield live
    live.stop()
    engine.close()


@pytest.fixture
def client(server: LiveServer) -> Iterator[Any]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def in_process(query: Query, candidates: Sequence[Candidate]) -> dict[int, float]:
    ranked = MultimodalReranker(FakeScorer()).rerank(query, list(candidates))
    return {r.index: r.score for r in ranked}


# -- request shapes -----------------------------------------------------------------------------------


def test_jina_text_shape_sorted_with_index_and_documents(client: Any) -> None:
    body = {"model": "x", "query": "red fox", "documents": ["an owl", "a red fox", {"text": "a fox den"}]}
    reply = client.post("/v1/rerank", json=body)
    assert reply.status_code == 200
    payload = reply.json()
    assert [r["index"] for r in payload["results"]] == [1, 2, 0]
    assert payload["results"][0]["document"] == {"text": "a red fox"}
    assert payload["model"] == "fake" and payload["usage"]["documents"] == 3
    scores = [r["relevance_score"] for r in payload["results"]]
    assert scores == sorted(scores, reverse=True)
    expected = in_process(
        Query("red fox"),
        [Candidate("0", text="an owl"), Candidate("1", text="a red fox"), Candidate("2", text="a fox den")],
    )
    assert {r["index"]: r["relevance_score"] for r in payload["results"]} == expected
    # /rerank is the same route
    assert client.post("/rerank", json=body).json()["results"] == payload["results"]


def test_top_n_threshold_return_documents(client: Any) -> None:
    body = {
        "query": "red fox",
        "documents": ["an owl", "a red fox", "a fox"],
        "top_n": 2,
        "return_documents": False,
    }
    results = client.post("/v1/rerank", json=body).json()["results"]
    assert [r["index"] for r in results] == [1, 2] and "document" not in results[0]
    body = {"query": "red fox", "documents": ["an owl", "a red fox", "a fox"], "threshold": 0.4}
    assert [r["index"] for r in client.post("/v1/rerank", json=body).json()["results"]] == [1, 2]


def test_multimodal_shapes_match_in_process_scores(client: Any) -> None:
    documents = [
        {"image": data_uri(RED)},
        {"image": base64.b64encode(BLUE).decode()},
        {"text": "a red square", "image": data_uri(RED)},
        {
            "content": [
                {"type": "text", "text": "blue"},
                {"type": "image_url", "image_url": {"url": data_uri(BLUE)}},
            ]
        },
        "plain red text",
    ]
    for query_json, query in [
        ("red", Query("red")),
        ({"image": data_uri(RED)}, Query(image=RED)),
        ({"content": [{"type": "image_url", "image_url": {"url": data_uri(BLUE)}}]}, Query(image=BLUE)),
        ({"text": "red", "image": data_uri(RED)}, Query("red", image=RED)),
    ]:
        reply = client.post("/v1/rerank", json={"query": query_json, "documents": documents})
        assert reply.status_code == 200, reply.text
        got = {r["index"]: r["relevance_score"] for r in reply.json()["results"]}
        candidates = [
            Candidate("0", image=RED),
            Candidate("1", image=BLUE),
            Candidate("2", text="a red square", image=RED),
            Candidate("3", text="blue", image=BLUE),
            Candidate("4", text="plain red text"),
        ]
        assert got == pytest.approx(in_process(query, candidates))
    assert reply.json()["usage"]["images"] == 4


def test_cohere_v2_shape(client: Any) -> None:
    reply = client.post(
        "/v2/rerank", json={"model": "m", "query": "fox", "documents": ["owl", "fox"], "top_n": 1}
    )
    payload = reply.json()
    assert reply.status_code == 200 and payload["meta"]["api_version"]["version"] == "2"
    assert payload["results"] == [{"index": 1, "relevance_score": 1.0, "raw_score": 1.0}]


# -- bad requests: 4xx JSON naming the problem, and the server keeps serving -----------------------------


@pytest.mark.parametrize(
    ("content", "status", "kind", "words"),
    [
        (b"{not json", 400, "malformed_json", "not valid JSON"),
        (b"[1, 2]", 400, "invalid_type", "JSON object"),
        (b'{"documents": ["a"]}', 400, "missing", '"query"'),
        (b'{"query": 5, "documents": ["a"]}', 400, "invalid_query", "query must be"),
        (b'{"query": "q", "documents": "abc"}', 400, "invalid_type", '"documents" must be a list'),
        (b'{"query": "q", "documents": []}', 400, "empty_documents", "empty"),
        (b'{"query": "q", "documents": ["a"], "top_n": "3"}', 400, "invalid_value", "top_n"),
        (b'{"query": "q", "documents": ["a"], "threshold": 2}', 400, "invalid_value", "threshold"),
        (b'{"query": "q", "documents": ["a", 7]}', 400, "invalid_document", "documents[1]"),
        (
            b'{"query": "q", "documents": ["a", {"text": "  "}]}',
            400,
            "invalid_document",
            "documents[1] is empty",
        ),
        (b'{"query": "q", "documents": ["a"], "on_error": "skip"}', 400, "invalid_value", "on_error"),
    ],
)
def test_bad_requests_get_json_errors(
    client: Any, content: bytes, status: int, kind: str, words: str
) -> None:
    reply = client.post("/v1/rerank", content=content, headers={"content-type": "application/json"})
    assert reply.status_code == status
    payload = reply.json()
    assert payload["error"]["type"] == kind and words in payload["detail"]
    assert client.post("/v1/rerank", json={"query": "q", "documents": ["q"]}).status_code == 200


def test_too_many_documents_and_huge_body(client: Any) -> None:
    reply = client.post("/v1/rerank", json={"query": "q", "documents": ["d"] * 10_000})
    assert reply.status_code == 413 and "10000 documents" in reply.json()["detail"]
    huge = b'{"query": "q", "documents": ["' + b"x" * (100 * 1024 * 1024) + b'"]}'
    reply = client.post("/v1/rerank", content=huge, headers={"content-type": "application/json"})
    assert reply.status_code == 413 and reply.json()["error"]["type"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while streaming
        yield b'{"query": "q", "documents": ["'
        for _ in range(100):
            yield b"x" * (1024 * 1024)
        yield b'"]}'

    reply = client.post("/v1/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert reply.status_code == 413 and "limit of 33554432 bytes" in reply.json()["detail"]
    assert client.get("/health").json()["status"] == "ok"
    assert client.post("/v1/rerank", json={"query": "q", "documents": ["q"]}).status_code == 200


def test_image_problems_name_the_document_and_no_server_path(client: Any, tmp_path: Any) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(RED)
    cases = [
        ({"image": base64.b64encode(b"this is not an image at all, only text" * 3).decode()}, "documents[1]"),
        ({"image": "https://example.com/cat.png"}, "does not fetch URLs"),
        ({"image": str(secret)}, "file paths are not accepted"),
        ({"image": "file://" + str(secret)}, "file paths are not accepted"),
    ]
    for document, words in cases:
        reply = client.post("/v1/rerank", json={"query": "q", "documents": ["q", document]})
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["index"] == 1 and words in reply.json()["detail"]
        assert str(tmp_path) not in reply.text
    # on_error="keep": the bad documents come last with their error, the good ones are ranked
    body = {"query": "q", "documents": ["q", cases[0][0], cases[1][0], "x"], "on_error": "keep"}
    results = client.post("/v1/rerank", json=body).json()["results"]
    assert [r["index"] for r in results] == [0, 3, 1, 2]
    assert (
        "error" not in results[0] and "cannot decode" in results[2]["error"] and "URL" in results[3]["error"]
    )


def test_image_over_the_byte_and_pixel_limits() -> None:
    engine = RerankEngine(ServeConfig(scorer="fake", max_image_bytes=2000, max_image_pixels=100))
    body = {"query": "q", "documents": [{"image": base64.b64encode(b"A" * 5000).decode()}]}
    status, payload = asyncio.run(engine.handle("jina", json.dumps(body).encode()))
    assert status == 413 and payload["error"]["index"] == 0
    body = {"query": "q", "documents": ["q", {"image": data_uri(png((1, 2, 3), (20, 20)))}]}
    status, payload = asyncio.run(engine.handle("jina", json.dumps(body).encode()))
    assert status == 400 and "over the limit of 100" in payload["detail"] and payload["error"]["index"] == 1
    engine.close()


def test_api_key(live_server: Callable[..., LiveServer]) -> None:
    engine = RerankEngine(ServeConfig(scorer="fake", api_key="s3cret"))
    live = live_server(create_app(engine))
    try:
        with httpx.Client(base_url=live.url, timeout=30) as c:
            body = {"query": "q", "documents": ["q"]}
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                reply = c.post("/v1/rerank", json=body, headers=headers)
                assert reply.status_code == 401 and "API key" in reply.json()["detail"]
                assert reply.headers["www-authenticate"] == "Bearer"
            assert (
                c.post("/v1/rerank", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
            )
            assert c.get("/health").status_code == 200  # liveness stays open
            assert c.get("/metrics").status_code == 401
            assert "unauthorized" in c.get("/metrics", headers={"Authorization": "Bearer s3cret"}).text
    finally:
        live.stop()
        engine.close()


def test_scorer_crash_is_a_500_without_internals() -> None:
    class Broken(FakeScorer):
        def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
            raise RuntimeError("/srv/models/secret.bin is corrupt")

    engine = RerankEngine(ServeConfig(), scorer=Broken())
    status, payload = asyncio.run(engine.handle("jina", b'{"query": "q", "documents": ["a"]}'))
    assert status == 500 and "/srv" not in json.dumps(payload) and payload["error"]["type"] == "scorer_error"
    engine.close()


# -- micro-batching -----------------------------------------------------------------------------------


async def _concurrent(engine: RerankEngine, n: int) -> list[tuple[int, dict[str, Any]]]:
    bodies = [
        json.dumps({"query": f"word{i}", "documents": ["nothing", f"word{i}", f"word{(i + 1) % n}"]}).encode()
        for i in range(n)
    ]
    return await asyncio.gather(*(engine.handle("jina", b) for b in bodies))


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_requests_share_passes_and_get_their_own_scores(batching: bool) -> None:
    scorer = PerBatchCostScorer(per_batch_s=0.05)
    engine = RerankEngine(
        ServeConfig(micro_batching=batching, max_wait_ms=20, max_batch_size=64), scorer=scorer
    )
    replies = asyncio.run(_concurrent(engine, 8))
    for status, payload in replies:
        assert status == 200
        assert [(r["index"], r["relevance_score"]) for r in payload["results"]] == [
            (1, 1.0),
            (0, 0.0),
            (2, 0.0),
        ]
    assert scorer.pairs == 8 * 3
    if batching:
        assert scorer.passes < 8
    else:
        assert scorer.passes == 8
    metrics = engine.metrics.render()[0].decode()
    assert (
        "mm_rerank_batch_candidates_count" in metrics
        and 'mm_rerank_documents_total{modality="text"} 24.0' in metrics
    )
    engine.close()


def test_batcher_respects_max_batch_size_and_splits_large_calls() -> None:
    scorer = PerBatchCostScorer(per_batch_s=0.02)
    engine = RerankEngine(ServeConfig(max_batch_size=4, max_wait_ms=50), scorer=scorer)
    body = json.dumps({"query": "a", "documents": ["a", "b", "a b", "c", "a", "d", "e", "a"]}).encode()
    status, payload = asyncio.run(engine.handle("jina", body))
    assert status == 200 and len(payload["results"]) == 8
    assert [r["index"] for r in payload["results"][:4]] == [0, 2, 4, 7]
    assert scorer.passes == 2  # 8 candidates in pieces of at most 4
    engine.close()


def test_a_failing_call_does_not_fail_the_others_in_its_batch() -> None:
    class Picky(PerBatchCostScorer):
        def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
            if query.text == "boom":
                raise RuntimeError("boom")
            return super().score(query, candidates)

        def score_many(self, calls: Any) -> list[list[float]]:
            return [self.score(q, c) for q, c in calls]

    engine = RerankEngine(ServeConfig(max_wait_ms=50), scorer=Picky(per_batch_s=0.0))

    async def run() -> list[tuple[int, dict[str, Any]]]:
        bodies = [b'{"query": "boom", "documents": ["a"]}', b'{"query": "a", "documents": ["a"]}']
        return await asyncio.gather(*(engine.handle("jina", b) for b in bodies))

    (bad, _), (good, payload) = asyncio.run(run())
    assert bad == 500 and good == 200 and payload["results"][0]["relevance_score"] == 1.0
    engine.close()


def test_micro_batcher_and_score_many_directly() -> None:
    scorer = FakeScorer()
    calls = [
        ScoreCall(Query("fox"), [Candidate("a", text="fox")]),
        ScoreCall(Query("owl"), [Candidate("b", text="fox")]),
    ]
    assert score_many(scorer, calls) == [[1.0], [0.0]]
    seen: list[int] = []

    def handler(batch: list[ScoreCall]) -> list[list[float]]:
        seen.append(len(batch))
        return score_many(scorer, batch)

    batcher = MicroBatcher(handler, max_batch_size=10, max_wait_s=0.05)

    async def run() -> list[list[float]]:
        return await asyncio.gather(*(batcher.submit(c) for c in calls))

    assert asyncio.run(run()) == [[1.0], [0.0]] and seen == [2]
    batcher.close()
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(handler, max_batch_size=0)


def test_health_answers_while_scoring_is_blocked(live_server: Callable[..., LiveServer]) -> None:
    entered, release = threading.Event(), threading.Event()

    class Blocking(FakeScorer):
        def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
            entered.set()
            release.wait(30)
            return super().score(query, candidates)

    engine = RerankEngine(ServeConfig(), scorer=Blocking())
    live = live_server(create_app(engine))
    try:
        with httpx.Client(base_url=live.url, timeout=30) as c:
            result: dict[str, Any] = {}
            worker = threading.Thread(
                target=lambda: result.update(r=c.post("/v1/rerank", json={"query": "q", "documents": ["q"]}))
            )
            worker.start()
            assert entered.wait(20)
            health = c.get("/health")
            assert health.status_code == 200 and health.json()["in_flight"] == 1
            assert not release.is_set() and worker.is_alive()  # the scorer is still blocked
            release.set()
            worker.join(20)
            assert result["r"].status_code == 200
            metrics = c.get("/metrics").text
            assert 'mm_rerank_requests_total{route="v1",status="200"} 1.0' in metrics
    finally:
        release.set()
        live.stop()
        engine.close()


def test_overload_gets_503_with_retry_after() -> None:
    engine = RerankEngine(ServeConfig(scorer="fake", max_pending=1))
    engine.pending = 1  # as if one request were in flight
    status, payload = asyncio.run(engine.handle("jina", b'{"query": "q", "documents": ["a"]}'))
    assert status == 503 and payload["error"]["type"] == "overloaded"
    engine.close()


def test_config_validation_and_scorer_factory() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        ServeConfig(max_batch_size=0)
    with pytest.raises(ValueError, match="api_key"):
        ServeConfig(api_key=" ")
    with pytest.raises(ValueError, match="unknown scorer 'nope'"):
        RerankEngine(ServeConfig(scorer="nope"))
    engine = RerankEngine(
        ServeConfig(
            scorer="mm_rerank_components.serving.fake:PerBatchCostScorer", scorer_kwargs={"per_batch_s": 0}
        )
    )
    assert isinstance(engine.scorer, PerBatchCostScorer) and engine.model == "fake"
    engine.close()


def test_openapi_documents_the_routes(client: Any) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/rerank", "/rerank", "/v2/rerank", "/health", "/metrics"} <= set(paths)
    schema = paths["/v1/rerank"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "documents" in schema["properties"]


# -- real clients -------------------------------------------------------------------------------------


def test_cohere_sdk_client_v2(server: LiveServer) -> None:
    cohere = pytest.importorskip("cohere")
    co = cohere.ClientV2(api_key="unused", base_url=server.url)
    response = co.rerank(
        model="anything", query="red fox", documents=["an owl", "a red fox", "a fox"], top_n=2
    )
    assert [r.index for r in response.results] == [1, 2]
    assert response.results[0].relevance_score == 1.0


def test_langchain_cohere_rerank(server: LiveServer) -> None:
    langchain_cohere = pytest.importorskip("langchain_cohere")
    from langchain_core.documents import Document

    reranker = langchain_cohere.CohereRerank(
        model="anything", cohere_api_key="unused", base_url=server.url, top_n=2
    )
    docs = [
        Document(page_content="an owl"),
        Document(page_content="a red fox"),
        Document(page_content="a fox"),
    ]
    out = reranker.compress_documents(docs, "red fox")
    assert [d.page_content for d in out] == ["a red fox", "a fox"]
    assert out[0].metadata["relevance_score"] == 1.0


def test_llama_index_jina_rerank(server: LiveServer) -> None:
    jina = pytest.importorskip("llama_index.postprocessor.jinaai_rerank")
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    postprocessor = jina.JinaRerank(base_url=server.url + "/v1", api_key="unused", top_n=2)
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.0) for t in ("an owl", "a red fox", "a fox")]
    out = postprocessor.postprocess_nodes(nodes, QueryBundle("red fox"))
    assert [n.node.get_content() for n in out] == ["a red fox", "a fox"]
    assert out[0].score == 1.0


def test_cohere_sdk_with_api_key_and_error(live_server: Callable[..., LiveServer]) -> None:
    cohere = pytest.importorskip("cohere")
    engine = RerankEngine(ServeConfig(scorer="fake", api_key="k1"))
    live = live_server(create_app(engine))
    try:
        good = cohere.ClientV2(api_key="k1", base_url=live.url)
        assert good.rerank(model="m", query="fox", documents=["fox", "owl"]).results[0].index == 0
        bad = cohere.ClientV2(api_key="nope", base_url=live.url)
        with pytest.raises(cohere.UnauthorizedError):
            bad.rerank(model="m", query="fox", documents=["fox"])
    finally:
        live.stop()
        engine.close()


# -- the command line ---------------------------------------------------------------------------------


def test_cli_options_map_to_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from mm_rerank_components.cli import _parser
    from mm_rerank_components.cli.serve import config_from_args

    monkeypatch.setenv("MM_RERANK_API_KEY", "from-env")
    args = _parser().parse_args(
        [
            "--threads",
            "2",
            "serve",
            "--scorer",
            "fake",
            "--batch-size",
            "16",
            "--max-wait-ms",
            "2",
            "--no-micro-batching",
            "--max-documents",
            "50",
            "--max-body-mb",
            "1",
            "--allow-urls",
        ]
    )
    config = config_from_args(args)
    assert (config.scorer, config.max_batch_size, config.max_wait_ms, config.micro_batching) == (
        "fake",
        16,
        2.0,
        False,
    )
    assert config.max_documents == 50 and config.max_body_bytes == 1024 * 1024 and config.allow_urls
    assert config.api_key == "from-env" and config.threads == 2
    args = _parser().parse_args(["serve", "--scorer-kwargs", "[1]"])
    with pytest.raises(ValueError, match="JSON object"):
        config_from_args(args)


@pytest.mark.slow
def test_cli_serve_subprocess(tmp_path: Any) -> None:
    import os
    import signal
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MM_RERANK_API_KEY": "k"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mm_rerank_components.cli", "serve", "--scorer", "fake", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "mm-rerank serve did not start"
            time.sleep(0.2)
        reply = httpx.post(
            url + "/v1/rerank",
            json={"query": "fox", "documents": ["owl", "fox"]},
            headers={"Authorization": "Bearer k"},
            timeout=30,
        )
        assert reply.status_code == 200 and reply.json()["results"][0]["index"] == 1
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    assert b"mm-rerank serve: fake on http://127.0.0.1" in process.stderr.read()  # type: ignore[union-attr]


def test_serves_a_saved_reranker_folder(tmp_path: Any) -> None:
    adapt = pytest.importorskip("mm_rerank_components.adapt")
    scorer = FakeScorer()
    words = ["fox", "owl", "cat", "dog", "frog", "snow"]
    lists = []
    for q in range(8):
        target = words[q % len(words)]
        candidates = [
            Candidate(f"q{q}d{j}", text=f"a {target if j in (1, 4) else words[(q + j) % 6]} {j}")
            for j in range(8)
        ]
        query = Query(f"the {target}")
        lists.append(
            adapt.LabelledList(
                query, candidates, scorer.score(query, candidates), [int(j in (1, 4)) for j in range(8)]
            )
        )
    folder = tmp_path / "my-reranker"
    adapt.save_reranker(folder, adapt.fit_fusion(lists, seed=0), scorer=scorer)

    engine = RerankEngine(ServeConfig(reranker_folder=str(folder)))
    documents = ["an owl 3", "a fox 1", "a fox den", "a cat"]
    status, payload = asyncio.run(
        engine.handle("jina", json.dumps({"query": "the fox", "documents": documents}).encode())
    )
    assert status == 200
    local = adapt.load_reranker(folder).rerank(
        Query("the fox"), [Candidate(str(i), text=d) for i, d in enumerate(documents)]
    )
    assert [r["index"] for r in payload["results"]] == [r.index for r in local]
    assert [r["relevance_score"] for r in payload["results"]] == pytest.approx([r.score for r in local])
    assert str(tmp_path) not in json.dumps(payload)
    engine.close()
