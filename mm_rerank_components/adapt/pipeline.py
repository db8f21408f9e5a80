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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mm_rerank_components.adapt.features import RRF_K
from mm_rerank_components.adapt.folder import save_reranker, scorer_spec
from mm_rerank_components.adapt.fusion import (
    FusionModel,
    LabelledList,
    LearnedFusionReranker,
    fit_fusion,
    pool_metrics,
)
from mm_rerank_components.adapt.labels import LabelSet, load_labels
from mm_rerank_components.adapt.mining import DocMatch, MinedSet, index_labels, match_documents, mine
from mm_rerank_components.calibration import SigmoidCalibrator, expected_calibration_error
from mm_rerank_components.reranker import MultimodalReranker
from mm_rerank_components.scorers.base import Scorer

__all__ = ["SCORER_NAMES", "AdaptResult", "adapt", "format_report", "score_mined", "scorer_by_name"]

logger = logging.getLogger(__name__)

ImageChoice = Literal["original", "preview"]
#: Scorers ``adapt`` builds by name (the CLI's ``--scorer``), plus ``KIND:PATH`` for a local model folder.
SCORER_NAMES = ("starter", "fake", "first-stage")
#: Model scorers named ``KIND:PATH`` (a local model folder, loaded with ``local_files_only=True``).
MODEL_SCORER_KINDS = ("cross-encoder", "vlm", "llm")


def _model_spec(name: str) -> tuple[str, Path] | None:
    kind, sep, path = name.partition(":")
    if sep and kind in MODEL_SCORER_KINDS and path:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ValueError(f"scorer {name!r}: {folder} is not a model folder")
        return kind, folder.resolve()
    return None


def scorer_by_name(name: str) -> Scorer:
    """``"starter"`` (the offline starter models), ``"fake"`` (model-free, for tests), ``"first-stage"``
    (the retrieval similarity itself: fusion over first-stage signals only, no second model), or a local
    model folder: ``"cross-encoder:PATH"``, ``"vlm:PATH"`` (VLM yes/no), ``"llm:PATH"`` (LLM yes/no).

    Example:
        >>> scorer_by_name("fake").name
        'fake'
    """
    model = _model_spec(name)
    if model is not None:
        from mm_rerank_components.adapt.folder import SCORER_BUILDERS

        return SCORER_BUILDERS[model[0]]({"model": str(model[1])}, name)
    if name == "fake":
        from mm_rerank_components.scorers.fake import FakeScorer

        return FakeScorer()
    if name == "first-stage":
        from mm_rerank_components.eval.pipelines import FirstStageScorer

        return FirstStageScorer()
    if name == "starter":
        from mm_rerank_components.scorers.starter import StarterScorer

        return StarterScorer()
    raise ValueError(
        f"unknown scorer {name!r}; choose one of {', '.join(SCORER_NAMES)}, KIND:PATH with KIND one of "
        f"{', '.join(MODEL_SCORER_KINDS)}, or pass a Scorer"
    )


def _spec_of(scorer: Scorer, requested: str | Scorer) -> dict[str, Any]:
    """What the folder records about the scorer (a model folder's path for ``KIND:PATH`` scorers)."""
    model = _model_spec(requested) if isinstance(requested, str) else None
    if model is None:
        return scorer_spec(scorer)
    return {"kind": model[0], "name": str(scorer.name), "settings": {"model": str(model[1])}}


def _lora(
    scorer: Scorer, mined: MinedSet, out: Path | None, seed: int, options: Mapping[str, Any]
) -> dict[str, Any]:
    """LoRA-tune a model scorer on the mined pools (BCE, then pairwise on the hard negatives)."""
    import dataclasses

    from mm_rerank_components.adapt.lora import LoraExample, lora_finetune
    from mm_rerank_components.media import ImageLoadError, load_image
    from mm_rerank_components.types import Candidate, Query

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


