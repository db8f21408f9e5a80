"""The shared reranking core: :class:`MultimodalReranker` and :class:`CascadeReranker`."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol, runtime_checkable

from mm_rerank_components._checks import check_int
from mm_rerank_components.calibration import Calibrator, SigmoidCalibrator
from mm_rerank_components.media import (
    DEFAULT_IMAGE_OPTIONS,
    CancelToken,
    ImageLoadError,
    ImageOptions,
    OperationCancelled,
    cache_key,
    cancel_scope,
    check_cancelled,
    check_image,
    image_key,
    load_image,
    text_key,
)
from mm_rerank_components.scorers._batching import plan_batches
from mm_rerank_components.scorers.base import BaseScorer, Scorer
from mm_rerank_components.types import Candidate, ImageRef, Modality, Precomputed, Query, RankedCandidate

logger = logging.getLogger(__name__)

OnError = Literal["raise", "keep"]
_NAN = float("nan")


class CandidateError(ValueError):
    """A candidate could not be scored. ``candidate_id`` and ``index`` say which one."""

    def __init__(self, message: str, *, candidate_id: str, index: int) -> None:
        super().__init__(message)
        self.candidate_id = candidate_id
        self.index = index


class ScorerError(RuntimeError):
    """A scorer broke its contract (wrong number of scores, out-of-range probabilities)."""


class ScoreCache:
    """A thread-safe LRU cache of raw scores keyed by (scorer, query content, candidate content).

    Example:
        >>> cache = ScoreCache(max_entries=1000)
        >>> len(cache)
        0
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries <= 0:
            raise ValueError(f"ScoreCache max_entries must be > 0, got {max_entries!r}")
        self.max_entries = max_entries
        self._data: OrderedDict[Hashable, float] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> float | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: float) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class _ProbabilityPassThrough:
    """Calibrator for scorers that already emit probabilities: checks the range, changes nothing."""

    def calibrate(self, raw_scores: Sequence[float], modalities: Sequence[Modality]) -> list[float]:
        return list(raw_scores)


def _resolve_cache(cache: bool | int | ScoreCache | None) -> ScoreCache | None:
    if cache is None or cache is False:
        return None
    if cache is True:
        return ScoreCache()
    if isinstance(cache, ScoreCache):
        return cache
    if isinstance(cache, int):
        return ScoreCache(max_entries=cache)
    raise TypeError(f"cache must be a bool, an int (max entries) or a ScoreCache, got {cache!r}")


def _size_key(candidate: Candidate) -> int:
    size = len(candidate.text) if candidate.text else 0
    image = candidate.image
    if image is not None and hasattr(image, "size"):
        width, height = image.size
        size += width * height
    return size


class _Item:
    """One candidate on its way to the scorer: input position, prepared candidate, cache key."""

    __slots__ = ("candidate", "index", "key")

    def __init__(self, index: int, candidate: Candidate, key: Hashable | None) -> None:
        self.index = index
        self.candidate = candidate
        self.key = key


def _prepared(candidate: Candidate, image: object, precomputed: Mapping[str, Precomputed]) -> Candidate:
    """A copy of a checked candidate with its decoded image and filtered signals.

    ``dataclasses.replace`` would validate again and derive the modality again; neither can change (an
    image stays an image), and this runs once per candidate on the hot path.
    """
    copy = object.__new__(Candidate)
    copy.__dict__.update(candidate.__dict__)
    copy.__dict__["image"] = image
    copy.__dict__["precomputed"] = precomputed
    return copy


def _as_score(value: object) -> float:
    """A scorer's value as float; None and non-numbers become nan, which the caller reports."""
    if isinstance(value, bool):
        return _NAN
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _NAN


