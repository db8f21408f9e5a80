"""Calibrators: map a scorer's raw scores to probabilities of relevance on one scale.

A calibrator sees the raw scores of *one query's* candidate list together with each candidate's
modality, so both per-modality fitted maps (Platt, isotonic, temperature) and label-free per-query
standardisation fit the same interface.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from mm_rerank_components.types import Modality


@runtime_checkable
class Calibrator(Protocol):
    """Raw scores (one query's list) and their modalities in, probabilities in ``[0, 1]`` out."""

    def calibrate(self, raw_scores: Sequence[float], modalities: Sequence[Modality]) -> list[float]:
        """Return one probability per raw score, in order."""
        ...


class SigmoidCalibrator:
    """``sigmoid((raw - shift) / temperature)`` for every modality: a fallback, not a fitted map.

    The reranker uses it (with a logged warning) when a scorer does not emit probabilities and no
    calibrator was given: scores land in ``[0, 1]`` but are *not* comparable across modalities.

    Example:
        >>> SigmoidCalibrator().calibrate([0.0], ["text"])
        [0.5]
    """

    def __init__(self, temperature: float = 1.0, shift: float = 0.0) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.temperature = temperature
        self.shift = shift

    def calibrate(self, raw_scores: Sequence[float], modalities: Sequence[Modality]) -> list[float]:
        return [_sigmoid((s - self.shift) / self.temperature) for s in raw_scores]


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)
