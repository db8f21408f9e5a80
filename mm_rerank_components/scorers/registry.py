"""The one place a spec string (``kind[:path]``) becomes a scorer.

Every face that takes a scorer by name (``mm-rerank query/serve/adapt/eval --scorer``, ``ServeConfig``,
``adapt()``, a saved reranker folder) calls :func:`scorer_from_spec`; a scorer built here remembers its spec,
so :meth:`BaseScorer.spec` and :meth:`BaseScorer.spec_options` give back what rebuilds it::

    scorer_from_spec(scorer.spec(), **scorer.spec_options())   # an equivalent scorer (same name)

=========================  ======================================================================
spec                       scorer
=========================  ======================================================================
``starter``                :class:`~mm_rerank_components.scorers.StarterScorer` (starter models)
``fake``                   :class:`~mm_rerank_components.scorers.FakeScorer` (model-free, tests)
``first-stage``            :class:`~mm_rerank_components.scorers.FirstStageScorer` (retrieval score)
``cross-encoder:PATH``     :class:`~mm_rerank_components.scorers.CrossEncoderScorer`
``vlm:PATH``               :class:`~mm_rerank_components.scorers.VLMYesNoScorer`
``llm:PATH``               :class:`~mm_rerank_components.scorers.LLMYesNoScorer`
``clip:PATH``              :class:`~mm_rerank_components.scorers.CLIPScorer`
``jina-m0:PATH``           :class:`~mm_rerank_components.scorers.JinaRerankerM0Scorer`
``late-interaction:PATH``  :class:`~mm_rerank_components.scorers.LateInteractionScorer`
``remote:URL``             :class:`~mm_rerank_components.scorers.RemoteScorer` (``http(s)://`` URL)
``module:callable``        your factory (an importable module), called with the options; it returns
                           a scorer (or a ``MultimodalReranker``, whose calibrator ships with it)
=========================  ======================================================================

``PATH`` is a local model folder, loaded with ``local_files_only=True`` (nothing is downloaded).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from mm_rerank_components.scorers.base import BaseScorer, Scorer

if TYPE_CHECKING:
    from mm_rerank_components.calibration import Calibrator
    from mm_rerank_components.types import Candidate, Query

__all__ = ["SCORER_KINDS", "ScorerKind", "ScorerSpecError", "parse_spec", "scorer_from_spec", "scorer_kinds"]

#: Options never recorded in a scorer's spec: where it runs (not what it is) and secrets.
_NOT_RECORDED = frozenset({"device", "api_key"})
_FACTORY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


@runtime_checkable
class _ScorerAndCalibrator(Protocol):
    """What a factory's ``MultimodalReranker`` gives the registry (which never imports the reranker)."""

    scorer: Scorer
    calibrator: Calibrator


class ScorerSpecError(ValueError):
    """A scorer spec that names no known kind, or whose path or URL is missing or wrong."""


@dataclass(frozen=True)
class ScorerKind:
    """One entry of the name-to-class map.

    Attributes:
        kind: the spec's head (``"cross-encoder"``).
        target: ``"module:Class"`` built for it (imported only when used, so heavy backends stay unloaded).
        arg: what follows the colon: nothing, a local model folder (``"path"``) or an ``http(s)`` URL.
        runs_models: takes ``device=`` (model-free kinds ignore the device).
        summary: one line for help texts and errors.
    """

    kind: str
    target: str
    arg: Literal["none", "path", "url"]
    runs_models: bool
    summary: str

    @property
    def usage(self) -> str:
        """``kind``, ``kind:PATH`` or ``kind:URL``."""
        return self.kind if self.arg == "none" else f"{self.kind}:{self.arg.upper()}"


