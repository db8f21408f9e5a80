"""``adapt(...)``: labels -> matched records -> mined pools -> raw scores -> learned fusion -> saved folder.

This is what ``mm-rerank adapt`` runs. Each step is timed and reported:

1. **labels**: read the labels file (eval or FlagEmbedding format) and an optional click log;
2. **index**: without a database, embed the labels' own documents into a temporary embedded Chroma with
   the first stage's embedding functions (first-stage work, timed apart); with one, find each label
   document among its records by content (unmatched ones are reported);
3. **retrieve**: each query's top ``k_text`` passages and ``k_image`` pictures (first-stage work);
4. **score**: the scorer's raw score of every pool candidate (through the product's
   :class:`~mm_rerank_components.MultimodalReranker`, so images are decoded and errors kept the same way);
5. **fusion**: :func:`~mm_rerank_components.adapt.fit_fusion` (pairwise on the mined hard negatives,
   then Platt per modality);
6. **save**: :func:`~mm_rerank_components.adapt.save_reranker`.

Example:
    >>> result = adapt("labels.jsonl", out="my-reranker", scorer="starter")  # doctest: +SKIP
    >>> print(format_report(result.report))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, cast

from mm_rerank_components.adapt.corpus import (
    ChromaCorpus,
    Corpus,
    LabelFreeOptions,
    PseudoQuery,
    drop_likely_false_negatives,
    labelled_modalities_only,
    match_labels,
    pseudo_queries,
)
from mm_rerank_components.adapt.features import RRF_K
from mm_rerank_components.adapt.folder import picture_query_reranker, save_reranker, scorer_spec
from mm_rerank_components.adapt.fusion import (
    FusionModel,
    LabelledList,
    LearnedFusionReranker,
    fit_fusion,
    pool_metrics,
)
from mm_rerank_components.adapt.labels import LabelSet, load_labels
from mm_rerank_components.adapt.mining import DocMatch, MinedSet, index_labels, mine
from mm_rerank_components.calibration import SigmoidCalibrator, expected_calibration_error
from mm_rerank_components.reranker import MultimodalReranker
from mm_rerank_components.scorers.base import Scorer, TrainableScorer
from mm_rerank_components.scorers.registry import scorer_from_spec
from mm_rerank_components.types import Candidate

__all__ = [
    "LABEL_FREE_FUSION",
    "AdaptLabelsError",
    "AdaptOptions",
    "AdaptResult",
    "adapt",
    "adapt_from_corpus",
    "format_report",
    "label_free_options",
    "score_mined",
]

logger = logging.getLogger(__name__)

ImageChoice = Literal["original", "preview"]


def _lora(
    scorer: Scorer, mined: MinedSet, out: Path | None, seed: int, options: Mapping[str, Any]
) -> dict[str, Any]:
    """LoRA-tune a model scorer on the mined pools (BCE, then pairwise on the hard negatives)."""
    import dataclasses

    from mm_rerank_components.adapt.lora import LoraExample, lora_finetune
    from mm_rerank_components.media import ImageLoadError, load_image
    from mm_rerank_components.types import Query

    unreadable = 0
    examples = []
    for item in mined.lists:
        positives: list[Candidate] = []
        negatives: list[Candidate] = []
        for candidate, grade in zip(item.candidates, item.grades, strict=True):
            if candidate.image is not None:
                try:
                    candidate = dataclasses.replace(candidate, image=load_image(candidate.image))
                except ImageLoadError:
                    unreadable += 1
                    continue
            (positives if grade > 0 else negatives).append(candidate)
        if positives or negatives:
            examples.append(LoraExample(Query(item.query.text), positives, negatives))
    result = lora_finetune(
        scorer, examples, out=out / "lora" if out is not None else None, seed=seed, **dict(options)
    )
    return {
        "losses": result.losses,
        "pairs": result.pairs,
        "device": result.device,
        "seed": result.seed,
        "targets": len(result.targets),
        "unreadable_images": unreadable,
        "adapter": str(result.path) if result.path is not None else None,
        "scorer": str(scorer.name),
    }


@dataclass
class AdaptResult:
    """What :func:`adapt` returns: the model, a ready reranker, the folder (if saved) and the report."""

    model: FusionModel
    reranker: LearnedFusionReranker
    folder: Path | None
    report: dict[str, Any]


def _temporary_retriever(embedder: str | tuple[Any, Any], workdir: str, candidate_image: ImageChoice) -> Any:
    from mm_rerank_components._deps import require
    from mm_rerank_components.retrievers.chroma import ChromaMultiCollectionRetriever

    chromadb = require("chromadb", "chroma", "mm-rerank adapt without --db")
    client = chromadb.PersistentClient(path=workdir)
    if isinstance(embedder, tuple):
        text_ef, image_ef = embedder
        return ChromaMultiCollectionRetriever(
            client=client,
            candidate_image=candidate_image,
            text_embedding_function=text_ef,
            image_embedding_function=image_ef,
        )
    # a name: "starter", "hashing" or "clip:PATH" (the retriever's own embedder choice)
    return ChromaMultiCollectionRetriever(client=client, candidate_image=candidate_image, embedder=embedder)


def score_mined(
    mined: MinedSet, scorer: Scorer, *, batch_size: int | None = None
) -> tuple[list[LabelledList], dict[str, Any]]:
    """Raw scores of every mined pool as :class:`LabelledList` training data, plus a scoring summary.

    Candidates the scorer cannot read are left out of training and counted (with the first errors).
    """
    base = MultimodalReranker(scorer, SigmoidCalibrator(), batch_size=batch_size, on_error="keep")
    lists: list[LabelledList] = []
    failed: list[str] = []
    pairs = 0
    for item in mined.lists:
        ranked = base.rerank(item.query.text, item.candidates)
        by_index = {r.index: r for r in ranked}
        keep = [i for i in range(len(item.candidates)) if by_index[i].error is None]
        failed += [f"{item.candidates[i].id}: {by_index[i].error}" for i in by_index if by_index[i].error]
        if not keep:
            continue
        pairs += len(keep)
        lists.append(
            LabelledList(
                item.query.text,
                [item.candidates[i] for i in keep],
                [by_index[i].raw_score for i in keep],
                [item.grades[i] for i in keep],
            )
        )
    summary = {"scorer": str(scorer.name), "pairs": pairs, "failed": len(failed), "errors": failed[:5]}
    return lists, summary


def _shipped(
    scorer: Scorer, lists: Sequence[LabelledList]
) -> tuple[dict[str, float], list[list[float]] | None]:
    """ECE per modality of the scorer's own shipped calibration on this data, and its probabilities."""
    from mm_rerank_components.scorers.base import BaseScorer

    calibrator = scorer.default_calibrator() if isinstance(scorer, BaseScorer) else None
    if calibrator is None:
        return {}, None
    by_modality: dict[str, tuple[list[float], list[int]]] = {}
    all_probs: list[list[float]] = []
    for item in lists:
        modalities = [c.modality for c in item.candidates]
        probs = [float(p) for p in calibrator.calibrate(list(item.raw_scores), modalities)]
        all_probs.append(probs)
        for modality, p, grade in zip(modalities, probs, item.labels, strict=True):
            entry = by_modality.setdefault(modality, ([], []))
            entry[0].append(p)
            entry[1].append(int(grade > 0))
    return {m: expected_calibration_error(p, y) for m, (p, y) in sorted(by_modality.items())}, all_probs


