"""LlamaIndex face of :class:`~mm_rerank_components.retrievers.chroma.ChromaMultiCollectionRetriever`.

:class:`ChromaLlamaIndexRetriever` is a LlamaIndex ``BaseRetriever`` returning ``TextNode`` for passages
and ``ImageNode`` for pictures, each in a ``NodeWithScore`` whose score is the first-stage similarity.
Feed its nodes to :class:`~mm_rerank_components.integrations.llama_index.MultimodalRerankPostprocessor`.

Requires the ``llama-index`` extra: ``pip install "mm-rerank-components[llama-index]"``.
"""

from __future__ import annotations

from typing import Any

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle, TextNode
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'ChromaLlamaIndexRetriever needs llama-index-core: pip install "mm-rerank-components[llama-index]"'
    ) from exc

from mm_rerank_components.retrievers.chroma import ChromaMultiCollectionRetriever
from mm_rerank_components.types import Candidate, Query

#: Metadata keys left out of the text LlamaIndex shows an LLM or an embedding model.
BOOKKEEPING_KEYS = (
    "path",
    "rel_path",
    "kind",
    "source_collection",
    "route",
    "routes",
    "retrieval_score",
    "retrieval_rank",
    "distance",
    "distance_space",
    "image_uri",
    "image_path",
    "width",
    "height",
    "chunk",
    "n_chunks",
    "modality",
    "image_preview",
)


def candidate_to_node(candidate: Candidate) -> NodeWithScore:
    """A first-stage Candidate as a LlamaIndex node: ``ImageNode`` when it has an image, else ``TextNode``.

    The node id is the candidate id, the text the passage or caption, the metadata the candidate's
    metadata plus ``modality``, ``source`` and ``retrieval_score``; an ``ImageNode`` also gets
    ``image_path`` (a local file) or ``image_url`` (any other URI), and ``image`` (base64) when the
    candidate carries a preview data URI. The score is ``retrieval_score``.

    Example:
        >>> n = candidate_to_node(Candidate("p1", text="Foxes live in dens.", retrieval_score=0.5))
        >>> type(n.node).__name__, n.score
        ('TextNode', 0.5)
    """
    metadata: dict[str, Any] = {
        **dict(candidate.metadata),
        "modality": candidate.modality,
        "source": candidate.source,
        "retrieval_score": candidate.retrieval_score,
    }
    hidden = [k for k in (*BOOKKEEPING_KEYS, "source") if k in metadata]
    node: TextNode
    if candidate.image is not None and isinstance(candidate.image, str):
        image_path = metadata.get("image_path")
        image_path = image_path if isinstance(image_path, str) else None
        inline: str | None = None
        mimetype: str | None = None
        if candidate.image.startswith("data:"):
            # a preview (candidate_image="preview"): inline base64, read first by the rerank adapter
            header, _, inline = candidate.image.partition(",")
            mimetype = header[5:].split(";")[0] or None
        image_url = None
        if image_path is None and inline is None:
            image_url = candidate.image
        elif image_path is None:
            image_url = metadata.get("image_uri") if isinstance(metadata.get("image_uri"), str) else None
        node = ImageNode(
            id_=candidate.id,
            text=candidate.text or "",
            image=inline,
            image_mimetype=mimetype,
            image_path=image_path,
            image_url=image_url,
            metadata=metadata,
            excluded_llm_metadata_keys=hidden,
            excluded_embed_metadata_keys=hidden,
        )
    elif candidate.image is not None:
        raise TypeError(
            f"candidate {candidate.id!r} holds an in-memory image ({type(candidate.image).__name__}); "
            "ImageNode needs a path or URI string"
        )
    else:
        node = TextNode(
            id_=candidate.id,
            text=candidate.text or "",
            metadata=metadata,
            excluded_llm_metadata_keys=hidden,
            excluded_embed_metadata_keys=hidden,
        )
    return NodeWithScore(node=node, score=candidate.retrieval_score)


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
        return [candidate_to_node(c) for c in candidates]
