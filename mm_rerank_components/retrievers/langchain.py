"""Moved: the LangChain face of the Chroma retriever lives in
:mod:`mm_rerank_components.integrations.langchain_retriever` (only ``integrations/`` imports a framework).
This path keeps working.

Example:
    >>> from mm_rerank_components.retrievers.langchain import ChromaLangChainRetriever  # doctest: +SKIP
"""

from mm_rerank_components.integrations.langchain_retriever import (
    ChromaLangChainRetriever,
    candidate_to_document,
)

__all__ = ["ChromaLangChainRetriever", "candidate_to_document"]
