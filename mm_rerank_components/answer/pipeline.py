"""The whole path: first-stage retrieval, reranking on the unified scale, and an answer.

Example:
    >>> from mm_rerank_components import Candidate, MultimodalReranker
    >>> from mm_rerank_components.scorers import FakeScorer
    >>> class ListRetriever:
    ...     def retrieve(self, query):
    ...         return [Candidate("a", text="Owls hunt at night."), Candidate("b", text="A red fox.")]
    >>> rag = RAGPipeline(ListRetriever(), MultimodalReranker(FakeScorer()), top_n=1)
    >>> sorted(rag.ask("red fox").timings)
    ['answer', 'first_stage', 'rerank']
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

from mm_rerank_components._checks import check_int
from mm_rerank_components.answer.evidence import Answer, Answerer, Evidence
from mm_rerank_components.answer.extractive import ExtractiveAnswerer
from mm_rerank_components.answer.llm import LLMAnswerer, LLMConfig
from mm_rerank_components.types import Candidate, Query

if TYPE_CHECKING:
    from mm_rerank_components.reranker import Reranker

logger = logging.getLogger(__name__)

_CITATION = re.compile(r"\[(\d{1,4})\]")


def make_answerer(
    config: LLMConfig | None = None, *, from_env: bool = True, reranker: Reranker | None = None
) -> ExtractiveAnswerer | LLMAnswerer:
    """An :class:`LLMAnswerer` when an LLM is configured (argument or environment), else extractive.

    Args:
        config: the LLM to ask; ``None`` reads the environment when ``from_env``.
        from_env: read ``MM_RERANK_LLM_*`` / ``OPENAI_*`` when no ``config`` is given.
        reranker: for the extractive answerer: scores the sentences of the top evidence, so the answer
            quotes the sentences that answer the question (see :class:`ExtractiveAnswerer`).

    Example:
        >>> make_answerer(from_env=False).name
        'extractive'
    """
    if config is None and from_env:
        config = LLMConfig.from_env()
    if config is None:
        logger.info("no LLM configured (MM_RERANK_LLM_MODEL unset): answers are extractive")
        return ExtractiveAnswerer(reranker=reranker)
    return LLMAnswerer(config)


class RAGPipeline:
    """Retrieve broadly, rerank on the unified scale, answer from the top evidence.

    Args:
        retriever: anything with ``retrieve(query) -> list[Candidate]``, e.g.
            :class:`~mm_rerank_components.retrievers.ChromaMultiCollectionRetriever`.
        reranker: a :class:`~mm_rerank_components.MultimodalReranker` (or cascade). Build it with
            ``on_error="keep"`` for a service: a candidate it cannot read (a deleted picture) is then kept
            in the evidence with its ``error``, logged, and the answer is written from the rest.
        answerer: an :class:`Answerer`; default :func:`make_answerer` (environment, else an extractive
            answerer whose sentences are scored by ``reranker``).
        top_n: evidence items shown with the answer (plus any further item the answer cites).
        threshold: drop evidence whose unified score is below this.
        read_depth: how many of the best reranked items the answerer reads (at least ``top_n``). Deeper
            than ``top_n`` by default, because the passage that answers a question often ranks just below
            pictures that merely look relevant; an answer that cites such an item shows it too.

    Example:
        >>> from mm_rerank_components import MultimodalReranker
        >>> from mm_rerank_components.scorers import FakeScorer
        >>> class ListRetriever:
        ...     def retrieve(self, query):
        ...         return [Candidate("a", text="Owls hunt at night."), Candidate("b", text="A red fox.")]
        >>> rag = RAGPipeline(ListRetriever(), MultimodalReranker(FakeScorer()),
        ...                   answerer=ExtractiveAnswerer(), top_n=1)
        >>> rag.ask("red fox").evidence[0].id
        'b'
    """

    def __init__(
        self,
        retriever: Any,
        reranker: Any,
        answerer: Answerer | None = None,
        *,
        top_n: int = 5,
        threshold: float | None = None,
        read_depth: int = 10,
    ) -> None:
        if not callable(getattr(retriever, "retrieve", None)):
            raise TypeError(f"retriever must have retrieve(query) -> list[Candidate], got {retriever!r}")
        if not callable(getattr(reranker, "rerank", None)):
            raise TypeError(f"reranker must be a MultimodalReranker (or cascade), got {reranker!r}")
        check_int("top_n", top_n)
        check_int("read_depth", read_depth)
        self.retriever = retriever
        self.reranker = reranker
        self.answerer: Answerer = answerer if answerer is not None else make_answerer(reranker=reranker)
        self.top_n = top_n
        self.threshold = threshold
        self.read_depth = read_depth

    def search(self, question: str | Query) -> list[Evidence]:
        """First stage plus reranking: the top evidence, best first."""
        return self._search(question, {}, self.top_n)

    def _search(self, question: str | Query, timings: dict[str, float], depth: int) -> list[Evidence]:
        query = Query(text=question) if isinstance(question, str) else question
        start = time.perf_counter()
        candidates: list[Candidate] = list(self.retriever.retrieve(query))
        timings["first_stage"] = time.perf_counter() - start
        if not candidates:
            timings["rerank"] = 0.0
            return []
        start = time.perf_counter()
        ranked = self.reranker.rerank(query, candidates, top_n=depth, threshold=self.threshold)
        timings["rerank"] = time.perf_counter() - start
        return [Evidence.from_ranked(r) for r in ranked]

    def _answer(self, query: Query, readable: list[Evidence]) -> Answer:
        words = query.text or ""
        if query.image is not None and isinstance(self.answerer, ExtractiveAnswerer):
            # the extractive answerer scores its sentences against the words and the picture together
            text = self.answerer.compose(query, readable)
            return Answer(question=words, text=text, evidence=list(readable), answerer=self.answerer.name)
        return self.answerer.answer(words or "What does this picture show?", readable)

    def ask(self, question: str | Query) -> Answer:
        """Search and answer ``question``; the returned :class:`Answer` carries the evidence and timings.

        ``question`` may be a :class:`Query` with a picture (the web chat's upload): the picture steers
        retrieval and reranking; the answerer is given the question's words."""
        query = _question_query(question)
        start = time.perf_counter()
        timings: dict[str, float] = {}
        evidence = self._search(query, timings, max(self.top_n, self.read_depth))
        readable = [e for e in evidence if e.error is None]
        for e in evidence:
            if e.error is not None:  # kept by on_error="keep": shown as unreadable, never quoted
                logger.warning("evidence %s (%s) could not be read: %s", e.id, e.label, e.error)
        answered = time.perf_counter()
        answer = self._answer(query, readable)
        timings["answer"] = time.perf_counter() - answered
        cited = {int(n) for n in _CITATION.findall(answer.text)}
        shown = [e for e in answer.evidence if e.rank <= self.top_n or e.rank in cited]
        return Answer(
            question=answer.question,
            text=answer.text,
            evidence=shown + [e for e in evidence if e.error is not None],
            answerer=answer.answerer,
            seconds=time.perf_counter() - start,
            timings=timings,
        )


def _question_query(question: str | Query) -> Query:
    """``question`` as a stripped :class:`Query`; an empty one is a ValueError naming it."""
    if isinstance(question, Query):
        if question.image is None:
            return _question_query(question.text or "")
        return Query(text=(question.text or "").strip() or None, image=question.image)
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question must be a non-empty string or a Query, got {question!r}")
    return Query(text=question.strip())
