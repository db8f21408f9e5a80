"""RemoteScorer: the request shape of each API, retries, deadline, batching, and a live round trip."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")

from _live_server import LiveServer, free_port  # noqa: E402
from PIL import Image  # noqa: E402

from mm_rerank_components import Candidate, CandidateError, MultimodalReranker, Query  # noqa: E402
from mm_rerank_components.scorers import FakeScorer, ModalityRouter, RemoteScorer  # noqa: E402
from mm_rerank_components.scorers.remote import RemoteScorerError  # noqa: E402

RED = Image.new("RGB", (16, 16), (220, 20, 20))
BLUE = Image.new("RGB", (16, 16), (20, 20, 220))


def mock(handler: Callable[[Any], Any]) -> tuple[Any, list[dict[str, Any]]]:
    """An httpx client whose transport records each JSON body and answers with ``handler(body)``."""
    seen: list[dict[str, Any]] = []

    def respond(request: Any) -> Any:
        body = json.loads(request.content)
        seen.append({"url": str(request.url), "auth": request.headers.get("authorization"), "body": body})
        return handler(body)

    return httpx.Client(transport=httpx.MockTransport(respond)), seen


def ranked_reply(body: dict[str, Any], key: str = "relevance_score") -> Any:
    """Scores 1/(1+position), returned in reverse order (a client must use ``index``)."""
    n = len(body.get("documents") or body["texts"])
    results = [{"index": i, key: 1.0 / (1 + i)} for i in reversed(range(n))]
    return httpx.Response(200, json=results if key == "score" else {"results": results})


MIXED = [
    Candidate("t", text="a red fox"),
    Candidate("i", image=RED),
    Candidate("ti", text="caption", image=BLUE),
]


def test_mm_rerank_and_vllm_shapes() -> None:
    client, seen = mock(ranked_reply)
    scorer = RemoteScorer("http://gpu:8080/", api="mm-rerank", model="m", api_key="k", client=client)
    assert scorer.score(Query("fox"), MIXED) == [1.0, 0.5, 1 / 3]
    sent = seen[0]
    assert sent["url"] == "http://gpu:8080/v1/rerank" and sent["auth"] == "Bearer k"
    docs = sent["body"]["documents"]
    assert docs[0] == {"text": "a red fox"} and docs[1]["image"].startswith("data:image/png;base64,")
    assert docs[2]["text"] == "caption" and sent["body"]["model"] == "m" and sent["body"]["query"] == "fox"
    assert scorer.outputs_probabilities is True

    client, seen = mock(ranked_reply)
    vllm = RemoteScorer("http://gpu:8000", api="vllm", client=client)
    vllm.score(Query("fox", image=RED), MIXED)
    body = seen[0]["body"]
    assert body["documents"][0] == "a red fox"
    assert body["documents"][2]["content"][0] == {"type": "text", "text": "caption"}
    assert body["documents"][2]["content"][1]["type"] == "image_url"
    assert [p["type"] for p in body["query"]["content"]] == ["text", "image_url"]
    assert vllm.outputs_probabilities is False


def test_cohere_tei_jina_shapes() -> None:
    client, seen = mock(ranked_reply)
    cohere = RemoteScorer("https://api.cohere.com", api="cohere", model="rerank-v3.5", client=client)
    assert cohere.score(Query("fox"), MIXED[:1]) == [1.0]
    assert seen[0]["url"].endswith("/v2/rerank") and seen[0]["body"]["documents"] == ["a red fox"]

    client, seen = mock(lambda body: ranked_reply(body, key="score"))
    tei = RemoteScorer("http://tei:80", api="tei", client=client)
    assert tei.score(Query("fox"), [Candidate("a", text="x"), Candidate("b", text="y")]) == [1.0, 0.5]
    assert seen[0]["body"]["texts"] == ["x", "y"] and seen[0]["url"].endswith("/rerank")

    client, seen = mock(ranked_reply)
    jina = RemoteScorer("https://api.jina.ai/v1", api="jina", model="jina-reranker-m0", client=client)
    jina.score(Query("fox"), MIXED[:2])
    assert seen[0]["url"] == "https://api.jina.ai/v1/rerank"
    assert (
        seen[0]["body"]["documents"][0] == {"text": "a red fox"}
        and "image" in seen[0]["body"]["documents"][1]
    )
    with pytest.raises(ValueError, match="text\\+image, but api='jina' reads only image, text"):
        jina.score(Query("fox"), MIXED[2:])
    with pytest.raises(ValueError, match="text queries only"):
        jina.score(Query(image=RED), MIXED[:1])


def test_text_only_api_and_images_clear_error_or_router() -> None:
    client, _ = mock(ranked_reply)
    cohere = RemoteScorer("http://c", api="cohere", client=client)
    with pytest.raises(ValueError, match="ModalityRouter"):
        cohere.score(Query("fox"), MIXED[1:2])
    with pytest.raises(CandidateError, match="ModalityRouter"):
        MultimodalReranker(cohere, FakeCalibrator()).rerank(Query("fox"), MIXED)
    router = ModalityRouter({"text": cohere, "image": FakeScorer(), "text+image": FakeScorer()})
    ranked = MultimodalReranker(router, FakeCalibrator()).rerank(Query("fox"), MIXED)
    assert sorted(r.index for r in ranked) == [0, 1, 2] and all(r.error is None for r in ranked)


class FakeCalibrator:
    def calibrate(self, raw_scores: Any, modalities: Any) -> list[float]:
        return [min(1.0, max(0.0, float(s))) for s in raw_scores]


def test_batches_of_batch_size() -> None:
    client, seen = mock(ranked_reply)
    scorer = RemoteScorer("http://x", api="mm-rerank", batch_size=2, client=client)
    cands = [Candidate(str(i), text=f"t{i}") for i in range(5)]
    assert scorer.score(Query("q"), cands) == [1.0, 0.5, 1.0, 0.5, 1.0]
    assert [len(s["body"]["documents"]) for s in seen] == [2, 2, 1]


def test_retries_on_429_and_5xx_then_succeeds() -> None:
    replies = iter([httpx.Response(503), httpx.Response(429, headers={"Retry-After": "0"}), None])

    def handler(body: dict[str, Any]) -> Any:
        reply = next(replies)
        return reply if reply is not None else ranked_reply(body)

    client, seen = mock(handler)
    scorer = RemoteScorer("http://x", client=client, backoff_s=0.01)
    assert scorer.score(Query("q"), MIXED[:1]) == [1.0]
    assert len(seen) == 3


def test_client_errors_are_not_retried_and_name_the_reason() -> None:
    client, seen = mock(lambda body: httpx.Response(400, json={"detail": "documents[0] is empty"}))
    with pytest.raises(RemoteScorerError, match=r"HTTP 400: documents\[0\] is empty"):
        RemoteScorer("http://x", client=client).score(Query("q"), MIXED[:1])
    assert len(seen) == 1


def test_total_deadline_and_retry_budget() -> None:
    client, seen = mock(lambda body: httpx.Response(503))
    started = time.monotonic()
    with pytest.raises(RemoteScorerError, match="total timeout of 0.3 s"):
        RemoteScorer("http://x", client=client, timeout=0.3, backoff_s=0.1, max_retries=50).score(
            Query("q"), MIXED[:1]
        )
    assert time.monotonic() - started < 2.0 and 1 < len(seen) < 10
    client, seen = mock(lambda body: httpx.Response(502))
    with pytest.raises(RemoteScorerError, match="after 3 attempts; last: HTTP 502"):
        RemoteScorer("http://x", client=client, max_retries=2, backoff_s=0.0).score(Query("q"), MIXED[:1])


def test_connection_refused_is_retried_then_reported() -> None:
    port = free_port()  # nothing listens there
    scorer = RemoteScorer(f"http://127.0.0.1:{port}", max_retries=1, backoff_s=0.0, timeout=5)
    with pytest.raises(RemoteScorerError, match="after 2 attempts; last: ConnectError"):
        scorer.score(Query("q"), MIXED[:1])
    scorer.close()


def test_malformed_answers() -> None:
    client, _ = mock(
        lambda body: httpx.Response(200, json={"results": [{"index": 0, "relevance_score": 0.5}]})
    )
    with pytest.raises(RemoteScorerError, match=r"no usable score for documents \[1\]"):
        RemoteScorer("http://x", client=client).score(Query("q"), MIXED[:2])
    client, _ = mock(lambda body: httpx.Response(200, json={"nope": 1}))
    with pytest.raises(RemoteScorerError, match="without a results list"):
        RemoteScorer("http://x", client=client).score(Query("q"), MIXED[:1])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="api must be one of"):
        RemoteScorer("http://x", api="openai")  # type: ignore[arg-type, unused-ignore]
    with pytest.raises(ValueError, match="base_url must be"):
        RemoteScorer("gpu:8080")
    with pytest.raises(ValueError, match="batch_size"):
        RemoteScorer("http://x", batch_size=0)


# -- a live round trip against our own server ---------------------------------------------------------


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from mm_rerank_components.serving import RerankEngine, ServeConfig, create_app

    engine = RerankEngine(ServeConfig(scorer="fake"))
    try:
        with LiveServer(create_app(engine), lifespan="auto") as live:
            yield live.url
    finally:
        engine.close()


@pytest.mark.parametrize("api", ["mm-rerank", "vllm"])
def test_remote_against_our_server_matches_in_process(live_url: str, api: str) -> None:
    candidates = [
        Candidate("a", text="an owl at night"),
        Candidate("b", image=RED),
        Candidate("c", text="a red fox", image=BLUE),
        Candidate("d", text="red fox den"),
        Candidate("e", image=BLUE),
    ]
    for query in (Query("red fox"), Query(image=RED), Query("red", image=BLUE)):
        local = MultimodalReranker(FakeScorer()).rerank(query, candidates)
        with RemoteScorer(live_url, api=api, batch_size=2) as scorer:
            calibrator = None if scorer.outputs_probabilities else FakeCalibrator()
            remote = MultimodalReranker(scorer, calibrator).rerank(query, candidates)
        assert [r.id for r in remote] == [r.id for r in local]
        assert [r.score for r in remote] == pytest.approx([r.score for r in local])


def test_remote_cohere_shape_against_our_server(live_url: str) -> None:
    candidates = [Candidate("a", text="an owl"), Candidate("b", text="a red fox"), Candidate("c", text="fox")]
    with RemoteScorer(live_url, api="cohere", model="x") as scorer:
        remote = MultimodalReranker(scorer, FakeCalibrator()).rerank(Query("red fox"), candidates)
    local = MultimodalReranker(FakeScorer()).rerank(Query("red fox"), candidates)
    assert [(r.id, r.score) for r in remote] == [(r.id, r.score) for r in local]


@pytest.mark.slow
def test_remote_starter_service_matches_in_process_starter() -> None:
    """A calibrated model scorer: the service's scores pass through RemoteScorer unchanged."""
    pytest.importorskip("torch")
    pytest.importorskip("uvicorn")
    from mm_rerank_components.scorers.starter import StarterScorer
    from mm_rerank_components.serving import RerankEngine, ServeConfig, create_app

    engine = RerankEngine(ServeConfig(scorer="starter", threads=1))
    candidates = [
        Candidate("a", text="A red fox hunts in the snow."),
        Candidate("b", text="Owls sleep during the day."),
        Candidate("c", image=RED),
        Candidate("d", text="a blue square", image=BLUE),
    ]
    try:
        with LiveServer(create_app(engine), lifespan="auto", start_timeout=30) as live:
            local = MultimodalReranker(StarterScorer()).rerank(Query("a red fox"), candidates)
            with RemoteScorer(live.url, api="mm-rerank", timeout=120) as scorer:
                remote = MultimodalReranker(scorer).rerank(Query("a red fox"), candidates)
        assert [r.id for r in remote] == [r.id for r in local]
        assert [r.score for r in remote] == pytest.approx([r.score for r in local], abs=1e-6)
    finally:
        engine.close()
