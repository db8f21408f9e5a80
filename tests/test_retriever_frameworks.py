"""The retriever's LlamaIndex and LangChain faces, and langchain-tests' standard retriever suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chromadb")

from PIL import Image

from mm_rerank_components import Candidate, MultimodalReranker
from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction
from mm_rerank_components.scorers import FakeScorer


def _build(tmp: Path) -> ChromaMultiCollectionRetriever:
    ef = HashingEmbeddingFunction()
    r = ChromaMultiCollectionRetriever(
        path=tmp / "db", text_embedding_function=ef, image_embedding_function=ef
    )
    r.add_texts(
        ["The red fox lives in dens.", "Owls hunt at night.", "Whales sing."],
        ids=["fox", "owl", "whale"],
        metadatas=[{"title": "Fox"}, {"title": "Owl"}, {"title": "Whale"}],
    )
    Image.new("RGB", (16, 16), (220, 20, 20)).save(tmp / "red.png")
    Image.new("RGB", (16, 16), (20, 20, 220)).save(tmp / "blue.png")
    r.add_images(
        [tmp / "red.png", tmp / "blue.png"], ids=["img-red", "img-blue"], captions=["a red square", None]
    )
    return r


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory) -> ChromaMultiCollectionRetriever:
    return _build(tmp_path_factory.mktemp("frameworks"))


# -- LlamaIndex ---------------------------------------------------------------------------------------


def test_llama_index_face_returns_text_and_image_nodes(retriever: ChromaMultiCollectionRetriever) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import ImageNode, MetadataMode, QueryBundle, TextNode

    from mm_rerank_components.retrievers.llama_index import ChromaLlamaIndexRetriever

    nodes = ChromaLlamaIndexRetriever(retriever).retrieve("red fox")
    by_id = {n.node.node_id: n for n in nodes}
    assert set(by_id) == {"fox", "owl", "whale", "img-red", "img-blue"}
    fox, red, blue = by_id["fox"], by_id["img-red"], by_id["img-blue"]
    assert type(fox.node) is TextNode and fox.node.get_content() == "The red fox lives in dens."
    assert isinstance(red.node, ImageNode) and isinstance(blue.node, ImageNode)
    assert red.node.image_path == red.node.metadata["image_path"] and red.node.image_path.endswith("red.png")
    assert red.node.text == "a red square" and blue.node.text == ""
    assert red.score == pytest.approx(red.node.metadata["retrieval_score"])
    assert red.node.metadata["modality"] == "text+image" and blue.node.metadata["modality"] == "image"
    assert red.node.metadata["source"] == "mm_images" and fox.node.metadata["source"] == "mm_text"
    # bookkeeping stays out of what an LLM sees; the title stays in
    llm_text = fox.node.get_content(metadata_mode=MetadataMode.LLM)
    assert "Fox" in llm_text and "retrieval_score" not in llm_text and "route" not in llm_text

    limited = ChromaLlamaIndexRetriever(retriever, k_text=1, k_image=1).retrieve("red fox")
    assert [n.node.node_id for n in limited] == ["fox", "img-red"]
    assert len(ChromaLlamaIndexRetriever(retriever, top_k=3).retrieve("red fox")) == 3
    image_query = ChromaLlamaIndexRetriever(retriever).retrieve(
        QueryBundle(query_str="", image_path=red.node.image_path)
    )
    assert image_query[0].node.node_id == "img-red"
    with pytest.raises(ValueError, match="neither query_str nor image_path"):
        ChromaLlamaIndexRetriever(retriever).retrieve(QueryBundle(query_str=" "))


def test_llama_index_nodes_feed_the_lead_postprocessor(retriever: ChromaMultiCollectionRetriever) -> None:
    pytest.importorskip("llama_index.core")
    from mm_rerank_components.integrations.llama_index import MultimodalRerankPostprocessor
    from mm_rerank_components.retrievers.llama_index import ChromaLlamaIndexRetriever

    nodes = ChromaLlamaIndexRetriever(retriever).retrieve("owls")
    post = MultimodalRerankPostprocessor(reranker=MultimodalReranker(FakeScorer()), top_n=2)
    ranked = post.postprocess_nodes(nodes, query_str="owls")
    assert ranked[0].node.node_id == "owl" and ranked[0].node.metadata["relevance_score"] == 1.0


# -- LangChain ----------------------------------------------------------------------------------------


def test_langchain_face_returns_documents(retriever: ChromaMultiCollectionRetriever) -> None:
    pytest.importorskip("langchain_core")
    from mm_rerank_components.retrievers.langchain import ChromaLangChainRetriever, candidate_to_document

    docs = ChromaLangChainRetriever(retriever=retriever).invoke("red fox")
    by_id = {d.id: d for d in docs}
    assert set(by_id) == {"fox", "owl", "whale", "img-red", "img-blue"}
    red, fox = by_id["img-red"], by_id["fox"]
    assert red.page_content == "a red square" and red.metadata["image_path"].endswith("red.png")
    assert red.metadata["image_uri"] == red.metadata["image_path"]
    assert red.metadata["modality"] == "text+image" and red.metadata["source"] == "mm_images"
    assert isinstance(red.metadata["retrieval_score"], float)
    assert fox.page_content == "The red fox lives in dens." and "image_path" not in fox.metadata
    assert by_id["img-blue"].page_content == "" and by_id["img-blue"].metadata["modality"] == "image"

    lc = ChromaLangChainRetriever(retriever=retriever, k_text=1, k_image=1)
    assert [d.id for d in lc.invoke("red fox")] == ["fox", "img-red"]
    assert len(ChromaLangChainRetriever(retriever=retriever).invoke("red fox", k=2)) == 2
    image_docs = ChromaLangChainRetriever(retriever=retriever).invoke("", image=red.metadata["image_path"])
    assert image_docs[0].id == "img-red"
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        ChromaLangChainRetriever(retriever=retriever).invoke("red", k=0)
    with pytest.raises(TypeError, match="in-memory image"):
        candidate_to_document(Candidate("x", image=Image.new("RGB", (2, 2))))


async def test_langchain_face_async(retriever: ChromaMultiCollectionRetriever) -> None:
    pytest.importorskip("langchain_core")
    from mm_rerank_components.retrievers.langchain import ChromaLangChainRetriever

    docs = await ChromaLangChainRetriever(retriever=retriever, k=3).ainvoke("owls")
    assert len(docs) == 3 and docs[0].id == "owl"


def test_langchain_documents_feed_the_lead_compressor(retriever: ChromaMultiCollectionRetriever) -> None:
    pytest.importorskip("langchain_core")
    from mm_rerank_components.integrations.langchain import MultimodalRerankCompressor
    from mm_rerank_components.retrievers.langchain import ChromaLangChainRetriever

    docs = ChromaLangChainRetriever(retriever=retriever).invoke("owls")
    compressor = MultimodalRerankCompressor(reranker=MultimodalReranker(FakeScorer()), top_n=2)
    ranked = compressor.compress_documents(docs, "owls")
    assert ranked[0].id == "owl" and ranked[0].metadata["relevance_score"] == 1.0
    assert len(ranked) == 2


try:
    from langchain_tests.integration_tests import RetrieversIntegrationTests
except ImportError:  # pragma: no cover - langchain-tests is a dev dependency
    RetrieversIntegrationTests = None  # type: ignore[assignment,misc]

if RetrieversIntegrationTests is not None:

    class TestChromaLangChainRetrieverStandard(RetrieversIntegrationTests):
        """langchain-tests' standard retriever tests, on the embedded client."""

        @pytest.fixture(autouse=True, scope="class")
        def _data(self, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
            request.cls.mm_retriever = _build(tmp_path_factory.mktemp("standard"))

        @property
        def retriever_constructor(self) -> type:
            from mm_rerank_components.retrievers.langchain import ChromaLangChainRetriever

            return ChromaLangChainRetriever

        @property
        def retriever_constructor_params(self) -> dict[str, Any]:
            return {"retriever": self.mm_retriever}  # type: ignore[attr-defined]

        @property
        def retriever_query_example(self) -> str:
            return "red fox"


def test_faces_pass_previews_to_the_rerank_adapters(tmp_path: Path) -> None:
    pytest.importorskip("llama_index.core")
    pytest.importorskip("langchain_core")
    from llama_index.core.schema import ImageNode

    from mm_rerank_components.retrievers.langchain import ChromaLangChainRetriever
    from mm_rerank_components.retrievers.llama_index import ChromaLlamaIndexRetriever

    _build(tmp_path)
    ef = HashingEmbeddingFunction()
    r = ChromaMultiCollectionRetriever(
        path=tmp_path / "db",
        text_embedding_function=ef,
        image_embedding_function=ef,
        candidate_image="preview",
    )
    node = next(n.node for n in ChromaLlamaIndexRetriever(r).retrieve("red") if n.node.node_id == "img-red")
    assert isinstance(node, ImageNode) and node.image_mimetype == "image/jpeg"
    assert node.image and not node.image.startswith("data:") and node.image_path.endswith("red.png")
    doc = next(d for d in ChromaLangChainRetriever(retriever=r).invoke("red") if d.id == "img-red")
    assert doc.metadata["image"].startswith("data:image/jpeg;base64,")
    assert doc.metadata["image_path"].endswith("red.png")
