"""Bring your own loader: LangChain ``Document`` objects and LlamaIndex nodes written through the one
writer (:func:`~mm_rerank_components.ingest.add_texts` and :func:`~mm_rerank_components.ingest.add_images`).

Read by duck typing (nothing here imports LangChain or LlamaIndex): a document is anything with
``page_content`` and ``metadata``; a node anything with ``text``/``get_content()`` and ``metadata`` (a
``NodeWithScore`` is unwrapped). A document is a picture when its metadata holds an image under one of
:data:`IMAGE_KEYS` (the keys the retriever's faces write); a node when it has an ``image_path``,
``image_url`` or ``image``. Its ``page_content``/``text`` is then the caption. Local files are used where
they are; data URIs and base64 pictures are written to the figures folder; URLs are fetched only when the
retriever's ``ImageOptions`` allow it, with its size and time limits.

The id is the document's or node's own id when it has one (else the content id), the metadata is kept as
given, so the retriever's LangChain and LlamaIndex faces give back the same ids, text and metadata (with
their bookkeeping keys added).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mm_rerank_components.ingest.documents.base import DocumentOptions, default_figures_dir, save_figure
from mm_rerank_components.ingest.records import IngestFailure, IngestReport, bare_text_id, content_id
from mm_rerank_components.ingest.store import HasStore, Store, as_store
from mm_rerank_components.ingest.write import add_images, add_texts
from mm_rerank_components.media import ImageLoadError, classify, load_image

#: Metadata keys that hold a LangChain document's picture, first found wins (as in integrations/_common).
IMAGE_KEYS: tuple[str, ...] = ("image", "image_path", "image_uri", "image_url", "image_base64", "uri")


@dataclass
class _Item:
    where: str
    text: str
    metadata: dict[str, Any]
    id: str | None = None
    image: str | None = None


@dataclass
class _Batch:
    texts: list[_Item] = field(default_factory=list)
    images: list[tuple[_Item, str]] = field(default_factory=list)
    failed: list[IngestFailure] = field(default_factory=list)


def from_document(document: Any, index: int, image_keys: Sequence[str] = IMAGE_KEYS) -> _Item:
    """A LangChain ``Document`` (duck-typed) as an item to write."""
    if not hasattr(document, "page_content") or not isinstance(getattr(document, "metadata", None), Mapping):
        raise TypeError(
            f"documents[{index}] is a {type(document).__name__}, not a LangChain Document "
            "(page_content and metadata)"
        )
    metadata = dict(document.metadata)
    image = next((metadata[k] for k in image_keys if isinstance(metadata.get(k), str) and metadata[k]), None)
    return _Item(
        f"documents[{index}]", str(document.page_content or ""), metadata, document.id or None, image
    )


def from_node(node: Any, index: int) -> _Item:
    """A LlamaIndex node (``TextNode``, ``ImageNode``, ``Document`` or a ``NodeWithScore``) as an item."""
    node = getattr(node, "node", node)
    if not isinstance(getattr(node, "metadata", None), Mapping) or not hasattr(node, "node_id"):
        raise TypeError(
            f"nodes[{index}] is a {type(node).__name__}, not a LlamaIndex node (node_id, metadata)"
        )
    image = next(
        (
            v
            for k in ("image_path", "image_url", "image")
            if isinstance(v := getattr(node, k, None), str) and v
        ),
        None,
    )
    text = getattr(node, "text", None)
    text = text if isinstance(text, str) else str(node.get_content())
    return _Item(f"nodes[{index}]", text, dict(node.metadata), node.node_id or None, image)


def write_items(
    retriever: Store | HasStore,
    items: Iterable[_Item],
    *,
    figures_dir: str | None = None,
    batch_size: int = 32,
) -> IngestReport:
    """Write passages and pictures through the one writer; one report for both (failures named)."""
    store = as_store(retriever)
    batch = _Batch()
    if figures_dir is None:  # next to an embedded database (DB/figures), like mm-rerank ingest --db DB
        figures_dir = str(default_figures_dir(getattr(retriever, "path", None)))
    options = DocumentOptions(figures_dir=figures_dir, image_options=store.image_options)
    for item in items:
        if item.image is None and not item.text.strip():
            batch.failed.append(IngestFailure(item.where, "empty: no text and no picture"))
        elif item.image is None:
            batch.texts.append(item)
        else:
            try:
                batch.images.append((item, _picture_file(item.image, options)))
            except ImageLoadError as exc:
                batch.failed.append(IngestFailure(item.where, str(exc)))
    report = IngestReport(failed=batch.failed)
    if batch.texts:
        ids = _ids([i.id for i in batch.texts], [bare_text_id(i.text) for i in batch.texts])
        texts = [i.text for i in batch.texts]
        _merge(
            report,
            add_texts(
                store, texts, ids=ids, metadatas=[i.metadata for i in batch.texts], batch_size=batch_size
            ),
        )
    if batch.images:
        fallback = [content_id("image", path.encode(), item.text) for item, path in batch.images]
        _merge(
            report,
            add_images(
                store,
                [path for _, path in batch.images],
                ids=_ids([item.id for item, _ in batch.images], fallback),
                captions=[item.text or None for item, _ in batch.images],
                metadatas=[item.metadata for item, _ in batch.images],
                batch_size=batch_size,
            ),
        )
    return report


def _picture_file(ref: str, options: DocumentOptions) -> str:
    """A local file for a picture reference: a path as it is, anything else decoded (within the image
    options' limits and URL policy) and written to the figures folder."""
    kind = classify(ref)
    if kind == "path":
        return ref
    if kind == "file-uri":
        from urllib.parse import unquote, urlsplit

        return unquote(urlsplit(ref).path)
    image = load_image(ref, options.image_options)
    return save_figure(image, options)


def _ids(given: list[str | None], fallback: list[str]) -> list[str] | None:
    if all(i is None for i in given):
        return None
    return [g if g is not None else f for g, f in zip(given, fallback, strict=True)]


def _merge(report: IngestReport, part: IngestReport) -> None:
    report.added += part.added
    report.updated += part.updated
    report.unchanged += part.unchanged
    report.failed.extend(part.failed)
    report.texts += part.texts
    report.images += part.images


def add_documents(
    retriever: Store | HasStore,
    documents: Iterable[Any],
    *,
    image_keys: Sequence[str] = IMAGE_KEYS,
    figures_dir: str | None = None,
    batch_size: int = 32,
) -> IngestReport:
    """Write LangChain ``Document`` objects: passages, and pictures named in their metadata.

    Example:
        >>> from langchain_core.documents import Document  # doctest: +SKIP
        >>> docs = [Document("Foxes dig dens.", metadata={"source": "a.txt"})]  # doctest: +SKIP
        >>> add_documents(retriever, docs).added  # doctest: +SKIP
        1
    """
    items = [from_document(d, i, image_keys) for i, d in enumerate(documents)]
    return write_items(retriever, items, figures_dir=figures_dir, batch_size=batch_size)


def add_nodes(
    retriever: Store | HasStore, nodes: Iterable[Any], *, figures_dir: str | None = None, batch_size: int = 32
) -> IngestReport:
    """Write LlamaIndex nodes: ``TextNode``/``Document`` as passages, ``ImageNode`` as pictures.

    Example:
        >>> from llama_index.core.schema import TextNode  # doctest: +SKIP
        >>> add_nodes(retriever, [TextNode(text="Foxes dig dens.", id_="n1")])  # doctest: +SKIP
    """
    items = [from_node(n, i) for i, n in enumerate(nodes)]
    return write_items(retriever, items, figures_dir=figures_dir, batch_size=batch_size)


__all__ = [
    "IMAGE_KEYS",
    "add_documents",
    "add_nodes",
    "from_document",
    "from_node",
    "write_items",
]
