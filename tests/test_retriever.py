"""ChromaMultiCollectionRetriever on the embedded client, with a model-free embedding function."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("chromadb")

from PIL import Image

from mm_rerank_components import Candidate, MultimodalReranker, Query
from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction
from mm_rerank_components.retrievers.chroma import distance_to_similarity, embedder_name, parse_server
from mm_rerank_components.scorers import FakeScorer


def _retriever(db: Path, **kwargs: object) -> ChromaMultiCollectionRetriever:
    ef = HashingEmbeddingFunction()
    kwargs.setdefault("text_embedding_function", ef)
    kwargs.setdefault("image_embedding_function", ef)
    return ChromaMultiCollectionRetriever(path=db, **kwargs)  # type: ignore[arg-type]


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (24, 16), colour).save(path)
    return path


@pytest.fixture
def filled(tmp_path: Path) -> ChromaMultiCollectionRetriever:
    r = _retriever(tmp_path / "db")
    r.add_texts(
        ["The red fox lives in dens.", "Owls hunt at night.", "Blue whales are the largest animals."],
        ids=["fox", "owl", "whale"],
        metadatas=[{"title": "Fox"}, {"title": "Owl"}, None],
    )
    report = r.add_images(
        [_png(tmp_path / "red.png", (220, 20, 20)), _png(tmp_path / "blue.png", (20, 20, 220))],
        ids=["img-red", "img-blue"],
        captions=["a red square", None],
    )
    assert report.added == 2 and report.ok
    return r


def test_retrieve_merges_both_collections_with_tags(
    filled: ChromaMultiCollectionRetriever, tmp_path: Path
) -> None:
    candidates = filled.retrieve("red")
    by_id = {c.id: c for c in candidates}
    assert set(by_id) == {"fox", "owl", "whale", "img-red", "img-blue"}
    fox, red, blue = by_id["fox"], by_id["img-red"], by_id["img-blue"]
    assert fox.source == "mm_text" and fox.text == "The red fox lives in dens." and fox.image is None
    assert fox.metadata["title"] == "Fox" and fox.metadata["route"] == "text->mm_text"
    assert red.source == "mm_images" and red.text == "a red square"
    assert red.image == str((tmp_path / "red.png").resolve())
    assert red.metadata["image_uri"] == red.image and red.metadata["image_path"] == red.image
    assert red.modality == "text+image" and blue.modality == "image" and blue.text is None
    # the red picture embeds as the word "red": exact match, similarity 1; the blue one is unrelated
    assert red.retrieval_score == pytest.approx(1.0, abs=1e-5)
    assert red.retrieval_score > blue.retrieval_score  # type: ignore[operator]
    assert fox.retrieval_score > by_id["owl"].retrieval_score  # type: ignore[operator]
    assert all(c.metadata["distance_space"] == "cosine" for c in candidates)
    for c in candidates:
        assert c.retrieval_score == pytest.approx(1.0 - c.metadata["distance"])


def test_retrieve_interleaves_routes_rank_by_rank(filled: ChromaMultiCollectionRetriever) -> None:
    candidates = filled.retrieve("red")
    assert [c.source for c in candidates[:4]] == ["mm_text", "mm_images", "mm_text", "mm_images"]
    assert candidates[0].id == "fox" and candidates[1].id == "img-red"


def test_k_text_and_k_image_limit_each_collection(filled: ChromaMultiCollectionRetriever) -> None:
    candidates = filled.retrieve("red fox", k_text=1, k_image=1)
    assert [c.id for c in candidates] == ["fox", "img-red"]
    assert [c.id for c in filled.retrieve("red", k_text=0)] == ["img-red", "img-blue"]
    with pytest.raises(ValueError, match="k_image must be an int >= 0"):
        filled.retrieve("red", k_image=-1)


def test_defaults_are_16_per_collection(tmp_path: Path) -> None:
    r = _retriever(tmp_path / "db")
    assert (r.k_text, r.k_image) == (16, 16)
    r.add_texts([f"passage number {i}" for i in range(20)])
    r.add_images([_png(tmp_path / f"{i}.png", (10 * i, 0, 0)) for i in range(20)])
    candidates = r.retrieve("passage")
    assert sum(c.source == "mm_text" for c in candidates) == 16
    assert sum(c.source == "mm_images" for c in candidates) == 16


def test_image_query_searches_image_collection(
    filled: ChromaMultiCollectionRetriever, tmp_path: Path
) -> None:
    query_image = _png(tmp_path / "query.png", (200, 10, 10))
    candidates = filled.retrieve(Query(image=str(query_image)))
    assert {c.source for c in candidates} == {"mm_images"}  # image->text is off for custom embedders
    assert candidates[0].id == "img-red" and candidates[0].metadata["route"] == "image->mm_images"


def test_image_query_can_search_text_collection_in_a_shared_space(tmp_path: Path) -> None:
    r = _retriever(tmp_path / "db", image_query_searches_text=True)
    r.add_texts(["red", "green"], ids=["t-red", "t-green"])
    r.add_images([_png(tmp_path / "r.png", (220, 20, 20))], ids=["i-red"])
    candidates = r.retrieve(Query(image=Image.new("RGB", (8, 8), (230, 10, 10))))
    assert candidates[0].id == "t-red" and candidates[0].metadata["route"] == "image->mm_text"
    assert {c.id for c in candidates} == {"t-red", "t-green", "i-red"}


def test_records_sharing_an_id_in_two_collections_are_both_kept(tmp_path: Path) -> None:
    # the old merge keyed hits by id alone and silently dropped the text record here
    r = _retriever(tmp_path / "db")
    r.add_texts(["red things"], ids=["shared"])
    r.add_images([_png(tmp_path / "r.png", (220, 20, 20))], ids=["shared"], captions=["red"])
    candidates = r.retrieve("red")
    assert sorted((c.source, c.id) for c in candidates) == [("mm_images", "shared"), ("mm_text", "shared")]
    assert [c.metadata["routes"] for c in candidates] == ["text->mm_text", "text->mm_images"]


def test_hits_of_one_record_are_merged_keeping_the_best_and_all_routes(tmp_path: Path) -> None:
    r = _retriever(tmp_path / "db")
    r.add_images([_png(tmp_path / "b.png", (10, 10, 230))], ids=["img-blue"], captions=["owls"])
    (only,) = r.retrieve(Query(text="owls at night", image=str(_png(tmp_path / "q.png", (10, 10, 230)))))
    assert only.metadata["routes"] == "text->mm_images,image->mm_images"
    assert only.metadata["route"] == "image->mm_images" and only.retrieval_score == pytest.approx(
        1.0, abs=1e-5
    )


def test_text_plus_image_query_uses_both_parts(
    filled: ChromaMultiCollectionRetriever, tmp_path: Path
) -> None:
    candidates = filled.retrieve(Query(text="owls", image=str(_png(tmp_path / "q.png", (10, 10, 230)))))
    by_id = {c.id: c for c in candidates}
    assert set(by_id["img-blue"].metadata["routes"].split(",")) == {"text->mm_images", "image->mm_images"}
    assert by_id["img-blue"].metadata["route"] == "image->mm_images"  # the better of its two hits
    assert by_id["img-blue"].retrieval_score == pytest.approx(1.0, abs=1e-5)


def test_where_filter_is_passed_to_chroma(filled: ChromaMultiCollectionRetriever) -> None:
    candidates = filled.retrieve("red", where={"title": "Owl"}, k_image=0)
    assert [c.id for c in candidates] == ["owl"]


def test_reopening_the_database_finds_the_data(
    filled: ChromaMultiCollectionRetriever, tmp_path: Path
) -> None:
    again = _retriever(tmp_path / "db")
    assert again.count() == {"mm_text": 3, "mm_images": 2}
    assert again.retrieve("owls", k_text=1, k_image=0)[0].id == "owl"


def test_add_is_idempotent(filled: ChromaMultiCollectionRetriever, tmp_path: Path) -> None:
    report = filled.add_texts(["The red fox lives in dens."], ids=["fox"], metadatas=[{"title": "Fox"}])
    assert (report.added, report.updated, report.unchanged) == (0, 0, 1)
    report = filled.add_images([tmp_path / "red.png"], ids=["img-red"], captions=["a red square"])
    assert (report.added, report.updated, report.unchanged) == (0, 0, 1)
    assert filled.count() == {"mm_text": 3, "mm_images": 2}
    # default ids come from content: the same text twice is one record
    report = filled.add_texts(["same text", "same text"])
    assert (report.added, report.unchanged) == (1, 1)
    assert filled.add_texts(["same text"]).unchanged == 1
    with pytest.raises(ValueError, match="id 'x' is given twice with different content"):
        filled.add_texts(["a", "b"], ids=["x", "x"])


def test_a_changed_caption_or_text_is_written(filled: ChromaMultiCollectionRetriever, tmp_path: Path) -> None:
    # the old add_images left out the caption from its id and skipped the record as unchanged
    report = filled.add_images([tmp_path / "red.png"], ids=["img-red"], captions=["a crimson square"])
    assert (report.added, report.updated, report.unchanged) == (0, 1, 0)
    report = filled.add_texts(["Foxes live in earths."], ids=["fox"])
    assert (report.added, report.updated) == (0, 1)
    hits = {c.id: c for c in filled.retrieve("crimson earths")}
    assert hits["img-red"].text == "a crimson square" and hits["fox"].text == "Foxes live in earths."
    # default ids: the same file with a new caption replaces its old record (one record per file)
    plain = _retriever(tmp_path / "db2")
    plain.add_images([tmp_path / "red.png"], captions=["one"])
    report = plain.add_images([tmp_path / "red.png"], captions=["two"])
    assert (report.added, report.updated) == (0, 1) and plain.count()["mm_images"] == 1


@pytest.mark.parametrize("name", ["big.png", "big.jpg"])
def test_both_write_paths_store_the_same_record(tmp_path: Path, name: str) -> None:
    from mm_rerank_components.ingest import ingest_folder

    folder = tmp_path / "pics"
    folder.mkdir()
    Image.new("RGB", (2400, 1200), (220, 20, 20)).save(folder / name)  # a big JPEG is decoded scaled
    a, b = _retriever(tmp_path / "a"), _retriever(tmp_path / "b")
    ingest_folder(folder, a)
    b.add_images([folder / name])
    got_a = a.store.collection("image", create=False).get(include=["embeddings", "metadatas"])
    got_b = b.store.collection("image", create=False).get(include=["embeddings", "metadatas"])
    assert got_a["ids"] == got_b["ids"]  # one id formula
    assert list(got_a["embeddings"][0]) == list(got_b["embeddings"][0])  # one shrink before embedding
    meta_a, meta_b = got_a["metadatas"][0], got_b["metadatas"][0]
    assert meta_a.pop("rel_path") == name
    assert meta_a == meta_b and meta_b["preview"].startswith("data:image/jpeg;base64,")
    assert (meta_b["width"], meta_b["height"]) == (2400, 1200)  # the original's size
    from mm_rerank_components import load_image

    assert load_image(meta_b["preview"]).size == (384, 192)


def test_add_images_reports_broken_files_and_keeps_the_rest(tmp_path: Path) -> None:
    r = _retriever(tmp_path / "db")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a picture")
    report = r.add_images([bad, _png(tmp_path / "ok.png", (0, 200, 0)), tmp_path / "missing.png"])
    assert report.added == 1
    failed = {Path(f.path).name: f.reason for f in report.failed}
    assert sorted(failed) == ["bad.png", "missing.png"]
    assert "cannot decode" in failed["bad.png"] and "no such file" in failed["missing.png"]


def test_custom_collection_names_and_switching_a_route_off(tmp_path: Path) -> None:
    r = _retriever(tmp_path / "db", text_collection="passages", image_collection=None)
    r.add_texts(["hello world"], ids=["h"])
    assert r.count() == {"passages": 1}
    assert [c.source for c in r.retrieve("hello")] == ["passages"]
    with pytest.raises(ValueError, match="both collections are switched off"):
        _retriever(tmp_path / "db", text_collection=None, image_collection=None)


def test_missing_collection_error_says_what_to_do(tmp_path: Path) -> None:
    r = _retriever(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"collection 'mm_text' does not exist.*mm-rerank ingest"):
        r.retrieve("anything")


def test_embedding_function_mismatch_is_refused(
    filled: ChromaMultiCollectionRetriever, tmp_path: Path
) -> None:
    class OtherEmbedding(HashingEmbeddingFunction):
        @staticmethod
        def name() -> str:
            return "other-model"

    ef = OtherEmbedding()
    r = ChromaMultiCollectionRetriever(
        path=tmp_path / "db", text_embedding_function=ef, image_embedding_function=ef
    )
    with pytest.raises(ValueError, match=r"built with embedding function 'mm-rerank-hashing'.*'other-model'"):
        r.retrieve("red")


def test_constructor_validation(tmp_path: Path) -> None:
    ef = HashingEmbeddingFunction()
    with pytest.raises(ValueError, match="only one of path=, client= or host="):
        ChromaMultiCollectionRetriever(
            path=tmp_path, host="127.0.0.1", text_embedding_function=ef, image_embedding_function=ef
        )
    with pytest.raises(ValueError, match="text_embedding_function= was given but image_embedding_function="):
        ChromaMultiCollectionRetriever(path=tmp_path, text_embedding_function=ef)
    with pytest.raises(ValueError, match="space must be one of"):
        ChromaMultiCollectionRetriever(
            path=tmp_path, text_embedding_function=ef, image_embedding_function=ef, space="manhattan"
        )
    with pytest.raises(ValueError, match="port= needs host="):
        ChromaMultiCollectionRetriever(port=8000, text_embedding_function=ef, image_embedding_function=ef)


def test_http_settings_are_kept_without_connecting() -> None:
    ef = HashingEmbeddingFunction()
    r = ChromaMultiCollectionRetriever(
        host="127.0.0.1", text_embedding_function=ef, image_embedding_function=ef
    )
    assert r.describe() == "http://127.0.0.1:8000" and r._client is None


def test_l2_space_is_converted_and_documented(tmp_path: Path) -> None:
    r = _retriever(tmp_path / "db", space="l2")
    r.add_texts(["red"], ids=["r"])
    (hit,) = r.retrieve("red", k_image=0)
    assert hit.metadata["distance_space"] == "l2" and hit.retrieval_score == pytest.approx(1.0, abs=1e-5)
    assert distance_to_similarity(2.0, "l2") == 0.0 and distance_to_similarity(0.3, "ip") == pytest.approx(
        0.7
    )
    with pytest.raises(ValueError, match="unknown Chroma distance space"):
        distance_to_similarity(1.0, "hamming")


def test_retrieved_candidates_feed_the_reranker(filled: ChromaMultiCollectionRetriever) -> None:
    query = Query("red fox")
    ranked = MultimodalReranker(FakeScorer()).rerank(query, filled.retrieve(query))
    assert ranked[0].id == "fox" and {r.modality for r in ranked} == {"text", "text+image", "image"}
    assert all(isinstance(r.candidate, Candidate) for r in ranked)


def test_helpers() -> None:
    assert parse_server("localhost:8123") == ("localhost", 8123)
    assert parse_server("http://10.0.0.1:80") == ("10.0.0.1", 80)
    assert parse_server("9000") == ("localhost", 9000)
    with pytest.raises(ValueError, match="bad Chroma server address 'x:y'"):
        parse_server("x:y")
    assert embedder_name(lambda texts: texts) == "test_helpers.<locals>.<lambda>"


def test_importing_the_package_stays_light() -> None:
    import subprocess

    code = (
        "import sys, mm_rerank_components.retrievers, mm_rerank_components.ingest;"
        "print(sorted(m for m in ('chromadb', 'torch', 'llama_index', 'langchain_core') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_preview_candidates_carry_a_small_jpeg_and_keep_the_original_path(tmp_path: Path) -> None:
    from mm_rerank_components import load_image

    big = tmp_path / "big.png"
    Image.new("RGB", (1200, 600), (220, 20, 20)).save(big)
    writer = _retriever(tmp_path / "db")
    writer.add_images([big], ids=["big"], captions=["red"])
    writer.add_images([_png(tmp_path / "small.png", (20, 20, 220))], ids=["nopreview"], preview_size=None)

    original = _retriever(tmp_path / "db").retrieve("red", k_text=0)
    assert {c.id: c.image for c in original} == {
        "big": str(big.resolve()),
        "nopreview": str((tmp_path / "small.png").resolve()),
    }
    assert all("preview" not in c.metadata for c in original)  # the stored preview never leaks into metadata

    previews = {
        c.id: c for c in _retriever(tmp_path / "db", candidate_image="preview").retrieve("red", k_text=0)
    }
    hit = previews["big"]
    assert isinstance(hit.image, str) and hit.image.startswith("data:image/jpeg;base64,")
    assert hit.metadata["image_path"] == str(big.resolve()) and hit.metadata["image_preview"] is True
    assert load_image(hit.image).size == (384, 192)
    assert previews["nopreview"].image == str((tmp_path / "small.png").resolve())  # falls back to the URI
    ranked = MultimodalReranker(FakeScorer()).rerank(Query("red"), list(previews.values()))
    assert {r.id for r in ranked} == {"big", "nopreview"}
    with pytest.raises(ValueError, match="candidate_image must be 'original' or 'preview'"):
        _retriever(tmp_path / "db", candidate_image="thumbnail")
    with pytest.raises(ValueError, match="preview_size must be an int >= 32 or None"):
        writer.add_images([big], preview_size=8)
