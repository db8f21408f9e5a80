"""The product default: a label-free reranker that holds up on data it was never fitted on.

:func:`default_reranker` is what the CLI, the quickstart and the web app use when the user has no
labels. It is learned fusion (:mod:`mm_rerank_components.adapt`) over the starter scorer's raw score
and the first-stage routes' signals (rank, reciprocal rank, per-query normalised similarities,
modality, BM25 of query vs passage or caption), fitted on every query of the built-in tasks and
shipped as ``starter/data/default_fusion.json`` (refit it with ``scripts/fit_default.py``).

Why not a per-modality calibration of the scorer's raw score (the earlier default): raw similarity
scales move from one corpus to the next, so a map fitted on one corpus is over-confident about text
and under-confident about pictures on another (measured in ``docs/calibration.md``). The fusion sees
each candidate's rank and its score *relative to the rest of its own list*, which do not move with
the corpus, next to the raw score.

Candidates should carry ``source`` (the route: ``"text"`` or ``"image"`` as the retriever names its
collections) and ``retrieval_score`` (the route's similarity); without them the route features are
marked missing and the model leans on the scorer alone.

Example:
    >>> from mm_rerank_components.defaults import default_reranker
    >>> reranker = default_reranker()  # doctest: +SKIP
    >>> reranker.rerank("a red fox", candidates, top_n=10)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_DEPTH",
    "DEFAULT_FILE",
    "FIT_SETTINGS",
    "default_model_path",
    "default_reranker",
    "load_default_model",
]

DEFAULT_FILE = "default_fusion.json"
#: ``fit_fusion`` settings of the shipped default (the eval's leave-one-task-out refits use the same).
FIT_SETTINGS: dict[str, Any] = {"seed": 0, "l2": 0.01, "pointwise": 0.2}
#: The ``(k_text, k_image)`` the shipped default was fitted at (its calibration assumes that pool).
DEFAULT_DEPTH = (16, 16)


def default_model_path() -> Path:
    """Where the shipped default model lives (inside the installed package).

    Example:
        >>> default_model_path().name
        'default_fusion.json'
    """
    return Path(str(resources.files("mm_rerank_components.starter").joinpath("data", DEFAULT_FILE)))


def load_default_model(path: str | Path | None = None) -> Any:
    """The shipped :class:`~mm_rerank_components.adapt.FusionModel` (or the one at ``path``).

    Example:
        >>> load_default_model().feature_names[:2]  # doctest: +SKIP
        ('raw:text', 'raw:image')
    """
    from mm_rerank_components.adapt import FusionModel

    source = Path(path) if path is not None else default_model_path()
    if not source.is_file():
        raise FileNotFoundError(
            f"default fusion model {source} does not exist; refit it with python scripts/fit_default.py"
        )
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source} is not valid JSON: {exc}") from exc
    return FusionModel.from_dict(data, source=str(source))


def default_reranker(scorer: Any = None, *, model_path: str | Path | None = None, **kwargs: Any) -> Any:
    """The label-free product default: the shipped learned fusion over ``scorer`` (default: starter).

    Args:
        scorer: the scorer whose raw scores the model was fitted on; default a new ``StarterScorer()``.
            Another scorer works but its raw scores are on another scale: a warning says so.
        model_path: a fusion model JSON other than the shipped one.
        **kwargs: passed to :class:`~mm_rerank_components.MultimodalReranker` (``batch_size``,
            ``on_error``, ...), which does the scoring.

    Returns a :class:`~mm_rerank_components.adapt.LearnedFusionReranker` (a ``Reranker``): ``score``
    is a calibrated probability of relevance, ``raw_score`` the scorer's own score.

    Example:
        >>> from mm_rerank_components.defaults import default_reranker
        >>> reranker = default_reranker()  # doctest: +SKIP
        >>> [r.candidate.id for r in reranker.rerank("red fox", hits, top_n=3)]  # doctest: +SKIP
        ['img:fox', 'txt:fox', 'img:dog']
    """
    from mm_rerank_components.adapt import LearnedFusionReranker
    from mm_rerank_components.reranker import MultimodalReranker

    if scorer is None:
        from mm_rerank_components.scorers.starter import StarterScorer

        scorer = StarterScorer()
    model = load_default_model(model_path)
    fitted_for = model.calibrator.scorer
    name = getattr(scorer, "name", type(scorer).__name__)
    if fitted_for is not None and fitted_for != name:
        logger.warning(
            "the default fusion model was fitted on %r scores, not %r; its weights and probabilities may "
            "be off (adapt one to your scorer with mm-rerank adapt)",
            fitted_for,
            name,
        )
    return LearnedFusionReranker(MultimodalReranker(scorer, **kwargs), model)