_SCORERS = "mm_rerank_components.scorers."
#: The name-to-class map: every scorer kind a spec can name.
SCORER_KINDS: Mapping[str, ScorerKind] = {
    k.kind: k
    for k in (
        ScorerKind("starter", _SCORERS + "starter:StarterScorer", "none", True, "the offline starter models"),
        ScorerKind("fake", _SCORERS + "fake:FakeScorer", "none", False, "model-free word overlap (tests)"),
        ScorerKind(
            "first-stage",
            _SCORERS + "first_stage:FirstStageScorer",
            "none",
            False,
            "the candidates' own retrieval scores",
        ),
        ScorerKind(
            "cross-encoder",
            _SCORERS + "cross_encoder:CrossEncoderScorer",
            "path",
            True,
            "a local text cross-encoder folder",
        ),
        ScorerKind(
            "vlm", _SCORERS + "vlm:VLMYesNoScorer", "path", True, "a local VLM yes/no reranker folder"
        ),
        ScorerKind(
            "llm", _SCORERS + "llm:LLMYesNoScorer", "path", True, "a local LLM yes/no reranker folder"
        ),
        ScorerKind("clip", _SCORERS + "clip:CLIPScorer", "path", True, "a local CLIP/SigLIP folder"),
        ScorerKind(
            "jina-m0", _SCORERS + "jina_m0:JinaRerankerM0Scorer", "path", True, "a local jina-reranker-m0"
        ),
        ScorerKind(
            "late-interaction",
            _SCORERS + "late_interaction:LateInteractionScorer",
            "path",
            True,
            "a local ColBERT / ColPali-family folder",
        ),
        ScorerKind("remote", _SCORERS + "remote:RemoteScorer", "url", False, "a rerank service over HTTP"),
    )
}


def scorer_kinds() -> list[str]:
    """Every accepted spec form, for help texts and errors.

    Example:
        >>> scorer_kinds()[:3]
        ['starter', 'fake', 'first-stage']
    """
    return [k.usage for k in SCORER_KINDS.values()] + ["module:callable"]


def _accepted() -> str:
    return ", ".join(scorer_kinds())


