"""Core value types: :class:`Query`, :class:`Candidate` and :class:`RankedCandidate`.

They are small frozen dataclasses with no heavy dependencies, so every layer (scorers, the reranker,
framework adapters, the Chroma retriever) can share them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union

if TYPE_CHECKING:
    from PIL import Image as PILImage

Modality = Literal["text", "image", "text+image"]
MODALITIES: tuple[Modality, ...] = ("text", "image", "text+image")

#: Anything the package can turn into a PIL image: a file path, raw bytes, a base64 string or data URI,
#: an ``http(s)://`` URL (fetched only when allowed), a ``file://`` URI, or a ready PIL image.
ImageRef = Union[str, bytes, "os.PathLike[str]", "PILImage.Image"]


def _has_text(text: str | None) -> bool:
    return text is not None and text.strip() != ""


def _modality(text: str | None, image: object | None) -> Modality | None:
    has_text, has_image = _has_text(text), image is not None
    if has_text and has_image:
        return "text+image"
    if has_image:
        return "image"
    if has_text:
        return "text"
    return None


@dataclass(frozen=True)
class Query:
    """A search query: text, an image, or both.

    Example:
        >>> Query("a red fox in the snow").modality
        'text'
    """

    text: str | None = None
    image: ImageRef | None = None

    def __post_init__(self) -> None:
        if self.text is not None and not isinstance(self.text, str):
            raise TypeError(f"Query.text must be a str or None, got {type(self.text).__name__}")
        if _modality(self.text, self.image) is None:
            raise ValueError(
                "Query has neither text nor image: pass Query(text='...') and/or Query(image=path_or_pil)"
            )

    @property
    def modality(self) -> Modality:
        """``"text"``, ``"image"`` or ``"text+image"``."""
        modality = _modality(self.text, self.image)
        assert modality is not None  # guaranteed by __post_init__
        return modality


@dataclass(frozen=True)
class Precomputed:
    """A signal the first stage already computed for a candidate, which a scorer may reuse.

    A scorer lists the ``kind`` values it can reuse in its ``reuses`` attribute. The reranker passes it
    only signals of those kinds whose ``content`` matches the candidate: for a kind starting with
    ``"text"``, :func:`mm_rerank_components.media.text_key` of ``candidate.text``; for a kind starting with
    ``"image"``, :func:`mm_rerank_components.media.image_key` of ``candidate.image`` as given (a path, not
    the decoded picture). Other kinds, and mismatches, are dropped (logged at debug level). The scorer then
    uses a signal only when ``producer`` names its own model and settings, so a stale or misattached value
    is never used; otherwise it computes its own.

    Attributes:
        kind: what it is, e.g. ``"text_embedding"`` or ``"image_classes"``.
        producer: identifies the model and settings that made it (the embedding function's fingerprint).
        content: the content key it was computed from (``text_key(text)`` or ``image_key(image_ref)``).
        value: the data itself (for example a tuple of floats).

    Example:
        >>> Precomputed("text_embedding", producer="minilm:abc", content="9f2c", value=(0.1, 0.2)).kind
        'text_embedding'
    """

    kind: str
    producer: str
    content: str
    value: Any = field(hash=False, compare=False)


@dataclass(frozen=True)
class Candidate:
    """One first-stage hit to be reranked: a passage, a picture, or a picture with its caption.

    ``source`` names the route that found it (e.g. the Chroma collection) and ``retrieval_score`` keeps
    the first-stage score, which is *not* comparable across routes; the reranker never uses it for
    ordering.

    Example:
        >>> Candidate(id="p1", text="Foxes live in dens.").modality
        'text'
        >>> Candidate(id="img7", image="photos/fox.jpg", text="A fox").modality
        'text+image'
    """

    id: str
    text: str | None = None
    image: ImageRef | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)
    source: str | None = None
    retrieval_score: float | None = None
    #: Signals the first stage already has (keyed by :attr:`Precomputed.kind`), for scorers to reuse.
    precomputed: Mapping[str, Precomputed] = field(
        default_factory=dict, hash=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or self.id == "":
            raise ValueError(f"Candidate.id must be a non-empty str, got {self.id!r}")
        if self.text is not None and not isinstance(self.text, str):
            raise TypeError(
                f"Candidate {self.id!r}: text must be a str or None, got {type(self.text).__name__}"
            )
        modality = _modality(self.text, self.image)
        if modality is None:
            raise ValueError(
                f"Candidate {self.id!r} has neither text nor image: give it text=..., image=..., or both"
            )
        # derived once: the reranker asks for it several times per candidate (not a field, so equality,
        # repr and hashing are unchanged)
        object.__setattr__(self, "_modality", modality)

    @property
    def modality(self) -> Modality:
        """``"text"``, ``"image"`` or ``"text+image"``, derived from which fields are set."""
        modality: Modality = self.__dict__["_modality"]
        return modality


@dataclass(frozen=True)
class RankedCandidate:
    """A reranked candidate.

    Attributes:
        candidate: the input candidate (with ``metadata["rerank_error"]`` added when it failed).
        index: its position in the input list, so results map back without trusting ids.
        score: the unified relevance score, a calibrated probability in ``[0, 1]``.
        raw_score: what the scorer returned, before calibration (``nan`` when scoring failed).
        rank: 0-based position in the returned list.
        error: why this candidate could not be scored, when ``on_error="keep"`` kept it; else ``None``.
    """

    candidate: Candidate
    index: int
    score: float
    raw_score: float
    rank: int
    error: str | None = None

    @property
    def id(self) -> str:
        return self.candidate.id

    @property
    def modality(self) -> Modality:
        return self.candidate.modality
