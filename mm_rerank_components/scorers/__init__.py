"""Scorers: one file per backend behind the small :class:`Scorer` protocol.

:func:`scorer_from_spec` (in :mod:`~mm_rerank_components.scorers.registry`) is the one place a spec string
such as ``"starter"`` or ``"cross-encoder:PATH"`` becomes a scorer. Only dependency-free scorers are imported
here; model-backed ones load on first attribute access, so
``import mm_rerank_components.scorers`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from mm_rerank_components.scorers.base import ALL_MODALITIES, BaseScorer, Scorer
from mm_rerank_components.scorers.fake import FakeScorer
from mm_rerank_components.scorers.first_stage import FirstStageScorer
from mm_rerank_components.scorers.registry import SCORER_KINDS, ScorerSpecError, scorer_from_spec
from mm_rerank_components.scorers.routing import ModalityRouter

_LAZY = {
    "StarterScorer": "mm_rerank_components.scorers.starter",
    "StarterOptions": "mm_rerank_components.scorers.starter",
    "VLMYesNoScorer": "mm_rerank_components.scorers.vlm",
    "JinaRerankerM0Scorer": "mm_rerank_components.scorers.jina_m0",
    "CLIPScorer": "mm_rerank_components.scorers.clip",
    "CrossEncoderScorer": "mm_rerank_components.scorers.cross_encoder",
    "LLMYesNoScorer": "mm_rerank_components.scorers.llm",
    "LateInteractionScorer": "mm_rerank_components.scorers.late_interaction",
    "RemoteScorer": "mm_rerank_components.scorers.remote",
}

__all__ = [
    "ALL_MODALITIES",
    "SCORER_KINDS",
    "BaseScorer",
    "FakeScorer",
    "FirstStageScorer",
    "ModalityRouter",
    "Scorer",
    "ScorerSpecError",
    "scorer_from_spec",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