def reusable_signals(candidate: Candidate, reuses: frozenset[str]) -> dict[str, Precomputed]:
    """The precomputed signals of ``candidate`` a scorer that reuses ``reuses`` may see: a kind it reuses,
    computed from this very content (see :class:`~mm_rerank_components.types.Precomputed`).

    Example:
        >>> from mm_rerank_components.media import text_key
        >>> good = Precomputed("text_embedding", "minilm", text_key("owl"), (0.1,))
        >>> stale = Precomputed("text_tokens", "minilm", text_key("an owl"), (7,))
        >>> c = Candidate("a", text="owl", precomputed={"text_embedding": good, "text_tokens": stale})
        >>> list(reusable_signals(c, frozenset({"text_embedding", "text_tokens"})))
        ['text_embedding']
    """
    kept: dict[str, Precomputed] = {}
    keys: dict[str, str | None] = {}  # content keys, computed at most once each
    for name, signal in candidate.precomputed.items():
        if signal.kind not in reuses:
            continue
        side = signal.kind[:4] if signal.kind.startswith("text") else signal.kind[:5]
        if side not in keys:
            keys[side] = _content_key(candidate, side)
        expected = keys[side]
        if expected is None or signal.content != expected:
            logger.debug(
                "candidate %r: precomputed %r dropped, its content %r does not match %r",
                candidate.id,
                signal.kind,
                signal.content,
                expected,
            )
            continue
        kept[name] = signal
    return kept


def _content_key(candidate: Candidate, side: str) -> str | None:
    """What a precomputed signal's ``content`` must equal: the text's or the image reference's key."""
    if side == "text":
        return text_key(candidate.text) if candidate.text is not None else None
    if side == "image":
        return image_key(candidate.image) if candidate.image is not None else None
    return None  # an unknown kind has no content to check it against, so it is never trusted


def _ids(items: Sequence[_Item], most: int = 5) -> str:
    shown = ", ".join(repr(item.candidate.id) for item in items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def check_request(query: object, top_n: object = None, threshold: object = None) -> Query:
    """The validation the core and both framework adapters share: the query, ``top_n`` and ``threshold``.

    Returns the query as a :class:`Query` (a ``str`` becomes ``Query(text=...)``); raises ``TypeError`` or
    ``ValueError`` naming the bad value and the fix.

    Example:
        >>> check_request("red fox", top_n=3).text
        'red fox'
        >>> check_request("red fox", top_n=True)
        Traceback (most recent call last):
        ...
        ValueError: top_n must be a positive int or None, got True
    """
    if isinstance(query, str):
        query = Query(text=query)
    elif not isinstance(query, Query):
        raise TypeError(
            f"query must be a Query or a str, got {type(query).__name__}; build one with "
            "Query(text=..., image=...)"
        )
    check_limits(top_n, threshold)
    return query


def check_limits(top_n: object = None, threshold: object = None) -> None:
    """Check ``top_n`` (a positive int or None) and ``threshold`` (a unified score in [0, 1] or None).

    Booleans are rejected: ``top_n=True`` is a mistake, not a request for one result.

    Example:
        >>> check_limits(top_n=5, threshold=0.5)
        >>> check_limits(threshold=True)
        Traceback (most recent call last):
        ...
        ValueError: threshold must be a unified score between 0 and 1 or None, got True
    """
    check_int("top_n", top_n, optional=True)
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not 0.0 <= float(threshold) <= 1.0
    ):
        raise ValueError(f"threshold must be a unified score between 0 and 1 or None, got {threshold!r}")


def check_candidates(candidates: object) -> None:
    """Check that ``candidates`` is a list of :class:`Candidate`, naming the first bad position.

    Example:
        >>> check_candidates([Candidate("a", text="x")])  # None: a valid list
        >>> check_candidates([Candidate("a", text="x"), None])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: candidates[1] is a NoneType, not a Candidate; ...
    """
    if isinstance(candidates, (str, bytes, Candidate)) or not isinstance(candidates, Sequence):
        raise TypeError(
            f"candidates must be a list of Candidate, got {type(candidates).__name__}; wrap a single "
            "candidate in a list"
        )
    for position, candidate in enumerate(candidates):
        if not isinstance(candidate, Candidate):
            raise TypeError(
                f"candidates[{position}] is a {type(candidate).__name__}, not a Candidate; build one "
                "with Candidate(id=..., text=..., image=...)"
            )


