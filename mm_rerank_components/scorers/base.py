"""The small protocol every scorer implements.

A scorer turns ``(query, candidates)`` into one raw relevance number per candidate. The
:class:`~mm_rerank_components.MultimodalReranker` does everything else: validation, image decoding,
batching by modality, caching, calibration, sorting. When a scorer is called:

* every ``query.image`` is already a decoded RGB ``PIL.Image.Image`` (or None), and so is every
  ``candidate.image`` whose pixels the scorer reads (:meth:`BaseScorer.needs_pixels`; others stay as given);
* all candidates in one call share one modality; the core hands over the whole group (or, when the
  reranker's optional ``batch_size`` memory cap is set, balanced pieces of it), and the scorer cuts its own
  batches by real cost with :func:`mm_rerank_components.scorers._batching.run_batched`;
* ``candidate.precomputed`` holds only signals whose kind is in the scorer's ``reuses`` and whose content
  matches the candidate (empty for a scorer that is not a :class:`BaseScorer`).

A scorer must return exactly one finite float per candidate, in input order. If it raises, the reranker
reports a :class:`~mm_rerank_components.ScorerError` naming it and the batch, or, with ``on_error="keep"``,
retries one candidate at a time and keeps the ones that fail with the error recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mm_rerank_components.types import Candidate, Modality, Query

if TYPE_CHECKING:
    from mm_rerank_components.calibration import Calibrator


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


@runtime_checkable
class TrainableScorer(Protocol):
    """A model scorer LoRA can fine-tune (:mod:`mm_rerank_components.adapt.lora`): its torch ``model``,
    the ``device`` it runs on, and a differentiable ``logits(query, candidates)``, one per candidate.

    The cross-encoder, VLM and LLM yes/no scorers are; the starter and fake scorers are not.
    """

    name: str
    model: Any
    device: Any

    def logits(self, query: Query, candidates: Sequence[Candidate]) -> Any:
        """Differentiable raw scores (a 1-d tensor), one per candidate."""
        ...


class BaseScorer:
    """Base class of the package's scorers: the :class:`Scorer` protocol plus its declared optional hooks.

    A user's scorer only needs the protocol; subclassing this adds the hooks the core and the CLI call
    (the core checks ``isinstance(scorer, BaseScorer)``, never ``getattr``):

    * :meth:`default_calibrator`: the calibration that ships with the scorer's weights, or None;
    * :meth:`load`: load weights now rather than on the first :meth:`score` (services warm up with it);
    * :meth:`spec` and :meth:`spec_options`: what rebuilds the scorer through
      :func:`~mm_rerank_components.scorers.registry.scorer_from_spec` (saved reranker folders record them);
    * :attr:`reuses`: the :attr:`~mm_rerank_components.types.Precomputed.kind` values the scorer can take
      from ``candidate.precomputed`` instead of recomputing them;
    * :meth:`score_many`: the candidates of several queries in shared forward passes (the serving
      micro-batcher merges concurrent requests through it); the default scores one call at a time.
    * :meth:`needs_pixels` and :attr:`image_side`: whether the scorer reads a candidate's pixels, given
      the reusable signals it holds (a picture it does not read is never decoded: the core hands over the
      image reference as given, after a cheap check that the file is there), and the longest side it reads
      (a larger JPEG is decoded at a reduced scale).

    Scorers own their batching: the core hands each modality group over whole (see
    :func:`mm_rerank_components.scorers._batching.plan_batches`), capped only by the reranker's optional
    ``batch_size``. A ``text*`` kind in :attr:`reuses` is checked against
    :func:`mm_rerank_components.media.text_key` of the candidate's text, an ``image*`` kind against
    :func:`mm_rerank_components.media.image_key` of its image reference; other kinds are never passed on.

    Example:
        >>> class LengthScorer(BaseScorer):
        ...     name = "length"
        ...     def score(self, query, candidates):
        ...         return [float(len(c.text or "")) for c in candidates]
        >>> LengthScorer().default_calibrator() is None
        True
    """

    name: str = "base"
    outputs_probabilities: bool = False
    modalities: frozenset[Modality] = ALL_MODALITIES
    reuses: frozenset[str] = frozenset()
    #: the longest side, in pixels, of the pictures the scorer reads (None: full size); the core decodes a
    #: JPEG at least twice as large at a reduced DCT scale that keeps at least this
    image_side: int | None = None
    #: set by :meth:`remember_spec` (the registry calls it for every scorer it builds)
    _spec: str | None = None
    _spec_options: Mapping[str, Any] = MappingProxyType({})

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        """Return one raw score per candidate, in order."""
        raise NotImplementedError

    def score_many(self, calls: Sequence[tuple[Query, Sequence[Candidate]]]) -> list[list[float]]:
        """Scores for several ``(query, candidates)`` calls, in order, each list equal to that call's
        :meth:`score`. Model scorers override it to put the pairs of all calls into shared, cost-sorted
        batches; this default loops.

        Example:
            >>> class LengthScorer(BaseScorer):
            ...     def score(self, query, candidates):
            ...         return [float(len(c.text or "")) for c in candidates]
            >>> LengthScorer().score_many([(Query("q"), [Candidate("a", text="ab")]), (Query("r"), [])])
            [[2.0], []]
        """
        return [list(self.score(query, candidates)) for query, candidates in calls]

    def needs_pixels(self, candidate: Candidate) -> bool:
        """Whether :meth:`score` reads this candidate's pixels. ``candidate.precomputed`` holds only the
        signals :attr:`reuses` lets through; return False when one of them stands in for the picture, and
        the core passes ``candidate.image`` on undecoded. The default reads every picture.

        Example:
            >>> BaseScorer().needs_pixels(Candidate("a", image="fox.png"))
            True
        """
        return True

    def default_calibrator(self) -> Calibrator | None:
        """The calibration shipped with this scorer's weights and settings, or None."""
        return None

    def load(self) -> None:
        """Load weights now (no-op for scorers without any)."""
        return None

    def spec(self) -> str:
        """The registry spec (``kind[:path]``) that rebuilds this scorer with :meth:`spec_options`.

        ``scorer_from_spec(s.spec(), **s.spec_options())`` gives an equivalent scorer (same :attr:`name`).
        The registry records it for every scorer it builds; a class that can describe an instance built by
        hand overrides :meth:`own_spec`.

        Raises:
            ValueError: the scorer cannot be rebuilt from a spec (built by hand, or from ready objects).
        """
        return self._spec_and_options()[0]

    def spec_options(self) -> dict[str, Any]:
        """The JSON-able keyword arguments :meth:`spec` needs to rebuild this scorer (``{}`` for defaults)."""
        return dict(self._spec_and_options()[1])

    def own_spec(self) -> tuple[str, dict[str, Any]] | None:
        """``(spec, options)`` describing this instance when it was built by hand, or None (the default)."""
        return None

    def _spec_and_options(self) -> tuple[str, Mapping[str, Any]]:
        if self._spec is not None:
            return self._spec, self._spec_options
        own = self.own_spec()
        if own is None:
            raise ValueError(
                f"scorer {self.name!r} ({type(self).__name__}) was not built from a spec, so it cannot be "
                "rebuilt by name; build it with scorer_from_spec(...) or pass it yourself"
            )
        return own

    def remember_spec(self, spec: str | None, options: Mapping[str, Any]) -> None:
        """Record what built this scorer (the registry calls it; None: not rebuildable from a spec)."""
        self._spec = spec
        self._spec_options = MappingProxyType(dict(options))
