"""The Chroma side of the store protocol: two collections, their embedding functions and the guard that
refuses to mix embedding spaces.

:class:`ChromaStore` implements :class:`mm_rerank_components.ingest.store.Store`; the retriever owns one
(``retriever.store``) and reads through it, and ingest writes through it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mm_rerank_components.ingest.embedders import (
    as_array,
    call_embedding_function,
    embed_pictures_with,
    embedder_config,
    embedder_name,
)
from mm_rerank_components.ingest.records import CONTENT_ID_KEY, Kind
from mm_rerank_components.ingest.store import EmbeddedPicture
from mm_rerank_components.media import ImageOptions
from mm_rerank_components.retrievers._connect import server_errors
from mm_rerank_components.retrievers._hits import SPACES

logger = logging.getLogger(__name__)

#: Collection-metadata keys recording which embedding function (name and settings) built a collection.
EMBEDDER_KEY = "mm_rerank_embedder"
EMBEDDER_CONFIG_KEY = "mm_rerank_embedder_config"
KIND_KEY = "mm_rerank_kind"


@dataclass(frozen=True)
class Collections:
    """Collection names (``None`` switches a route off), embedding functions and distance space."""

    text: str | None
    image: str | None
    text_embedding_function: Any
    image_embedding_function: Any
    space: str = "cosine"


class ChromaStore:
    """Two Chroma collections, ``"text"`` and ``"image"``, opened lazily through ``client()``.

    Every open compares the embedding function's name *and* settings with those recorded in the
    collection's metadata when it was created, and refuses a mismatch: vectors of two models (or of one
    model with other settings) cannot be compared.

    Example:
        >>> from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever
        >>> ChromaMultiCollectionRetriever(path="db").store.collection_name("text")  # doctest: +SKIP
        'mm_text'
    """

    def __init__(
        self,
        client: Callable[[], Any],
        collections: Collections,
        *,
        image_options: ImageOptions,
        url: str | None = None,
        timeout: float | None = None,
        where: Callable[[], str] = lambda: "the database",
    ) -> None:
        self._client = client
        self.collections = collections
        self.image_options = image_options
        self._url = url
        self._timeout = timeout
        self._where = where
        self._open: dict[str, Any] = {}

    # -- collections -----------------------------------------------------------------------------------

    def collection_name(self, kind: Kind) -> str | None:
        return self.collections.text if kind == "text" else self.collections.image

    def embedding_function(self, kind: Kind) -> Any:
        c = self.collections
        return c.text_embedding_function if kind == "text" else c.image_embedding_function

    def calls(self) -> Any:
        """A context for server requests: timeouts and lost connections name the server."""
        return server_errors(self._url, self._timeout)

    def collection(self, kind: Kind, *, create: bool) -> Any:
        """The open ``kind`` collection (created when missing and ``create``), checked against its
        embedding function."""
        name = self.collection_name(kind)
        if name is None:
            raise ValueError(f"the {kind} collection is switched off ({kind}_collection=None)")
        cached = self._open.get(name)
        if cached is not None:
            return cached
        ef = self.embedding_function(kind)
        with self.calls():
            collection = self._create(name, kind, ef) if create else self._get(name, kind)
        check_embedder(collection, ef)
        self._open[name] = collection
        return collection

    def _create(self, name: str, kind: Kind, ef: Any) -> Any:
        return self._client().get_or_create_collection(
            name,
            embedding_function=None,
            configuration={"hnsw": {"space": self.collections.space}},
            metadata={
                EMBEDDER_KEY: embedder_name(ef),
                EMBEDDER_CONFIG_KEY: json.dumps(embedder_config(ef), sort_keys=True),
                KIND_KEY: kind,
            },
        )

    def _get(self, name: str, kind: Kind) -> Any:
        client = self._client()
        try:
            return client.get_collection(name, embedding_function=None)
        except Exception as exc:  # chromadb raises NotFoundError (embedded) or others (HTTP)
            if not _missing(exc):
                raise
        existing = sorted(c.name for c in client.list_collections())
        raise ValueError(
            f"Chroma collection {name!r} does not exist in {self._where()} (it has: "
            f"{', '.join(existing) or 'no collections'}); ingest data first "
            f"(mm-rerank ingest FOLDER --db PATH) or pass {kind}_collection= with an existing name"
        )

    def create_collections(self) -> None:
        for kind in ("text", "image"):
            if self.collection_name(kind) is not None:
                self.collection(kind, create=True)

    def count(self, kind: Kind) -> int:
        """Records in the ``kind`` collection (0 when it does not exist yet)."""
        try:
            collection = self.collection(kind, create=False)
        except ValueError as exc:
            if "does not exist" not in str(exc):
                raise
            return 0
        with self.calls():
            return int(collection.count())

    def query(
        self, kind: Kind, vector: Sequence[float], k: int, where: Mapping[str, Any] | None
    ) -> tuple[str, str, Mapping[str, Any]]:
        """The ``k`` nearest records of the ``kind`` collection: its name, its distance space and Chroma's
        result (stored passage embeddings included, for the reranker to reuse)."""
        collection = self.collection(kind, create=False)
        include = ["documents", "metadatas", "distances"]
        include += ["uris"] if kind == "image" else ["embeddings"]
        with self.calls():
            result = collection.query(
                query_embeddings=[list(map(float, vector))],
                n_results=k,
                where=dict(where) if where else None,
                include=include,
            )
        return str(collection.name), space_of(collection), result

    def inspect(self, kind: Kind) -> dict[str, Any]:
        """What the ``kind`` collection holds, without checking the embedding function (for ``mm-rerank
        info``): ``name``, ``count`` (0 when missing), ``embedder`` and ``config`` as recorded."""
        name = self.collection_name(kind)
        out: dict[str, Any] = {"name": name, "count": 0, "embedder": None, "config": None}
        if name is None:
            return out
        with self.calls():
            try:
                collection = self._client().get_collection(name, embedding_function=None)
            except Exception as exc:  # chromadb raises NotFoundError (embedded) or others (HTTP)
                if not _missing(exc):
                    raise
                return out
            out["count"] = int(collection.count())
        metadata = collection.metadata or {}
        out["embedder"] = metadata.get(EMBEDDER_KEY)
        config = metadata.get(EMBEDDER_CONFIG_KEY)
        out["config"] = json.loads(config) if isinstance(config, str) else None
        return out

    # -- the store protocol ----------------------------------------------------------------------------

    def existing_ids(self, kind: Kind, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in self._chunks(ids):
            with self.calls():
                found.update(self.collection(kind, create=True).get(ids=chunk, include=[])["ids"])
        return found

    def content_ids(self, kind: Kind, ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in self._chunks(ids, size=100):  # metadata holds previews: smaller pages
            with self.calls():
                result = self.collection(kind, create=True).get(ids=chunk, include=["metadatas"])
            for id_, meta in zip(result["ids"], result["metadatas"] or [], strict=True):
                stored = (meta or {}).get(CONTENT_ID_KEY)
                found[id_] = stored if isinstance(stored, str) else id_
        return found

    @staticmethod
    def _chunks(ids: Sequence[str], size: int = 500) -> list[list[str]]:
        unique = list(dict.fromkeys(ids))
        return [unique[i : i + size] for i in range(0, len(unique), size)]

    def ids_for_paths(self, kind: Kind, wanted: Mapping[str, set[str]]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        paths = sorted(wanted)
        for start in range(0, len(paths), 200):
            chunk = paths[start : start + 200]
            where: dict[str, Any] = {"path": {"$in": chunk}} if len(chunk) > 1 else {"path": chunk[0]}
            known = set().union(*(wanted[p] for p in chunk))
            with self.calls():
                ids = self.collection(kind, create=True).get(where=where, include=[])["ids"]
            others = [i for i in ids if i not in known]  # usually none: then no metadata is read
            if not others:
                continue
            with self.calls():
                result = self.collection(kind, create=True).get(ids=others, include=["metadatas"])
            for id_, meta in zip(result["ids"], result["metadatas"] or [], strict=True):
                path = (meta or {}).get("path")
                if isinstance(path, str) and id_ not in wanted.get(path, set()):
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
        """Upsert ready embeddings. The first write creates both collections, so a query finds an (empty)
        collection of the other kind."""
        self.create_collections()
        kwargs: dict[str, Any] = {
            "ids": list(ids),
            "embeddings": [list(map(float, e)) for e in embeddings],
            "metadatas": [clean_metadata(m) for m in metadatas],
        }
        if any(d is not None for d in documents):
            # Chroma wants all-or-nothing documents; an image without a caption stores an empty string
            kwargs["documents"] = [d if d is not None else "" for d in documents]
        if uris is not None:
            kwargs["uris"] = list(uris)
        with self.calls():
            self.collection(kind, create=True).upsert(**kwargs)

    def delete(self, kind: Kind, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            with self.calls():
                self.collection(kind, create=True).delete(ids=ids)

    def embed_texts(
        self, texts: Sequence[str], *, kind: Kind = "text", query: bool = False
    ) -> list[list[float]]:
        """Embed texts for the ``"text"`` or ``"image"`` collection's space."""
        return call_embedding_function(self.embedding_function(kind), list(texts), query=query)

    def embed_images(self, images: Sequence[Any], *, query: bool = False) -> list[list[float]]:
        """Embed decoded images (PIL images or ``HxWx3`` arrays) with the image embedding function."""
        arrays = [as_array(image) for image in images]
        return call_embedding_function(self.embedding_function("image"), arrays, query=query)

    def embed_pictures(self, images: Sequence[Any]) -> list[EmbeddedPicture]:
        """Embed pictures for storage; a classifying function's class probabilities come along."""
        return embed_pictures_with(self.embedding_function("image"), images)


