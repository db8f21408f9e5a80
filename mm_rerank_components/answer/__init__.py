"""Answering from reranked evidence: an offline extractive answerer and an OpenAI-compatible LLM answerer.

The chatbot examples and the web page (:mod:`mm_rerank_components.web`) share this package. Its rooms:

* :mod:`~mm_rerank_components.answer.evidence`: :class:`Evidence` (one reranked passage or picture as
  shown to a user, built from a :class:`~mm_rerank_components.types.Candidate`; LlamaIndex nodes and
  LangChain Documents are turned into Candidates by :mod:`mm_rerank_components.integrations` first),
  :class:`Answer`, the :class:`Answerer` protocol and :func:`format_evidence` (titles and sources for a
  reader, never internal ids);
* :mod:`~mm_rerank_components.answer.extractive`: :class:`ExtractiveAnswerer` needs no language model: it
  quotes the sentences of the top evidence that best answer the question (scored by the reranker's own
  models when it is given one), cites them as ``[1]``, ``[2]``, and says plainly that it is extractive;
* :mod:`~mm_rerank_components.answer.llm`: :class:`LLMConfig` reads an OpenAI-compatible endpoint from
  the environment (``MM_RERANK_LLM_MODEL``, ``MM_RERANK_LLM_BASE_URL``, ``MM_RERANK_LLM_API_KEY``,
  ``MM_RERANK_LLM_VISION``, ``MM_RERANK_LLM_TIMEOUT``; the ``OPENAI_*`` names also work) and
  :class:`LLMAnswerer` asks it (plain HTTP with ``urllib``; no extra dependency);
* :mod:`~mm_rerank_components.answer.pipeline`: :class:`RAGPipeline` ties a first-stage retriever, a
  reranker and an answerer together; :func:`make_answerer` picks the answerer.

Example:
    >>> from mm_rerank_components.answer import Evidence, ExtractiveAnswerer
    >>> ev = [Evidence(rank=1, id="p1", modality="text", score=0.91,
    ...                text="The Golden Temple is in Amritsar. It is covered in gold.")]
    >>> print(ExtractiveAnswerer().answer("Where is the Golden Temple?", ev).text)
    Extractive answer (no LLM configured), quoted from the top reranked evidence:
    The Golden Temple is in Amritsar. [1]
"""

from __future__ import annotations

from mm_rerank_components.answer.evidence import (
    Answer,
    Answerer,
    Evidence,
    format_evidence,
    split_sentences,
)
from mm_rerank_components.answer.extractive import EXTRACTIVE_NOTICE, ExtractiveAnswerer, Quote
from mm_rerank_components.answer.llm import (
    DEFAULT_BASE_URL,
    SYSTEM_PROMPT,
    LLMAnswerer,
    LLMConfig,
    LLMError,
    OpenAICompatibleClient,
    build_messages,
    thumbnail_data_uri,
)
from mm_rerank_components.answer.pipeline import RAGPipeline, make_answerer

__all__ = [
    "DEFAULT_BASE_URL",
    "EXTRACTIVE_NOTICE",
    "SYSTEM_PROMPT",
    "Answer",
    "Answerer",
    "Evidence",
    "ExtractiveAnswerer",
    "LLMAnswerer",
    "LLMConfig",
    "LLMError",
    "OpenAICompatibleClient",
    "Quote",
    "RAGPipeline",
    "build_messages",
    "format_evidence",
    "make_answerer",
    "split_sentences",
    "thumbnail_data_uri",
]
