"""LlamaIndex face of :class:`~mm_rerank_components.retrievers.chroma.ChromaMultiCollectionRetriever`.

:class:`ChromaLlamaIndexRetriever` is a LlamaIndex ``BaseRetriever`` returning ``TextNode`` for passages
and ``ImageNode`` for pictures, each in a ``NodeWithScore`` whose score is the first-stage similarity.
Feed its nodes to :class:`~mm_rerank_components.integrations.llama_index.MultimodalRerankPostprocessor`.

Requires the ``llama-index`` extra: ``pip install "mm-rerank-components[llama-index]"``.
"""

from __future__ import annotations

from mm_rerank_components._deps import require

require("llama_index.core", "llama-index", "ChromaLlamaIndexRetriever")

from llama_index.core.base.base_retriever import BaseRetriever  # noqa: E402
from llama_index.core.callbacks import CallbackManager  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle  # noqa: E402

from mm_rerank_components.integrations._common import BOOKKEEPING_KEYS  # noqa: E402
from mm_rerank_components.integrations.llama_index import to_node  # noqa: E402
from mm_rerank_components.retrievers.chroma import ChromaMultiCollectionRetriever  # noqa: E402
from mm_rerank_components.types import Query  # noqa: E402

__all__ = ["BOOKKEEPING_KEYS", "ChromaLlamaIndexRetriever", "candidate_to_node"]

#: The translator under its earlier name.
candidate_to_node = to_node


class ChromaLlamaIndexRetriever(BaseRetriever):
    """A LlamaIndex retriever over a text and an image Chroma collection.

    The query is the bundle's ``query_str`` and, when set, its ``image_path`` (LlamaIndex's field for an
    image query). Nodes come in the order of :meth:`ChromaMultiCollectionRetriever.retrieve` (routes
    interleaved rank by rank, since first-stage scores of the two collections are not comparable).

    Args:
        retriever: the :class:`ChromaMultiCollectionRetriever` to query.
        k_text, k_image: hits per collection (default: the retriever's).
        top_k: cap on the number of nodes returned (default: all merged hits).

    Example:
        >>> li = ChromaLlamaIndexRetriever(retriever)  # doctest: +SKIP
        >>> nodes = li.retrieve("a fox in the snow")  # doctest: +SKIP
    """

    def __init__(
        self,
        retriever: ChromaMultiCollectionRetriever,
        *,
        k_text: int | None = None,
        k_image: int | None = None,
        top_k: int | None = None,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")
        self.retriever = retriever
        self.k_text = k_text
        self.k_image = k_image
        self.top_k = top_k
        super().__init__(callback_manager=callback_manager)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        text = query_bundle.query_str if query_bundle.query_str.strip() else None
        image = query_bundle.image_path
        if text is None and image is None:
            raise ValueError("the query bundle has neither query_str nor image_path; give at least one")
        candidates = self.retriever.retrieve(
            Query(text=text, image=image), k_text=self.k_text, k_image=self.k_image
        )
        if self.top_k is not None:
            candidates = candidates[: self.top_k]
        return [to_node(c) for c in candidates]
