"""The offline answerer: quotes the sentences of the top evidence that best answer the question.

With a ``reranker`` (the pipeline passes its own, so the same models judge passages and sentences),
every sentence of the top evidence is scored against the question on the unified scale, and the best
ones are quoted, best first, each naming the item it comes from. Without one, each top item contributes
the sentence sharing the most words with the question, in rank order.

Either way the answer starts with :data:`EXTRACTIVE_NOTICE`, so nobody mistakes it for an LLM's.

Example:
    >>> from mm_rerank_components.answer import Evidence
    >>> ev = [Evidence(rank=1, id="p1", modality="text", score=0.91,
    ...                text="The Golden Temple is in Amritsar. It is covered in gold.")]
    >>> print(ExtractiveAnswerer().compose("Where is the Golden Temple?", ev))
    Extractive answer (no LLM configured), quoted from the top reranked evidence:
    The Golden Temple is in Amritsar. [1]
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mm_rerank_components.answer.evidence import Answer, Evidence, split_sentences
from mm_rerank_components.types import Candidate, Query

if TYPE_CHECKING:
    from mm_rerank_components.reranker import Reranker

logger = logging.getLogger(__name__)

EXTRACTIVE_NOTICE = "Extractive answer (no LLM configured), quoted from the top reranked evidence:"
NO_EVIDENCE = (
    "Extractive answer (no LLM configured): no evidence was found for this question, so there is nothing "
    "to quote."
)

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# words that carry no topic; used only to rank sentences, never to filter evidence
_STOPWORDS = frozenset(
    """a an and are as at be by can do does for from has have how i in is it its of on or show
    that the their there these this to was what when where which who why with you your me tell about
    picture photo image""".split()  # noqa: SIM905
)
_MAX_QUOTE = 400
_MAX_CAPTION = 200


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


@dataclass(frozen=True)
class Quote:
    """One quoted sentence (or picture caption) and the evidence item it comes from.

    Attributes:
        text: the sentence as quoted (a picture is quoted as ``"Picture: <caption>."``).
        evidence: the item it comes from; answers cite it as ``[evidence.rank]``.
        score: the sentence's relevance on the unified scale when a reranker scored it, else NaN.
        position: the sentence's index within the item's text (0 for a picture caption).

    Example:
        >>> e = Evidence(rank=3, id="c", modality="text", score=0.4, title="Chicken")
        >>> Quote("They have a comb on their head.", e, 0.8, 2).line(name_item=True)
        'They have a comb on their head. (Chicken [3])'
    """

    text: str
    evidence: Evidence
    score: float
    position: int

    def line(self, *, name_item: bool) -> str:
        """The quote with its citation; ``name_item`` adds the item's label (title, else its id)."""
        if name_item and not self.text.startswith("Picture: "):
            return f"{self.text} ({self.evidence.label} [{self.evidence.rank}])"
        return f"{self.text} [{self.evidence.rank}]"