#: Worker threads ``arerank`` uses, shared by all rerankers: asyncio's default pool is left to the
#: application, and a call cancelled while it waits on I/O releases its thread at once.
ASYNC_WORKERS = min(32, (os.cpu_count() or 1) + 4)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=ASYNC_WORKERS, thread_name_prefix="mm-rerank")
        return _pool


def _run_cancellable(token: CancelToken, work: Callable[[], list[RankedCandidate]]) -> list[RankedCandidate]:
    with cancel_scope(token):
        check_cancelled()
        return work()


class _RerankerBase:
    """What every reranker shares: the async form of ``rerank``, warm-up and the one-line cascade."""

    def warm_up(self) -> None:
        """Load every model now rather than on the first request (a no-op for model-free rerankers)."""
        return None

    def rerank(
        self,
        query: Query | str,
        candidates: Sequence[Candidate],
        *,
        top_n: int | None = None,
        threshold: float | None = None,
    ) -> list[RankedCandidate]:
        raise NotImplementedError

    async def arerank(
        self,
        query: Query | str,
        candidates: Sequence[Candidate],
        *,
        top_n: int | None = None,
        threshold: float | None = None,
    ) -> list[RankedCandidate]:
        """Async :meth:`rerank`: the work runs in the package's own bounded thread pool, so the event loop is
        never blocked; cancelling the task stops the work (between candidates and batches, and at once
        for a URL being fetched)."""
        token = CancelToken()
        work = functools.partial(self.rerank, query, candidates, top_n=top_n, threshold=threshold)
        future = asyncio.get_running_loop().run_in_executor(_executor(), _run_cancellable, token, work)
        try:
            return await future
        except asyncio.CancelledError:
            token.cancel()
            raise

    def then(self, expensive: MultimodalReranker, *, keep: int) -> CascadeReranker:
        """A cascade in one line: this (cheap) reranker keeps ``keep`` candidates, ``expensive`` orders them.

        Example:
            >>> from mm_rerank_components.scorers import FakeScorer
            >>> cascade = MultimodalReranker(FakeScorer()).then(MultimodalReranker(FakeScorer()), keep=50)
        """
        return CascadeReranker(self, expensive, keep=keep)


def _check_arguments(scorer: object, calibrator: object, batch_size: object, on_error: object) -> None:
    """MultimodalReranker's argument checks, each error naming the value and the fix."""
    for attr in ("name", "outputs_probabilities", "modalities", "score"):
        if not hasattr(scorer, attr):
            raise TypeError(
                f"scorer {scorer!r} lacks {attr!r}: a scorer needs name, outputs_probabilities, "
                "modalities and score(query, candidates) (see mm_rerank_components.scorers.base.Scorer)"
            )
    check_int("batch_size", batch_size, optional=True, hint=" (no cap; the scorer batches)")
    if on_error not in ("raise", "keep"):
        raise ValueError(f"on_error must be 'raise' or 'keep', got {on_error!r}")
    if calibrator is not None and not hasattr(calibrator, "calibrate"):
        raise TypeError(f"calibrator {calibrator!r} has no calibrate(raw_scores, modalities) method")