def _rrf(item: LabelledList) -> list[float]:
    """Reciprocal rank fusion of the pool's routes (rank by retrieval score within each route)."""
    scores = [0.0] * len(item.candidates)
    routes: dict[str | None, list[int]] = {}
    for i, c in enumerate(item.candidates):
        if c.retrieval_score is not None:
            routes.setdefault(c.source, []).append(i)
    for members in routes.values():
        ordered = sorted(members, key=lambda i: -float(item.candidates[i].retrieval_score or 0.0))
        for rank, i in enumerate(ordered, start=1):
            scores[i] = 1.0 / (RRF_K + rank)
    return scores


def _counts(lists: Sequence[LabelledList]) -> dict[str, Any]:
    modality: dict[str, dict[str, int]] = {}
    route: dict[str, dict[str, int]] = {}
    for item in lists:
        for candidate, grade in zip(item.candidates, item.labels, strict=True):
            for table, key in ((modality, candidate.modality), (route, str(candidate.source))):
                entry = table.setdefault(key, {"candidates": 0, "positives": 0})
                entry["candidates"] += 1
                entry["positives"] += int(grade > 0)
    return {"by_modality": dict(sorted(modality.items())), "by_route": dict(sorted(route.items()))}


@dataclass(frozen=True)
class AdaptOptions:
    """Every setting of :func:`adapt` and :func:`adapt_from_corpus` but the data, scorer and folder.

    Attributes:
        k_text, k_image: first-stage depth per route (use the depth you will serve with).
        seed, l2, pointwise, metadata_fields, bm25, listwise, modality_floor: learned fusion's settings
            (:func:`~mm_rerank_components.adapt.fit_fusion`).
        splits: train only on labelled queries of these splits (e.g. ``("dev",)``); default: all.
        batch_size: the reranker's batch cap while scoring.
        candidate_image: for the temporary database, what the scorer reads for a picture: the stored
            ``"preview"`` (as ``mm-rerank query`` does) or the ``"original"`` file.
        lora, lora_options: first LoRA-tune a model scorer on the mined pools (labelled runs only).
        allow_unmatched: train although some label documents match no record (they are listed).
        label_free: the pseudo-query settings of a run without labels (:class:`LabelFreeOptions`).
        prior: ``"default"``: start from the shipped default's model and pull the weights towards it
            (``fit_fusion(prior=...)``, the penalty chosen by 5-fold out-of-fold loss on your queries,
            or on the pseudo-queries of a label-free run) when the scorer is the one the default was
            fitted for; any other scorer fits from scratch (logged). ``None``: always from scratch.

    Example:
        >>> AdaptOptions(k_text=8, seed=1).k_text
        8
    """

    k_text: int = 16
    k_image: int = 16
    seed: int = 0
    l2: float = 0.01
    pointwise: float = 0.2
    metadata_fields: tuple[str, ...] = ()
    bm25: bool = True
    listwise: bool = False
    modality_floor: int = 0
    splits: tuple[str, ...] | None = None
    batch_size: int | None = None
    candidate_image: ImageChoice = "preview"
    lora: bool = False
    lora_options: Mapping[str, Any] = field(default_factory=dict)
    allow_unmatched: bool = False
    label_free: LabelFreeOptions = field(default_factory=LabelFreeOptions)
    prior: str | None = "default"

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata_fields", tuple(self.metadata_fields))
        if self.prior not in PRIORS:
            raise ValueError(f"AdaptOptions.prior must be one of {PRIORS}, got {self.prior!r}")
        if self.splits is not None:
            object.__setattr__(self, "splits", tuple(self.splits))

    def fusion_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``fit_fusion``."""
        return {
            "seed": self.seed,
            "l2": self.l2,
            "pointwise": self.pointwise,
            "metadata_fields": self.metadata_fields,
            "bm25": self.bm25,
            "listwise": self.listwise,
            "modality_floor": self.modality_floor,
        }


#: The label-free run's fusion settings: the shipped default's priors (listwise features, a floor of 2,
#: no BM25, since a pseudo-query cut from a passage shares its words and would teach BM25 too much), and
#: the fit starts from the default and is pulled towards it, the penalty chosen by out-of-fold loss on
#: the pseudo-queries, as the labelled run does. Chosen over a fit from scratch by a rule stated before
#: the results, on dev queries of the five built-in sources (leave-one-task-out default as the prior;
#: ``scripts/labelfree_loto.py --margins none --priors none default``): calibration cells wholly outside
#: +-25% 1 -> 0 (see docs/adaptation.md).
LABEL_FREE_FUSION: Mapping[str, Any] = {
    "listwise": True,
    "modality_floor": 2,
    "bm25": False,
    "prior": "default",
}


#: What :attr:`AdaptOptions.prior` accepts.
PRIORS: tuple[str | None, ...] = ("default", None)


def label_free_options(**changes: Any) -> AdaptOptions:
    """:class:`AdaptOptions` with the label-free run's fusion settings (:data:`LABEL_FREE_FUSION`).

    Example:
        >>> label_free_options(k_text=8).modality_floor
        2
    """
    return replace(AdaptOptions(), **{**LABEL_FREE_FUSION, **changes})


def _options(options: AdaptOptions | None, overrides: Mapping[str, Any], label_free: bool) -> AdaptOptions:
    base = options or (label_free_options() if label_free else AdaptOptions())
    known = {f.name for f in fields(AdaptOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"adapt() got unknown options {unknown}; the options are {sorted(known)}")
    return replace(base, **overrides) if overrides else base


class _Clock:
    """Times each step (``lap``) and says what starts (``say``)."""

    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self.say = progress or (lambda message: logger.info("%s", message))
        self.timings: dict[str, float] = {}
        self.started = self.t = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.timings[step] = round(now - self.t, 3)
        self.t = now

    def close(self, first_stage: float) -> dict[str, float]:
        self.timings["total"] = round(time.perf_counter() - self.started, 3)
        self.timings["total_excluding_first_stage"] = round(self.timings["total"] - first_stage, 3)
        return self.timings


def adapt(
    data: str | os.PathLike[str] | None = None,
    *,
    clicks: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    retriever: Any | None = None,
    embedder: str | tuple[Any, Any] = "starter",
    scorer: str | Scorer = "starter",
    options: AdaptOptions | None = None,
    labels: LabelSet | None = None,
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> AdaptResult:
    """Adapt a reranker to your data and save the folder: from labels, or from the corpus alone.

    With labels: mine hard negatives for each labelled query, train learned fusion, calibrate per
    modality. Without (no ``data``, ``clicks`` or ``labels``): label-free adaptation to the corpus of
    ``retriever`` (:func:`adapt_from_corpus`).

    Args:
        data, clicks: the labels file and an optional click log (see
            :mod:`~mm_rerank_components.adapt.labels`), or ``labels=`` an already loaded
            :class:`~mm_rerank_components.adapt.labels.LabelSet`.
        out: the folder to write (``None``: nothing is saved).
        retriever: your :class:`~mm_rerank_components.retrievers.chroma.ChromaMultiCollectionRetriever`
            (label documents are matched to its records by content, whitespace normalised; one that
            matches nothing is an :class:`~mm_rerank_components.adapt.corpus.UnmatchedLabelError`
            unless ``allow_unmatched``). With labels and no retriever, the labels' documents are
            embedded into a temporary Chroma with ``embedder`` (``"starter"``, ``"hashing"``,
            ``"clip:PATH"`` or a ``(text_fn, image_fn)`` pair).
        scorer: ``"starter"``, ``"fake"``, ``"first-stage"``, ``KIND:PATH`` or any Scorer (a custom one
            must then be passed again to ``load_reranker(folder, scorer=...)``).
        options: an :class:`AdaptOptions` (default: ``AdaptOptions()`` with labels,
            :func:`label_free_options` without); ``**overrides`` change single fields
            (``k_text=8, seed=1``).
        progress: called with a short message as each step starts (the CLI prints them).

    Returns an :class:`AdaptResult`; ``format_report(result.report)`` is the human-readable report.

    Example:
        >>> result = adapt("labels.jsonl", out="my-reranker", scorer="fake")  # doctest: +SKIP
        >>> result = adapt(retriever=retriever, out="my-reranker")  # label-free  # doctest: +SKIP
    """
    label_free = data is None and clicks is None and labels is None
    opts = _options(options, overrides, label_free)
    if label_free:
        return adapt_from_corpus(_needs_retriever(retriever), scorer, opts, progress=progress, out=out)
    clock = _Clock(progress)
    clock.say("reading labels")
    if labels is None:
        labels = load_labels(data, clicks=clicks, splits=opts.splits)
    the_scorer = _labelled_scorer(scorer, opts)
    clock.lap("labels")
    return _adapt_labelled(labels, out, retriever, embedder, the_scorer, opts, clock)


def _needs_retriever(retriever: Any | None) -> Any:
    """The retriever label-free adaptation reads its corpus from; None is an error saying what to give."""
    if retriever is None:
        raise ValueError(
            "give labels (data=..., clicks=... or labels=...) or, for label-free adaptation to your "
            "corpus, the retriever of your database (retriever=...; mm-rerank adapt --db DB)"
        )
    return retriever


def _labelled_scorer(scorer: str | Scorer, opts: AdaptOptions) -> Scorer:
    """The scorer a spec names (or the one given); with ``lora=True`` it must have trainable logits."""
    the_scorer = scorer_from_spec(scorer) if isinstance(scorer, str) else scorer
    if opts.lora and not isinstance(the_scorer, TrainableScorer):
        raise ValueError(
            f"lora=True needs a model scorer to fine-tune (cross-encoder:PATH, vlm:PATH or llm:PATH); "
            f"{the_scorer.name!r} has no trainable logits"
        )
    return the_scorer


def _adapt_labelled(
    labels: LabelSet,
    out: str | os.PathLike[str] | None,
    retriever: Any | None,
    embedder: str | tuple[Any, Any],
    the_scorer: Scorer,
    opts: AdaptOptions,
    clock: _Clock,
) -> AdaptResult:
    """The labelled run after reading the labels: mine, (LoRA), score, check, fit, save."""
    match, mined, mode, where, embedders = _mine_pools(labels, retriever, embedder, opts, clock)
    if not mined.lists:
        raise ValueError(
            "no labelled query could be mined: " + "; ".join(list(mined.skipped_queries.values())[:3])
        )
    lora_report = _maybe_lora(the_scorer, mined, out, opts, clock)
    clock.say(f"scoring {sum(len(m.candidates) for m in mined.lists)} candidates with {the_scorer.name}")
    lists, scoring = score_mined(mined, the_scorer, batch_size=opts.batch_size)
    clock.lap("score")
    _check_modalities(lists, retriever if mode == "database" else None, opts)
    model = _fit(lists, the_scorer, opts, clock)
    report = _report(
        labels, match, mined, mode, where, embedders, (opts.k_text, opts.k_image), scoring, _counts(lists)
    )
    _add_training(report, model, the_scorer, lists)
    report["lora"] = lora_report
    trained_on = {
        "data_sha256": labels.sha256,
        "files": labels.files,
        "queries": len(lists),
        "splits": list(opts.splits) if opts.splits is not None else "all",
        "database": where,
        "embedders": embedders,
        "k_text": opts.k_text,
        "k_image": opts.k_image,
        **report["counts"],
        "mining_routes": report["mining"]["routes"],
    }
    spec = scorer_spec(the_scorer)
    if lora_report is not None and lora_report["adapter"] is not None:
        spec["lora"] = "lora"
    # first-stage work: embedding the documents (temporary database) and the queries' retrieval
    first_stage = clock.timings["retrieve"] + (clock.timings["index"] if mode == "temporary" else 0.0)
    return _finish(model, the_scorer, spec, trained_on, report, out, opts, clock, first_stage)


def _maybe_lora(
    the_scorer: Scorer, mined: MinedSet, out: Any, opts: AdaptOptions, clock: _Clock
) -> dict[str, Any] | None:
    if not opts.lora:
        return None
    clock.say(f"fine-tuning {the_scorer.name} with LoRA on {len(mined.lists)} mined pools")
    report = _lora(the_scorer, mined, Path(out) if out is not None else None, opts.seed, opts.lora_options)
    clock.lap("lora")
    return report


def _check_modalities(lists: Sequence[LabelledList], retriever: Any | None, opts: AdaptOptions) -> None:
    """A modality the database holds but no labelled pool has a positive of is an error: the fitted
    model would know nothing about ranking or calibrating it."""
    if retriever is None:
        return
    counts = retriever.count()
    names = {"text": retriever.text_collection_name, "image": retriever.image_collection_name}
    depth = {"text": opts.k_text, "image": opts.k_image}
    held = {k: counts.get(str(names[k]), 0) for k in names if names[k] is not None and depth[k] > 0}
    held = {k: n for k, n in held.items() if n}
    positives = {"text": 0, "image": 0}
    for item in lists:
        for c, g in zip(item.candidates, item.labels, strict=True):
            if g > 0:
                positives["image" if c.image is not None else "text"] += 1
    missing = [k for k in held if positives.get(k, 0) == 0]
    if missing:
        names = {"text": "passages", "image": "pictures"}
        kinds = " and ".join(names.get(k, k) for k in missing)
        raise AdaptLabelsError(
            f"the database holds {kinds} ({', '.join(f'{held[k]} {names.get(k, k)}' for k in missing)}) but "
            f"no labelled query has one of them among the relevant documents of its pool, so the model "
            f"could neither rank nor calibrate them; label some {kinds}, or adapt without labels "
            "(mm-rerank adapt --db DB --out FOLDER), or keep the default reranker"
        )


class AdaptLabelsError(ValueError):
    """The labels cannot train a reranker for this database (e.g. no positive of a modality it holds)."""


def _fit(
    lists: Sequence[LabelledList],
    the_scorer: Scorer,
    opts: AdaptOptions,
    clock: _Clock,
    prior: FusionModel | None = None,
) -> FusionModel:
    prior = prior if prior is not None else _prior_model(opts, str(the_scorer.name))
    clock.say("training learned fusion" + (" from the default" if prior is not None else ""))
    model = fit_fusion(lists, **opts.fusion_kwargs(), scorer=str(the_scorer.name), prior=prior)
    clock.lap("fusion")
    return model


def _shipped_default() -> FusionModel:
    """The shipped default's model (``starter/data/default_fusion.json``, which ``defaults`` serves), read
    here as a plain :class:`FusionModel`: the prior needs its features and weights, not its serving."""
    import json

    from mm_rerank_components.starter.data_files import DEFAULT_FUSION_FILE, data_path

    source = data_path(DEFAULT_FUSION_FILE)
    return FusionModel.from_dict(json.loads(source.read_text(encoding="utf-8")), source=str(source))


def _prior_model(opts: AdaptOptions, scorer_name: str) -> FusionModel | None:
    """The shipped default's model when ``opts.prior == "default"`` and it was fitted for this scorer."""
    if opts.prior is None:
        return None
    model = _shipped_default()
    if model.calibrator.scorer != scorer_name:
        logger.info(
            "adapt: fitting from scratch: the default was fitted for %s, not %s",
            model.calibrator.scorer,
            scorer_name,
        )
        return None
    return model


