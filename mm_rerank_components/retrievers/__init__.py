"""First-stage retrievers that produce :class:`~mm_rerank_components.types.Candidate` lists.

``chromadb`` is imported only when a retriever connects, so importing this package stays light.

Example:
    >>> from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever
"""

from typing import Any

from mm_rerank_components.retrievers._hits import distance_to_similarity
from mm_rerank_components.retrievers.chroma import ChromaMultiCollectionRetriever
from mm_rerank_components.retrievers.chroma_store import ChromaStore
from mm_rerank_components.retrievers.embedders import embedding_functions
from mm_rerank_components.retrievers.fake import HashingEmbeddingFunction

__all__ = [
    "CLIPEmbeddingFunction",
    "ChromaMultiCollectionRetriever",
    "ChromaStore",
    "HashingEmbeddingFunction",
    "clip_embedding_functions",
    "distance_to_similarity",
    "embedding_functions",
]

# the CLIP-family functions need transformers and torch: imported on first use only
_LAZY = {
    "CLIPEmbeddingFunction": "mm_rerank_components.retrievers.clip",
    "clip_embedding_functions": "mm_rerank_components.retrievers.clip",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
