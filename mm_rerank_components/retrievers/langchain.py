"""LangChain face of :class:`~mm_rerank_components.retrievers.chroma.ChromaMultiCollectionRetriever`.

:class:`ChromaLangChainRetriever` is a LangChain ``BaseRetriever`` returning ``Document`` objects: the
passage (or the picture's caption) as ``page_content`` and the picture in ``metadata["image_path"]`` /
``metadata["image_uri"]``, which :class:`~mm_rerank_components.integrations.langchain` reads back.

Requires the ``langchain`` extra: ``pip install "mm-rerank-components[langchain]"``.
"""

from __future__ import annotations

from typing import Any

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict, Field
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'ChromaLangChainRetriever needs langchain-core: pip install "mm-rerank-components[langchain]"'
    ) from exc

from mm_rerank_components.retrievers.chroma import ChromaMultiCollectionRetriever
from mm_rerank_components.types import Candidate, Query


def candidate_to_document(candidate: Candidate) -> Document:
    """A first-stage Candidate as a LangChain Document.

    ``page_content`` is the passage or caption (``""`` for an uncaptioned picture); metadata is the
    candidate's metadata plus ``modality``, ``source`` and ``retrieval_score``, and for a picture
    ``image_uri`` (and ``image_path`` when it is a local file); a preview data URI (from
    ``candidate_image="preview"``) goes to ``image``. The document id is the candidate id.

    Example:
        >>> c = Candidate("i1", image="/data/fox.jpg", text="A fox", source="mm_images")
        >>> d = candidate_to_document(c)
        >>> d.page_content, d.metadata["image_path"], d.metadata["modality"]
        ('A fox', '/data/fox.jpg', 'text+image')
    """
    metadata: dict[str, Any] = {
        **dict(candidate.metadata),
        "modality": candidate.modality,
        "source": candidate.source,
        "retrieval_score": candidate.retrieval_score,
    }
    if candidate.image is not None:
        if not isinstance(candidate.image, str):
            raise TypeError(
                f"candidate {candidate.id!r} holds an in-memory image ({type(candidate.image).__name__}); "
                "a Document needs a path or URI string"
            )
        if candidate.image.startswith("data:"):
            # a preview (candidate_image="preview"): the rerank compressor reads "image" first
            metadata["image"] = candidate.image
        else:
            metadata.setdefault("image_uri", candidate.image)
            if "://" not in candidate.image:
                metadata.setdefault("image_path", candidate.image)
    return Document(page_content=candidate.text or "", metadata=metadata, id=candidate.id)


class ChromaLangChainRetriever(BaseRetriever):
    """A LangChain retriever over a text and an image Chroma collection.

    ``invoke(query)`` searches with the text; ``invoke(query, image="photo.jpg")`` adds an image query
    (a path, bytes, base64 or data URI), and ``k``, ``k_text``, ``k_image`` may be given per call too.
    Documents come in the order of :meth:`ChromaMultiCollectionRetriever.retrieve` (routes interleaved
    rank by rank); rerank them with the package's LangChain document compressor.

    Attributes:
        retriever: the :class:`ChromaMultiCollectionRetriever` to query.
        k: cap on the number of documents returned (default: all merged hits).
        k_text, k_image: hits per collection (default: the retriever's).

    Example:
        >>> lc = ChromaLangChainRetriever(retriever=retriever, k=8)  # doctest: +SKIP
        >>> docs = lc.invoke("a fox in the snow")  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: ChromaMultiCollectionRetriever = Field(description="The multi-collection Chroma retriever.")
    k: int | None = Field(default=None, ge=1, description="Cap on the number of documents returned.")
    k_text: int | None = Field(default=None, ge=0, description="Hits asked from the text collection.")
    k_image: int | None = Field(default=None, ge=0, description="Hits asked from the image collection.")

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        k_text: int | None = None,
        k_image: int | None = None,
        image: Any | None = None,
    ) -> list[Document]:
        limit = self.k if k is None else k
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"k must be an int >= 1 or None, got {limit!r}")
        text = query if query.strip() else None
        candidates = self.retriever.retrieve(
            Query(text=text, image=image),
            k_text=self.k_text if k_text is None else k_text,
            k_image=self.k_image if k_image is None else k_image,
        )
        if limit is not None:
            candidates = candidates[:limit]
        return [candidate_to_document(c) for c in candidates]