def adapt(
    data: str | os.PathLike[str] | None = None,
    *,
    clicks: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    retriever: Any | None = None,
    embedder: str | tuple[Any, Any] = "starter",
    scorer: str | Scorer = "starter",
    k_text: int = 16,
    k_image: int = 16,
    seed: int = 0,
    l2: float = 0.01,
    pointwise: float = 0.2,
    metadata_fields: Sequence[str] = (),
    listwise: bool = False,
    modality_floor: int = 0,
    splits: Sequence[str] | None = None,
    batch_size: int | None = None,
    candidate_image: ImageChoice = "preview",
    lora: bool = False,
    lora_options: Mapping[str, Any] | None = None,
    labels: LabelSet | None = None,
    progress: Callable[[str], None] | None = None,
) -> AdaptResult:
    """Adapt a reranker to your data: mine hard negatives, train learned fusion, save the folder.

    Args:
        data, clicks: the labels file and an optional click log (see
            :mod:`~mm_rerank_components.adapt.labels`), or ``labels=`` an already loaded
            :class:`~mm_rerank_components.adapt.labels.LabelSet`.
        out: the folder to write (``None``: nothing is saved).
        retriever: your :class:`~mm_rerank_components.retrievers.chroma.ChromaMultiCollectionRetriever`
            (its database holds the documents; label documents are matched to records by content).
            Without one, the labels' documents are embedded into a temporary Chroma with ``embedder``
            (``"starter"``, ``"hashing"``, ``"clip:PATH"`` or a ``(text_fn, image_fn)`` pair).
        scorer: ``"starter"``, ``"fake"``, ``"first-stage"`` or any Scorer (a custom one must then be
            passed again to ``load_reranker(folder, scorer=...)``).
        k_text, k_image: first-stage depth per route (use the depth you will serve with).
        seed, l2, pointwise, metadata_fields, listwise, modality_floor: see
            :func:`~mm_rerank_components.adapt.fit_fusion` (the listwise features and the modality floor
            are the label-free default's priors; in domain, measured on the built-in tasks' dev/test
            halves, the listwise features did not help, so both are off by default).
        splits: train only on queries of these splits (e.g. ``("dev",)``); default: every query.
        batch_size: the reranker's batch cap while scoring.
        candidate_image: for the temporary database, what the scorer reads for a picture: the stored
            ``"preview"`` (default, as ``mm-rerank query`` does) or the ``"original"`` file.
        lora: first fine-tune a model scorer (``cross-encoder:PATH``, ``vlm:PATH``, ``llm:PATH`` or such a
            Scorer) with LoRA on the mined pools (:func:`~mm_rerank_components.adapt.lora.lora_finetune`:
            BCE, then pairwise on the hard negatives), then train fusion on the tuned scores. The
            adapter is saved in ``out/lora`` and put back by ``load_reranker``. ``lora_options`` go to
            ``lora_finetune`` (``rank``, ``bce_epochs``, ``pairwise_epochs``, ``learning_rate``, ...).
        progress: called with a short message as each step starts (the CLI prints them).

    Returns an :class:`AdaptResult`; ``format_report(result.report)`` is the human-readable report.

    Example:
        >>> result = adapt("labels.jsonl", out="my-reranker", scorer="fake")  # doctest: +SKIP
        >>> result.report["mining"]["routes"]  # doctest: +SKIP
    """
    say = progress or (lambda message: logger.info("%s", message))
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def lap(step: str, since: float) -> float:
        now = time.perf_counter()
        timings[step] = round(now - since, 3)
        return now

    say("reading labels")
    if labels is None:
        labels = load_labels(data, clicks=clicks, splits=splits)
    the_scorer = scorer_by_name(scorer) if isinstance(scorer, str) else scorer
    if lora and not callable(getattr(the_scorer, "logits", None)):
        raise ValueError(
            f"lora=True needs a model scorer to fine-tune (cross-encoder:PATH, vlm:PATH or llm:PATH); "
            f"{the_scorer.name!r} has no trainable logits"
        )
    t = lap("labels", started)
    pools = _mine_pools(labels, retriever, embedder, candidate_image, k_text, k_image, say, lap)
    match, mined, mode, where, embedders = pools
    t = time.perf_counter()
    if not mined.lists:
        raise ValueError(
            "no labelled query could be mined: " + "; ".join(list(mined.skipped_queries.values())[:3])
        )
    lora_report: dict[str, Any] | None = None
    if lora:
        say(f"fine-tuning {the_scorer.name} with LoRA on {len(mined.lists)} mined pools")
        lora_report = _lora(
            the_scorer, mined, Path(out) if out is not None else None, seed, lora_options or {}
        )
        t = lap("lora", t)
    say(f"scoring {sum(len(m.candidates) for m in mined.lists)} candidates with {the_scorer.name}")
    lists, scoring = score_mined(mined, the_scorer, batch_size=batch_size)
    t = lap("score", t)
    say("training learned fusion")
    model = fit_fusion(
        lists,
        seed=seed,
        l2=l2,
        pointwise=pointwise,
        metadata_fields=metadata_fields,
        listwise=listwise,
        modality_floor=modality_floor,
        scorer=str(the_scorer.name),
    )
    t = lap("fusion", t)
    shipped, shipped_probs = _shipped(the_scorer, lists)
    metrics = model.training["train_metrics"]
    metrics["rrf"] = pool_metrics(lists, [_rrf(item) for item in lists])
    if shipped_probs is not None:
        metrics["shipped_calibration"] = pool_metrics(lists, shipped_probs)
    counts = _counts(lists)
    report = _report(labels, match, mined, mode, where, embedders, (k_text, k_image), scoring, counts)
    report["calibration"] = {
        m: {**entry, **({"shipped_ece": shipped[m]} if m in shipped else {})}
        for m, entry in model.calibrator.stats.items()
    }
    report.update(
        lora=lora_report,
        fusion=model.training,
        top_weights=[(name, round(w, 4)) for name, w in model.weight_table()[:8]],
    )
    folder: Path | None = None
    if out is not None:
        say(f"saving the reranker to {out}")
        trained_on = {
            "data_sha256": labels.sha256,
            "files": labels.files,
            "queries": len(lists),
            "splits": list(splits) if splits is not None else "all",
            "database": where,
            "embedders": embedders,
            "k_text": k_text,
            "k_image": k_image,
            **counts,
            "mining_routes": report["mining"]["routes"],
        }
        spec = _spec_of(the_scorer, scorer)
        if lora_report is not None and lora_report["adapter"] is not None:
            spec["lora"] = "lora"
        folder = save_reranker(out, model, scorer_info=spec, trained_on=trained_on)
        t = lap("save", t)
    timings["total"] = round(time.perf_counter() - started, 3)
    # first-stage work: embedding the documents (temporary database) and the queries' retrieval
    first_stage = timings["retrieve"] + (timings["index"] if mode == "temporary" else 0.0)
    timings["total_excluding_first_stage"] = round(timings["total"] - first_stage, 3)
    report["timings"] = timings
    report["folder"] = str(folder) if folder is not None else None
    reranker = LearnedFusionReranker(
        MultimodalReranker(the_scorer, SigmoidCalibrator(), batch_size=batch_size), model
    )
    return AdaptResult(model, reranker, folder, report)


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
    scoring = report["scoring"]
    lines.append(
        f"scoring: {scoring['pairs']} pairs with {scoring['scorer']}, {scoring['failed']} unreadable"
    )
    lines += [f"  {e}" for e in scoring["errors"]]
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
    lines.append(
        f"fusion: {fusion['queries']} queries, {fusion['pairs']} pairs, loss {fusion['loss']:.4f} after "
        f"{fusion['iterations']} Newton steps (seed {fusion['seed']}, l2 {fusion['l2']})"
    )
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
    return "\n".join(lines)


