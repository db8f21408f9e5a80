"""LangChain: the Document translator (:func:`to_document`, :func:`from_document`) and
:class:`MultimodalRerankCompressor`, a document compressor for mixed text and image documents.

Requires the ``langchain`` extra: ``pip install "mm-rerank-components[langchain]"``.

Where a Document's image is found, in this order:

1. the metadata keys in ``image_metadata_keys`` (default ``image``, ``image_path``, ``image_uri``,
   ``image_url``, ``image_base64``, ``uri``; see :mod:`mm_rerank_components.integrations._common`): a
   path, ``file://`` URI, URL (fetched only when the reranker's ``ImageOptions(allow_urls=True)``),
   base64 string or data URI;
2. ``page_content`` itself when it is a base64 image or data URI, which is what langchain-chroma's
   ``Chroma.add_images`` stores; the caption then comes from ``caption_metadata_keys``.

Otherwise the document is a passage and ``page_content`` is its text. With an image from metadata,
``page_content`` (if not empty) is the image's caption and the document is scored as text+image.

Queries with a picture: LangChain types a query as ``str``, but the compressor and the package's
retriever (:class:`~mm_rerank_components.integrations.langchain_retriever.ChromaLangChainRetriever`)
both also accept a :class:`~mm_rerank_components.types.Query`, so a picture travels through
``ContextualCompressionRetriever`` and LCEL chains unchanged::

    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)
    docs = retriever.invoke(Query("What is this?", image="photo.jpg"))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from mm_rerank_components._deps import require

require("langchain_core", "langchain", "MultimodalRerankCompressor")

from langchain_core.callbacks import Callbacks  # noqa: E402
from langchain_core.documents import BaseDocumentCompressor, Document  # noqa: E402
from pydantic import ConfigDict, Field, field_validator  # noqa: E402

from mm_rerank_components.integrations._common import (  # noqa: E402
    CAPTION_KEYS,
    IMAGE_KEYS,
    PRECOMPUTED_KEY,
    SCORE_KEYS,
    candidate_metadata,
    candidate_source,
    first_present,
    float_or_none,
    looks_like_base64_image,
    precomputed_from_data,
    result_metadata,
    string_or_none,
    strip_added,
)
from mm_rerank_components.reranker import Reranker, check_limits, check_request  # noqa: E402
from mm_rerank_components.types import Candidate, Query, RankedCandidate  # noqa: E402

DEFAULT_IMAGE_METADATA_KEYS = IMAGE_KEYS
DEFAULT_CAPTION_METADATA_KEYS = CAPTION_KEYS
DEFAULT_SCORE_METADATA_KEYS = SCORE_KEYS


# -- the translator ------------------------------------------------------------------------------------------


def to_document(candidate: Candidate) -> Document:
    """A Candidate as a LangChain Document; :func:`from_document` turns it back into the same Candidate.

    ``page_content`` is the passage or caption (``""`` for an uncaptioned picture); metadata is the
    candidate's metadata plus ``modality``, ``source`` and ``retrieval_score``, and the picture under the
    shared image keys (``image_path``/``image_uri`` for a file or URI, ``image`` for a data URI or base64).
    The document id is the candidate id.

    Example:
        >>> c = Candidate("i1", image="/data/fox.jpg", text="A fox", source="mm_images")
        >>> d = to_document(c)
        >>> d.page_content, d.metadata["image_path"], d.metadata["modality"]
        ('A fox', '/data/fox.jpg', 'text+image')
        >>> from_document(d) == c
        True
    """
    metadata = candidate_metadata(candidate, what="a Document")
    return Document(page_content=candidate.text or "", metadata=metadata, id=candidate.id)


def from_document(
    document: Document,
    position: int = 0,
    *,
    image_keys: tuple[str, ...] = IMAGE_KEYS,
    caption_keys: tuple[str, ...] = CAPTION_KEYS,
) -> Candidate:
    """A LangChain Document as a Candidate (see the module docstring for where the image is found).

    ``position`` names the document in errors and gives an id to a document without one
    (``doc-<position>``). Keys that :func:`to_document` added are removed from the metadata.

    Example:
        >>> from_document(Document("a red fox", id="d1", metadata={"retrieval_score": 0.4})).retrieval_score
        0.4
    """
    if not isinstance(document, Document):
        raise TypeError(
            f"documents[{position}] is a {type(document).__name__}, not a langchain Document; pass "
            "Document(page_content=..., metadata=...)"
        )
    metadata = dict(document.metadata)
    content = document.page_content or ""
    image = first_present(metadata, image_keys)
    text: str | None = content or None
    if image is None and content and looks_like_base64_image(content):
        image = content
        text = string_or_none(first_present(metadata, caption_keys))
    if text is None and image is None:
        raise ValueError(
            f"document {document.id or position!r} (position {position}) has empty page_content and no "
            f"image in metadata keys {list(image_keys)}"
        )
    signals = metadata.get(PRECOMPUTED_KEY)
    where = f"documents[{position}].metadata"
    return Candidate(
        id=str(document.id) if document.id else f"doc-{position}",
        text=text,
        image=image,
        metadata=strip_added(metadata),
        source=candidate_source(metadata),
        retrieval_score=float_or_none(first_present(metadata, SCORE_KEYS)),
        precomputed={} if signals is None else precomputed_from_data(signals, where),
    )


# -- the adapter --------------------------------------------------------------------------------


class MultimodalRerankCompressor(BaseDocumentCompressor):
    """Rerank text and image Documents on one unified relevance scale.

    Returns new Documents (inputs are not mutated) in descending unified score, each with
    ``metadata["relevance_score"]`` (a probability in [0, 1]) and ``metadata["modality"]``; the rest of
    the metadata, a first-stage score included, is copied unchanged.

    Example:
        >>> from langchain_core.documents import Document
        >>> from mm_rerank_components import MultimodalReranker
        >>> from mm_rerank_components.scorers import FakeScorer
        >>> compressor = MultimodalRerankCompressor(reranker=MultimodalReranker(FakeScorer()), top_n=1)
        >>> docs = [Document("owls at night"), Document("a red fox")]
        >>> [d.page_content for d in compressor.compress_documents(docs, "red fox")]
        ['a red fox']
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    reranker: Reranker = Field(description="A MultimodalReranker, CascadeReranker or other Reranker.")
    top_n: int | None = Field(default=None, description="Documents to return; None returns all, reordered.")
    threshold: float | None = Field(default=None, description="Drop documents scoring below this (0..1).")
    image_metadata_keys: tuple[str, ...] = DEFAULT_IMAGE_METADATA_KEYS
    caption_metadata_keys: tuple[str, ...] = DEFAULT_CAPTION_METADATA_KEYS

    @field_validator("reranker", mode="before")
    @classmethod
    def _check_reranker(cls, value: Any) -> Any:
        if not isinstance(value, Reranker):
            raise TypeError(
                f"reranker must be a MultimodalReranker (or CascadeReranker), got {type(value).__name__}"
            )
        return value

    @field_validator("top_n", mode="before")
    @classmethod
    def _check_top_n(cls, value: Any) -> Any:
        check_limits(top_n=value)
        return value

    @field_validator("threshold", mode="before")
    @classmethod
    def _check_threshold(cls, value: Any) -> Any:
        check_limits(threshold=value)
        return value

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str], **kwargs: Any) -> MultimodalRerankCompressor:
        """A compressor around a saved reranker folder (see :func:`mm_rerank_components.load_reranker`).

        ``kwargs`` are the compressor's settings (``top_n``, ``threshold``, ...).

        Example:
            >>> compressor = MultimodalRerankCompressor.from_folder("my-reranker", top_n=5)  # doctest: +SKIP
        """
        from mm_rerank_components.adapt.folder import load_reranker

        return cls(reranker=load_reranker(folder), **kwargs)

    def compress_documents(
        self, documents: Sequence[Document], query: str | Query, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Rerank ``documents`` for ``query`` and return reordered copies with scores in metadata.

        ``query`` is the question text, or a :class:`~mm_rerank_components.types.Query` with a picture
        (``Query("What is this?", image="photo.jpg")``, or ``Query(image=...)`` alone); a picture given as
        a plain string would be read as words, so pass a ``Query`` for it.
        """
        checked = self._check(query)
        if not documents:
            return []
        candidates = self._candidates(documents)
        ranked = self.reranker.rerank(checked, candidates, top_n=self.top_n, threshold=self.threshold)
        return self._to_documents(documents, ranked)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str | Query, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents`; scoring runs off the event loop."""
        checked = self._check(query)
        if not documents:
            return []
        candidates = self._candidates(documents)
        ranked = await self.reranker.arerank(checked, candidates, top_n=self.top_n, threshold=self.threshold)
        return self._to_documents(documents, ranked)

    def _check(self, query: Any) -> Query:
        return check_request(query, self.top_n, self.threshold)

    def _candidates(self, documents: Sequence[Document]) -> list[Candidate]:
        if isinstance(documents, (str, bytes, Document)) or not isinstance(documents, Sequence):
            raise TypeError(
                f"documents must be a list of Document, got {type(documents).__name__}; wrap a single "
                "document in a list"
            )
        return [
            from_document(d, i, image_keys=self.image_metadata_keys, caption_keys=self.caption_metadata_keys)
            for i, d in enumerate(documents)
        ]

    @staticmethod
    def _to_documents(documents: Sequence[Document], ranked: list[RankedCandidate]) -> list[Document]:
        out = []
        for r in ranked:
            original = documents[r.index]
            # the input metadata is copied whole, so a first-stage score already in it survives
            extra = result_metadata(r, None, keep_retrieval_score=False)
            out.append(
                Document(
                    page_content=original.page_content,
                    metadata={**original.metadata, **extra},
                    id=original.id,
                )
            )
        return out


def __getattr__(name: str) -> Any:
    # the retriever face lives in its own module, so the compressor never imports the Chroma retriever
    if name == "ChromaLangChainRetriever":
        from mm_rerank_components.integrations.langchain_retriever import ChromaLangChainRetriever

        return ChromaLangChainRetriever
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
