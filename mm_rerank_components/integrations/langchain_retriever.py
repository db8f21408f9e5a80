"""LangChain face of :class:`~mm_rerank_components.retrievers.chroma.ChromaMultiCollectionRetriever`.

:class:`ChromaLangChainRetriever` is a LangChain ``BaseRetriever`` returning ``Document`` objects: the
passage (or the picture's caption) as ``page_content`` and the picture in ``metadata["image_path"]`` /
``metadata["image_uri"]`` (the shared schema of :mod:`mm_rerank_components.integrations._common`), which
:func:`~mm_rerank_components.integrations.langchain.from_document` and the rerank compressor read back.

Requires the ``langchain`` extra: ``pip install "mm-rerank-components[langchain]"``.
"""

from __future__ import annotations

from typing import Any

from mm_rerank_components._deps import require

require("langchain_core", "langchain", "ChromaLangChainRetriever")

from langchain_core.callbacks import CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from pydantic import ConfigDict, Field  # noqa: E402

from mm_rerank_components.integrations.langchain import to_document  # noqa: E402
from mm_rerank_components.retrievers.chroma import ChromaMultiCollectionRetriever  # noqa: E402
from mm_rerank_components.types import Query  # noqa: E402

#: The translator under its earlier name.
candidate_to_document = to_document


class ChromaLangChainRetriever(BaseRetriever):
    """A LangChain retriever over a text and an image Chroma collection.

    ``invoke(query)`` searches with the text; ``invoke(query, image="photo.jpg")`` adds an image query
    (a path, bytes, base64 or data URI), and ``k``, ``k_text``, ``k_image`` may be given per call too.
    ``invoke(Query("What is this?", image="photo.jpg"))`` does the same with one object, which
    ``ContextualCompressionRetriever`` and LCEL chains pass through to the rerank compressor.
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
        query: str | Query,
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
        if isinstance(query, Query):
            # a picture question through ContextualCompressionRetriever / LCEL, which pass one object
            if image is not None:
                raise ValueError("pass the picture either in the Query or as image=..., not both")
            search = query
        else:
            search = Query(text=query if query.strip() else None, image=image)
        candidates = self.retriever.retrieve(
            search,
            k_text=self.k_text if k_text is None else k_text,
            k_image=self.k_image if k_image is None else k_image,
        )
        if limit is not None:
            candidates = candidates[:limit]
        return [to_document(c) for c in candidates]
