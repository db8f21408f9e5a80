"""Moved: the LlamaIndex face of the Chroma retriever lives in
:mod:`mm_rerank_components.integrations.llama_index_retriever` (only ``integrations/`` imports a
framework). This path keeps working.

Example:
    >>> from mm_rerank_components.retrievers.llama_index import ChromaLlamaIndexRetriever  # doctest: +SKIP
"""

from mm_rerank_components.integrations.llama_index_retriever import (
    BOOKKEEPING_KEYS,
    ChromaLlamaIndexRetriever,
    candidate_to_node,
)

__all__ = ["BOOKKEEPING_KEYS", "ChromaLlamaIndexRetriever", "candidate_to_node"]
