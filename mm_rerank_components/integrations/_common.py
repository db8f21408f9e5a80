"""What both framework adapters share: the metadata written back and the image-reference sniffing."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from typing import Any

from mm_rerank_components.types import RankedCandidate

#: Metadata keys the adapters write; they are kept out of LLM prompts and embeddings.
RESULT_KEYS = ("relevance_score", "modality", "retrieval_score", "rerank_error")

_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"RIFF")


def result_metadata(
    ranked: RankedCandidate, retrieval_score: float | None, *, keep_retrieval_score: bool
) -> dict[str, Any]:
    """The metadata entries an adapter adds to a reranked node or document."""
    extra: dict[str, Any] = {"relevance_score": ranked.score, "modality": ranked.modality}
    if keep_retrieval_score and retrieval_score is not None:
        extra["retrieval_score"] = retrieval_score
    if ranked.error is not None:
        extra["rerank_error"] = ranked.error
    return extra


def first_present(metadata: Mapping[str, Any], keys: tuple[str, ...]) -> Any | None:
    """The value of the first key in ``keys`` that ``metadata`` holds with a non-empty value."""
    for key in keys:
        value = metadata.get(key)
        if value is not None and value != "":
            return value
    return None


def looks_like_base64_image(text: str) -> bool:
    """True for a data URI or base64 text whose first bytes are a PNG, JPEG, GIF, BMP or WebP header.

    langchain-chroma's ``add_images`` stores the base64 image itself as ``page_content``; this tells such
    a document from a passage without decoding the whole string.
    """
    head = text[:64].strip()
    if head[:11].lower().startswith("data:image/"):
        return True
    if len(text) < 64:
        return False
    try:
        prefix = base64.b64decode(head[:32], validate=True)
    except (binascii.Error, ValueError):
        return False
    if prefix.startswith(b"RIFF"):
        return prefix[8:12] == b"WEBP"
    return prefix.startswith(_IMAGE_MAGIC)


def float_or_none(value: Any) -> float | None:
    """A first-stage score as float, or None when absent or not a finite number."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
