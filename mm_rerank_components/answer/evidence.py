"""Evidence: one reranked passage or picture as cited in an answer, and the answer that cites it.

* :class:`Evidence` is built from a :class:`~mm_rerank_components.types.RankedCandidate`, a LlamaIndex
  ``NodeWithScore`` or a LangChain ``Document``;
* :class:`Answer` is an answer plus the evidence it was written from;
* :class:`Answerer` is the protocol every answerer follows;
* :func:`format_evidence` lists evidence as numbered plain text (prompts, terminals);
* :func:`split_sentences` is the sentence splitter the extractive answerer and the prompts share.

Example:
    >>> ev = Evidence(rank=1, id="p1", modality="text", score=0.9, text="Foxes. Owls.")
    >>> split_sentences(ev.text)
    ['Foxes.', 'Owls.']
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mm_rerank_components.types import RankedCandidate

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[^\s])")


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
        error: why the reranker could not read or score it (kept by ``on_error="keep"``), else ``None``.
            Answers are written from the readable evidence only. The message may name a server path:
            log it, never show it to a remote user.

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
    error: str | None = None

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
            error=ranked.error,
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
        error: str | None = None,
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
            error=error,
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
            "error": self.error,
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
        timings: seconds per step when measured: ``first_stage``, ``rerank``, ``answer``.

    Example:
        >>> Answer("q?", "a [1]", [], "extractive", seconds=0.05).to_dict()["seconds"]
        0.05
    """

    question: str
    text: str
    evidence: list[Evidence]
    answerer: str
    seconds: float | None = None
    timings: Mapping[str, float] = field(default_factory=dict, hash=False, compare=False)

    @property
    def extractive(self) -> bool:
        """True when no language model wrote the answer (it quotes the evidence)."""
        return self.answerer == "extractive"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``timings_ms`` holds the per-step times in milliseconds."""
        return {
            "question": self.question,
            "answer": self.text,
            "answerer": self.answerer,
            "extractive": self.extractive,
            "seconds": self.seconds,
            "timings_ms": {step: round(s * 1000, 1) for step, s in self.timings.items()},
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
        body = " ".join(split_sentences(e.text, e.title)) if e.title else " ".join(e.text.split())
        if len(body) > max_chars:
            body = body[: max_chars - 3].rstrip() + "..."
        where = f" [picture: {Path(e.image).name}]" if e.image else ""
        lines.append(f"[{e.rank}] {e.label} ({e.modality}, score {score}){where}: {body}".rstrip(": "))
    return "\n".join(lines)


def split_sentences(text: str, title: str | None = None) -> list[str]:
    """Sentences of ``text``; line breaks end a sentence too, and a heading line equal to ``title`` goes.

    Example:
        >>> split_sentences("Owls\\n\\nOwls hunt at night. They fly silently!", title="Owls")
        ['Owls hunt at night.', 'They fly silently!']
    """
    out: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if not line or (title is not None and line == title.strip()):
            continue
        out.extend(part.strip() for part in _SENTENCE_END.split(line) if part.strip())
    return out
