"""The answer module: evidence conversion, the extractive answerer, LLM configuration and the LLM client.

The LLM path is tested only against a tiny OpenAI-compatible server on 127.0.0.1 started here; no test
reaches the network.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mm_rerank_components import Candidate, MultimodalReranker, Query, RankedCandidate
from mm_rerank_components.answer import (
    EXTRACTIVE_NOTICE,
    Evidence,
    ExtractiveAnswerer,
    LLMAnswerer,
    LLMConfig,
    LLMError,
    RAGPipeline,
    build_messages,
    format_evidence,
    make_answerer,
)
from mm_rerank_components.scorers import FakeScorer


def _ev(rank: int, text: str = "", image: str | None = None, score: float = 0.5, **kw: Any) -> Evidence:
    modality = "text+image" if image and text else "image" if image else "text"
    return Evidence(rank=rank, id=f"e{rank}", modality=modality, score=score, text=text, image=image, **kw)


# -- extractive -----------------------------------------------------------------------------------------


def test_extractive_quotes_best_sentence_cites_and_says_it_is_extractive() -> None:
    evidence = [
        _ev(1, "Foxes are small canids. The red fox lives in dens and hunts voles in the snow."),
        _ev(2, image="/x/owl.png", title="Snowy owl"),
        _ev(3, "Bananas are yellow."),
        _ev(4, "Never quoted: beyond max_evidence."),
    ]
    text = ExtractiveAnswerer(max_evidence=3).compose("Where does the red fox live?", evidence)
    lines = text.splitlines()
    assert lines[0] == EXTRACTIVE_NOTICE
    assert "no LLM configured" in lines[0]
    assert lines[1] == "The red fox lives in dens and hunts voles in the snow. [1]"
    assert lines[2] == "Picture: Snowy owl. [2]"
    assert lines[3] == "Bananas are yellow. [3]"
    assert "Never quoted" not in text


def test_extractive_drops_heading_line_and_splits_on_line_breaks() -> None:
    evidence = [
        _ev(
            1,
            "Golden Temple\n\nThe Golden Temple is in Amritsar\nIt is covered in gold.",
            title="Golden Temple",
        )
    ]
    text = ExtractiveAnswerer().compose("Where is the Golden Temple?", evidence)
    assert text.splitlines()[1] == "The Golden Temple is in Amritsar [1]"
    two = ExtractiveAnswerer(sentences_per_item=2).compose("gold temple", evidence)
    assert two.splitlines()[1] == "The Golden Temple is in Amritsar It is covered in gold. [1]"


def test_extractive_without_evidence_says_so() -> None:
    answer = ExtractiveAnswerer().answer("anything?", [])
    assert answer.extractive and answer.answerer == "extractive"
    assert "no evidence was found" in answer.text
    assert "no LLM configured" in answer.text


def test_extractive_min_score_and_argument_checks() -> None:
    evidence = [_ev(1, "Low score passage.", score=0.1), _ev(2, "High score passage.", score=0.9)]
    assert "[1]" not in ExtractiveAnswerer(min_score=0.5).compose("passage", evidence)
    with pytest.raises(ValueError, match="max_evidence must be >= 1"):
        ExtractiveAnswerer(max_evidence=0)
    with pytest.raises(ValueError, match="sentences_per_item must be >= 1"):
        ExtractiveAnswerer(sentences_per_item=0)


# -- evidence -------------------------------------------------------------------------------------------


def test_evidence_from_ranked_candidate() -> None:
    c = Candidate("i1", text="Golden Temple", image="/d/temple.webp", metadata={"title": "Golden Temple"})
    e = Evidence.from_ranked(RankedCandidate(candidate=c, index=3, score=0.8, raw_score=1.2, rank=0))
    assert (e.rank, e.id, e.modality, e.score, e.image, e.title) == (
        1,
        "i1",
        "text+image",
        0.8,
        "/d/temple.webp",
        "Golden Temple",
    )
    assert e.to_dict()["score"] == 0.8


def test_evidence_from_framework_objects() -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import ImageNode, NodeWithScore, TextNode

    nodes = [
        NodeWithScore(
            node=ImageNode(text="A fox", image_path="/d/fox.png", metadata={"relevance_score": 0.7}),
            score=0.7,
        ),
        NodeWithScore(node=TextNode(text="Owls.", metadata={"modality": "text"}), score=0.2),
    ]
    li = Evidence.from_llama_index(nodes)
    assert [(e.rank, e.modality, e.image, e.score) for e in li] == [
        (1, "text+image", "/d/fox.png", 0.7),
        (2, "text", None, 0.2),
    ]
    docs = [Document("Owls.", metadata={"relevance_score": 0.4, "modality": "text"}, id="d1"), Document("x")]
    lc = Evidence.from_langchain(docs)
    assert (lc[0].id, lc[0].score, lc[0].modality) == ("d1", 0.4, "text")
    assert lc[1].id == "doc-1" and math.isnan(lc[1].score)
    assert "relevance n/a" in format_evidence(lc)


# -- configuration --------------------------------------------------------------------------------------


def test_llm_config_from_env() -> None:
    assert LLMConfig.from_env({}) is None
    assert LLMConfig.from_env({"OPENAI_API_KEY": "sk-x"}) is None  # a key alone configures nothing
    cfg = LLMConfig.from_env(
        {
            "MM_RERANK_LLM_MODEL": "m1",
            "OPENAI_MODEL": "ignored",
            "MM_RERANK_LLM_BASE_URL": "http://127.0.0.1:1234/v1/",
            "OPENAI_API_KEY": "sk-test",
            "MM_RERANK_LLM_TIMEOUT": "5",
            "MM_RERANK_LLM_VISION": "1",
        }
    )
    assert cfg is not None
    assert (cfg.model, cfg.chat_url, cfg.api_key, cfg.timeout, cfg.vision) == (
        "m1",
        "http://127.0.0.1:1234/v1/chat/completions",
        "sk-test",
        5.0,
        True,
    )
    assert "sk-test" not in repr(cfg)
    openai = LLMConfig.from_env({"OPENAI_MODEL": "gpt-4o-mini"})
    assert openai is not None and openai.base_url == "https://api.openai.com/v1"
    assert LLMConfig.from_env({"MM_RERANK_LLM_MODEL": "m", "MM_RERANK_LLM": "off"}) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MM_RERANK_LLM_BASE_URL": "http://h/v1"}, "no model is: set MM_RERANK_LLM_MODEL"),
        ({"MM_RERANK_LLM_MODEL": "m", "MM_RERANK_LLM_TIMEOUT": "soon"}, "MM_RERANK_LLM_TIMEOUT must be"),
        ({"MM_RERANK_LLM_MODEL": "m", "MM_RERANK_LLM_VISION": "maybe"}, "MM_RERANK_LLM_VISION must be"),
        ({"MM_RERANK_LLM_MODEL": "m", "MM_RERANK_LLM_BASE_URL": "localhost:8000"}, "must start with http"),
    ],
)
def test_llm_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LLMConfig.from_env(env)


def test_make_answerer_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MM_RERANK_LLM_MODEL", "OPENAI_MODEL", "MM_RERANK_LLM_BASE_URL", "MM_RERANK_LLM"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(make_answerer(), ExtractiveAnswerer)
    monkeypatch.setenv("MM_RERANK_LLM_MODEL", "local-model")
    answerer = make_answerer()
    assert isinstance(answerer, LLMAnswerer) and answerer.name == "llm:local-model"


# -- the LLM client against a fake OpenAI-compatible server on loopback -----------------------------------


class _FakeOpenAI(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []
    reply: ClassVar[dict[str, Any]] = {}
    status = 200

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        data = json.dumps(type(self).reply).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_openai() -> Iterator[tuple[str, type[_FakeOpenAI]]]:
    handler = type("Handler", (_FakeOpenAI,), {"requests": [], "reply": {}, "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    finally:
        server.shutdown()
        server.server_close()


def test_llm_answerer_sends_evidence_and_returns_the_reply(
    fake_openai: tuple[str, type[_FakeOpenAI]], red_png: Path
) -> None:
    url, handler = fake_openai
    handler.reply = {"choices": [{"message": {"role": "assistant", "content": " It is red [2]. "}}]}
    answerer = LLMAnswerer(LLMConfig(model="tiny", base_url=url, api_key="sk-local", vision=True))
    evidence = [_ev(1, "Foxes are red."), _ev(2, "A red picture", image=str(red_png), title="Red")]
    answer = answerer.answer("What colour?", evidence)
    assert answer.text == "It is red [2]."
    assert answer.answerer == "llm:tiny" and not answer.extractive
    (request,) = handler.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer sk-local"
    body = request["body"]
    assert body["model"] == "tiny"
    user = body["messages"][1]["content"]
    assert "[1] passage (relevance 0.500): Foxes are red." in user[0]["text"]
    assert "Question: What colour?" in user[0]["text"]
    assert user[2]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_llm_client_errors_are_clear(fake_openai: tuple[str, type[_FakeOpenAI]]) -> None:
    url, handler = fake_openai
    handler.status = 401
    handler.reply = {"error": {"message": "bad key"}}
    answerer = LLMAnswerer(LLMConfig(model="tiny", base_url=url))
    with pytest.raises(LLMError, match=r"answered HTTP 401: .*bad key"):
        answerer.answer("q", [_ev(1, "t")])
    handler.status = 200
    handler.reply = {"choices": []}
    with pytest.raises(LLMError, match=r"returned no choices\[0\].message.content"):
        answerer.answer("q", [_ev(1, "t")])


def test_llm_client_unreachable_endpoint() -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    answerer = LLMAnswerer(LLMConfig(model="m", base_url=f"http://127.0.0.1:{port}/v1", timeout=2))
    with pytest.raises(LLMError, match="cannot reach the LLM endpoint"):
        answerer.answer("q", [_ev(1, "t")])


def test_build_messages_text_only() -> None:
    messages = build_messages("q?", [_ev(1, "passage")])
    assert messages[0]["role"] == "system" and "Cite the evidence" in messages[0]["content"]
    assert isinstance(messages[1]["content"], str)


# -- pipeline -------------------------------------------------------------------------------------------


class _ListRetriever:
    def __init__(self, candidates: list[Candidate]) -> None:
        self.candidates = candidates
        self.queries: list[Query] = []

    def retrieve(self, query: Query) -> list[Candidate]:
        self.queries.append(query)
        return self.candidates


def test_rag_pipeline_reranks_and_answers(red_png: Path) -> None:
    candidates = [
        Candidate("owl", text="Owls hunt at night."),
        Candidate("fox", text="The red fox hunts in the snow."),
        Candidate("pic", image=str(red_png), text="red fox picture"),
    ]
    retriever = _ListRetriever(candidates)
    rag = RAGPipeline(
        retriever, MultimodalReranker(FakeScorer()), answerer=ExtractiveAnswerer(), top_n=2, read_depth=2
    )
    answer = rag.ask("  red fox  ")
    assert retriever.queries == [Query("red fox")]
    assert [e.id for e in answer.evidence] == ["fox", "pic"]
    assert [e.rank for e in answer.evidence] == [1, 2]
    assert answer.text.splitlines()[1] == "The red fox hunts in the snow. [1]"
    assert answer.seconds is not None and answer.seconds >= 0
    assert answer.to_dict()["evidence"][1]["modality"] == "text+image"
    assert RAGPipeline(_ListRetriever([]), MultimodalReranker(FakeScorer())).search("x") == []


def test_rag_pipeline_argument_errors() -> None:
    reranker = MultimodalReranker(FakeScorer())
    with pytest.raises(TypeError, match="retriever must have retrieve"):
        RAGPipeline(object(), reranker)
    with pytest.raises(TypeError, match="reranker must be a MultimodalReranker"):
        RAGPipeline(_ListRetriever([]), object())
    with pytest.raises(ValueError, match="top_n must be a positive int"):
        RAGPipeline(_ListRetriever([]), reranker, top_n=0)
    with pytest.raises(ValueError, match="read_depth must be a positive int"):
        RAGPipeline(_ListRetriever([]), reranker, read_depth=0)
    with pytest.raises(ValueError, match="question must be a non-empty string"):
        RAGPipeline(_ListRetriever([]), reranker, answerer=ExtractiveAnswerer()).ask("  ")


def test_evidence_cites_the_original_file_not_an_inline_preview(tmp_path: Path) -> None:
    from mm_rerank_components import Candidate, RankedCandidate
    from mm_rerank_components.answer import Evidence

    original = tmp_path / "fox.png"
    preview = "data:image/jpeg;base64," + "A" * 80
    ranked = RankedCandidate(
        candidate=Candidate("img", image=preview, text="a fox", metadata={"image_path": str(original)}),
        index=0,
        score=0.9,
        raw_score=0.9,
        rank=0,
    )
    assert Evidence.from_ranked(ranked).image == str(original)
    bare = RankedCandidate(
        candidate=Candidate("img", image=preview), index=0, score=0.9, raw_score=0.9, rank=0
    )
    assert Evidence.from_ranked(bare).image == preview  # no original known: keep what there is
