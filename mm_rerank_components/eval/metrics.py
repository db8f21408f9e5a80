"""Retrieval metrics from ranx (Recall@k, nDCG@10, MRR), overall and per modality, plus top-10 shares.

Per-modality recall asks: of the relevant documents *of this modality*, how many does the merged list
put in its top k? (Queries without a relevant document of that modality are left out of that figure.)
The top-10 share is plain counting, not a retrieval metric: the fraction of the top 10 that is images.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from mm_rerank_components.eval.tasks import EvalTask

__all__ = ["METRICS", "PER_QUERY_METRICS", "evaluate_run", "modality_of_doc", "per_query_values"]

METRICS = ("recall@1", "recall@5", "recall@10", "ndcg@10", "mrr", "hit_rate@10")
#: Metrics also kept per query (for paired comparisons) in ``evaluate_run(...)["per_query"]``.
PER_QUERY_METRICS = ("recall@10", "ndcg@10")


def _ranx() -> Any:
    try:
        import ranx
    except ImportError as exc:
        raise ImportError(
            'the evaluation metrics need ranx: pip install "mm-rerank-components[eval]"'
        ) from exc
    return ranx


def modality_of_doc(task: EvalTask, doc_id: str) -> str:
    """``"image"`` for a document with an image (text+image counts as image), else ``"text"``."""
    return "image" if task.docs[doc_id].image is not None else "text"


def _ranx_eval(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str],
    per_query: dict[str, dict[str, float]] | None = None,
) -> dict[str, float]:
    ranx = _ranx()
    # ranx refuses empty rankings; a query whose route returned nothing scores 0 on every metric
    run_fixed = {q: (dict(run[q]) if run.get(q) else {"__none__": 0.0}) for q in qrels}
    ranx_run = ranx.Run(run_fixed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's type-safety chatter
        result = ranx.evaluate(
            ranx.Qrels({q: dict(d) for q, d in qrels.items()}),
            ranx_run,
            list(metrics),
            make_comparable=True,
        )
    if per_query is not None:
        for metric in PER_QUERY_METRICS:
            if metric in ranx_run.scores:
                per_query[metric] = {q: float(v) for q, v in ranx_run.scores[metric].items()}
    if isinstance(result, float | int):
        return {metrics[0]: float(result)}
    return {k: float(v) for k, v in result.items()}


def evaluate_run(
    task: EvalTask, run: Mapping[str, Mapping[str, float]], query_ids: Sequence[str], top: int = 10
) -> dict[str, Any]:
    """All metrics of one run over ``query_ids``.

    Returns ``{"overall": {metric: value}, "text": {"recall@10": ...}, "image": {...},
    "image_share@10": float, "relevant_image_share": float, "queries": int, "per_query": {metric:
    {query_id: value}}}``; ``per_query`` holds :data:`PER_QUERY_METRICS` and ``image_share@10`` for
    every query, which the paired bootstrap compares. ``relevant_image_share`` is the mean share of
    pictures among each query's relevant documents (what a fair top 10 would hold).

    Example:
        >>> evaluate_run(task, run, task.query_ids("test"))["overall"]["recall@10"]  # doctest: +SKIP
        0.61
    """
    if not query_ids:
        raise ValueError("evaluate_run needs at least one query id")
    qrels = {q: task.qrels[q] for q in query_ids}
    per_query: dict[str, dict[str, float]] = {}
    out: dict[str, Any] = {
        "queries": len(query_ids),
        "overall": _ranx_eval(qrels, run, METRICS, per_query),
    }
    for modality in ("text", "image"):
        sub = {
            q: {d: g for d, g in rel.items() if modality_of_doc(task, d) == modality}
            for q, rel in qrels.items()
        }
        sub = {q: rel for q, rel in sub.items() if rel}
        out[modality] = _ranx_eval(sub, run, ("recall@10", "mrr")) if sub else {}
        out[modality]["queries"] = len(sub)
    shares: dict[str, float] = {}
    relevant_shares: dict[str, float] = {}
    for q in query_ids:
        ranked = sorted(run.get(q, {}).items(), key=lambda x: -x[1])[:top]
        if ranked:
            shares[q] = sum(modality_of_doc(task, d) == "image" for d, _ in ranked) / len(ranked)
        rel = [d for d, g in qrels[q].items() if g > 0]
        relevant_shares[q] = sum(modality_of_doc(task, d) == "image" for d in rel) / len(rel)
    out[f"image_share@{top}"] = float(sum(shares.values()) / len(shares)) if shares else 0.0
    out["relevant_image_share"] = float(sum(relevant_shares.values()) / len(relevant_shares))
    per_query[f"image_share@{top}"] = shares
    per_query["relevant_image_share"] = relevant_shares
    out["per_query"] = per_query
    return out


def per_query_values(metrics: Mapping[str, Any], metric: str, query_ids: Sequence[str]) -> list[float]:
    """``evaluate_run(...)["per_query"][metric]`` in the order of ``query_ids`` (0 for a missing query).

    Example:
        >>> per_query_values({"per_query": {"recall@10": {"a": 0.5}}}, "recall@10", ["a", "b"])
        [0.5, 0.0]
    """
    values = metrics["per_query"][metric]
    return [float(values.get(q, 0.0)) for q in query_ids]