def _add_training(
    report: dict[str, Any], model: FusionModel, the_scorer: Scorer, lists: Sequence[LabelledList]
) -> None:
    """The calibration, fusion and top-weight sections of a report."""
    shipped, shipped_probs = _shipped(the_scorer, lists)
    metrics = model.training["train_metrics"]
    metrics["rrf"] = pool_metrics(lists, [_rrf(item) for item in lists])
    if shipped_probs is not None:
        metrics["shipped_calibration"] = pool_metrics(lists, shipped_probs)
    report["calibration"] = {
        m: {**entry, **({"shipped_ece": shipped[m]} if m in shipped else {})}
        for m, entry in model.calibrator.stats.items()
    }
    report.update(
        fusion=model.training,
        top_weights=[(name, round(w, 4)) for name, w in model.weight_table()[:8]],
    )


def _finish(
    model: FusionModel,
    the_scorer: Scorer,
    spec: dict[str, Any],
    trained_on: dict[str, Any],
    report: dict[str, Any],
    out: str | os.PathLike[str] | None,
    opts: AdaptOptions,
    clock: _Clock,
    first_stage: float,
) -> AdaptResult:
    """Save the folder (when ``out``), close the timings and build the result."""
    folder: Path | None = None
    if out is not None:
        clock.say(f"saving the reranker to {out}")
        folder = save_reranker(out, model, scorer_info=spec, trained_on=trained_on)
        clock.lap("save")
    report["timings"] = clock.close(first_stage)
    report["folder"] = str(folder) if folder is not None else None
    base = MultimodalReranker(the_scorer, SigmoidCalibrator(), batch_size=opts.batch_size)
    reranker = LearnedFusionReranker(base, model, picture_queries=picture_query_reranker(base, model))
    return AdaptResult(model, reranker, folder, report)


