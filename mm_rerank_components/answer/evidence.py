"""Evidence: one reranked passage or picture as cited in an answer, and the answer that cites it.

* :class:`Evidence` is built from a :class:`~mm_rerank_components.types.Candidate` (or the reranker's
  :class:`~mm_rerank_components.types.RankedCandidate`); LlamaIndex nodes and LangChain Documents become
  Candidates through the translators in :mod:`mm_rerank_components.integrations` first, so a picture
  is found under the same keys everywhere and stays a picture (a base64 or ``data:`` picture included);
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

import base64
import binascii
import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mm_rerank_components.integrations._common import float_or_none
from mm_rerank_components.media import classify
from mm_rerank_components.media.refs import uri_path
from mm_rerank_components.types import Candidate, RankedCandidate

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
        origin: where a reader finds it: the file relative to the ingested folder (else its name), or
            the URL, with the page or part when known (``"guide.pdf, page 3"``); ``None`` when unknown.

    Example:
        >>> Evidence(rank=1, id="i1", modality="image", score=0.7, image="/data/fox.webp").label
        'picture'
        >>> Evidence.from_candidate(Candidate("i1", image="/data/fox.webp"), rank=1, score=0.7).label
        'fox.webp'
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
    origin: str | None = None

    @property
    def label(self) -> str:
        """A short human label: the title, else where it comes from, else ``"passage"`` / ``"picture"``.

        Internal ids (content hashes) are never a label: a reader cannot use them.
        """
        return self.title or self.origin or ("picture" if self.image else "passage")

    @classmethod
    def from_ranked(cls, ranked: RankedCandidate) -> Evidence:
        """Evidence from the core reranker's output."""
        return cls.from_candidate(
            ranked.candidate, rank=ranked.rank + 1, score=ranked.score, error=ranked.error
        )

    @classmethod
    def from_candidate(
        cls, candidate: Candidate, *, rank: int, score: float | None = None, error: str | None = None
    ) -> Evidence:
        """Evidence from a :class:`Candidate` at 1-based ``rank``.

        ``score`` is the unified relevance score; when it is ``None`` the candidate's metadata
        ``relevance_score`` (what the framework adapters write on reranked nodes and Documents) is used,
        else it is unknown (NaN). ``error`` defaults to the metadata's ``rerank_error``. The picture stays a
        picture whatever its form: a path or URI as is, a base64 string, bytes or a PIL image as a
        ``data:`` URI, an inline preview as the original file when the metadata names it.
        """
        metadata = dict(candidate.metadata)
        if score is None:
            known = float_or_none(metadata.get("relevance_score"))
            score = math.nan if known is None else known
        if error is None and isinstance(metadata.get("rerank_error"), str):
            error = metadata["rerank_error"]
        image = _image_reference(candidate.image, metadata)
        title = metadata.get("title") or metadata.get("caption")
        return cls(
            rank=rank,
            id=candidate.id,
            modality=candidate.modality,
            score=float(score),
            text=candidate.text or "",
            image=image,
            title=str(title) if title else None,
            source=candidate.source,
            metadata=metadata,
            error=error,
            origin=_origin(metadata, image),
        )

    @classmethod
    def from_candidates(
        cls, candidates: Iterable[Candidate], scores: Iterable[float | None] | None = None
    ) -> list[Evidence]:
        """Evidence from candidates already in rank order (1, 2, ...), with optional unified scores."""
        listed = list(candidates)
        given = list(scores) if scores is not None else [None] * len(listed)
        if len(given) != len(listed):
            raise ValueError(
                f"{len(listed)} candidates but {len(given)} scores: pass one score per candidate"
            )
        return [
            cls.from_candidate(c, rank=position + 1, score=s)
            for position, (c, s) in enumerate(zip(listed, given, strict=True))
        ]

    @classmethod
    def from_llama_index(cls, nodes: Iterable[Any]) -> list[Evidence]:
        """Evidence from reranked LlamaIndex ``NodeWithScore`` objects, read by the package's translator
        (:func:`mm_rerank_components.integrations.llama_index.from_node`); the node's score is the
        unified score when its metadata has no ``relevance_score``."""
        from mm_rerank_components.integrations.llama_index import from_node

        listed = list(nodes)
        candidates = [from_node(scored, position) for position, scored in enumerate(listed)]
        scores = [None if "relevance_score" in c.metadata else c.retrieval_score for c in candidates]
        return cls.from_candidates(candidates, scores)

    @classmethod
    def from_langchain(cls, documents: Iterable[Any]) -> list[Evidence]:
        """Evidence from reranked LangChain ``Document`` objects, read by the package's translator
        (:func:`mm_rerank_components.integrations.langchain.from_document`): the same picture keys as
        the compressor, and a base64 ``page_content`` (langchain-chroma's ``add_images``) is a picture."""
        from mm_rerank_components.integrations.langchain import from_document

        return cls.from_candidates(from_document(d, position) for position, d in enumerate(documents))

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
    """The evidence as a numbered plain-text list for prompts and terminals: what a reader needs (title,
    kind, relevance, where it comes from, the text), never internal ids.

    Example:
        >>> print(format_evidence([Evidence(rank=1, id="text-9f2c", modality="text", score=0.5,
        ...                                 text="Foxes.", title="Foxes", origin="animals/fox.md")]))
        [1] Foxes (passage, relevance 0.500, from animals/fox.md): Foxes.
    """
    lines = []
    for e in evidence:
        score = "n/a" if math.isnan(e.score) else f"{e.score:.3f}"
        body = " ".join(split_sentences(e.text, e.title)) if e.title else " ".join(e.text.split())
        if len(body) > max_chars:
            body = body[: max_chars - 3].rstrip() + "..."
        about = [f"relevance {score}"]
        if e.title or e.origin:  # else the label already says passage or picture
            about.insert(0, _KINDS.get(e.modality, e.modality))
        if e.origin and e.origin != e.label:
            about.append(f"from {e.origin}")
        lines.append(f"[{e.rank}] {e.label} ({', '.join(about)}): {body}".rstrip(": "))
    return "\n".join(lines)


