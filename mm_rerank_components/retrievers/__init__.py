"""First-stage retrievers that produce :class:`~mm_rerank_components.types.Candidate` lists.

``chromadb`` is imported only when a retriever connects, so importing this package stays light.

Example:
    >>> from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever
"""

from mm_rerank_components.retrievers._hits import distance_to_similarity
from mm_rerank_components.retrievers.chroma import ChromaMultiCollectionRetriever
from mm_rerank_components.retrievers.chroma_store import ChromaStore
from mm_rerank_components.retrievers.embedders import embedding_functions
from mm_rerank_components.retrievers.fake import HashingEmbeddingFunction

__all__ = [
    "ChromaMultiCollectionRetriever",
    "ChromaStore",
    "HashingEmbeddingFunction",
    "distance_to_similarity",
    "embedding_functions",
]
