"""Route each modality to its own scorer, and bring their outputs onto one scale."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from mm_rerank_components.calibration import Calibrator
from mm_rerank_components.scorers.base import BaseScorer, Scorer
from mm_rerank_components.types import MODALITIES, Candidate, Modality, Query


def _reuses(scorer: Scorer) -> frozenset[str]:
    return frozenset(scorer.reuses) if isinstance(scorer, BaseScorer) else frozenset()


class ModalityRouter(BaseScorer):
    """A scorer that sends text candidates to one scorer and image candidates to another.

    Raw scores of different scorers are not comparable, so pass a per-modality calibrator to the reranker
    (``fit_calibrator(..., method="platt")`` fits one per modality), or give each route's scorer a
    ``default_calibrator()``: :meth:`default_calibrator` combines them, and routes whose scorer already
    outputs probabilities pass through unchanged.

    Example:
        >>> from mm_rerank_components.scorers import FakeScorer
        >>> router = ModalityRouter({"text": FakeScorer(name="t"), "image": FakeScorer(name="i")})
        >>> sorted(router.modalities)
        ['image', 'text']
    """

    def __init__(self, routes: Mapping[Modality, Scorer]) -> None:
        unknown = [m for m in routes if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities {unknown!r} in routes; use {list(MODALITIES)!r}")
        if not routes:
            raise ValueError("ModalityRouter needs at least one route, e.g. {'text': scorer}")
        for modality, scorer in routes.items():
            if modality not in scorer.modalities:
                raise ValueError(
                    f"route {modality!r} goes to scorer {scorer.name!r}, which cannot read {modality} "
                    f"candidates (it reads {sorted(scorer.modalities)})"
                )
        self.routes: dict[Modality, Scorer] = dict(routes)
        self.modalities: frozenset[Modality] = frozenset(self.routes)
        self.outputs_probabilities = all(s.outputs_probabilities for s in self.routes.values())
        self.name = "router(" + ",".join(f"{m}={s.name}" for m, s in sorted(self.routes.items())) + ")"
        self.reuses: frozenset[str] = frozenset().union(*(_reuses(s) for s in self.routes.values()))

    def load(self) -> None:
        """Load every route's weights now."""
        for scorer in self.routes.values():
            if isinstance(scorer, BaseScorer):
                scorer.load()

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        by_modality: dict[Modality, list[int]] = {}
        for i, candidate in enumerate(candidates):
            by_modality.setdefault(candidate.modality, []).append(i)
        scores = [0.0] * len(candidates)
        for modality, positions in by_modality.items():
            scorer = self.routes.get(modality)
            if scorer is None:
                raise ValueError(f"ModalityRouter has no route for {modality} candidates")
            values = scorer.score(query, [_only(candidates[i], _reuses(scorer)) for i in positions])
            if len(values) != len(positions):
                raise ValueError(
                    f"scorer {scorer.name!r} returned {len(values)} scores for {len(positions)} candidates"
                )
            for position, value in zip(positions, values, strict=True):
                scores[position] = value
        return scores

    def default_calibrator(self) -> Calibrator | None:
        """Each route's own calibration, applied per modality; None when a route has none and needs one."""
        calibrators: dict[Modality, Calibrator | None] = {}
        for modality, scorer in self.routes.items():
            shipped = scorer.default_calibrator() if isinstance(scorer, BaseScorer) else None
            if shipped is None and not scorer.outputs_probabilities:
                return None
            calibrators[modality] = shipped
        return _RoutedCalibrator(calibrators)


def _only(candidate: Candidate, kinds: frozenset[str]) -> Candidate:
    """The candidate with only the precomputed signals its route's scorer reuses."""
    if all(signal.kind in kinds for signal in candidate.precomputed.values()):
        return candidate
    kept = {name: signal for name, signal in candidate.precomputed.items() if signal.kind in kinds}
    return dataclasses.replace(candidate, precomputed=kept)


class _RoutedCalibrator:
    def __init__(self, calibrators: Mapping[Modality, Calibrator | None]) -> None:
        self.calibrators = dict(calibrators)

    def calibrate(self, raw_scores: Sequence[float], modalities: Sequence[Modality]) -> list[float]:
        out = list(raw_scores)
        groups: dict[Modality, list[int]] = {}
        for i, modality in enumerate(modalities):
            groups.setdefault(modality, []).append(i)
        for modality, positions in groups.items():
            calibrator = self.calibrators.get(modality)
            if calibrator is None:
                continue  # this route's scorer already outputs probabilities
            values = calibrator.calibrate([raw_scores[i] for i in positions], [modality] * len(positions))
            for i, value in zip(positions, values, strict=True):
                out[i] = value
        return out