def _as_corpus(source: Any) -> Corpus:
    if callable(getattr(source, "retrieve_many", None)) and callable(getattr(source, "records", None)):
        return cast(Corpus, source)
    if callable(getattr(source, "retrieve", None)) and hasattr(source, "client"):
        return ChromaCorpus(source)
    raise TypeError(
        f"adapt_from_corpus needs a Corpus (ChromaCorpus, VectorCorpus) or a ChromaMultiCollectionRetriever, "
        f"got {type(source).__name__}"
    )


def adapt_from_corpus(
    corpus: Any,
    scorer: str | Scorer = "starter",
    options: AdaptOptions | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
    prior: FusionModel | None = None,
) -> AdaptResult:
    """Label-free adaptation: pseudo-queries from the corpus, pseudo-labelled through the real first
    stage and the scorer, then the labelled run's learned fusion, calibrated per modality.

    See :mod:`~mm_rerank_components.adapt.corpus` for how the queries and labels are made.

    Args:
        corpus: a :class:`~mm_rerank_components.adapt.corpus.Corpus` (``VectorCorpus`` for vectors in
            memory) or your ``ChromaMultiCollectionRetriever``.
        scorer: any scorer (a name as in :func:`adapt`, or a Scorer: cross-encoder, VLM, remote); it is
            only called through the core's reranker.
        options: default :func:`label_free_options`; ``options.label_free`` sets the pseudo-queries.
        out: the folder to write (``None``: nothing is saved); it loads with ``load_reranker``.
        prior: a model to start from (``fit_fusion(prior=...)``), overriding ``options.prior``.

    Example:
        >>> result = adapt_from_corpus(retriever, "starter", out="my-reranker")  # doctest: +SKIP
        >>> result.reranker.rerank("a red fox", retriever.retrieve("a red fox"))  # doctest: +SKIP
    """
    opts = options or label_free_options()
    source = _as_corpus(corpus)
    the_scorer = scorer_from_spec(scorer) if isinstance(scorer, str) else scorer
    clock = _Clock(progress)
    records, queries = _corpus_queries(source, opts, clock)
    depth = f"k_text={opts.k_text}, k_image={opts.k_image}"
    clock.say(f"retrieving pools for {len(queries)} pseudo-queries ({depth})")
    pools = source.retrieve_many([q.text for q in queries], opts.k_text, opts.k_image)
    clock.lap("retrieve")
    clock.say(f"scoring {sum(len(p) for p in pools)} candidates with {the_scorer.name}")
    lists, stats = _pseudo_lists(queries, pools, the_scorer, opts)
    clock.lap("score")
    if not lists:
        raise ValueError(
            f"none of the {len(queries)} pseudo-queries found its own record in its pool; is the first "
            "stage's embedding the one the database was built with?"
        )
    model = _fit(lists, the_scorer, opts, clock, prior)
    report = _label_free_report(records, queries, lists, stats, opts, source.describe())
    report["scoring"]["scorer"] = str(the_scorer.name)
    _add_training(report, model, the_scorer, lists)
    trained_on = {
        "label_free": True,
        "database": source.describe(),
        "pseudo_queries": len(lists),
        "queries_by_kind": report["pseudo_queries"]["by_kind"],
        "k_text": opts.k_text,
        "k_image": opts.k_image,
        **report["counts"],
    }
    spec = scorer_spec(the_scorer)
    return _finish(model, the_scorer, spec, trained_on, report, out, opts, clock, clock.timings["retrieve"])


