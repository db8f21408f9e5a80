"""Evidence is built from Candidates (issue 20 item 3) and the LLM prompt names what a reader needs
(issue 23 item 8): titles and sources, never internal ids."""

from __future__ import annotations

import ast
import base64
import io
import math
from pathlib import Path

from PIL import Image

from mm_rerank_components import Candidate, RankedCandidate
from mm_rerank_components.answer import Evidence, build_messages, format_evidence
from mm_rerank_components.answer import evidence as evidence_module
from mm_rerank_components.media import load_image


def _png_base64(colour: str = "red") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (5, 2), "blue").save(buffer, format="JPEG")
    return buffer.getvalue()


def test_a_base64_picture_in_a_langchain_document_stays_a_picture() -> None:
    from langchain_core.documents import Document

    picture = _png_base64()
    # what langchain-chroma's add_images stores: the base64 picture as page_content, a caption in metadata
    documents = [Document(picture, metadata={"caption": "A red square", "relevance_score": 0.8}, id="img")]
    (e,) = Evidence.from_langchain(documents)
    assert e.modality == "text+image" and e.text == "A red square"
    assert e.image == f"data:image/png;base64,{picture}"
    assert load_image(e.image).size == (4, 3)  # the same picture, readable
    assert e.label == "A red square" and e.score == 0.8
    line = format_evidence([e])
    assert line == "[1] A red square (picture with caption, relevance 0.800)"  # the caption is its title
    assert picture[:20] not in line


def test_a_data_uri_picture_in_a_llama_index_node_stays_a_picture() -> None:
    from llama_index.core.schema import ImageNode, NodeWithScore

    picture = _png_base64("green")
    node = ImageNode(id_="n1", image=picture, image_mimetype="image/png", metadata={"title": "Green"})
    (e,) = Evidence.from_llama_index([NodeWithScore(node=node, score=0.6)])
    assert (e.modality, e.image, e.title, e.score) == (
        "image",
        f"data:image/png;base64,{picture}",
        "Green",
        0.6,
    )
    assert load_image(e.image).getpixel((0, 0)) == (0, 128, 0)


def test_a_picture_in_any_form_stays_a_picture() -> None:
    jpeg = _jpeg_bytes()
    raw_base64 = Evidence.from_candidate(Candidate("b", image=base64.b64encode(jpeg).decode()), rank=1)
    assert raw_base64.image is not None and raw_base64.image.startswith("data:image/jpeg;base64,")
    from_bytes = Evidence.from_candidate(Candidate("y", image=jpeg), rank=2, score=0.5)
    assert from_bytes.image is not None and load_image(from_bytes.image).size == (5, 2)
    from_pil = Evidence.from_candidate(Candidate("p", image=Image.new("RGB", (7, 7))), rank=3)
    assert from_pil.image is not None and load_image(from_pil.image).size == (7, 7)
    assert [e.modality for e in (raw_base64, from_bytes, from_pil)] == ["image"] * 3
    assert [e.label for e in (raw_base64, from_bytes, from_pil)] == ["picture"] * 3
    assert math.isnan(raw_base64.score)  # no score given and none in the metadata: unknown, not 0


def test_from_ranked_and_from_candidates_agree() -> None:
    c = Candidate("t1", text="Owls hunt at night.", metadata={"title": "Owls", "rerank_error": "x"})
    ranked = RankedCandidate(candidate=c, index=0, score=0.7, raw_score=2.0, rank=0)
    one = Evidence.from_ranked(ranked)
    (two,) = Evidence.from_candidates([c], [0.7])
    assert one == two and one.error == "x"
    try:
        Evidence.from_candidates([c, c], [0.1])
    except ValueError as exc:
        assert "2 candidates but 1 scores" in str(exc)
    else:
        raise AssertionError("a score list of the wrong length must be an error")


def _ingested(tmp_path: Path) -> list[Evidence]:
    """Evidence shaped like the retriever's: content-hash ids, ingest metadata, a server path."""
    passage = Candidate(
        "text-5d41402abc4b2a76b9719d911017c592",
        text="Foxes\nThe red fox lives in dens.",
        source="mm_text",
        metadata={
            "kind": "text",
            "path": str(tmp_path / "docs" / "animals" / "foxes.md"),
            "rel_path": "animals/foxes.md",
            "title": "Foxes",
            "chunk": 1,
            "n_chunks": 3,
            "content_id": "text-5d41402abc4b2a76b9719d911017c592",
        },
    )
    picture = Candidate(
        "image-7d793037a0760186574b0282f2f435e7",
        image=str(tmp_path / "photos" / "fox.webp"),
        source="mm_images",
        metadata={"kind": "image", "path": str(tmp_path / "photos" / "fox.webp"), "content_id": "image-7d79"},
    )
    return Evidence.from_candidates([passage, picture], [0.91, 0.42])


def test_the_prompt_names_titles_and_sources_not_internal_ids(tmp_path: Path) -> None:
    evidence = _ingested(tmp_path)
    assert [e.origin for e in evidence] == ["animals/foxes.md, part 2 of 3", "fox.webp"]
    (system, user) = build_messages("Where does the red fox live?", evidence)
    prompt = user["content"]
    assert (
        "[1] Foxes (passage, relevance 0.910, from animals/foxes.md, part 2 of 3): The red fox lives in dens."
        in (prompt)
    )
    assert "[2] fox.webp (picture, relevance 0.420)" in prompt
    for internal in ("text-5d41", "image-7d79", "content_id", "mm_text", "mm_images", str(tmp_path)):
        assert internal not in prompt, internal
    assert "Cite the evidence" in system["content"]


def test_evidence_never_reads_framework_objects_itself() -> None:
    """answer/evidence.py leaves nodes and Documents to the integrations' translators (issue 20 item 3)."""
    tree = ast.parse(Path(evidence_module.__file__).read_text(encoding="utf-8"))
    framework_fields = {"node", "page_content", "image_path", "image_url", "node_id", "image_mimetype"}
    read = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} & framework_fields
    getattrs = [
        n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "getattr"
    ]
    assert not read and not getattrs, (read, len(getattrs))
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert not {m for m in imported if m.startswith(("llama_index", "langchain"))}


def test_llama_index_prompt_text_has_no_internal_keys() -> None:
    """LlamaIndex's own prompts (CondensePlusContextChatEngine) show a node's LLM metadata: the title, not
    the content hash, the inline preview or the picture classes (issue 23 item 8)."""
    from llama_index.core.schema import MetadataMode

    from mm_rerank_components.integrations.llama_index import to_node

    picture = Candidate(
        "image-7d79",
        image="/srv/photos/fox.webp",
        text="A fox in the snow",
        metadata={
            "kind": "image",
            "path": "/srv/photos/fox.webp",
            "title": "Fox",
            "content_id": "image-7d79",
            "preview": "data:image/jpeg;base64,AAAA",
            "classes": [["red fox", 0.9]],
            "classes_producer": "mobilenet",
        },
    )
    shown = to_node(picture).node.get_content(MetadataMode.LLM)
    assert shown.splitlines() == ["title: Fox", "", "A fox in the snow"]