class MultimodalReranker(_RerankerBase):
    """Rerank mixed text and image candidates on one unified relevance scale.

    Args:
        scorer: any :class:`~mm_rerank_components.scorers.base.Scorer` (e.g. ``FakeScorer()``,
            ``StarterScorer()``, ``VLMYesNoScorer(...)``).
        calibrator: maps raw scores to probabilities per modality. When omitted, the scorer's own
            ``default_calibrator()`` is used if it has one; a scorer that already outputs probabilities
            needs none; otherwise a plain sigmoid is used and a warning says the scores are uncalibrated.
        batch_size: most candidates per scorer call (candidates of one modality, sorted by size).
        cache: ``True`` for an LRU cache of 10,000 raw scores, an ``int`` for its size, or a shared
            :class:`ScoreCache`. Keys are (scorer name, query content, candidate text and image content).
        on_error: ``"raise"`` (default) raises :class:`CandidateError` naming the first candidate that
            cannot be read or scored; ``"keep"`` returns such candidates after all scored ones, with score
            0.0, ``raw_score`` nan, ``error`` set and ``metadata["rerank_error"]``. They are never dropped,
            not even by ``top_n`` or ``threshold``.
        image_options: limits and URL permission for decoding images (see :class:`ImageOptions`).

    Example:
        >>> from mm_rerank_components import Candidate, MultimodalReranker, Query
        >>> from mm_rerank_components.scorers import FakeScorer
        >>> reranker = MultimodalReranker(FakeScorer())
        >>> hits = [Candidate("a", text="owls at night"), Candidate("b", text="a red fox")]
        >>> [r.id for r in reranker.rerank(Query("red fox"), hits)]
        ['b', 'a']
    """

    def __init__(
        self,
        scorer: Scorer,
        calibrator: Calibrator | None = None,
        *,
        batch_size: int | None = None,
        cache: bool | int | ScoreCache | None = False,
        on_error: OnError = "raise",
        image_options: ImageOptions | None = None,
    ) -> None:
        _check_arguments(scorer, calibrator, batch_size, on_error)
        self.scorer = scorer
        self.batch_size = batch_size
        self.cache = _resolve_cache(cache)
        self.on_error: OnError = on_error
        self.image_options = image_options or DEFAULT_IMAGE_OPTIONS
        self.calibrator: Calibrator = self._resolve_calibrator(calibrator)
        # what the scorer may take from candidate.precomputed; plain Protocol scorers reuse nothing
        self._reuses: frozenset[str] = (
            frozenset(scorer.reuses) if isinstance(scorer, BaseScorer) else frozenset()
        )

    @classmethod
    def load(cls, folder: str | os.PathLike[str], **kwargs: Any) -> Reranker:
        """Moved: a saved reranker folder loads with :func:`mm_rerank_components.load_reranker`.

        The core never imports the product layer that writes those folders (``adapt``), so this raises
        with the call to use instead.

        Example:
            >>> from mm_rerank_components import load_reranker
            >>> reranker = load_reranker("my-reranker")  # doctest: +SKIP
        """
        raise TypeError(
            f"MultimodalReranker.load({os.fspath(folder)!r}) moved: use "
            "mm_rerank_components.load_reranker(folder, ...) (same keyword arguments)"
        )

    def warm_up(self) -> None:
        """Load the scorer's weights now (services and the CLI call it before the first request)."""
        if isinstance(self.scorer, BaseScorer):
            self.scorer.load()

    def _resolve_calibrator(self, calibrator: Calibrator | None) -> Calibrator:
        if calibrator is not None:
            return calibrator
        if isinstance(self.scorer, BaseScorer):
            shipped = self.scorer.default_calibrator()
            if shipped is not None:
                return shipped
        if self.scorer.outputs_probabilities:
            return _ProbabilityPassThrough()
        logger.warning(
            "scorer %r does not output probabilities and no calibrator was given: using a plain sigmoid, "
            "so scores of different modalities are NOT on one scale; fit one with "
            "mm_rerank_components.calibration.fit_calibrator and pass calibrator=...",
            self.scorer.name,
        )
        return SigmoidCalibrator()

    # -- public API -----------------------------------------------------------------------------------

    def rerank(
        self,
        query: Query | str,
        candidates: Sequence[Candidate],
        *,
        top_n: int | None = None,
        threshold: float | None = None,
    ) -> list[RankedCandidate]:
        """Score, calibrate and sort ``candidates`` for ``query``.

        Returns the candidates in descending unified score (ties keep input order), cut to ``top_n`` and
        to scores ``>= threshold``; candidates kept by ``on_error="keep"`` follow at the end.
        """
        query = check_request(query, top_n, threshold)
        check_candidates(candidates)
        if not candidates:
            return []
        raw, errors = self._score_all(query, candidates)
        scored = [i for i in range(len(candidates)) if i not in errors]
        probabilities = self._calibrate([raw[i] for i in scored], [candidates[i].modality for i in scored])
        return _ranked(candidates, scored, probabilities, raw, errors, top_n, threshold)

    # -- internals -------------------------------------------------------------------------------------

    def _prepare_query(self, query: Query) -> Query:
        if query.image is None:
            return query
        try:
            side = self.scorer.image_side if isinstance(self.scorer, BaseScorer) else None
            image = load_image(query.image, self.image_options, longest_side=side)
            return dataclasses.replace(query, image=image)
        except ImageLoadError as exc:
            raise ImageLoadError(f"query image: {exc}") from exc

    def _query_key(self, query: Query) -> Hashable:
        return (query.text, cache_key(query.image) if query.image is not None else None)

    def _score_all(self, query: Query, candidates: Sequence[Candidate]) -> tuple[list[float], dict[int, str]]:
        prepared_query = self._prepare_query(query)
        raw: list[float] = [_NAN] * len(candidates)
        errors: dict[int, str] = {}
        query_key = self._query_key(query) if self.cache is not None else None
        groups: dict[Modality, list[_Item]] = {}
        for index, candidate in enumerate(candidates):
            check_cancelled()
            item = self._prepare(index, candidate, query_key, raw, errors)
            if item is not None:
                groups.setdefault(candidate.modality, []).append(item)
        for members in groups.values():
            for batch in self._batches(members):
                self._score_batch(prepared_query, batch, raw, errors)
        return raw, errors

    def _prepare(
        self,
        index: int,
        candidate: Candidate,
        query_key: Hashable | None,
        raw: list[float],
        errors: dict[int, str],
    ) -> _Item | None:
        """Check, look up in the cache, decode and filter one candidate; None when it needs no scoring."""
        supported = self.scorer.modalities
        if candidate.modality not in supported:
            self._fail(
                errors,
                index,
                candidate,
                f"scorer {self.scorer.name!r} cannot read {candidate.modality} candidates (it reads "
                f"{', '.join(sorted(supported))}); route them to another scorer with ModalityRouter",
            )
            return None
        key: Hashable | None = None
        if self.cache is not None:
            ref_key = cache_key(candidate.image) if candidate.image is not None else None
            key = (self.scorer.name, query_key, candidate.text, ref_key)
            hit = self.cache.get(key)
            if hit is not None:
                raw[index] = hit
                return None
        precomputed = (
            reusable_signals(candidate, self._reuses) if candidate.precomputed else candidate.precomputed
        )
        ref = image = candidate.image
        if precomputed is not candidate.precomputed:
            candidate = _prepared(candidate, ref, precomputed)
        if ref is not None:
            try:
                image = self._picture(candidate, ref)
            except ImageLoadError as exc:
                self._fail(errors, index, candidate, f"unreadable image: {exc}")
                return None
            if image is not ref:
                candidate = _prepared(candidate, image, precomputed)
        return _Item(index, candidate, key)

    def _picture(self, candidate: Candidate, ref: ImageRef) -> ImageRef:
        """The decoded picture when the scorer reads this candidate's pixels (at the size it reads);
        otherwise ``ref`` itself after a cheap check (a missing or oversized file is still reported)."""
        scorer = self.scorer
        if isinstance(scorer, BaseScorer):
            if not scorer.needs_pixels(candidate):
                check_image(ref, self.image_options)
                return ref
            return load_image(ref, self.image_options, longest_side=scorer.image_side)
        return load_image(ref, self.image_options)

    def _batches(self, members: list[_Item]) -> list[list[_Item]]:
        """The whole modality group, or balanced batches of at most ``batch_size`` when capped."""
        if self.batch_size is None or len(members) <= self.batch_size:
            return [members]
        plan = plan_batches([_size_key(m.candidate) for m in members], max_items=self.batch_size)
        return [[members[i] for i in batch] for batch in plan]

    def _score_batch(
        self, query: Query, batch: list[_Item], raw: list[float], errors: dict[int, str]
    ) -> None:
        check_cancelled()
        outcome = self._call_scorer(query, batch)
        if isinstance(outcome, Exception):  # only with on_error="keep"
            # find the culprits: retry one candidate at a time; not after a timeout, which is the call's
            # deadline, not one candidate's fault (each retry would wait it out again)
            if len(batch) > 1 and not isinstance(outcome, TimeoutError):
                for item in batch:
                    self._score_batch(query, [item], raw, errors)
                return
            message = f"scorer {self.scorer.name!r} failed: {type(outcome).__name__}: {outcome}"
            for item in batch:
                self._fail(errors, item.index, item.candidate, message)
            return
        if len(outcome) != len(batch):
            raise ScorerError(
                f"scorer {self.scorer.name!r} returned {len(outcome)} scores for {len(batch)} "
                "candidates; a scorer must return exactly one score per candidate"
            )
        for item, value in zip(batch, outcome, strict=True):
            number = _as_score(value)
            if not math.isfinite(number):
                shown = number if isinstance(value, (int, float)) and not isinstance(value, bool) else value
                self._fail(
                    errors, item.index, item.candidate, f"scorer {self.scorer.name!r} returned {shown!r}"
                )
                continue
            raw[item.index] = number
            if self.cache is not None:
                self.cache.put(item.key, number)

    def _call_scorer(self, query: Query, batch: list[_Item]) -> list[object] | Exception:
        """The scorer's values for ``batch``; its exception is a ScorerError, or returned with "keep"."""
        try:
            values = self.scorer.score(query, [item.candidate for item in batch])
        except OperationCancelled:
            raise
        except Exception as exc:  # any scorer failure is reported with its batch, never lost
            if self.on_error == "keep":
                logger.warning(
                    "scorer %r failed on %d candidates (%s): %s",
                    self.scorer.name,
                    len(batch),
                    _ids(batch),
                    exc,
                )
                return exc
            raise ScorerError(
                f"scorer {self.scorer.name!r} failed on a batch of {len(batch)} "
                f"{batch[0].candidate.modality} candidates ({_ids(batch)}): {type(exc).__name__}: {exc}; "
                "pass on_error='keep' to keep the candidates it cannot score, with the error recorded"
            ) from exc
        try:
            return list(values)
        except TypeError:
            raise ScorerError(
                f"scorer {self.scorer.name!r} returned {values!r}, not a list of scores; a scorer must "
                "return one float per candidate"
            ) from None

    def _fail(self, errors: dict[int, str], index: int, candidate: Candidate, message: str) -> None:
        if self.on_error == "raise":
            raise CandidateError(
                f"candidate {candidate.id!r} (index {index}): {message}; pass on_error='keep' to rank it "
                "last with the error recorded instead",
                candidate_id=candidate.id,
                index=index,
            )
        logger.warning("candidate %r (index %d) kept unscored: %s", candidate.id, index, message)
        errors[index] = message

    def _calibrate(self, raw: list[float], modalities: list[Modality]) -> list[float]:
        if not raw:
            return []
        probabilities = [float(p) for p in self.calibrator.calibrate(raw, modalities)]
        if len(probabilities) != len(raw):
            raise ScorerError(
                f"calibrator {self.calibrator!r} returned {len(probabilities)} values for {len(raw)} scores"
            )
        for value in probabilities:
            if not (-1e-6 <= value <= 1.0 + 1e-6):  # also false for nan
                source = (
                    f"scorer {self.scorer.name!r}"
                    if isinstance(self.calibrator, _ProbabilityPassThrough)
                    else f"calibrator {self.calibrator!r}"
                )
                raise ScorerError(
                    f"{source} produced {value}, outside [0, 1]; a scorer with outputs_probabilities=True "
                    "must return probabilities, otherwise pass a calibrator"
                )
        return [min(1.0, max(0.0, p)) for p in probabilities]