def _missing(exc: Exception) -> bool:
    """Whether chromadb's exception says the collection does not exist."""
    return "does not exist" in str(exc) or type(exc).__name__ == "NotFoundError"


def space_of(collection: Any) -> str:
    """A collection's distance space (``"l2"`` when it records none: Chroma's default)."""
    config = getattr(collection, "configuration", None) or {}
    for index in ("hnsw", "spann"):
        section = config.get(index) if isinstance(config, Mapping) else None
        if isinstance(section, Mapping) and section.get("space") in SPACES:
            return str(section["space"])
    legacy = (collection.metadata or {}).get("hnsw:space")
    return str(legacy) if legacy in SPACES else "l2"


def check_embedder(collection: Any, ef: Any) -> None:
    """Refuse an embedding function other than the one (name and settings) that built ``collection``."""
    metadata = collection.metadata or {}
    recorded = metadata.get(EMBEDDER_KEY)
    if recorded is not None and recorded != embedder_name(ef):
        raise ValueError(
            f"collection {collection.name!r} was built with embedding function {recorded!r} but "
            f"{embedder_name(ef)!r} was given; embeddings from different models cannot be compared. "
            f"Pass the original embedding function or use another collection name"
        )
    recorded_config = metadata.get(EMBEDDER_CONFIG_KEY)
    if not isinstance(recorded_config, str):
        logger.debug(
            "collection %r records no embedder settings (built by an older version)", collection.name
        )
        return
    before, now = json.loads(recorded_config), embedder_config(ef)
    if before != now:
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        shown = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ValueError(
            f"collection {collection.name!r} was built with {embedder_name(ef)!r} configured differently "
            f"({shown}); its vectors live in another embedding space. Pass the original settings or "
            "ingest into another collection name"
        )


def clean_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Chroma stores str, int, float and bool; drop ``None`` and serialise anything else as JSON."""
    clean: dict[str, Any] = {}
    for key, value in meta.items():
        if value is None:
            continue
        if isinstance(value, (str, int, float, bool)):
            clean[str(key)] = value
        else:
            clean[str(key)] = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return clean
