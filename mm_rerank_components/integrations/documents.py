"""Bring your own loader: write LangChain documents and LlamaIndex nodes into the retriever's collections.

Loaders users already like (LangChain's ``PyPDFLoader``, LlamaIndex's ``SimpleDirectoryReader``, ...)
produce documents or nodes; these functions hand them to the one writer of
:mod:`mm_rerank_components.ingest` (passages through ``add_texts``, pictures through ``add_images``), and
the retriever's LangChain and LlamaIndex faces give them back with the same ids, text and metadata. The
retriever offers the same as ``retriever.add_documents(documents)`` and ``retriever.add_nodes(nodes)``.
(The work is done in :mod:`mm_rerank_components.ingest.documents.frameworks`, below the retriever, so the
retriever can call it; this module is the faces' entry point and reads pictures under the faces' keys.)

Example:
    >>> from langchain_core.documents import Document  # doctest: +SKIP
    >>> from mm_rerank_components.integrations.documents import add_documents  # doctest: +SKIP
    >>> docs = [Document("Foxes dig dens.", metadata={"source": "a.pdf", "page": 3}),  # doctest: +SKIP
    ...         Document("A red fox", metadata={"image_path": "fox.jpg"})]
    >>> add_documents(retriever, docs).summary()  # doctest: +SKIP
    '1 text + 1 image records: 2 added, 0 updated, 0 unchanged, 0 failed, 0 skipped'
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mm_rerank_components.ingest import HasStore, IngestReport, Store
from mm_rerank_components.ingest.documents import frameworks
from mm_rerank_components.integrations._common import IMAGE_KEYS

__all__ = ["add_documents", "add_nodes"]


def add_documents(
    retriever: Store | HasStore,
    documents: Iterable[Any],
    *,
    figures_dir: str | None = None,
    batch_size: int = 32,
) -> IngestReport:
    """Write LangChain ``Document`` objects: passages, and pictures named under the faces' image keys
    (``image``, ``image_path``, ``image_uri``, ``image_url``, ``image_base64``, ``uri``); the
    ``page_content`` of a picture is its caption. Pictures that are not local files (data URIs, base64,
    URLs when allowed) are written to ``figures_dir`` (default: ``$MM_RERANK_FIGURES``, else ``DB/figures``
    next to an embedded retriever's database, else ``~/.cache/mm-rerank/figures``).
    """
    return frameworks.add_documents(
        retriever, documents, image_keys=IMAGE_KEYS, figures_dir=figures_dir, batch_size=batch_size
    )


def add_nodes(
    retriever: Store | HasStore,
    nodes: Iterable[Any],
    *,
    figures_dir: str | None = None,
    batch_size: int = 32,
) -> IngestReport:
    """Write LlamaIndex nodes: ``TextNode`` and ``Document`` as passages, ``ImageNode`` as pictures
    (``image_path``, ``image_url`` or base64 ``image``; its text is the caption)."""
    return frameworks.add_nodes(retriever, nodes, figures_dir=figures_dir, batch_size=batch_size)
