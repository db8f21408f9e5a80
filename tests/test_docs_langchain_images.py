"""Picture questions through LangChain, end to end, as docs/langchain.md documents them: a
:class:`~mm_rerank_components.types.Query` with a picture goes through ``ContextualCompressionRetriever``
and an LCEL chain to the package's retriever (which searches with it) and compressor (which scores with
it), on a real embedded Chroma database."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from PIL import Image
from test_web_app import write_corpus

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_classic")

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from mm_rerank_components import MultimodalReranker, Query
from mm_rerank_components.integrations.langchain import MultimodalRerankCompressor
from mm_rerank_components.integrations.langchain_retriever import ChromaLangChainRetriever
from mm_rerank_components.scorers import FakeScorer


@pytest.fixture
def chain_parts(tmp_path: Path) -> tuple[ContextualCompressionRetriever, Path]:
    from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction

    ef = HashingEmbeddingFunction()
    store = ChromaMultiCollectionRetriever(
        path=tmp_path / "db", text_embedding_function=ef, image_embedding_function=ef, k_text=3, k_image=3
    )
    assert store.ingest_folder(write_corpus(tmp_path / "corpus")).failed == []
    # FakeScorer compares 8x8 thumbnails for a picture query: a red question picture matches red.png
    compressor = MultimodalRerankCompressor(reranker=MultimodalReranker(FakeScorer()), top_n=3)
    retriever = ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=ChromaLangChainRetriever(retriever=store)
    )
    photo = tmp_path / "question.png"
    Image.new("RGB", (80, 60), (215, 35, 30)).save(photo)
    return retriever, photo


def _picture_scores(docs: list) -> dict[str, float]:
    return {
        Path(d.metadata["image_path"]).name: d.metadata["relevance_score"]
        for d in docs
        if d.metadata.get("image_path")
    }


def test_contextual_compression_retriever_scores_the_query_picture(chain_parts: tuple) -> None:
    retriever, photo = chain_parts
    docs = retriever.invoke(Query("What is this?", image=str(photo)))
    assert Path(docs[0].metadata["image_path"]).name == "red.png"
    assert docs[0].metadata["relevance_score"] > 0.9
    # the same words without the picture: pictures get the scorer's text-query noise (< 0.3)
    words_only = _picture_scores(retriever.invoke("What is this?"))
    assert all(score < 0.3 for score in words_only.values())


def test_picture_alone_and_async(chain_parts: tuple) -> None:
    retriever, photo = chain_parts
    import asyncio

    docs = asyncio.run(retriever.ainvoke(Query(image=str(photo))))
    assert Path(docs[0].metadata["image_path"]).name == "red.png"


def test_lcel_chain_passes_the_query_object(chain_parts: tuple) -> None:
    retriever, photo = chain_parts
    chain = RunnablePassthrough.assign(documents=RunnableLambda(lambda x: x["query"]) | retriever).assign(
        best=lambda x: Path(x["documents"][0].metadata["image_path"]).name
    )
    result = chain.invoke({"query": Query("What is this?", image=str(photo))})
    assert result["best"] == "red.png"


def test_picture_in_both_places_is_an_error(chain_parts: tuple) -> None:
    retriever, photo = chain_parts
    base = retriever.base_retriever
    with pytest.raises(ValueError, match="either in the Query or as image="):
        base.invoke(Query("What is this?", image=str(photo)), image=str(photo))


def test_type_hints_say_what_the_compressor_accepts() -> None:
    for method in (
        MultimodalRerankCompressor.compress_documents,
        MultimodalRerankCompressor.acompress_documents,
    ):
        hints = typing.get_type_hints(method)
        assert set(typing.get_args(hints["query"])) == {str, Query}
