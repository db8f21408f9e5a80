"""Learned rows of the evaluation: the label-free product default and the adapted reranker.

Both are learned fusion (:mod:`mm_rerank_components.adapt`) over the scorer's raw score and the
routes' signals; they differ only in what they are fitted on, and neither is ever measured on a
query it was fitted on:

* ``default`` (the product default, no labels from the user): on a built-in task it is **refitted
  leave-one-task-out**, on every query of the *other* built-in tasks, with the same settings as the
  shipped file (:func:`mm_rerank_components.defaults.fit_default_model`); on your own data (which
  the shipped file never saw) it is the shipped model itself.
* ``adapted``: ``fit_fusion`` with its own defaults on the task's own dev queries, starting from the
  ``default`` row's model and pulled towards it (``prior=``, as ``mm-rerank adapt`` starts from the
  shipped default), measured on its test queries (what ``mm-rerank adapt`` does for a user who holds
  out a test set).

Example:
    >>> rows = learned_rows(prepared, "starter", 16, 16)  # doctest: +SKIP
    >>> sorted(rows)  # doctest: +SKIP
    ['adapted', 'default']
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from mm_rerank_components.eval.pipelines import FirstStage, ScoredUnion
from mm_rerank_components.eval.sources import DEFAULT_SOURCES
from mm_rerank_components.eval.tasks import EvalTask
from mm_rerank_components.types import Candidate, Modality

logger = logging.getLogger(__name__)

__all__ = [
    "BUILTIN_TASKS",
    "PreparedTask",
    "adapted_prior",
    "fusion_union",
    "label_free_union",
    "labelled_lists",
    "learned_rows",
]

#: Tasks the shipped default was fitted on (a held-out measurement must refit without them).
#: The built-in tasks (the default is refitted leave-one-task-out on these).
#: The tasks the default is refitted leave-one-task-out on; any other task gets the shipped default.
BUILTIN_TASKS = DEFAULT_SOURCES


@dataclass
class PreparedTask:
    """A task with its first stage and each scorer's raw scores on the deepest union scored."""

    task: EvalTask
    first: FirstStage
    scored: dict[str, ScoredUnion]


def _candidates(prepared: PreparedTask, qid: str, k_text: int, k_image: int) -> list[Candidate]:
    return [
        replace(prepared.task.docs[d], source=route, retrieval_score=score)
        for d, route, score in prepared.first.union(qid, k_text, k_image)
    ]


def labelled_lists(
    prepared: PreparedTask, scorer: str, query_ids: Sequence[str], k_text: int, k_image: int
) -> list[Any]:
    """One :class:`~mm_rerank_components.adapt.LabelledList` per query: its union, raw scores, labels."""
    from mm_rerank_components.adapt import LabelledList

    scored = prepared.scored[scorer].restrict(prepared.first, k_text, k_image)
    out = []
    for qid in query_ids:
        candidates = _candidates(prepared, qid, k_text, k_image)
        raw = [s for _, _, s in scored.items[qid]]
        labels = [prepared.task.qrels[qid].get(c.id, 0) for c in candidates]
        out.append(
            LabelledList(prepared.task.queries[qid], candidates, raw, labels, group=prepared.task.name)
        )
    return out


def fusion_union(
    model: Any,
    prepared: PreparedTask,
    scorer: str,
    query_ids: Sequence[str],
    k_text: int,
    k_image: int,
    *,
    routes: bool = True,
) -> ScoredUnion:
    """The model's calibrated probabilities on each query's union, as a ``ScoredUnion``.

    ``routes=False`` hands the model the same candidates without ``source`` and ``retrieval_score``
    (what an HTTP client or a list of nodes a user built carries).
    """
    from mm_rerank_components.adapt.fusion import strip_routes

    scored = prepared.scored[scorer].restrict(prepared.first, k_text, k_image)
    items: dict[str, list[tuple[str, Modality, float]]] = {}
    for qid in query_ids:
        candidates = _candidates(prepared, qid, k_text, k_image)
        raw = [s for _, _, s in scored.items[qid]]
        given = candidates if routes else strip_routes(candidates)
        probs = model.predict(prepared.task.queries[qid], given, raw)
        items[qid] = [(c.id, c.modality, float(p)) for c, p in zip(candidates, probs, strict=True)]
    return ScoredUnion(f"fusion:{scorer}", items)


def _fit(lists: Sequence[Any], scorer_name: str, row: str, prior: Any = None) -> Any:
    if row == "default":
        from mm_rerank_components.defaults import fit_default_model

        return fit_default_model(lists, scorer=scorer_name)
    from mm_rerank_components.adapt import fit_fusion

    # as `mm-rerank adapt` does: from the default (here the one that never saw this task) when there is one
    return fit_fusion(lists, scorer=scorer_name, seed=0, prior=prior)


def adapted_prior(default: Any, scorer_name: str) -> Any:
    """The model the ``adapted`` row starts from: the task's ``default`` row when it was fitted for this
    scorer (as ``mm-rerank adapt`` does), else ``None`` (a fit from scratch).

    Example:
        >>> adapted_prior(None, "starter") is None
        True
    """
    if default is None or default.calibrator.scorer != scorer_name:
        return None
    return default