def parse_spec(spec: str) -> tuple[ScorerKind | None, str | None]:
    """``(kind, argument)`` of a spec, checked: a model folder must exist (it is returned absolute), a URL
    must be ``http(s)://``. ``(None, None)`` means a ``module:callable`` factory.

    Example:
        >>> kind, arg = parse_spec("remote:http://127.0.0.1:8080")
        >>> kind.kind, arg
        ('remote', 'http://127.0.0.1:8080')
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ScorerSpecError(
            f"a scorer spec must be a non-empty string, got {spec!r}; use one of {_accepted()}"
        )
    head, sep, arg = spec.strip().partition(":")
    kind = SCORER_KINDS.get(head)
    if kind is None:
        if _FACTORY.match(spec.strip()) and _module_exists(head):
            return None, None
        raise ScorerSpecError(f"unknown scorer {spec!r}; use one of {_accepted()}")
    if kind.arg == "none":
        if sep:
            raise ScorerSpecError(f"scorer {spec!r}: {head!r} takes no ':...' part; use {head!r}")
        return kind, None
    if not arg:
        raise ScorerSpecError(f"scorer {spec!r}: give {kind.usage} ({kind.summary})")
    if kind.arg == "url":
        if not arg.startswith(("http://", "https://")):
            raise ScorerSpecError(f"scorer {spec!r}: {arg!r} is not an http(s):// URL; use {kind.usage}")
        return kind, arg.rstrip("/")
    folder = Path(arg).expanduser()
    if not folder.is_dir():
        raise ScorerSpecError(
            f"scorer {spec!r}: {str(folder)!r} is not a local model folder ({kind.usage}: {kind.summary}; "
            "nothing is downloaded)"
        )
    return kind, str(folder.resolve())


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a missing parent package
        return False


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _record(scorer: Scorer, spec: str, options: Mapping[str, Any]) -> None:
    if not isinstance(scorer, BaseScorer):
        return
    kept = {k: v for k, v in options.items() if k not in _NOT_RECORDED}
    rebuildable = all(_jsonable(v) for v in kept.values())
    scorer.remember_spec(spec if rebuildable else None, kept if rebuildable else {})


def _build_kind(kind: ScorerKind, arg: str | None, device: str | None, options: dict[str, Any]) -> Any:
    module_name, _, class_name = kind.target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    kwargs = dict(options)
    if kind.runs_models and device is not None:
        kwargs.setdefault("device", device)
    if kind.arg == "path":
        kwargs.setdefault("local_files_only", True)
    args: Sequence[Any] = () if arg is None else (arg,)
    return cls(*args, **kwargs)


def scorer_from_spec(spec: str, *, device: str | None = None, **options: Any) -> Scorer:
    """Build the scorer ``spec`` names (see the table in this module), passing ``options`` to it.

    Args:
        spec: ``kind``, ``kind:PATH`` (a local model folder), ``remote:URL`` or ``module:callable``.
        device: where a model-backed scorer runs (``"cpu"``, ``"cuda"``); model-free kinds ignore it.
        options: the scorer's own keyword arguments (``batch_size=8``, ``image_model=...``).

    Raises:
        ScorerSpecError: the spec names no known kind (the message lists them), or its folder or URL is wrong.
        TypeError: an option the scorer does not take.

    Example:
        >>> scorer_from_spec("fake").name
        'fake'
        >>> scorer_from_spec("fake", overrides={"a": 0.5}).spec_options()
        {'overrides': {'a': 0.5}}
        >>> scorer_from_spec("fast")
        Traceback (most recent call last):
        ...
        mm_rerank_components.scorers.registry.ScorerSpecError: unknown scorer 'fast'; use one of starter, ...
    """
    kind, arg = parse_spec(spec)
    if kind is None:
        return _from_factory(spec.strip(), options)
    canonical = kind.kind if arg is None else f"{kind.kind}:{arg}"
    scorer = _build_kind(kind, arg, device, options)
    _record(scorer, canonical, options)
    return scorer


def _from_factory(spec: str, options: Mapping[str, Any]) -> Scorer:
    module_name, _, attr = spec.partition(":")
    try:
        factory: Callable[..., Any] = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ScorerSpecError(
            f"scorer {spec!r}: cannot load the factory ({exc}); give an importable module:callable, or one "
            f"of {_accepted()}"
        ) from exc
    made = factory(**options)
    if not isinstance(made, Scorer) and isinstance(made, _ScorerAndCalibrator):  # a MultimodalReranker
        made = CalibratedScorer(made.scorer, made.calibrator)
    if not isinstance(made, Scorer):
        raise TypeError(
            f"scorer {spec!r} made {made!r}, which is not a Scorer (name, outputs_probabilities, modalities, "
            "score); return a scorer or a MultimodalReranker"
        )
    _record(made, spec, options)
    return made


class CalibratedScorer(BaseScorer):
    """A scorer shipped with the calibrator its factory paired it with (a factory's ``MultimodalReranker``).

    Example:
        >>> from mm_rerank_components.scorers import FakeScorer
        >>> CalibratedScorer(FakeScorer(), None).name
        'fake'
    """

    def __init__(self, scorer: Scorer, calibrator: Calibrator | None) -> None:
        self.inner = scorer
        self.calibrator = calibrator
        self.name = scorer.name
        self.outputs_probabilities = scorer.outputs_probabilities
        self.modalities = scorer.modalities
        self.reuses = scorer.reuses if isinstance(scorer, BaseScorer) else frozenset()

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        return self.inner.score(query, candidates)

    def default_calibrator(self) -> Calibrator | None:
        if self.calibrator is not None:
            return self.calibrator
        return self.inner.default_calibrator() if isinstance(self.inner, BaseScorer) else None

    def load(self) -> None:
        if isinstance(self.inner, BaseScorer):
            self.inner.load()
