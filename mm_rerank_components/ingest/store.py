"""The store protocol: the few operations ingest needs from a vector database.

Ingest is the only writer of records; it reaches the database only through a :class:`Store`, so any
backend that implements these methods can be filled by :func:`~mm_rerank_components.ingest.ingest_folder`.
:class:`~mm_rerank_components.retrievers.chroma_store.ChromaStore` implements it for Chroma, and
:class:`~mm_rerank_components.retrievers.chroma.ChromaMultiCollectionRetriever` hands its store over as
``retriever.store``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mm_rerank_components.ingest.records import Kind
from mm_rerank_components.media import ImageOptions


@dataclass(frozen=True)
class EmbeddedPicture:
    """A picture's vector and what else the embedding function learnt about it, to store beside it
    (for the starter models: its compact class probabilities and their producer)."""

    vector: list[float]
    metadata: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Store(Protocol):
    """Two collections, ``"text"`` and ``"image"``, with their embedding functions.

    Example:
        >>> from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever
        >>> retriever = ChromaMultiCollectionRetriever(path="db")  # doctest: +SKIP
        >>> isinstance(retriever.store, Store)  # doctest: +SKIP
        True
    """

    image_options: ImageOptions

    def collection_name(self, kind: Kind) -> str | None:
        """The collection of ``kind``, or ``None`` when that route is switched off."""
        ...

    def create_collections(self) -> None:
        """Create the switched-on collections if they are missing (so an empty route can be queried)."""
        ...

    def existing_ids(self, kind: Kind, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are stored (ids only: nothing else is read)."""
        ...

    def content_ids(self, kind: Kind, ids: Sequence[str]) -> dict[str, str]:
        """The content id stored with each of ``ids`` that is stored (its own id when the record predates
        content ids); asked only for records whose id is not their content id."""
        ...

    def ids_for_paths(self, kind: Kind, wanted: Mapping[str, set[str]]) -> dict[str, set[str]]:
        """The ids stored under each source ``path`` of ``wanted`` (``path`` metadata) that are *not*
        among the ids ``wanted`` lists for it: the stale versions of those files. (Knowing the wanted ids
        lets a store read only ids, and metadata only for the few it does not know.)"""
        ...

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
        """Write ready records (vectors included)."""
        ...

    def delete(self, kind: Kind, ids: Iterable[str]) -> None:
        """Delete records by id."""
        ...

    def embed_texts(
        self, texts: Sequence[str], *, kind: Kind = "text", query: bool = False
    ) -> list[list[float]]:
        """Embed texts in the space of the ``kind`` collection."""
        ...

    def embed_pictures(self, images: Sequence[Any]) -> list[EmbeddedPicture]:
        """Embed decoded pictures (PIL images) for storage, with any metadata to keep beside them."""
        ...


@runtime_checkable
class EmbeddingStore(Protocol):
    """A store that names its embedding functions (ChromaStore does): Ray workers rebuild them, and the
    writer asks the text function whose vectors a scorer may reuse."""

    def embedding_function(self, kind: Kind) -> Any:
        """The embedding function of the ``kind`` collection (None when there is none)."""
        ...


@runtime_checkable
class HasStore(Protocol):
    """Anything that carries a :class:`Store` as ``.store`` (the Chroma retriever does)."""

    @property
    def store(self) -> Store:
        """The store ingest writes to."""
        ...


def as_store(target: Store | HasStore) -> Store:
    """The store behind ``target``: a retriever's ``.store``, or ``target`` itself.

    Example:
        >>> as_store(object())
        Traceback (most recent call last):
        ...
        TypeError: expected a Store or a retriever with a .store (ChromaMultiCollectionRetriever), got object
    """
    if isinstance(target, HasStore):
        return target.store
    if isinstance(target, Store):
        return target
    raise TypeError(
        "expected a Store or a retriever with a .store (ChromaMultiCollectionRetriever), "
        f"got {type(target).__name__}"
    )
