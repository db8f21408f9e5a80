"""A deterministic, dependency-free scorer for tests, docs and examples."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from mm_rerank_components.scorers.base import ALL_MODALITIES, BaseScorer
from mm_rerank_components.types import Candidate, Modality, Query

_WORD = re.compile(r"\w+", re.UNICODE)


def _tokens(text: str | None) -> set[str]:
    return set(_WORD.findall(text.lower())) if text else set()


def _digest(overrides: Mapping[str, float]) -> str:
    text = json.dumps(sorted(overrides.items()), separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def _image_signature(image: object) -> tuple[int, ...]:
    """An 8x8 grey thumbnail of a PIL image, as a tuple of ints (stable across runs)."""
    thumb = image.convert("L").resize((8, 8))  # type: ignore[attr-defined]
    return tuple(int(v) for v in thumb.getdata())


class FakeScorer(BaseScorer):
    """Deterministic relevance without a model: word overlap for text, thumbnails for images.

    * text evidence: the share of query words found in the candidate text (``0..1``);
    * image evidence: for an image query, ``1 - mean |difference|`` of 8x8 grey thumbnails; for a text
      query, a stable pseudo-random value in ``[0, 0.3)`` derived from the query and the pixels, so image
      candidates get distinct, repeatable scores;
    * a text+image candidate gets the larger of its two.

    ``overrides`` pins the score of given candidate ids, which tests use to force an order; they are part
    of :attr:`name` (``fake(overrides=<digest>)``), so two fakes with different settings never share a
    cache entry. Scores are already in ``[0, 1]``, so the reranker needs no calibrator.

    Example:
        >>> from mm_rerank_components import Candidate, Query
        >>> hits = [Candidate("a", text="a red fox"), Candidate("b", text="owl")]
        >>> FakeScorer().score(Query("red fox"), hits)
        [1.0, 0.0]
        >>> FakeScorer().name, FakeScorer(overrides={"a": 0.9}).name
        ('fake', 'fake(overrides=bb3d02d8)')
    """

    outputs_probabilities = True
    modalities: frozenset[Modality] = ALL_MODALITIES

    def __init__(self, overrides: Mapping[str, float] | None = None, name: str = "fake") -> None:
        self.overrides = {str(k): float(v) for k, v in (overrides or {}).items()}
        self._base_name = name
        suffix = f"(overrides={_digest(self.overrides)})" if self.overrides else ""
        # a name that already carries these settings (a saved reranker's record) is kept as it is
        self.name = name if name.endswith(suffix) else name + suffix
        self.calls = 0  # number of score() calls, so tests can see batching and caching

    def own_spec(self) -> tuple[str, dict[str, Any]] | None:
        """``"fake"`` with its overrides (and a name other than ``"fake"``); a subclass has none."""
        if type(self) is not FakeScorer:
            return None
        options: dict[str, Any] = {"overrides": dict(self.overrides)} if self.overrides else {}
        if self._base_name != "fake":
            options["name"] = self._base_name
        return "fake", options

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        self.calls += 1
        q_tokens = _tokens(query.text)
        q_sig = _image_signature(query.image) if query.image is not None else None
        return [self._one(query, q_tokens, q_sig, c) for c in candidates]

    def _one(
        self, query: Query, q_tokens: set[str], q_sig: tuple[int, ...] | None, candidate: Candidate
    ) -> float:
        if candidate.id in self.overrides:
            return float(self.overrides[candidate.id])
        evidence: list[float] = []
        if candidate.text and q_tokens:
            evidence.append(len(q_tokens & _tokens(candidate.text)) / len(q_tokens))
        if candidate.image is not None:
            c_sig = _image_signature(candidate.image)
            if q_sig is not None:
                diff = sum(abs(a - b) for a, b in zip(q_sig, c_sig, strict=True)) / (255.0 * len(c_sig))
                evidence.append(1.0 - diff)
            else:
                digest = hashlib.blake2b((query.text or "").encode() + bytes(c_sig), digest_size=4).digest()
                evidence.append(0.3 * int.from_bytes(digest, "big") / 2**32)
        return max(evidence) if evidence else 0.0
