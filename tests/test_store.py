"""The store and the retriever: the embedder guard, merging by (collection, id), first-stage signals handed
to the reranker, hidden folders, unusable image queries, and a Chroma server that is down or hung."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chromadb")

from PIL import Image

from mm_rerank_components import Query
from mm_rerank_components.ingest import Store, content_id, ingest_folder
from mm_rerank_components.media import image_key, text_key
from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction
from mm_rerank_components.retrievers.embedders import fingerprint


def _retriever(db: Path, ef: Any = None, **kwargs: Any) -> ChromaMultiCollectionRetriever:
    ef = ef or HashingEmbeddingFunction()
    return ChromaMultiCollectionRetriever(
        path=db, text_embedding_function=ef, image_embedding_function=ef, **kwargs
    )


def test_the_retriever_hands_ingest_a_store() -> None:
    r = ChromaMultiCollectionRetriever(
        host="127.0.0.1",
        text_embedding_function=HashingEmbeddingFunction(),
        image_embedding_function=None,
        image_collection=None,
    )
    assert isinstance(r.store, Store) and r.store.collection_name("image") is None


def test_content_id_is_stable() -> None:
    # the adapt helper matches labels to records with it: its formula must not change
    assert content_id("text", b"hello") == "text-0ebb9c4edff32d593a0ffb519524997b"
    assert content_id("image", b"x", "/a", "cap", "{}") == "image-19ef184df616c11c2db6218bd84dc8b3"
    assert content_id("image", b"x", "a", "b") != content_id("image", b"x", "ab")


def test_reopening_with_other_embedder_settings_is_refused(tmp_path: Path) -> None:
    # the old guard compared only the name ("mm-rerank-hashing") and searched another space silently
    _retriever(tmp_path / "db", HashingEmbeddingFunction(dim=64)).add_texts(["red fox"])
    other = _retriever(tmp_path / "db", HashingEmbeddingFunction(dim=32))
    with pytest.raises(ValueError, match=r"configured differently \(dim: 64 -> 32\).*another collection"):
        other.retrieve("red")
    same = _retriever(tmp_path / "db", HashingEmbeddingFunction(dim=64))
    assert [c.text for c in same.retrieve("red", k_image=0)] == ["red fox"]


def test_the_starter_image_settings_are_part_of_the_guard(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from mm_rerank_components.starter.chroma import (
        StarterImageEmbeddingFunction,
        StarterTextEmbeddingFunction,
    )

    def starter(top_k: int, device: str = "cpu") -> ChromaMultiCollectionRetriever:
        return ChromaMultiCollectionRetriever(
            path=tmp_path / "db",
            text_embedding_function=StarterTextEmbeddingFunction(device=device),
            image_embedding_function=StarterImageEmbeddingFunction(top_k=top_k, device=device),
        )

    starter(10).create_collections()  # no model is loaded for this
    with pytest.raises(ValueError, match=r"'mm_images'.*configured differently \(top_k: 10 -> 20\)"):
        starter(20).create_collections()
    starter(10, device="meta").create_collections()  # another device embeds the same: accepted


def test_hidden_folders_are_reported_as_skipped(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "notes.txt").write_text("not a passage")
    (root / "seen.txt").write_text("a passage")
    report = ingest_folder(root, _retriever(tmp_path / "db"))
    assert report.added == 1
    assert [(Path(s.path).name, s.reason) for s in report.skipped] == [(".git", "hidden folder")]


def test_an_image_only_query_nothing_can_search_is_an_error(tmp_path: Path) -> None:
    r = _retriever(tmp_path / "db", image_collection=None)
    r.add_texts(["red"])
    with pytest.raises(ValueError, match=r"only an image.*image_collection=None.*image_query_searches_text"):
        r.retrieve(Query(image=Image.new("RGB", (8, 8), (200, 0, 0))))
    # with text, the text part is still served
    hits = r.retrieve(Query(text="red", image=Image.new("RGB", (8, 8), (200, 0, 0))))
    assert [c.text for c in hits] == ["red"]
    searching = _retriever(tmp_path / "db", image_collection=None, image_query_searches_text=True)
    assert [c.text for c in searching.retrieve(Query(image=Image.new("RGB", (8, 8), (200, 0, 0))))] == ["red"]


def test_text_hits_carry_their_stored_embedding_for_the_reranker(tmp_path: Path) -> None:
    ef = HashingEmbeddingFunction()
    r = _retriever(tmp_path / "db", ef)
    r.add_texts(["The red fox lives in dens."], ids=["fox"])
    (hit,) = r.retrieve("red fox", k_image=0)
    signal = hit.precomputed["text_embedding"]
    assert signal.content == text_key("The red fox lives in dens.") and signal.producer == fingerprint(ef)
    assert list(signal.value) == pytest.approx(ef(["The red fox lives in dens."])[0], abs=1e-6)
    assert fingerprint(ef) != fingerprint(HashingEmbeddingFunction(dim=8))


class _Classifying(HashingEmbeddingFunction):
    """A hashing function that also 'classifies' a picture by its colour word."""

    def embed_with_classes(self, images: list[Any]) -> tuple[list[list[float]], list[str], str]:
        import numpy as np

        from mm_rerank_components.retrievers.fake import colour_word

        assert all(isinstance(i, Image.Image) for i in images)  # decoded pictures, no array round trip
        arrays = [np.asarray(i) for i in images]
        return self(arrays), [f"{colour_word(a)}:1.0" for a in arrays], "colour-classifier:v1"


@pytest.mark.parametrize("candidate_image", ["original", "preview"])
def test_picture_classes_are_stored_at_ingest_and_handed_over(tmp_path: Path, candidate_image: str) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    Image.new("RGB", (40, 20), (220, 20, 20)).save(folder / "red.png")
    ingest_folder(folder, _retriever(tmp_path / "db", _Classifying()))
    r = _retriever(tmp_path / "db", _Classifying(), candidate_image=candidate_image)
    (hit,) = r.retrieve("red", k_text=0)
    signal = hit.precomputed["image_classes"]
    assert (signal.value, signal.producer) == ("red:1.0", "colour-classifier:v1")
    assert signal.content == image_key(hit.image)  # the reference exactly as handed over
    assert "classes" not in hit.metadata and "classes_producer" not in hit.metadata


def test_picture_captions_are_embedded_at_ingest_for_the_reranker(tmp_path: Path) -> None:
    """issue 21: a picture's caption embedding is stored, so a cold rerank does not run the text model on
    every picture's caption; damaged or foreign values fall back to computing."""
    from mm_rerank_components.ingest.embedders import CAPTION_EMBEDDING_KEY, unpack_vector

    folder = tmp_path / "pics"
    folder.mkdir()
    Image.new("RGB", (40, 20), (220, 20, 20)).save(folder / "red.png")
    (folder / "red.caption.txt").write_text("A red square\n")
    Image.new("RGB", (40, 20), (20, 20, 220)).save(folder / "blue.png")  # no caption: nothing stored
    ef = HashingEmbeddingFunction()
    r = _retriever(tmp_path / "db", ef)
    ingest_folder(folder, r)
    stored = r.store.collection("image", create=False).get(include=["metadatas", "documents"])
    by_doc = dict(zip(stored["documents"], stored["metadatas"], strict=True))
    assert unpack_vector(by_doc["A red square"][CAPTION_EMBEDDING_KEY]) == pytest.approx(
        ef(["A red square"])[0], abs=1e-6
    )
    assert not any(CAPTION_EMBEDDING_KEY in m for d, m in by_doc.items() if d != "A red square")
    hits = {h.text: h for h in r.retrieve("red square", k_text=0)}
    signal = hits["A red square"].precomputed["text_embedding"]
    assert signal.content == text_key("A red square") and signal.producer == fingerprint(ef)
    assert list(signal.value) == pytest.approx(ef(["A red square"])[0], abs=1e-6)
    assert CAPTION_EMBEDDING_KEY not in hits["A red square"].metadata
    # a damaged value is left out (and logged), never handed to the scorer
    (red_id,) = [i for i, d in zip(stored["ids"], stored["documents"], strict=True) if d == "A red square"]
    r.store.collection("image", create=False).update(
        ids=[red_id], metadatas=[{**by_doc["A red square"], CAPTION_EMBEDDING_KEY: "%%%"}]
    )
    hits = {h.text: h for h in r.retrieve("red square", k_text=0)}
    assert "text_embedding" not in hits["A red square"].precomputed