def _corpus_queries(source: Corpus, opts: AdaptOptions, clock: _Clock) -> tuple[list[Any], list[PseudoQuery]]:
    clock.say(f"reading the records of {source.describe()}")
    records = source.records()
    queries = pseudo_queries(records, opts.label_free)
    clock.lap("queries")
    if not queries:
        raise ValueError(
            f"{source.describe()}: no record gave a pseudo-query (passages need a sentence of "
            f"{opts.label_free.min_query_words}+ words, pictures a caption or a title with a word)"
        )
    return records, queries


def _pseudo_lists(
    queries: Sequence[PseudoQuery],
    pools: Sequence[Sequence[Candidate]],
    the_scorer: Scorer,
    opts: AdaptOptions,
) -> tuple[list[LabelledList], dict[str, Any]]:
    """Score each pool whose pseudo-query found a positive; drop likely false negatives (GPL)."""
    base = MultimodalReranker(the_scorer, SigmoidCalibrator(), batch_size=opts.batch_size, on_error="keep")
    lists: list[LabelledList] = []
    stats: dict[str, Any] = {
        "without_positive": 0,
        "dropped_negatives": 0,
        "dropped_unlabelled": 0,
        "pairs": 0,
        "failed": 0,
        "errors": [],
    }
    for query, pool in zip(queries, pools, strict=True):
        grades = [int(c.id in query.positives) for c in pool]
        if not any(grades):
            stats["without_positive"] += 1
            continue
        ranked = {r.index: r for r in base.rerank(query.text, list(pool))}
        ok = [i for i in range(len(pool)) if ranked[i].error is None]
        stats["failed"] += len(pool) - len(ok)
        stats["errors"] += [f"{pool[i].id}: {ranked[i].error}" for i in range(len(pool)) if ranked[i].error][
            :2
        ]
        cands = [pool[i] for i in ok]
        raw = [ranked[i].raw_score for i in ok]
        labels = [grades[i] for i in ok]
        keep = drop_likely_false_negatives(cands, raw, labels, opts.label_free.false_negative_margin)
        stats["dropped_negatives"] += len(cands) - len(keep)
        if opts.label_free.unlabelled_modality == "drop":
            kept = labelled_modalities_only([cands[i] for i in keep], [labels[i] for i in keep])
            stats["dropped_unlabelled"] += len(keep) - len(kept)
            keep = [keep[i] for i in kept]
        if not any(labels[i] for i in keep):
            continue
        stats["pairs"] += len(keep)
        lists.append(
            LabelledList(
                query.text, [cands[i] for i in keep], [raw[i] for i in keep], [labels[i] for i in keep]
            )
        )
    stats["errors"] = stats["errors"][:5]
    return lists, stats