def order_by_score(scores: Sequence[float], *, top_n: int | None, threshold: float | None) -> list[int]:
    """Positions by descending unified score, cut to scores ``>= threshold`` and then to ``top_n``.

    Ties keep input order (``sorted(reverse=True)`` is stable), which is the stability users rely on.

    Example:
        >>> order_by_score([0.2, 0.9, 0.5, 0.9], top_n=3, threshold=0.3)
        [1, 3, 2]
    """
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    if threshold is not None:
        order = [o for o in order if scores[o] >= threshold]
    if top_n is not None:
        order = order[:top_n]
    return order


def _ranked(
    candidates: Sequence[Candidate],
    scored: list[int],
    probabilities: list[float],
    raw: list[float],
    errors: dict[int, str],
    top_n: int | None,
    threshold: float | None,
) -> list[RankedCandidate]:
    """The results: scored candidates by unified score, cut by ``threshold`` and ``top_n``, then the kept
    failures in input order."""
    order = order_by_score(probabilities, top_n=top_n, threshold=threshold)
    results = [
        RankedCandidate(
            candidate=candidates[scored[o]],
            index=scored[o],
            score=probabilities[o],
            raw_score=raw[scored[o]],
            rank=rank,
        )
        for rank, o in enumerate(order)
    ]
    for index in sorted(errors):
        candidate = candidates[index]
        failed = dataclasses.replace(
            candidate, metadata={**candidate.metadata, "rerank_error": errors[index]}
        )
        results.append(
            RankedCandidate(
                candidate=failed,
                index=index,
                score=0.0,
                raw_score=_NAN,
                rank=len(results),
                error=errors[index],
            )
        )
    return results


