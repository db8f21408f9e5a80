"""Ingest needs nothing but the store protocol: a dict-backed store (no Chroma) is filled by the same code,
with the same ids, unchanged-detection and stale-record rule."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from mm_rerank_components.ingest import EmbeddedPicture, Store, add_texts, ingest_folder
from mm_rerank_components.ingest.records import Kind
from mm_rerank_components.media import ImageOptions
from mm_rerank_components.retrievers.fake import HashingEmbeddingFunction


class DictStore:
    """Two dicts of records; embeddings by the model-free hashing function."""

    def __init__(self, image: bool = True) -> None:
        self.image_options = ImageOptions()
        self.records: dict[str, dict[str, dict[str, Any]]] = {"text": {}, "image": {}}
        self.ef = HashingEmbeddingFunction(dim=16)
        self.image = image
        self.calls: list[str] = []

    def collection_name(self, kind: Kind) -> str | None:
        return None if kind == "image" and not self.image else f"dict_{kind}"

    def create_collections(self) -> None:
        self.calls.append("create")

    def existing_ids(self, kind: Kind, ids: Sequence[str]) -> set[str]:
        return {i for i in ids if i in self.records[kind]}

    def content_ids(self, kind: Kind, ids: Sequence[str]) -> dict[str, str]:
        return {
            i: self.records[kind][i]["metadata"].get("content_id", i) for i in ids if i in self.records[kind]
        }

    def ids_for_paths(self, kind: Kind, wanted: Mapping[str, set[str]]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for id_, record in self.records[kind].items():
            path = record["metadata"].get("path")
            if path in wanted and id_ not in wanted[path]:
                out.setdefault(path, set()).add(id_)
        return out

    def upsert(
        self,
        kind: Kind,
        *,
        ids: Sequence[str],
        embeddings: Sequence[Sequence[float]],
        documents: Sequence[str | None],
        metadatas: Sequence[Mapping[str, Any]],
        uris: Sequence[str] | None = None,
    ) -> None:
        self.calls.append(f"upsert {kind} {len(ids)}")
        for i, id_ in enumerate(ids):
            self.records[kind][id_] = {
                "vector": list(embeddings[i]),
                "document": documents[i],
                "metadata": dict(metadatas[i]),
                "uri": uris[i] if uris is not None else None,
            }

    def delete(self, kind: Kind, ids: Iterable[str]) -> None:
        for id_ in ids:
            del self.records[kind][id_]

    def embed_texts(
        self, texts: Sequence[str], *, kind: Kind = "text", query: bool = False
    ) -> list[list[float]]:
        return self.ef(list(texts))

    def embed_pictures(self, images: Sequence[Any]) -> list[EmbeddedPicture]:
        import numpy as np

        return [EmbeddedPicture(v) for v in self.ef([np.asarray(i) for i in images])]


def test_a_dict_store_is_filled_by_folder_ingest(tmp_path: Path) -> None:
    store = DictStore()
    assert isinstance(store, Store)
    root = tmp_path / "d"
    root.mkdir()
    (root / "fox.txt").write_text("Red fox\n\nThe red fox lives in dens.")
    Image.new("RGB", (20, 10), (220, 20, 20)).save(root / "red.png")
    (root / "red.caption.txt").write_text("a red square")
    report = ingest_folder(root, store, workers=1)
    assert (report.added, report.unchanged, report.failed) == (2, 0, [])
    (image,) = store.records["image"].values()
    assert image["document"] == "a red square" and image["uri"] == str((root / "red.png").resolve())
    assert image["metadata"]["width"] == 20 and image["metadata"]["preview"].startswith("data:image/jpeg")
    assert image["vector"] == store.ef(["red"])[0]  # the hashing function: a red picture is the word "red"
    assert ingest_folder(root, store).unchanged == 2
    (root / "fox.txt").write_text("Arctic fox\n\nWhite in winter.")
    changed = ingest_folder(root, store)
    assert (changed.added, changed.updated, changed.unchanged) == (0, 1, 1)
    (text,) = store.records["text"].values()
    assert text["metadata"]["title"] == "Arctic fox"


def test_a_switched_off_route_fails_its_files_by_name(tmp_path: Path) -> None:
    store = DictStore(image=False)
    root = tmp_path / "d"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "x.png")
    report = ingest_folder(root, store)
    assert [(Path(f.path).name, f.reason) for f in report.failed] == [
        ("x.png", "the image collection is switched off")
    ]
    assert add_texts(store, ["hello"]).added == 1 and "upsert text 1" in store.calls