def _label_free_report(
    records: Sequence[Any],
    queries: Sequence[PseudoQuery],
    lists: Sequence[LabelledList],
    stats: Mapping[str, Any],
    opts: AdaptOptions,
    where: str,
) -> dict[str, Any]:
    by_kind: dict[str, int] = {}
    for q in queries:
        by_kind[q.kind] = by_kind.get(q.kind, 0) + 1
    record_kinds: dict[str, int] = {}
    for r in records:
        record_kinds[r.kind] = record_kinds.get(r.kind, 0) + 1
    counts = _counts(lists)
    positives = {"text": 0, "image": 0}
    for item in lists:
        for c, g in zip(item.candidates, item.labels, strict=True):
            positives["image" if c.image is not None else "text"] += int(g > 0)
    fallback = sorted(k for k in record_kinds if positives.get(k, 0) == 0)
    if fallback:
        logger.warning(
            "label-free adaptation: no pseudo-labelled positive among the %s records; their calibration "
            "falls back to the pooled map",
            ", ".join(fallback),
        )
    return {
        "mode": "label-free",
        "corpus": {"where": where, "records": dict(sorted(record_kinds.items()))},
        "pseudo_queries": {
            "made": len(queries),
            "by_kind": dict(sorted(by_kind.items())),
            "with_positive_in_pool": len(lists),
            "without_positive_in_pool": stats["without_positive"],
            "with_cross_modal_positives": sum(1 for q in queries if len(q.positives) > 1),
            "dropped_likely_false_negatives": stats["dropped_negatives"],
            "dropped_unlabelled_modality": stats["dropped_unlabelled"],
            "unlabelled_modality": opts.label_free.unlabelled_modality,
            "false_negative_margin": opts.label_free.false_negative_margin,
            "k_text": opts.k_text,
            "k_image": opts.k_image,
        },
        "scoring": {"pairs": stats["pairs"], "failed": stats["failed"], "errors": stats["errors"]},
        "counts": counts,
        "modalities_without_positive": fallback,
    }


