"""LangChain adapter: :class:`MultimodalRerankCompressor`, a document compressor for mixed documents.

Requires the ``langchain`` extra: ``pip install "mm-rerank-components[langchain]"``.

Where a Document's image is found, in this order:

1. the metadata keys in ``image_metadata_keys`` (default ``image``, ``image_path``, ``image_uri``,
   ``image_url``, ``image_base64``, ``uri``): a path, ``file://`` URI, URL (fetched only when the
   reranker's ``ImageOptions(allow_urls=True)``), base64 string or data URI;
2. ``page_content`` itself when it is a base64 image or data URI, which is what langchain-chroma's
   ``Chroma.add_images`` stores; the caption then comes from ``caption_metadata_keys``.

Otherwise the document is a passage and ``page_content`` is its text. With an image from metadata,
``page_content`` (if not empty) is the image's caption and the document is scored as text+image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from pydantic import ConfigDict, Field, field_validator
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'MultimodalRerankCompressor needs langchain-core: pip install "mm-rerank-components[langchain]"'
    ) from exc

from mm_rerank_components.integrations._common import (
    first_present,
    float_or_none,
    looks_like_base64_image,
    result_metadata,
)
from mm_rerank_components.reranker import Reranker
from mm_rerank_components.types import Candidate, RankedCandidate

DEFAULT_IMAGE_METADATA_KEYS = ("image", "image_path", "image_uri", "image_url", "image_base64", "uri")
DEFAULT_CAPTION_METADATA_KEYS = ("caption", "title", "alt_text")
DEFAULT_SCORE_METADATA_KEYS = ("retrieval_score", "score")


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

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Rerank ``documents`` for ``query`` and return reordered copies with scores in metadata."""
        if not documents:
            return []
        candidates = [self._to_candidate(d, i) for i, d in enumerate(documents)]
        ranked = self.reranker.rerank(query, candidates, top_n=self.top_n, threshold=self.threshold)
        return self._to_documents(documents, ranked)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents`; scoring runs off the event loop."""
        if not documents:
            return []
        candidates = [self._to_candidate(d, i) for i, d in enumerate(documents)]
        ranked = await self.reranker.arerank(query, candidates, top_n=self.top_n, threshold=self.threshold)
        return self._to_documents(documents, ranked)

    def _to_candidate(self, document: Document, position: int) -> Candidate:
        if not isinstance(document, Document):
            raise TypeError(f"documents[{position}] is a {type(document).__name__}, not a langchain Document")
        metadata = dict(document.metadata)
        content = document.page_content or ""
        image = first_present(metadata, self.image_metadata_keys)
        text: str | None = content or None
        if image is None and content and looks_like_base64_image(content):
            image = content
            caption = first_present(metadata, self.caption_metadata_keys)
            text = caption if isinstance(caption, str) else None
        if text is None and image is None:
            raise ValueError(
                f"document {document.id or position!r} (position {position}) has empty page_content and no "
                f"image in metadata keys {list(self.image_metadata_keys)}"
            )
        source = metadata.get("source")
        return Candidate(
            id=str(document.id) if document.id else f"doc-{position}",
            text=text,
            image=image,
            metadata=metadata,
            source=source if isinstance(source, str) else None,
            retrieval_score=float_or_none(first_present(metadata, DEFAULT_SCORE_METADATA_KEYS)),
        )

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