class ExtractiveAnswerer:
    """Compose an answer from the top reranked evidence, with citations, without any language model.

    Args:
        max_evidence: how many of the top items may be quoted (default: 3 by word overlap; with a
            ``reranker``, 10, so a sentence that answers the question is found below pictures that merely
            look relevant).
        sentences_per_item: most sentences quoted from one item.
        min_score: items below this unified score are not quoted (they stay in the evidence list).
        reranker: scores each sentence of the top items against the question (use the pipeline's
            reranker, so the same models judge passages and sentences; a learned-fusion reranker's
            base reranker scores them, since a sentence has no first-stage signals). The best
            ``max_quotes`` sentences are quoted, best first, each naming its item. Without it, each top
            item contributes the sentence sharing the most words with the question, in rank order.
        max_quotes: how many sentences a reranker-scored answer quotes at most.
        quote_margin: a reranker-scored answer quotes a further sentence only when its unified score is
            within this of the best sentence's, so a weak second quote does not dilute a clear answer.

    Example:
        >>> from mm_rerank_components import MultimodalReranker
        >>> from mm_rerank_components.scorers import FakeScorer
        >>> ev = [Evidence(rank=1, id="i1", modality="image", score=0.8, image="a.webp", title="Red fox"),
        ...       Evidence(rank=2, id="p2", modality="text", score=0.6, title="Owls",
        ...                text="Owls fly at night. Owls hunt mice.")]
        >>> answerer = ExtractiveAnswerer(reranker=MultimodalReranker(FakeScorer()), max_quotes=1)
        >>> print(answerer.compose("owls hunt mice", ev))
        Extractive answer (no LLM configured), quoted from the top reranked evidence:
        Owls hunt mice. (Owls [2])
    """

    name = "extractive"

    def __init__(
        self,
        max_evidence: int | None = None,
        sentences_per_item: int = 1,
        min_score: float = 0.0,
        *,
        reranker: Reranker | None = None,
        max_quotes: int = 2,
        quote_margin: float = 0.03,
    ) -> None:
        if max_evidence is None:
            max_evidence = 3 if reranker is None else 10
        for label, value in (
            ("max_evidence", max_evidence),
            ("sentences_per_item", sentences_per_item),
            ("max_quotes", max_quotes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be >= 1 (an int), got {value!r}")
        if reranker is not None and not callable(getattr(reranker, "rerank", None)):
            raise TypeError(
                f"reranker must have rerank(query, candidates), e.g. MultimodalReranker; got {reranker!r}"
            )
        self.max_evidence = max_evidence
        self.sentences_per_item = sentences_per_item
        self.min_score = min_score
        self.reranker = reranker
        self._sentences_by = _sentence_reranker(reranker)
        self.max_quotes = max_quotes
        if not 0.0 <= quote_margin <= 1.0:
            raise ValueError(f"quote_margin must be between 0 and 1, got {quote_margin!r}")
        self.quote_margin = quote_margin

    def answer(self, question: str, evidence: Sequence[Evidence]) -> Answer:
        """The extractive answer for ``question`` from ``evidence`` (best first)."""
        return Answer(
            question=question,
            text=self.compose(question, evidence),
            evidence=list(evidence),
            answerer=self.name,
        )

    def compose(self, question: str | Query, evidence: Sequence[Evidence]) -> str:
        """Just the answer text. ``question`` may be a :class:`Query` with a picture: the reranker then
        scores the sentences against the whole query (``"What does this animal eat?"`` + a koala photo)."""
        quotes = self.quotes(question, evidence)
        if not quotes:
            return NO_EVIDENCE
        named = self.reranker is not None
        return "\n".join([EXTRACTIVE_NOTICE, *(q.line(name_item=named) for q in quotes)])

    def quotes(self, question: str | Query, evidence: Sequence[Evidence]) -> list[Quote]:
        """The quotes the answer is made of, in the order the answer gives them.

        Example:
            >>> ev = [Evidence(rank=1, id="p", modality="text", score=0.5, text="Foxes. Red foxes hunt.")]
            >>> [q.text for q in ExtractiveAnswerer().quotes("red fox", ev)]
            ['Red foxes hunt.']
        """
        usable = [e for e in evidence if math.isnan(e.score) or e.score >= self.min_score]
        top = usable[: self.max_evidence]
        if not top:
            return []
        if self.reranker is None:
            text = question.text if isinstance(question, Query) else question
            return [self._best_by_words(e, set(_words(text or ""))) for e in top]
        return self._best_by_model(question if isinstance(question, Query) else Query(text=question), top)

    # -- without a model: word overlap, one item at a time ----------------------------------------------

    def _best_by_words(self, e: Evidence, query_words: set[str]) -> Quote:
        if e.image:
            return Quote(_picture_line(e), e, math.nan, 0)
        sentences = split_sentences(e.text, e.title) or [" ".join(e.text.split())]
        ranked = sorted(
            range(len(sentences)),
            key=lambda i: (-len(query_words & set(_words(sentences[i]))), i),
        )
        chosen = sorted(ranked[: self.sentences_per_item])
        quote = " ".join(sentences[i] for i in chosen)
        return Quote(_clip(quote, _MAX_QUOTE), e, math.nan, chosen[0])

    # -- with the reranker's models: every sentence of the top items on the unified scale ---------------

    def _best_by_model(self, query: Query, top: Sequence[Evidence]) -> list[Quote]:
        assert self._sentences_by is not None
        pool = _sentence_pool(top)
        if not pool:  # only uncaptioned pictures: nothing to score, cite them as they are
            return [Quote(_picture_line(e), e, e.score, 0) for e in top][: self.max_quotes]
        if any(not is_caption for *_, is_caption in pool):
            # a caption names a picture but rarely answers a question: quote passages when there are any
            pool = [entry for entry in pool if not entry[3]]
        candidates = [Candidate(f"{e.rank}:{position}", text=text) for e, position, text, _ in pool]
        ranked = self._sentences_by.rerank(query, candidates)
        scored = sorted(
            ((r.score, pool[r.index]) for r in ranked),
            key=lambda item: (-_or_low(item[0]), item[1][0].rank, item[1][1]),
        )
        chosen: list[Quote] = []
        per_item: dict[int, int] = {}
        for score, (e, position, text, is_caption) in scored:
            if chosen and _or_low(score) < chosen[0].score - self.quote_margin:
                break
            if per_item.get(e.rank, 0) >= self.sentences_per_item:
                continue
            per_item[e.rank] = per_item.get(e.rank, 0) + 1
            line = _picture_line(e) if is_caption else text
            chosen.append(Quote(_clip(line, _MAX_QUOTE), e, score, position))
            if len(chosen) == self.max_quotes:
                break
        logger.debug("extractive answer: scored %d sentences of %d items", len(pool), len(top))
        return chosen


def _sentence_reranker(reranker: Reranker | None) -> Reranker | None:
    """What scores sentences: the reranker, or for a learned-fusion reranker the one underneath it.

    Learned fusion weighs first-stage signals (route, rank, similarity within the list) that a sentence
    does not have; its base reranker holds the same models and their per-modality calibration.
    """
    if reranker is None:
        return None
    from mm_rerank_components.adapt.fusion import LearnedFusionReranker

    return reranker.base if isinstance(reranker, LearnedFusionReranker) else reranker


def _sentence_pool(top: Sequence[Evidence]) -> list[tuple[Evidence, int, str, bool]]:
    """(item, position, sentence, is_caption) for every sentence of the top items.

    A picture whose text is only its caption (or nothing) offers the caption, quoted as ``Picture: ...``.
    """
    pool: list[tuple[Evidence, int, str, bool]] = []
    for e in top:
        sentences = split_sentences(e.text, e.title)
        if e.image and not sentences:
            caption = (e.title or e.text).strip()
            if caption:
                pool.append((e, 0, caption, True))
            continue
        pool.extend((e, position, sentence, False) for position, sentence in enumerate(sentences))
    return pool


def _picture_line(e: Evidence) -> str:
    caption = e.title or " ".join(e.text.split()) or Path(e.image or e.id).name
    return f"Picture: {_clip(caption, _MAX_CAPTION).rstrip('.')}."


def _or_low(score: float) -> float:
    return -math.inf if math.isnan(score) else score