def _embedder_names(retriever: Any) -> dict[str, str]:
    from mm_rerank_components.retrievers.chroma import embedder_name

    return {
        "text": embedder_name(retriever.text_embedding_function),
        "image": embedder_name(retriever.image_embedding_function),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return ["  " + line for line in lines]


def format_report(report: Mapping[str, Any]) -> str:
    """The human-readable report of :func:`adapt` (what ``mm-rerank adapt`` prints).

    Example:
        >>> print(format_report(result.report))  # doctest: +SKIP
    """
    label_free = report.get("mode") == "label-free"
    lines = _label_free_lines(report) if label_free else _labelled_lines(report)
    lines += _scoring_lines(report)
    lines += _training_lines(report)
    return "\n".join(lines)


def _label_free_lines(report: Mapping[str, Any]) -> list[str]:
    corpus, pq = report["corpus"], report["pseudo_queries"]
    lines = [
        f"label-free: the corpus of {corpus['where']}: {corpus['records']} records",
        f"pseudo-queries: {pq['made']} made {pq['by_kind']}, {pq['with_cross_modal_positives']} with a "
        f"cross-modal positive; {pq['with_positive_in_pool']} found a positive in their pool "
        f"(k_text={pq['k_text']}, k_image={pq['k_image']}), {pq['without_positive_in_pool']} did not",
        (
            f"teacher filter (GPL): {pq['dropped_likely_false_negatives']} likely false negatives left out "
            f"(margin {pq['false_negative_margin']})"
            if pq["false_negative_margin"] is not None
            else "teacher filter (GPL): off, every negative kept"
        ),
    ]
    lines += _table(
        ["modality", "candidates", "positives"],
        [[m, c["candidates"], c["positives"]] for m, c in report["counts"]["by_modality"].items()],
    )
    for m in report.get("modalities_without_positive", []):
        lines.append(f"FALLBACK: no {m} positive among the pseudo-labels: {m} uses the pooled calibration")
    return lines


def _labelled_lines(report: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    labels = report["labels"]
    lines.append(
        f"labels: {labels['queries']} queries, {labels['documents']} documents "
        f"{labels['documents_by_modality']}, {labels['positives']} positives, "
        f"{labels['labelled_negatives']} labelled negatives"
        + (
            f", {labels['click_lines']} click lines ({labels['click_lines_without_click']} without a click)"
            if labels["click_lines"]
            else ""
        )
    )
    matching = report["matching"]
    lines.append(
        f"documents: {matching['matched_documents']} found in {matching['where']}, "
        f"{matching['unmatched_documents']} unmatched"
    )
    lines += [f"  unmatched {u}" for u in matching["unmatched"]]
    if matching["skipped_queries"]:
        lines.append(f"queries skipped (no relevant document in the database): {matching['skipped_queries']}")
        lines += [f"  {s}" for s in matching["skipped"]]
    mining = report["mining"]
    lines.append(
        f"mining (k_text={mining['k_text']}, k_image={mining['k_image']}): {mining['queries']} queries, "
        f"{mining['queries_without_positive_in_pool']} with no positive in their pool"
    )
    lines += _table(
        [
            "route",
            "candidates",
            "positives",
            "hard negatives",
            "labelled negatives",
            "positives not retrieved",
        ],
        [
            [
                r,
                c["candidates"],
                c["positives"],
                c["hard_negatives"],
                c["labelled_negatives"],
                c["positives_not_retrieved"],
            ]
            for r, c in mining["routes"].items()
        ],
    )
    return lines


def _scoring_lines(report: Mapping[str, Any]) -> list[str]:
    scoring = report["scoring"]
    lines = [
        f"scoring: {scoring['pairs']} pairs with {scoring.get('scorer', '')}, {scoring['failed']} unreadable"
    ]
    return lines + [f"  {e}" for e in scoring["errors"]]


def _fusion_line(fusion: Mapping[str, Any]) -> str:
    prior = fusion.get("prior")
    how = (
        f"from the default, pulled towards it with penalty {prior['strength']:g}, chosen by out-of-fold loss"
        if prior
        else f"l2 {fusion['l2']}"
    )
    return (
        f"fusion: {fusion['queries']} queries, {fusion['pairs']} pairs, loss {fusion['loss']:.4f} after "
        f"{fusion['iterations']} Newton steps (seed {fusion['seed']}, {how})"
    )


def _training_lines(report: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    lines.append("calibration per modality (Platt on out-of-fold fused scores):")
    lines += _table(
        ["modality", "pairs", "positives", "mean predicted", "observed rate", "ECE", "shipped ECE"],
        [
            [
                m,
                c["pairs"],
                c["positives"],
                c.get("mean_probability", float("nan")),
                c.get("positive_rate", float("nan")),
                c.get("ece", float("nan")),
                c.get("shipped_ece", "-"),
            ]
            for m, c in report["calibration"].items()
        ],
    )
    for m, c in report["calibration"].items():
        if c.get("fallback") == "reversed":  # its own map would have reversed the model's order
            lines.append(f"FALLBACK: {m} calibration: {c['map']} (it would reverse the model's order)")
    if report.get("lora"):
        lora = report["lora"]
        losses = ", ".join(
            f"{stage} {' -> '.join(f'{v:.4f}' for v in values)}"
            for stage, values in lora["losses"].items()
            if values
        )
        lines.append(
            f"lora: {lora['scorer']} on {lora['device']}, {lora['pairs']['bce']} labelled candidates, "
            f"{lora['pairs']['pairwise']} pairs; mean loss per epoch: {losses}"
        )
    fusion = report["fusion"]
    metrics = fusion["train_metrics"]
    lines.append(_fusion_line(fusion))
    rows = [["raw score (one scale for all)", *metrics["raw_score"].values()]]
    rows += [["rrf of the routes", *metrics["rrf"].values()]] if "rrf" in metrics else []
    if metrics.get("shipped_calibration"):
        rows.append(["scorer's shipped calibration", *metrics["shipped_calibration"].values()])
    rows.append(["fused (in-sample)", *metrics["fused"].values()])
    if metrics.get("out_of_fold"):
        rows.append(["fused (out-of-fold)", *metrics["out_of_fold"].values()])
    lines += _table(["training queries", *metrics["raw_score"].keys()], rows)
    lines.append("  (recall of the relevant documents inside each pool; held-out quality: mm-rerank eval)")
    lines.append("top weights: " + ", ".join(f"{n} {w:+.3f}" for n, w in report["top_weights"]))
    timings = report["timings"]
    lines.append(
        "time: "
        + ", ".join(
            f"{k} {v:.2f} s" for k, v in timings.items() if k not in ("total", "total_excluding_first_stage")
        )
        + f"; total {timings['total']:.2f} s "
        f"({timings['total_excluding_first_stage']:.2f} s without first-stage embedding)"
    )
    if report.get("folder"):
        lines.append(f"saved: {report['folder']}")
    return lines


def _mine_pools(
    labels: LabelSet,
    retriever: Any | None,
    embedder: str | tuple[Any, Any],
    opts: AdaptOptions,
    clock: _Clock,
) -> tuple[DocMatch, Any, str, str, Any]:
    """Find the label documents (your database, or a temporary one) and mine each query's pools."""
    workdir: str | None = None
    try:
        if retriever is None:
            workdir = tempfile.mkdtemp(prefix="mm-rerank-adapt-")
            retriever = _temporary_retriever(embedder, workdir, opts.candidate_image)
            clock.say(f"embedding {len(labels.docs)} label documents into a temporary Chroma")
            match: DocMatch = index_labels(labels, retriever)
            mode = "temporary"
        else:
            clock.say(f"matching {len(labels.docs)} label documents to the records of {retriever.describe()}")
            match = match_labels(
                labels, ChromaCorpus(retriever).records(), allow_unmatched=opts.allow_unmatched
            )
            mode = "database"
        clock.lap("index")
        depth = f"k_text={opts.k_text}, k_image={opts.k_image}"
        clock.say(f"retrieving pools for {len(labels.queries)} queries ({depth})")
        mined = mine(labels, retriever, match, k_text=opts.k_text, k_image=opts.k_image)
        where = retriever.describe() if mode == "database" else "temporary embedded Chroma"
        embedders = _embedder_names(retriever)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    clock.lap("retrieve")
    return match, mined, mode, where, embedders


def _report(
    labels: LabelSet,
    match: DocMatch,
    mined: Any,
    mode: str,
    where: str,
    embedders: Any,
    depth: tuple[int, int],
    scoring: Any,
    counts: Mapping[str, Any],
) -> dict[str, Any]:
    """The report's labels, matching, mining, scoring and count sections."""
    return {
        "labels": labels.summary(),
        "matching": {
            "mode": mode,
            "where": where,
            "embedders": embedders,
            "matched_documents": len(match.records),
            "unmatched_documents": len(match.unmatched),
            "unmatched": [f"{k}: {why}" for k, why in list(match.unmatched.items())[:10]],
            "skipped_queries": len(mined.skipped_queries),
            "skipped": list(mined.skipped_queries.values())[:10],
        },
        "mining": {
            "k_text": depth[0],
            "k_image": depth[1],
            "queries": len(mined.lists),
            "queries_without_positive_in_pool": sum(
                1 for m in mined.lists if not any(g > 0 for g in m.grades)
            ),
            "routes": mined.route_counts(),
        },
        "scoring": scoring,
        "counts": counts,
    }