def _mine_pools(
    labels: LabelSet,
    retriever: Any | None,
    embedder: str | tuple[Any, Any],
    candidate_image: ImageChoice,
    k_text: int,
    k_image: int,
    say: Callable[[str], None],
    lap: Callable[[str, float], float],
) -> tuple[DocMatch, Any, str, str, Any]:
    """Find the label documents (your database, or a temporary one) and mine each query's pools."""
    t = time.perf_counter()
    workdir: str | None = None
    try:
        if retriever is None:
            workdir = tempfile.mkdtemp(prefix="mm-rerank-adapt-")
            retriever = _temporary_retriever(embedder, workdir, candidate_image)
            say(f"embedding {len(labels.docs)} label documents into a temporary Chroma")
            match: DocMatch = index_labels(labels, retriever)
            mode = "temporary"
        else:
            say(f"matching {len(labels.docs)} label documents to the records of {retriever.describe()}")
            match = match_documents(labels, retriever)
            mode = "database"
        t = lap("index", t)
        say(f"retrieving pools for {len(labels.queries)} queries (k_text={k_text}, k_image={k_image})")
        mined = mine(labels, retriever, match, k_text=k_text, k_image=k_image)
        where = retriever.describe() if mode == "database" else "temporary embedded Chroma"
        embedders = _embedder_names(retriever)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    lap("retrieve", t)
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