_KINDS = {"text": "passage", "image": "picture", "text+image": "picture with caption"}


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


def _image_reference(image: Any, metadata: Mapping[str, Any]) -> str | None:
    """The picture as a string a user can be shown: a path or URI as is; an inline preview as the original
    file when the metadata names one; base64, bytes or a PIL image as a ``data:`` URI."""
    if image is None:
        return None
    if isinstance(image, os.PathLike):
        return os.fspath(image)
    if isinstance(image, str):
        kind = classify(image)
        if kind not in ("data", "base64"):
            return image
        original = metadata.get("image_path") or metadata.get("image_uri")
        if isinstance(original, str) and original and classify(original) not in ("data", "base64"):
            return original  # an inline preview (the retriever's candidate_image="preview"): cite the file
        if kind == "data":
            return image
        payload = "".join(image.split())
        return f"data:{_sniff_mime(_head_bytes(payload))};base64,{payload}"
    if isinstance(image, (bytes, bytearray)):
        return f"data:{_sniff_mime(bytes(image[:16]))};base64,{base64.b64encode(image).decode('ascii')}"
    buffer = io.BytesIO()  # a PIL image
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_MIME_BY_MAGIC = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"BM", "image/bmp"),
)


def _head_bytes(payload: str) -> bytes:
    head = payload[:24]
    try:
        return base64.b64decode(
            head + "=" * (-len(head) % 4), altchars=b"-_" if "-" in head or "_" in head else None
        )
    except (binascii.Error, ValueError):
        return b""


def _sniff_mime(head: bytes) -> str:
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return "image/avif"
    return next((mime for magic, mime in _MIME_BY_MAGIC if head.startswith(magic)), "image/png")


def _origin(metadata: Mapping[str, Any], image: str | None) -> str | None:
    """Where a reader finds the item: relative path, else file name, else URL; plus page or part."""
    where: str | None = None
    for key in ("rel_path", "path", "url", "source_url", "image_path", "image_uri"):
        value = metadata.get(key)
        if isinstance(value, str) and value and classify(value) not in ("data", "base64"):
            where = value
            break
    if where is None and image is not None and not image.startswith("data:"):
        where = image
    if where is not None and classify(where) == "path" and metadata.get("rel_path") != where:
        where = Path(where).name  # a server path is no reader's business; its file name is
    if where is not None and classify(where) == "file-uri":
        where = Path(uri_path(where)).name
    page = metadata.get("page")
    chunk, n_chunks = metadata.get("chunk"), metadata.get("n_chunks")
    if isinstance(page, int) and not isinstance(page, bool):
        where = f"{where}, page {page}" if where else f"page {page}"
    elif isinstance(chunk, int) and isinstance(n_chunks, int) and n_chunks > 1:
        where = f"{where}, part {chunk + 1} of {n_chunks}" if where else None
    return where
