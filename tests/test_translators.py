"""The framework translators: Candidate -> Document -> Candidate and Candidate -> Node -> Candidate."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from langchain_core.documents import Document
from llama_index.core.schema import ImageNode, MetadataMode, NodeWithScore, TextNode
from PIL import Image

from conftest import b64, png_bytes
from mm_rerank_components import Candidate, MultimodalReranker
from mm_rerank_components.integrations import _common
from mm_rerank_components.integrations.langchain import (
    MultimodalRerankCompressor,
    from_document,
    to_document,
)
from mm_rerank_components.integrations.llama_index import (
    MultimodalRerankPostprocessor,
    from_node,
    to_node,
)
from mm_rerank_components.scorers import FakeScorer

PNG = png_bytes()
DATA_URI = "data:image/png;base64," + b64(PNG)

CANDIDATES = [
    Candidate("t1", text="Foxes live in dens.", source="mm_text", retrieval_score=0.42),
    Candidate("t2", text="Owls.", metadata={"title": "Owl", "chunk": 2, "tags": "birds"}),
    Candidate("i1", image="/data/fox.jpg", text="A fox", source="mm_images", retrieval_score=0.3),
    Candidate("i2", image="/data/owl.png", metadata={"image_path": "/data/owl.png", "width": 64}),
    Candidate("i3", image="https://example.org/cat.jpg"),
    Candidate("i4", image="file:///data/cat.jpg", text="cat"),
    Candidate("p1", image=DATA_URI, text="preview", metadata={"image_path": "/data/big.png"}),
    Candidate("b1", image=b64(PNG)),
    # the metadata's own image keys name another picture: the candidate's picture still comes back
    Candidate("c1", image="/data/right.jpg", metadata={"image_path": "/data/wrong.jpg", "uri": "x"}),
    # keys the translator also writes, already present with the same values, are not lost
    Candidate("s1", text="x", source="s", retrieval_score=0.5, metadata={"source": "s", "modality": "text"}),
]


@pytest.mark.parametrize("candidate", CANDIDATES, ids=[c.id for c in CANDIDATES])
def test_candidate_document_candidate(candidate: Candidate) -> None:
    document = to_document(candidate)
    assert document.id == candidate.id and document.page_content == (candidate.text or "")
    assert document.metadata["modality"] == candidate.modality
    assert from_document(document) == candidate
    assert dict(from_document(document).metadata) == dict(candidate.metadata)


@pytest.mark.parametrize("candidate", CANDIDATES, ids=[c.id for c in CANDIDATES])
def test_candidate_node_candidate(candidate: Candidate) -> None:
    scored = to_node(candidate)
    node = scored.node
    assert node.node_id == candidate.id and scored.score == candidate.retrieval_score
    assert isinstance(node, ImageNode) == (candidate.image is not None)
    assert from_node(scored) == candidate
    assert dict(from_node(scored).metadata) == dict(candidate.metadata)
    # bookkeeping never reaches an LLM prompt
    shown = node.get_content(metadata_mode=MetadataMode.LLM)
    assert "mm_rerank_added" not in shown and "retrieval_score" not in shown


def test_node_fields_follow_the_reference_kind() -> None:
    path, url, preview = (to_node(CANDIDATES[i]).node for i in (2, 4, 6))
    assert isinstance(path, ImageNode) and path.image_path == "/data/fox.jpg" and path.image_url is None
    assert isinstance(url, ImageNode) and url.image_url == "https://example.org/cat.jpg"
    assert isinstance(preview, ImageNode) and preview.image == b64(PNG)
    assert preview.image_mimetype == "image/png" and preview.image_path == "/data/big.png"


def test_document_image_keys_are_the_shared_schema() -> None:
    meta = to_document(CANDIDATES[2]).metadata
    assert meta[_common.IMAGE_PATH_KEY] == meta[_common.IMAGE_URI_KEY] == "/data/fox.jpg"
    assert to_document(CANDIDATES[6]).metadata[_common.IMAGE_KEY] == DATA_URI
    # the compressor and the translator read images from the same keys
    assert MultimodalRerankCompressor.model_fields["image_metadata_keys"].default == _common.IMAGE_KEYS


def test_in_memory_images_cannot_travel_in_metadata() -> None:
    pil = Candidate("x", image=Image.new("RGB", (2, 2)))
    with pytest.raises(TypeError, match=r"candidate 'x' holds an in-memory image \(Image\); a Document"):
        to_document(pil)
    with pytest.raises(TypeError, match="an ImageNode needs a path"):
        to_node(pil)


def test_foreign_objects_translate_too(red_png: Path) -> None:
    # documents and nodes made by other tools, not by to_document/to_node
    chroma_style = Document(b64(red_png.read_bytes()), id="d", metadata={"caption": "red"})
    c = from_document(chroma_style)
    assert c.modality == "text+image" and c.text == "red" and c.metadata == {"caption": "red"}
    anonymous = from_document(Document("text only"), 7)
    assert anonymous.id == "doc-7" and anonymous.retrieval_score is None
    reader_style = NodeWithScore(node=ImageNode(id_="n", metadata={"file_path": str(red_png)}), score=None)
    assert from_node(reader_style).image == str(red_png)
    assert from_node(NodeWithScore(node=TextNode(id_="t", text="x"), score=0.1)).retrieval_score == 0.1


def test_translated_objects_rerank_alike(red_png: Path, blue_png: Path) -> None:
    candidates = [
        Candidate("t", text="a red fox", retrieval_score=0.2),
        Candidate("r", image=str(red_png), text="red"),
        Candidate("b", image="data:image/png;base64," + b64(blue_png.read_bytes())),
    ]
    reranker = MultimodalReranker(FakeScorer())
    core = [(r.id, r.score) for r in reranker.rerank("red fox", candidates)]
    post = MultimodalRerankPostprocessor(reranker=reranker)
    li = [
        (n.node.node_id, n.score)
        for n in post.postprocess_nodes([to_node(c) for c in candidates], query_str="red fox")
    ]
    comp = MultimodalRerankCompressor(reranker=reranker)
    lc = [
        (d.id, d.metadata["relevance_score"])
        for d in comp.compress_documents([to_document(c) for c in candidates], "red fox")
    ]
    assert core == li == lc


def test_nothing_outside_integrations_imports_a_framework() -> None:
    package = Path(__file__).resolve().parent.parent / "mm_rerank_components"
    offenders = []
    for path in package.rglob("*.py"):
        if "integrations" in path.relative_to(package).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(package)}: {n}"
                for n in names
                if n.split(".")[0] in ("langchain_core", "langchain", "llama_index", "langchain_classic")
            ]
    assert offenders == []


def test_old_import_paths_still_work() -> None:
    from mm_rerank_components.integrations.langchain_retriever import ChromaLangChainRetriever
    from mm_rerank_components.integrations.llama_index_retriever import ChromaLlamaIndexRetriever
    from mm_rerank_components.retrievers.langchain import ChromaLangChainRetriever as OldLC
    from mm_rerank_components.retrievers.langchain import candidate_to_document
    from mm_rerank_components.retrievers.llama_index import ChromaLlamaIndexRetriever as OldLI
    from mm_rerank_components.retrievers.llama_index import candidate_to_node

    assert OldLC is ChromaLangChainRetriever and OldLI is ChromaLlamaIndexRetriever
    assert candidate_to_document is to_document and candidate_to_node is to_node
