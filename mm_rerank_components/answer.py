"""Answering from reranked evidence: an offline extractive answerer and an OpenAI-compatible LLM answerer.

The chatbot examples and the web page (:mod:`mm_rerank_components.web`) share this module:

* :class:`Evidence` is one reranked passage or picture as shown to a user (rank, unified score, modality,
  text, picture path), built from a :class:`~mm_rerank_components.types.RankedCandidate`, a LlamaIndex
  ``NodeWithScore`` or a LangChain ``Document``.
* :class:`ExtractiveAnswerer` needs no model: it quotes the sentences of the top evidence that share the
  most words with the question, cites them as ``[1]``, ``[2]``, and says plainly that it is an extractive
  answer because no LLM is configured.
* :class:`LLMConfig` reads an OpenAI-compatible endpoint from the environment and
  :class:`LLMAnswerer` asks it (plain HTTP with ``urllib``; no extra dependency).
* :class:`RAGPipeline` ties a first-stage retriever, a reranker and an answerer together.

Environment variables (the ``MM_RERANK_LLM_*`` names win over the ``OPENAI_*`` ones):

========================  =====================  ==========================================================
``MM_RERANK_LLM_MODEL``   ``OPENAI_MODEL``       model name; an LLM is configured only when this is set
``MM_RERANK_LLM_BASE_URL`` ``OPENAI_BASE_URL``   endpoint root (default ``https://api.openai.com/v1``)
``MM_RERANK_LLM_API_KEY`` ``OPENAI_API_KEY``     bearer token (optional for local servers)
``MM_RERANK_LLM_VISION``                         ``1`` sends the top pictures to the model as images
``MM_RERANK_LLM_TIMEOUT``                        seconds per request (default 60)
========================  =====================  ==========================================================

Example:
    >>> from mm_rerank_components.answer import Evidence, ExtractiveAnswerer
    >>> ev = [Evidence(rank=1, id="p1", modality="text", score=0.91,
    ...                text="The Golden Temple is in Amritsar. It is covered in gold.")]
    >>> print(ExtractiveAnswerer().answer("Where is the Golden Temple?", ev).text)
    Extractive answer (no LLM configured), quoted from the top reranked evidence:
    The Golden Temple is in Amritsar. [1]
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mm_rerank_components.types import Candidate, Query, RankedCandidate

logger = logging.getLogger(__name__)

EXTRACTIVE_NOTICE = "Extractive answer (no LLM configured), quoted from the top reranked evidence:"
DEFAULT_BASE_URL = "https://api.openai.com/v1"

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[^\s])")
# words that carry no topic; used only to rank sentences, never to filter evidence
_STOPWORDS = frozenset(
    """a an and are as at be by can do does for from has have how i in is it its of on or show
    that the their there these this to was what when where which who why with you your me tell about
    picture photo image""".split()  # noqa: SIM905
)


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


@dataclass(frozen=True)
class Evidence:
    """One reranked passage or picture, as cited in an answer and shown to a user.

    Attributes:
        rank: 1-based position after reranking; answers cite it as ``[rank]``.
        id: the candidate / node / document id.
        modality: ``"text"``, ``"image"`` or ``"text+image"``.
        score: the unified relevance score in ``[0, 1]`` (comparable across modalities).
        text: the passage, or the picture's caption (may be empty for an uncaptioned picture).
        image: the picture's local path or URI, ``None`` for a passage.
        title: a short title when the metadata has one.
        source: the collection or route that found it.
        metadata: the remaining metadata (not sent to an LLM).

    Example:
        >>> Evidence(rank=1, id="i1", modality="image", score=0.7, image="/data/fox.webp").label
        'picture i1'
    """

    rank: int
    id: str
    modality: str
    score: float
    text: str = ""
    image: str | None = None
    title: str | None = None
    source: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def label(self) -> str:
        """A short human label: the title, else ``"passage ID"`` / ``"picture ID"``."""
        if self.title:
            return self.title
        return f"{'picture' if self.image else 'passage'} {self.id}"

    @classmethod
    def from_ranked(cls, ranked: RankedCandidate) -> Evidence:
        """Evidence from the core reranker's output."""
        return cls._from_parts(
            rank=ranked.rank + 1,
            id=ranked.id,
            modality=ranked.modality,
            score=ranked.score,
            text=ranked.candidate.text,
            image=ranked.candidate.image,
            metadata=ranked.candidate.metadata,
            source=ranked.candidate.source,
        )

    @classmethod
    def from_llama_index(cls, nodes: Iterable[Any]) -> list[Evidence]:
        """Evidence from reranked LlamaIndex ``NodeWithScore`` objects (``TextNode`` / ``ImageNode``)."""
        out = []
        for position, scored in enumerate(nodes):
            node = scored.node
            metadata = dict(node.metadata)
            image = getattr(node, "image_path", None) or getattr(node, "image_url", None)
            text = getattr(node, "text", None)
            out.append(
                cls._from_parts(
                    rank=position + 1,
                    id=node.node_id,
                    modality=metadata.get("modality"),
                    score=metadata.get("relevance_score", scored.score),
                    text=text,
                    image=image or metadata.get("image_path") or metadata.get("image_uri"),
                    metadata=metadata,
                    source=metadata.get("source"),
                )
            )
        return out

    @classmethod
    def from_langchain(cls, documents: Iterable[Any]) -> list[Evidence]:
        """Evidence from reranked LangChain ``Document`` objects (picture in ``metadata["image_path"]``)."""
        out = []
        for position, document in enumerate(documents):
            metadata = dict(document.metadata)
            out.append(
                cls._from_parts(
                    rank=position + 1,
                    id=str(document.id or metadata.get("id") or f"doc-{position}"),
                    modality=metadata.get("modality"),
                    score=metadata.get("relevance_score"),
                    text=document.page_content,
                    image=metadata.get("image_path") or metadata.get("image_uri"),
                    metadata=metadata,
                    source=metadata.get("source"),
                )
            )
        return out

    @classmethod
    def _from_parts(
        cls,
        *,
        rank: int,
        id: str,
        modality: Any,
        score: Any,
        text: Any,
        image: Any,
        metadata: Mapping[str, Any],
        source: Any,
    ) -> Evidence:
        image_ref = str(image) if isinstance(image, (str, os.PathLike)) else None
        if image_ref is not None and image_ref.startswith("data:"):
            # an inline preview (the retriever's candidate_image="preview"): cite the original file
            original = metadata.get("image_path") or metadata.get("image_uri")
            if isinstance(original, str) and original:
                image_ref = original
        text_str = text if isinstance(text, str) else ""
        if modality not in ("text", "image", "text+image"):
            has_text = bool(text_str.strip())
            modality = "text+image" if image_ref and has_text else "image" if image_ref else "text"
        try:
            value = float(score)
        except (TypeError, ValueError):
            value = math.nan
        title = metadata.get("title") or metadata.get("caption")
        return cls(
            rank=rank,
            id=id,
            modality=str(modality),
            score=value,
            text=text_str,
            image=image_ref,
            title=str(title) if title else None,
            source=str(source) if source else None,
            metadata=dict(metadata),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``score`` is ``None`` when unknown)."""
        return {
            "rank": self.rank,
            "id": self.id,
            "modality": self.modality,
            "score": None if math.isnan(self.score) else self.score,
            "text": self.text,
            "image": self.image,
            "title": self.title,
            "source": self.source,
        }


@dataclass(frozen=True)
class Answer:
    """An answer with the evidence it was composed from.

    Attributes:
        question: what was asked.
        text: the answer, citing evidence as ``[1]``, ``[2]``...
        evidence: the reranked evidence, best first.
        answerer: who wrote it: ``"extractive"`` or ``"llm:<model>"``.
        seconds: wall time of retrieval, reranking and answering, when measured.
    """

    question: str
    text: str
    evidence: list[Evidence]
    answerer: str
    seconds: float | None = None

    @property
    def extractive(self) -> bool:
        return self.answerer == "extractive"

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.text,
            "answerer": self.answerer,
            "extractive": self.extractive,
            "seconds": self.seconds,
            "evidence": [e.to_dict() for e in self.evidence],
        }


@runtime_checkable
class Answerer(Protocol):
    """Anything that writes an :class:`Answer` from a question and ranked evidence."""

    name: str

    def answer(self, question: str, evidence: Sequence[Evidence]) -> Answer: ...


def format_evidence(evidence: Sequence[Evidence], *, max_chars: int = 600) -> str:
    """The evidence as a numbered plain-text list (for prompts and terminals).

    Example:
        >>> print(format_evidence([Evidence(rank=1, id="p1", modality="text", score=0.5, text="Foxes.")]))
        [1] passage p1 (text, score 0.500): Foxes.
    """
    lines = []
    for e in evidence:
        score = "n/a" if math.isnan(e.score) else f"{e.score:.3f}"
        body = " ".join(_sentences(e.text, e.title)) if e.title else " ".join(e.text.split())
        if len(body) > max_chars:
            body = body[: max_chars - 3].rstrip() + "..."
        where = f" [picture: {Path(e.image).name}]" if e.image else ""
        lines.append(f"[{e.rank}] {e.label} ({e.modality}, score {score}){where}: {body}".rstrip(": "))
    return "\n".join(lines)


class ExtractiveAnswerer:
    """Compose an answer from the top reranked evidence, with citations, without any language model.

    For each of the ``max_evidence`` best items it picks the sentence sharing the most (non-stop) words
    with the question (the first sentence on a tie) and cites the item as ``[rank]``; a picture is cited
    by its caption. The answer starts with :data:`EXTRACTIVE_NOTICE`, so nobody mistakes it for an LLM's.

    Args:
        max_evidence: how many of the top items to quote.
        sentences_per_item: sentences quoted from each passage.
        min_score: items below this unified score are not quoted (they stay in the evidence list).

    Example:
        >>> ev = [Evidence(rank=1, id="i1", modality="image", score=0.8, image="a.webp", title="Red fox")]
        >>> print(ExtractiveAnswerer().answer("red fox", ev).text)
        Extractive answer (no LLM configured), quoted from the top reranked evidence:
        Picture: Red fox. [1]
    """

    name = "extractive"

    def __init__(self, max_evidence: int = 3, sentences_per_item: int = 1, min_score: float = 0.0) -> None:
        if max_evidence < 1:
            raise ValueError(f"max_evidence must be >= 1, got {max_evidence!r}")
        if sentences_per_item < 1:
            raise ValueError(f"sentences_per_item must be >= 1, got {sentences_per_item!r}")
        self.max_evidence = max_evidence
        self.sentences_per_item = sentences_per_item
        self.min_score = min_score

    def answer(self, question: str, evidence: Sequence[Evidence]) -> Answer:
        """The extractive answer for ``question`` from ``evidence`` (best first)."""
        return Answer(
            question=question,
            text=self.compose(question, evidence),
            evidence=list(evidence),
            answerer=self.name,
        )

    def compose(self, question: str, evidence: Sequence[Evidence]) -> str:
        """Just the answer text."""
        usable = [e for e in evidence if math.isnan(e.score) or e.score >= self.min_score]
        if not usable:
            return (
                "Extractive answer (no LLM configured): no evidence was found for this question, so there "
                "is nothing to quote."
            )
        query_words = set(_words(question))
        lines = [EXTRACTIVE_NOTICE]
        for e in usable[: self.max_evidence]:
            lines.append(f"{self._quote(e, query_words)} [{e.rank}]")
        return "\n".join(lines)

    def _quote(self, e: Evidence, query_words: set[str]) -> str:
        body = " ".join(e.text.split())
        if e.image:
            caption = e.title or body or Path(e.image).name
            caption = caption if len(caption) <= 200 else caption[:197].rstrip() + "..."
            return f"Picture: {caption.rstrip('.')}."
        sentences = _sentences(e.text, e.title) or [body]
        ranked = sorted(
            range(len(sentences)),
            key=lambda i: (-len(query_words & set(_words(sentences[i]))), i),
        )
        chosen = sorted(ranked[: self.sentences_per_item])
        quote = " ".join(sentences[i] for i in chosen)
        return quote if len(quote) <= 400 else quote[:397].rstrip() + "..."


def _sentences(text: str, title: str | None) -> list[str]:
    """Sentences of ``text``; line breaks end a sentence too, and a heading line equal to ``title`` goes."""
    out: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if not line or (title is not None and line == title.strip()):
            continue
        out.extend(part.strip() for part in _SENTENCE_END.split(line) if part.strip())
    return out


# -- LLM configuration and answerer -------------------------------------------------------------------


def _env(environ: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = environ.get(name)
        if value is not None and value.strip():
            return value.strip()
    return None


@dataclass(frozen=True)
class LLMConfig:
    """Where an OpenAI-compatible chat-completions endpoint is and which model to ask.

    Works with OpenAI, Azure-style gateways, vLLM, llama.cpp's server, Ollama (``/v1``), LM Studio and
    anything else that speaks ``POST {base_url}/chat/completions``.

    Example:
        >>> cfg = LLMConfig.from_env({"MM_RERANK_LLM_MODEL": "qwen2.5:7b",
        ...                           "MM_RERANK_LLM_BASE_URL": "http://127.0.0.1:11434/v1"})
        >>> cfg.model, cfg.chat_url
        ('qwen2.5:7b', 'http://127.0.0.1:11434/v1/chat/completions')
        >>> LLMConfig.from_env({}) is None
        True
    """

    model: str
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    vision: bool = False
    temperature: float = 0.0
    max_tokens: int = 512

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise ValueError("LLMConfig.model is empty: set MM_RERANK_LLM_MODEL (or pass model=...)")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"LLM base URL {self.base_url!r} must start with http:// or https:// "
                "(e.g. MM_RERANK_LLM_BASE_URL=http://127.0.0.1:8000/v1)"
            )
        if self.timeout <= 0:
            raise ValueError(f"LLM timeout must be > 0 seconds, got {self.timeout!r}")

    @property
    def chat_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LLMConfig | None:
        """The configuration in the environment, or ``None`` when no model is named (extractive mode).

        ``MM_RERANK_LLM=off`` forces ``None`` even when a model is named.
        """
        env = os.environ if environ is None else environ
        if (env.get("MM_RERANK_LLM") or "").strip().lower() in ("off", "0", "false", "none", "extractive"):
            return None
        model = _env(env, "MM_RERANK_LLM_MODEL", "OPENAI_MODEL")
        if model is None:
            base = _env(env, "MM_RERANK_LLM_BASE_URL")
            if base is not None:
                raise ValueError(
                    f"MM_RERANK_LLM_BASE_URL is set ({base!r}) but no model is: set MM_RERANK_LLM_MODEL too"
                )
            return None
        timeout_text = _env(env, "MM_RERANK_LLM_TIMEOUT") or "60"
        try:
            timeout = float(timeout_text)
        except ValueError:
            raise ValueError(
                f"MM_RERANK_LLM_TIMEOUT must be a number of seconds, got {timeout_text!r}"
            ) from None
        vision_text = (_env(env, "MM_RERANK_LLM_VISION") or "0").lower()
        if vision_text not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"MM_RERANK_LLM_VISION must be 0 or 1, got {vision_text!r}")
        return cls(
            model=model,
            base_url=_env(env, "MM_RERANK_LLM_BASE_URL", "OPENAI_BASE_URL", "OPENAI_API_BASE")
            or DEFAULT_BASE_URL,
            api_key=_env(env, "MM_RERANK_LLM_API_KEY", "OPENAI_API_KEY"),
            timeout=timeout,
            vision=vision_text in ("1", "true", "yes", "on"),
        )


class LLMError(RuntimeError):
    """The LLM endpoint could not be reached or answered with an error."""


class OpenAICompatibleClient:
    """A minimal client for ``POST /chat/completions`` using only the standard library.

    Example:
        >>> client = OpenAICompatibleClient(LLMConfig(model="m", base_url="http://127.0.0.1:9/v1"))
        >>> client.config.chat_url
        'http://127.0.0.1:9/v1/chat/completions'
    """

    def __init__(self, config: LLMConfig) -> None:
        self.config = config

    def chat(self, messages: Sequence[Mapping[str, Any]], *, stop: Sequence[str] | None = None) -> str:
        """Send ``messages`` and return the first choice's text."""
        payload: dict[str, Any] = {
            "model": self.config.model,
            "messages": list(messages),
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        if stop:
            payload["stop"] = list(stop)
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        request = urllib.request.Request(
            self.config.chat_url, data=json.dumps(payload).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
                body = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
            raise LLMError(
                f"LLM endpoint {self.config.chat_url} answered HTTP {exc.code}: {detail}; check "
                "MM_RERANK_LLM_MODEL, MM_RERANK_LLM_API_KEY and MM_RERANK_LLM_BASE_URL"
            ) from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise LLMError(
                f"cannot reach the LLM endpoint {self.config.chat_url}: {exc}; start the server, fix "
                "MM_RERANK_LLM_BASE_URL, or unset MM_RERANK_LLM_MODEL for the offline extractive answer"
            ) from exc
        except json.JSONDecodeError as exc:
            raise LLMError(f"LLM endpoint {self.config.chat_url} returned invalid JSON: {exc}") from exc
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise LLMError(
                f"LLM endpoint {self.config.chat_url} returned no choices[0].message.content: "
                f"{json.dumps(body)[:300]}"
            ) from None
        return str(content or "")


SYSTEM_PROMPT = (
    "You answer questions using only the numbered evidence given: passages and pictures, ranked by a "
    "multimodal reranker with relevance scores between 0 and 1. Cite the evidence you use as [1], [2]. "
    "If the evidence does not answer the question, say so. Be concise."
)


def build_messages(
    question: str, evidence: Sequence[Evidence], *, vision: bool = False, max_images: int = 3
) -> list[dict[str, Any]]:
    """Chat messages asking ``question`` over ``evidence``; with ``vision`` the top pictures are attached.

    Example:
        >>> msgs = build_messages("q?", [Evidence(rank=1, id="p", modality="text", score=0.5, text="t")])
        >>> [m["role"] for m in msgs]
        ['system', 'user']
    """
    prompt = f"Evidence:\n{format_evidence(evidence)}\n\nQuestion: {question}"
    if not vision:
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
    parts: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    for e in [e for e in evidence if e.image][:max_images]:
        parts.append({"type": "text", "text": f"Picture [{e.rank}]:"})
        parts.append({"type": "image_url", "image_url": {"url": thumbnail_data_uri(e.image or "")}})
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": parts}]


def thumbnail_data_uri(image: str, max_side: int = 512) -> str:
    """A JPEG ``data:`` URI of the picture at ``image``, shrunk to at most ``max_side`` pixels."""
    from mm_rerank_components.media import load_image

    picture = load_image(image).copy()
    picture.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class LLMAnswerer:
    """Ask an OpenAI-compatible LLM to answer from the evidence, citing it as ``[1]``, ``[2]``.

    Example:
        >>> answerer = LLMAnswerer(LLMConfig(model="gpt-4o-mini"))
        >>> answerer.name
        'llm:gpt-4o-mini'
    """

    def __init__(self, config: LLMConfig, client: OpenAICompatibleClient | None = None) -> None:
        self.config = config
        self.client = client or OpenAICompatibleClient(config)
        self.name = f"llm:{config.model}"

    def answer(self, question: str, evidence: Sequence[Evidence]) -> Answer:
        messages = build_messages(question, evidence, vision=self.config.vision)
        text = self.client.chat(messages)
        return Answer(question=question, text=text.strip(), evidence=list(evidence), answerer=self.name)


def make_answerer(
    config: LLMConfig | None = None, *, from_env: bool = True
) -> ExtractiveAnswerer | LLMAnswerer:
    """An :class:`LLMAnswerer` when an LLM is configured (argument or environment), else extractive.

    Example:
        >>> make_answerer(from_env=False).name
        'extractive'
    """
    if config is None and from_env:
        config = LLMConfig.from_env()
    if config is None:
        logger.info("no LLM configured (MM_RERANK_LLM_MODEL unset): answers are extractive")
        return ExtractiveAnswerer()
    return LLMAnswerer(config)


# -- the whole pipeline -------------------------------------------------------------------------------


class RAGPipeline:
    """Retrieve broadly, rerank on the unified scale, answer from the top evidence.

    Args:
        retriever: anything with ``retrieve(query) -> list[Candidate]``, e.g.
            :class:`~mm_rerank_components.retrievers.ChromaMultiCollectionRetriever`.
        reranker: a :class:`~mm_rerank_components.MultimodalReranker` (or cascade).
        answerer: an :class:`Answerer`; default :func:`make_answerer` (environment, else extractive).
        top_n: evidence items kept after reranking.
        threshold: drop evidence whose unified score is below this.

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
    ) -> None:
        if not callable(getattr(retriever, "retrieve", None)):
            raise TypeError(f"retriever must have retrieve(query) -> list[Candidate], got {retriever!r}")
        if not callable(getattr(reranker, "rerank", None)):
            raise TypeError(f"reranker must be a MultimodalReranker (or cascade), got {reranker!r}")
        if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
            raise ValueError(f"top_n must be a positive int, got {top_n!r}")
        self.retriever = retriever
        self.reranker = reranker
        self.answerer: Answerer = answerer if answerer is not None else make_answerer()
        self.top_n = top_n
        self.threshold = threshold

    def search(self, question: str | Query) -> list[Evidence]:
        """First stage plus reranking: the top evidence, best first."""
        query = Query(text=question) if isinstance(question, str) else question
        candidates: list[Candidate] = list(self.retriever.retrieve(query))
        if not candidates:
            return []
        ranked = self.reranker.rerank(query, candidates, top_n=self.top_n, threshold=self.threshold)
        return [Evidence.from_ranked(r) for r in ranked]

    def ask(self, question: str) -> Answer:
        """Search and answer ``question``; the returned :class:`Answer` carries the evidence."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question must be a non-empty string, got {question!r}")
        start = time.perf_counter()
        evidence = self.search(question.strip())
        answer = self.answerer.answer(question.strip(), evidence)
        return Answer(
            question=answer.question,
            text=answer.text,
            evidence=answer.evidence,
            answerer=answer.answerer,
            seconds=time.perf_counter() - start,
        )