class CascadeReranker(_RerankerBase):
    """Two stages: ``cheap`` keeps the best ``keep`` candidates, ``expensive`` orders those.

    Results carry ``expensive``'s unified scores and ``index`` into the *original* input list. Candidates
    that the cheap stage kept unscored (``on_error="keep"``) are passed through at the end.

    Example:
        >>> from mm_rerank_components import MultimodalReranker
        >>> from mm_rerank_components.scorers import FakeScorer
        >>> cheap, expensive = MultimodalReranker(FakeScorer()), MultimodalReranker(FakeScorer())
        >>> cascade = CascadeReranker(cheap, expensive, keep=8)
    """

    def __init__(self, cheap: _RerankerBase, expensive: MultimodalReranker, *, keep: int) -> None:
        check_int("keep", keep)
        self.cheap = cheap
        self.expensive = expensive
        self.keep = keep

    def warm_up(self) -> None:
        """Load both stages' models."""
        self.cheap.warm_up()
        self.expensive.warm_up()

    def rerank(
        self,
        query: Query | str,
        candidates: Sequence[Candidate],
        *,
        top_n: int | None = None,
        threshold: float | None = None,
    ) -> list[RankedCandidate]:
        """Run both stages; ``top_n`` and ``threshold`` apply to the expensive stage's scores."""
        first = self.cheap.rerank(query, candidates, top_n=self.keep)
        survivors = [r for r in first if r.error is None]
        failed = [r for r in first if r.error is not None]
        second = self.expensive.rerank(
            query, [r.candidate for r in survivors], top_n=top_n, threshold=threshold
        )
        results = [dataclasses.replace(r, index=survivors[r.index].index) for r in second]
        for r in failed:
            results.append(dataclasses.replace(r, rank=len(results)))
        return results


@runtime_checkable
class Reranker(Protocol):
    """What the framework adapters accept: a :class:`MultimodalReranker`, a :class:`CascadeReranker`, or
    anything else with the same two methods."""

    def rerank(
        self,
        query: Query | str,
        candidates: Sequence[Candidate],
        *,
        top_n: int | None = None,
        threshold: float | None = None,
    ) -> list[RankedCandidate]: ...

    async def arerank(
        self,
        query: Query | str,
        candidates: Sequence[Candidate],
        *,
        top_n: int | None = None,
        threshold: float | None = None,
    ) -> list[RankedCandidate]: ...
