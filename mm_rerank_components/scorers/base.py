"""The small protocol every scorer implements.

A scorer turns ``(query, candidates)`` into one raw relevance number per candidate. The
:class:`~mm_rerank_components.MultimodalReranker` does everything else: validation, image decoding,
batching by modality, caching, calibration, sorting. When a scorer is called:

* every ``candidate.image`` and ``query.image`` is already a decoded RGB ``PIL.Image.Image`` (or None);
* all candidates in one call share one modality and there are at most ``batch_size`` of them.

A scorer must return exactly one finite float per candidate, in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from mm_rerank_components.types import Candidate, Modality, Query


@runtime_checkable
class Scorer(Protocol):
    """Raw relevance of ``(query, candidate)`` pairs, batched.

    Attributes:
        name: identifies the scorer *and its weights/settings*; used in cache keys and reports.
        outputs_probabilities: True when raw scores already are calibrated probabilities in ``[0, 1]``
            (e.g. a yes/no label likelihood); the reranker then needs no calibrator.
        modalities: the candidate modalities this scorer can read. Candidates of any other modality are
            reported as errors, never scored as something else.
    """

    name: str
    outputs_probabilities: bool
    modalities: frozenset[Modality]

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        """Return one raw score per candidate, in order."""
        ...


ALL_MODALITIES: frozenset[Modality] = frozenset(("text", "image", "text+image"))