def learned_rows(
    target: PreparedTask,
    everything: Sequence[PreparedTask],
    scorer: str,
    k_text: int,
    k_image: int,
    *,
    train_depth: tuple[int, int] | None = None,
    models: dict[tuple[str, str], Any] | None = None,
) -> dict[str, ScoredUnion]:
    """``{"default": ..., "adapted": ...}`` probabilities on ``target``'s dev and test queries.

    ``train_depth`` is the ``(k_text, k_image)`` the models are fitted at (default: the measured
    depth); ``models`` caches fitted models across depths, keyed by (row, task).
    """
    from mm_rerank_components.defaults import load_default_model

    kt, ki = train_depth or (k_text, k_image)
    cache = models if models is not None else {}
    task = target.task
    qids = task.query_ids("all")
    name = target.scored[scorer].scorer
    out: dict[str, ScoredUnion] = {}
    key = ("default", task.name)
    if key not in cache:
        if task.name in BUILTIN_TASKS:
            others = [p for p in everything if p.task.name in BUILTIN_TASKS and p.task.name != task.name]
            if not others:
                logger.warning(
                    "%s: no other built-in task to fit the default on, so no held-out default row; "
                    "run the built-in tasks together",
                    task.name,
                )
                cache[key] = None
            else:
                lists = [
                    x for p in others for x in labelled_lists(p, scorer, p.task.query_ids("all"), kt, ki)
                ]
                logger.info(
                    "%s: default refitted on %s (leave-one-task-out)",
                    task.name,
                    [p.task.name for p in others],
                )
                cache[key] = _fit(lists, name, "default")
        else:
            cache[key] = load_default_model()
    if cache[key] is not None:
        out["default"] = fusion_union(cache[key], target, scorer, qids, k_text, k_image)
        out["default-no-routes"] = fusion_union(
            cache[key], target, scorer, qids, k_text, k_image, routes=False
        )
    key = ("adapted", task.name)
    if key not in cache:
        lists = labelled_lists(target, scorer, task.query_ids("dev"), kt, ki)
        cache[key] = _fit(lists, name, "adapted", adapted_prior(cache.get(("default", task.name)), name))
    out["adapted"] = fusion_union(cache[key], target, scorer, qids, k_text, k_image)
    out["adapted-no-routes"] = fusion_union(cache[key], target, scorer, qids, k_text, k_image, routes=False)
    return out


def label_free_union(
    target: PreparedTask,
    scorer: Any,
    embed_queries: Any,
    scorer_name: str,
    k_text: int,
    k_image: int,
    models: dict[tuple[str, str], Any] | None = None,
) -> ScoredUnion:
    """The label-free adapted row: ``adapt_from_corpus`` on the task's documents alone (no labels, no
    queries), then its model on the task's dev and test queries.

    The corpus is the task's documents with their first-stage vectors; a picture's title is its file
    stem, as ``ingest`` stores it. ``embed_queries`` embeds pseudo-query texts for both routes. As
    ``mm-rerank adapt --db`` starts from the shipped default, this row starts from the task's own
    ``default`` row in ``models`` (:func:`learned_rows`; for a built-in task, the default that never
    saw it), never from the shipped file, which was fitted on every built-in task. Without a default
    row (or for another scorer) it fits from scratch.
    """
    from pathlib import Path

    from mm_rerank_components.adapt.corpus import VectorCorpus
    from mm_rerank_components.adapt.pipeline import adapt_from_corpus, label_free_options

    task = target.task
    key = ("label-free", task.name)
    cache = models if models is not None else {}
    if key not in cache:
        vectors = target.first.vectors()
        if not vectors:
            raise ValueError(
                f"{task.name}: the first stage kept no document vectors; use compute_first_stage"
            )
        titles = {d: Path(str(c.image)).stem for d, c in task.docs.items() if isinstance(c.image, str)}
        corpus = VectorCorpus(list(task.docs.values()), vectors, embed_queries, titles=titles)
        options = label_free_options(k_text=k_text, k_image=k_image, prior=None)  # never the shipped file
        # the name of the scorer behind these scores, as learned_rows reads it for the adapted row
        prior = adapted_prior(cache.get(("default", task.name)), target.scored[scorer_name].scorer)
        cache[key] = adapt_from_corpus(corpus, scorer, options, prior=prior).model
    return fusion_union(cache[key], target, scorer_name, task.query_ids("all"), k_text, k_image)


def training_summary(models: Mapping[tuple[str, str], Any]) -> dict[str, Any]:
    """What each fitted model saw (queries, pairs, weights) and, for a fit that started from a prior,
    the penalty cross-validation chose, for results.json."""
    out: dict[str, Any] = {}
    for (row, task), model in models.items():
        if model is None:
            continue
        training = dict(model.training)
        entry: dict[str, Any] = {
            "queries": training.get("queries"),
            "pairs": training.get("pairs"),
            "top_weights": model.weight_table()[:8],
        }
        prior = training.get("prior")
        if isinstance(prior, dict):
            entry["prior_strength"] = prior.get("strength")
        out[f"{row}/{task}"] = entry
    return out
