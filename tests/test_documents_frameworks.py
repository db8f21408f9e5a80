"""Bring your own loader: LangChain documents and LlamaIndex nodes go through the one writer, and the
retriever's LangChain and LlamaIndex faces give them back with their ids, text and metadata."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytest.importorskip("chromadb")

from mm_rerank_components.ingest.documents import frameworks
from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction


def _retriever(tmp_path: Path) -> ChromaMultiCollectionRetriever:
    ef = HashingEmbeddingFunction()
    return ChromaMultiCollectionRetriever(
        path=tmp_path / "db", text_embedding_function=ef, image_embedding_function=ef
    )


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (48, 40), colour).save(path)
    return path


def _data_uri(colour: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), colour).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _kept(original: dict[str, Any], returned: dict[str, Any]) -> bool:
    return all(returned.get(k) == v for k, v in original.items())


def test_langchain_documents_round_trip_through_the_retriever(tmp_path: Path) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from mm_rerank_components.integrations.documents import add_documents
    from mm_rerank_components.integrations.langchain_retriever import ChromaLangChainRetriever

    fox = _png(tmp_path / "fox.png", (220, 20, 20))
    docs = [
        Document(
            "Foxes live in dens at the edge of forests.",
            metadata={"file": "paper.pdf", "page": 3},
            id="lc-1",
        ),
        Document("Owls hunt at night.", metadata={"file": "owls.txt"}),
        Document("A red fox in the snow", metadata={"image_path": str(fox), "album": "photos"}, id="lc-fox"),
        Document("An inline blue square", metadata={"image": _data_uri((20, 20, 220)), "tag": "blue"}),
    ]
    retriever = _retriever(tmp_path)
    report = add_documents(retriever, docs, figures_dir=str(tmp_path / "figures"))
    assert report.ok and (report.texts, report.images, report.added) == (2, 2, 4)
    back = ChromaLangChainRetriever(retriever=retriever).invoke("fox")
    by_text = {d.page_content: d for d in back}
    assert set(by_text) == {d.page_content for d in docs}
    for doc in docs:
        returned = by_text[doc.page_content]
        assert _kept(
            {k: v for k, v in doc.metadata.items() if k not in ("image", "image_path")}, returned.metadata
        )
        if doc.id is not None:
            assert returned.id == doc.id
    assert by_text["A red fox in the snow"].metadata["image_path"] == str(fox)
    inline = by_text["An inline blue square"].metadata["image_path"]
    assert Path(inline).parent == tmp_path / "figures"
    again = retriever.add_documents(docs, figures_dir=str(tmp_path / "figures"))
    assert (again.added, again.updated, again.unchanged) == (0, 0, 4)


def test_langchain_source_metadata_survives_the_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from mm_rerank_components.integrations.langchain_retriever import ChromaLangChainRetriever

    retriever = _retriever(tmp_path)
    retriever.add_documents([Document("Foxes dig dens.", metadata={"source": "paper.pdf"})])
    (back,) = ChromaLangChainRetriever(retriever=retriever).invoke("fox")
    assert back.metadata["source"] == "paper.pdf"
    # the route is still there for the way back: Candidate.source is the collection, metadata the loader's
    from mm_rerank_components.integrations.langchain import from_document

    candidate = from_document(back)
    assert candidate.source == "mm_text" and candidate.metadata["source"] == "paper.pdf"
    assert "mm_rerank_source" not in candidate.metadata


@pytest.mark.parametrize("route", ["mm_text", None])
def test_a_candidates_own_source_and_its_route_both_round_trip(route: str | None) -> None:
    pytest.importorskip("langchain_core")
    from mm_rerank_components import Candidate
    from mm_rerank_components.integrations.langchain import from_document, to_document

    candidate = Candidate(
        "t1", text="Foxes dig dens.", source=route, metadata={"source": "paper.pdf", "page": 2}
    )
    document = to_document(candidate)
    assert document.metadata["source"] == "paper.pdf" and document.metadata["mm_rerank_source"] == route
    assert from_document(document) == candidate


@pytest.mark.slow  # importing LlamaIndex takes seconds
def test_llama_index_nodes_round_trip_through_the_retriever(tmp_path: Path) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import ImageNode, MetadataMode, NodeWithScore, TextNode

    from mm_rerank_components.integrations.llama_index_retriever import ChromaLlamaIndexRetriever

    owl = _png(tmp_path / "owl.png", (90, 60, 30))
    nodes: list[Any] = [
        TextNode(
            id_="n1", text="Foxes live in dens.", metadata={"file_name": "paper.pdf", "page_label": "4"}
        ),
        NodeWithScore(
            node=TextNode(id_="n2", text="Owls hunt at night.", metadata={"k": 1, "source": "owls.txt"}),
            score=0.3,
        ),
        ImageNode(
            id_="img-owl", image_path=str(owl), text="An owl on a branch", metadata={"file_name": "owl.png"}
        ),
    ]
    retriever = _retriever(tmp_path)
    report = retriever.add_nodes(nodes)
    assert report.ok and report.added == 3
    back = ChromaLlamaIndexRetriever(retriever).retrieve("owl")
    by_id = {n.node.node_id: n.node for n in back}
    assert set(by_id) == {"n1", "n2", "img-owl"}
    assert by_id["n1"].get_content() == "Foxes live in dens." and _kept(
        nodes[0].metadata, by_id["n1"].metadata
    )
    assert _kept({"k": 1, "source": "owls.txt"}, by_id["n2"].metadata)
    assert "mm_rerank_source" not in by_id["n2"].get_content(metadata_mode=MetadataMode.LLM)
    owl_node = by_id["img-owl"]
    assert type(owl_node).__name__ == "ImageNode" and owl_node.get_content() == "An owl on a branch"
    assert _kept({"file_name": "owl.png"}, owl_node.metadata)


def test_bad_items_are_named_and_the_rest_is_written(tmp_path: Path) -> None:
    class Doc:
        def __init__(self, text: str, metadata: dict[str, Any]) -> None:
            self.page_content, self.metadata, self.id = text, metadata, None

    retriever = _retriever(tmp_path)
    report = frameworks.add_documents(
        retriever,
        [
            Doc("Kept passage.", {}),
            Doc("   ", {}),
            Doc("remote", {"image_url": "https://example.invalid/x.png"}),
            Doc("missing", {"image_path": str(tmp_path / "nope.png")}),
        ],
    )
    reasons = {f.path.split("/")[-1]: f.reason for f in report.failed}
    assert reasons["documents[1]"] == "empty: no text and no picture"
    assert "allow_urls" in reasons["documents[2]"]
    assert any("no such file" in r for r in reasons.values())
    assert report.added == 1 and retriever.count()["mm_text"] == 1
    with pytest.raises(TypeError, match=r"documents\[0\] is a str, not a LangChain Document"):
        frameworks.add_documents(retriever, ["just text"])
    with pytest.raises(TypeError, match=r"nodes\[0\] is a dict, not a LlamaIndex node"):
        frameworks.add_nodes(retriever, [{"text": "x"}])


def test_image_keys_match_the_faces() -> None:
    from mm_rerank_components.integrations._common import IMAGE_KEYS

    assert frameworks.IMAGE_KEYS == IMAGE_KEYS
