"""LlamaIndex postprocessor and LangChain compressor: translation, events, async, parity with the core."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.schema import ImageNode, MetadataMode, NodeWithScore, QueryBundle, TextNode

from conftest import b64
from mm_rerank_components import Candidate, CandidateError, MultimodalReranker, Query
from mm_rerank_components.integrations.langchain import MultimodalRerankCompressor
from mm_rerank_components.integrations.llama_index import MultimodalRerankPostprocessor
from mm_rerank_components.scorers import FakeScorer
from mm_rerank_components.scorers.base import BaseScorer


@pytest.fixture
def reranker() -> MultimodalReranker:
    return MultimodalReranker(FakeScorer())


# -- LlamaIndex ---------------------------------------------------------------------------------------


SEEN_EVENTS: list[str] = []


class Collect(BaseEventHandler):
    @classmethod
    def class_name(cls) -> str:
        return "Collect"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        SEEN_EVENTS.append(event.class_name())


def li_nodes(red_png: Path, blue_png: Path) -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(id_="t1", text="owls hunt at night"), score=0.91),
        NodeWithScore(node=TextNode(id_="t2", text="the red fox in snow"), score=0.40),
        NodeWithScore(node=ImageNode(id_="i1", image_path=str(red_png), text="red fox photo"), score=0.30),
        NodeWithScore(node=ImageNode(id_="i2", image=b64(blue_png.read_bytes())), score=0.25),
        NodeWithScore(node=ImageNode(id_="i3", metadata={"file_path": str(blue_png)}), score=0.2),
    ]


def test_postprocessor_scores_mixed_nodes(
    reranker: MultimodalReranker, red_png: Path, blue_png: Path
) -> None:
    nodes = li_nodes(red_png, blue_png)
    before = copy.deepcopy([(n.node.metadata, n.score) for n in nodes])
    post = MultimodalRerankPostprocessor(reranker=reranker, keep_retrieval_score=True)
    out = post.postprocess_nodes(nodes, query_str="red fox")
    assert [n.node.node_id for n in out][:2] == ["t2", "i1"]
    assert {n.node.node_id for n in out} == {"t1", "t2", "i1", "i2", "i3"}
    assert isinstance(out[1].node, ImageNode) and isinstance(out[0].node, TextNode)
    scores = [n.score for n in out]
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    for n in out:
        assert n.node.metadata["relevance_score"] == n.score
        assert 0.0 <= n.score <= 1.0  # type: ignore[operator]
        assert "relevance_score" in n.node.excluded_llm_metadata_keys
    assert {n.node.node_id: n.node.metadata["modality"] for n in out} == {
        "t1": "text",
        "t2": "text",
        "i1": "text+image",
        "i2": "image",
        "i3": "image",
    }
    assert {n.node.node_id: n.node.metadata["retrieval_score"] for n in out}["t1"] == 0.91
    assert before == [(n.node.metadata, n.score) for n in nodes]  # inputs untouched


def test_postprocessor_guards_and_top_n(reranker: MultimodalReranker, red_png: Path, blue_png: Path) -> None:
    post = MultimodalRerankPostprocessor(reranker=reranker, top_n=2)
    assert post.class_name() == "MultimodalRerankPostprocessor"
    assert post.postprocess_nodes([], query_str="x") == []
    with pytest.raises(ValueError, match="needs a query"):
        post.postprocess_nodes(li_nodes(red_png, blue_png))
    assert len(post.postprocess_nodes(li_nodes(red_png, blue_png), query_str="red fox")) == 2
    with pytest.raises(ValueError, match="ImageNode 'empty' .* has no image"):
        post.postprocess_nodes([NodeWithScore(node=ImageNode(id_="empty", text="cap"))], query_str="x")
    with pytest.raises(TypeError, match="reranker must be a MultimodalReranker"):
        MultimodalRerankPostprocessor(reranker=object())  # type: ignore[arg-type]


def test_postprocessor_image_query_and_url_permission(
    reranker: MultimodalReranker, red_png: Path, blue_png: Path
) -> None:
    post = MultimodalRerankPostprocessor(reranker=reranker)
    out = post.postprocess_nodes(
        li_nodes(red_png, blue_png)[2:], QueryBundle(query_str="", image_path=str(blue_png))
    )
    assert out[0].node.node_id in {"i2", "i3"} and out[0].score == 1.0
    url_node = NodeWithScore(node=ImageNode(id_="web", image_url="https://example.invalid/a.png"))
    with pytest.raises(CandidateError, match="'web'.*fetching URLs is off"):
        post.postprocess_nodes([url_node], query_str="x")


def test_postprocessor_emits_rerank_events(
    reranker: MultimodalReranker, red_png: Path, blue_png: Path
) -> None:
    handler = Collect()
    SEEN_EVENTS.clear()
    root = get_dispatcher()
    root.add_event_handler(handler)
    try:
        MultimodalRerankPostprocessor(reranker=reranker).postprocess_nodes(
            li_nodes(red_png, blue_png), query_str="fox"
        )
    finally:
        root.event_handlers.remove(handler)
    assert "ReRankStartEvent" in SEEN_EVENTS and "ReRankEndEvent" in SEEN_EVENTS
    assert SEEN_EVENTS.index("ReRankStartEvent") < SEEN_EVENTS.index("ReRankEndEvent")


def test_postprocessor_async_matches_sync(
    reranker: MultimodalReranker, red_png: Path, blue_png: Path
) -> None:
    post = MultimodalRerankPostprocessor(reranker=reranker)
    sync = post.postprocess_nodes(li_nodes(red_png, blue_png), query_str="red fox")
    asynced = asyncio.run(post.apostprocess_nodes(li_nodes(red_png, blue_png), query_str="red fox"))
    assert [(n.node.node_id, n.score) for n in sync] == [(n.node.node_id, n.score) for n in asynced]


def test_postprocessor_keep_errors(red_png: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    post = MultimodalRerankPostprocessor(reranker=MultimodalReranker(FakeScorer(), on_error="keep"), top_n=1)
    nodes = [
        NodeWithScore(node=ImageNode(id_="bad", image_path=str(bad))),
        NodeWithScore(node=TextNode(id_="ok", text="fox")),
    ]
    out = post.postprocess_nodes(nodes, query_str="fox")
    assert [n.node.node_id for n in out] == ["ok", "bad"]
    assert "cannot decode" in out[1].node.metadata["rerank_error"] and out[1].score == 0.0


# -- LangChain ------------------------------------------------------------------------------------------


def lc_docs(red_png: Path, blue_png: Path) -> list[Document]:
    return [
        Document("owls hunt at night", id="t1", metadata={"retrieval_score": 0.91}),
        Document("the red fox in snow", id="t2", metadata={"retrieval_score": 0.40}),
        Document("red fox photo", id="i1", metadata={"image_path": str(red_png)}),
        Document(b64(blue_png.read_bytes()), id="i2"),  # what langchain-chroma's add_images stores
        Document("", id="i3", metadata={"uri": str(blue_png)}),
    ]


def test_compressor_scores_mixed_documents(
    reranker: MultimodalReranker, red_png: Path, blue_png: Path
) -> None:
    docs = lc_docs(red_png, blue_png)
    before = copy.deepcopy(docs)
    out = MultimodalRerankCompressor(reranker=reranker).compress_documents(docs, "red fox")
    assert [d.id for d in out][:2] == ["t2", "i1"]
    assert {d.id: d.metadata["modality"] for d in out} == {
        "t1": "text",
        "t2": "text",
        "i1": "text+image",
        "i2": "image",
        "i3": "image",
    }
    scores = [d.metadata["relevance_score"] for d in out]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert {d.id: d.metadata.get("retrieval_score") for d in out}["t1"] == 0.91
    assert docs == before  # inputs untouched


def test_compressor_guards(reranker: MultimodalReranker) -> None:
    compressor = MultimodalRerankCompressor(reranker=reranker, top_n=1)
    assert compressor.compress_documents([], "x") == []
    with pytest.raises(ValueError, match="has empty page_content and no image"):
        compressor.compress_documents([Document("", id="void")], "x")
    with pytest.raises(TypeError, match="reranker must be a MultimodalReranker"):
        MultimodalRerankCompressor(reranker="nope")
    assert len(compressor.compress_documents([Document("a"), Document("b")], "a")) == 1


def test_compressor_in_lcel_and_contextual_compression(
    reranker: MultimodalReranker, red_png: Path, blue_png: Path
) -> None:
    from langchain_classic.retrievers import ContextualCompressionRetriever

    docs = lc_docs(red_png, blue_png)

    class ListRetriever(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return list(docs)

    compressor = MultimodalRerankCompressor(reranker=reranker, top_n=2)
    ccr = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=ListRetriever())
    assert [d.id for d in ccr.invoke("red fox")] == ["t2", "i1"]
    assert [d.id for d in asyncio.run(ccr.ainvoke("red fox"))] == ["t2", "i1"]
    chain = RunnableLambda(lambda q: {"q": q, "docs": ListRetriever().invoke(q)}) | RunnableLambda(
        lambda x: compressor.compress_documents(x["docs"], x["q"])
    )
    assert [d.id for d in chain.invoke("red fox")] == ["t2", "i1"]


# -- parity --------------------------------------------------------------------------------------------------


def test_core_llamaindex_and_langchain_agree(red_png: Path, blue_png: Path) -> None:
    reranker = MultimodalReranker(FakeScorer(), batch_size=2)
    candidates = [
        Candidate("t1", text="owls hunt at night"),
        Candidate("t2", text="the red fox in snow"),
        Candidate("i1", image=str(red_png), text="red fox photo"),
        Candidate("i2", image=str(blue_png)),
        Candidate("t3", text="a fox"),
    ]
    core = [(r.id, r.score) for r in reranker.rerank(Query("red fox"), candidates)]
    nodes = [
        NodeWithScore(node=ImageNode(id_=c.id, image_path=c.image, text=c.text or ""))
        if c.image
        else NodeWithScore(node=TextNode(id_=c.id, text=c.text or ""))
        for c in candidates
    ]
    li = [
        (n.node.node_id, n.score)
        for n in MultimodalRerankPostprocessor(reranker=reranker).postprocess_nodes(
            nodes, query_str="red fox"
        )
    ]
    docs = [
        Document(c.text or "", id=c.id, metadata={"image_path": c.image} if c.image else {})
        for c in candidates
    ]
    lc = [
        (d.id, d.metadata["relevance_score"])
        for d in MultimodalRerankCompressor(reranker=reranker).compress_documents(docs, "red fox")
    ]
    assert core == li == lc
    assert len(core) == 5


# -- saved reranker folders ------------------------------------------------------------------------------------


def test_load_and_from_folder_delegate_to_the_folder_loader(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import mm_rerank_components.adapt.folder as folder_module

    seen: list[tuple[object, dict[str, object]]] = []

    def fake_loader(folder: object, **kwargs: object) -> MultimodalReranker:
        seen.append((folder, kwargs))
        return MultimodalReranker(FakeScorer(), on_error="keep")

    monkeypatch.setattr(folder_module, "load_reranker", fake_loader)
    import mm_rerank_components

    loaded = mm_rerank_components.load_reranker(tmp_path, cache=True)
    assert isinstance(loaded, MultimodalReranker) and seen[-1] == (tmp_path, {"cache": True})
    post = MultimodalRerankPostprocessor.from_folder(str(tmp_path), top_n=1)
    nodes = [
        NodeWithScore(node=TextNode(id_="a", text="owl")),
        NodeWithScore(node=TextNode(id_="b", text="fox")),
    ]
    assert [n.node.node_id for n in post.postprocess_nodes(nodes, query_str="fox")] == ["b"]
    compressor = MultimodalRerankCompressor.from_folder(str(tmp_path), top_n=1)
    assert [
        d.id for d in compressor.compress_documents([Document("owl", id="a"), Document("fox", id="b")], "fox")
    ] == ["b"]
    assert len(seen) == 3


# -- precomputed signals survive the translators -----------------------------------------------------------


class _ReusingScorer(BaseScorer):
    """Scores with a stored signal when it gets one (as the starter scorer does), else with word overlap."""

    name = "reusing"
    outputs_probabilities = True
    reuses = frozenset({"text_embedding", "image_classes"})

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        out = []
        for c in candidates:
            text = c.precomputed.get("text_embedding")
            image = c.precomputed.get("image_classes")
            if text is not None:
                out.append(float(text.value[0]))
            elif image is not None:
                out.append(float(str(image.value).split(",")[0].split(":")[1]))
            else:
                out.append(0.5)
        return out


def _signalled(red_png: Path) -> list[Candidate]:
    from mm_rerank_components.media import image_key, text_key
    from mm_rerank_components.types import Precomputed

    text = "the red fox in snow"
    vector = (0.1 + 1e-17, 0.7, 0.123456789012345678)  # floats that a lossy round trip would change
    return [
        Candidate(
            "t1",
            text=text,
            source="mm_text",
            retrieval_score=0.61,
            metadata={"route": "text->mm_text", "retrieval_rank": 0},
            precomputed={"text_embedding": Precomputed("text_embedding", "p", text_key(text), vector)},
        ),
        Candidate(
            "i1",
            image=str(red_png),
            source="mm_images",
            retrieval_score=0.33,
            metadata={"route": "text->mm_images", "retrieval_rank": 0},
            precomputed={
                "image_classes": Precomputed("image_classes", "p", image_key(str(red_png)), "207:0.25,3:0.1")
            },
        ),
        Candidate("t2", text="owls at night", source="mm_text", retrieval_score=0.2),
    ]


def test_precomputed_signals_survive_both_translators(red_png: Path) -> None:
    import json

    from mm_rerank_components.integrations._common import PRECOMPUTED_KEY
    from mm_rerank_components.integrations.langchain import from_document, to_document
    from mm_rerank_components.integrations.llama_index import from_node, to_node

    for candidate in _signalled(red_png):
        node = to_node(candidate)
        document = to_document(candidate)
        # a docstore or a vector store keeps them as JSON: the floats come back bit for bit
        stored = NodeWithScore(
            node=type(node.node).model_validate_json(node.node.model_dump_json()), score=node.score
        )
        for back in (from_node(node), from_document(document), from_node(stored)):
            assert back == candidate and dict(back.metadata) == dict(candidate.metadata)
            assert {k: (s.kind, s.producer, s.content, s.value) for k, s in back.precomputed.items()} == {
                k: (s.kind, s.producer, s.content, s.value) for k, s in candidate.precomputed.items()
            }
        json.dumps(document.metadata)  # plain data only
        if candidate.precomputed:
            assert PRECOMPUTED_KEY not in node.node.get_content(metadata_mode=MetadataMode.LLM)
            assert PRECOMPUTED_KEY not in node.node.get_content(metadata_mode=MetadataMode.EMBED)


def test_the_faces_score_like_the_core_with_signals(red_png: Path) -> None:
    from mm_rerank_components.integrations.langchain import to_document
    from mm_rerank_components.integrations.llama_index import to_node

    reranker = MultimodalReranker(_ReusingScorer())
    candidates = _signalled(red_png)
    core = [(r.id, r.score) for r in reranker.rerank(Query("red fox"), candidates)]
    assert core == [("t2", 0.5), ("i1", 0.25), ("t1", 0.1 + 1e-17)]  # the stored signals were used
    li = MultimodalRerankPostprocessor(reranker=reranker).postprocess_nodes(
        [to_node(c) for c in candidates], query_str="red fox"
    )
    lc = MultimodalRerankCompressor(reranker=reranker).compress_documents(
        [to_document(c) for c in candidates], "red fox"
    )
    assert [(n.node.node_id, n.score) for n in li] == core
    assert [(d.id, d.metadata["relevance_score"]) for d in lc] == core


def test_a_malformed_precomputed_entry_is_named(red_png: Path) -> None:
    from mm_rerank_components.integrations._common import PRECOMPUTED_KEY
    from mm_rerank_components.integrations.langchain import from_document
    from mm_rerank_components.integrations.llama_index import from_node

    bad = {PRECOMPUTED_KEY: {"text_embedding": {"kind": "text_embedding", "value": [0.1]}}}
    with pytest.raises(ValueError, match=r"documents\[3\].*'text_embedding'.*producer"):
        from_document(Document("fox", metadata=bad), 3)
    with pytest.raises(ValueError, match=r"node 'n1'.*'text_embedding'.*producer"):
        from_node(NodeWithScore(node=TextNode(id_="n1", text="fox", metadata=bad)))
    with pytest.raises(ValueError, match="must be an object of named signals"):
        from_document(Document("fox", metadata={PRECOMPUTED_KEY: [1, 2]}))