# -- a Chroma server that is down or hung ---------------------------------------------------------------


@pytest.fixture
def hung_server() -> Iterator[int]:
    """A TCP server on loopback that accepts connections and never answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def test_a_hung_server_times_out_naming_it(hung_server: int) -> None:
    ef = HashingEmbeddingFunction()
    r = ChromaMultiCollectionRetriever(
        host="127.0.0.1",
        port=hung_server,
        timeout=1.0,
        text_embedding_function=ef,
        image_embedding_function=ef,
    )
    start = time.monotonic()
    with pytest.raises(
        TimeoutError, match=rf"127\.0\.0\.1:{hung_server} did not answer within 1 s.*timeout="
    ):
        r.count()
    with pytest.raises(TimeoutError, match=rf"127\.0\.0\.1:{hung_server}"):
        r.retrieve("red")
    assert time.monotonic() - start < 10
    assert (
        ChromaMultiCollectionRetriever(
            host="h", text_embedding_function=ef, image_embedding_function=ef
        ).timeout
        == 60
    )
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0 or None"):
        ChromaMultiCollectionRetriever(
            host="h", timeout=0, text_embedding_function=ef, image_embedding_function=ef
        )


def test_a_server_that_is_down_is_named(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    ef = HashingEmbeddingFunction()
    r = ChromaMultiCollectionRetriever(
        host="127.0.0.1", port=port, timeout=2.0, text_embedding_function=ef, image_embedding_function=ef
    )
    with pytest.raises(
        ConnectionError, match=rf"cannot reach the Chroma server at http://127\.0\.0\.1:{port}"
    ):
        r.retrieve("red")


def test_clip_embedders_are_resolved_by_name_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys
    import types

    from mm_rerank_components import cli

    calls: list[tuple[str, dict[str, Any]]] = []

    def clip_embedding_functions(path: str, **kwargs: Any) -> tuple[Any, Any]:
        calls.append((path, kwargs))
        ef = HashingEmbeddingFunction()
        return ef, ef

    fake = types.ModuleType("mm_rerank_components.retrievers.clip")
    fake.clip_embedding_functions = clip_embedding_functions  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mm_rerank_components.retrievers.clip", fake)
    r = ChromaMultiCollectionRetriever(path=tmp_path / "db", embedder=f"clip:{tmp_path}")
    assert calls == [(str(tmp_path), {})] and r.image_query_searches_text  # one space: images reach text
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "fox.txt").write_text("red fox")
    Image.new("RGB", (8, 8), (220, 20, 20)).save(folder / "red.png")
    assert ingest_folder(folder, r).added == 2
    hits = r.retrieve(Query(image=Image.new("RGB", (8, 8), (220, 20, 20))))
    assert {c.source for c in hits} == {"mm_text", "mm_images"}
    args = ["--db", str(tmp_path / "db2"), "--embedder", f"clip:{tmp_path}", "--no-progress"]
    assert cli.main(["ingest", str(folder), *args]) == 0 and len(calls) == 2
    with pytest.raises(ValueError, match="pass embedder= or text_/image_embedding_function=, not both"):
        ChromaMultiCollectionRetriever(
            path=tmp_path / "db", embedder="hashing", text_embedding_function=HashingEmbeddingFunction()
        )


def test_bare_passages_keep_their_old_ids(tmp_path: Path) -> None:
    # databases filled by the old add_texts (id = content_id("text", text)) are not duplicated
    r = _retriever(tmp_path / "db")
    assert r.add_texts(["Foxes live in dens."]).added == 1
    (hit,) = r.retrieve("foxes", k_image=0)
    assert hit.id == content_id("text", b"Foxes live in dens.")
    with_meta = r.add_texts(["Foxes live in dens."], metadatas=[{"title": "Fox"}])
    assert (with_meta.added, with_meta.updated) == (0, 1) and r.count()["mm_text"] == 1  # updated in place
    assert r.retrieve("foxes", k_image=0)[0].metadata["title"] == "Fox"
    assert r.add_texts(["Foxes live in dens."], metadatas=[{"title": "Fox"}]).unchanged == 1
