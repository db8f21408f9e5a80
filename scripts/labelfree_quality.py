"""Held-out quality of label-free adaptation on built-in tasks (no label of the task is used to train).

For each task: the corpus (its documents, embedded with the starter first stage, cached) becomes a
``VectorCorpus``; ``adapt_from_corpus`` trains on pseudo-queries only; the task's *test* queries then
rank their first-stage pools (k_text = k_image = 16) with raw-merge, RRF, min-max, z-score, the shipped
default and the label-free model. Paired bootstrap over queries (eval/stats.py), calibration-in-the-large
among pairs predicted >= 0.1 per task x modality (eval/targets.citl_interval).

    python scripts/labelfree_quality.py [--tasks gcompris-explore wesnoth-units] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from adapt_speed import _metrics, _order, _route_scores

from mm_rerank_components import MultimodalReranker
from mm_rerank_components.adapt.corpus import LabelFreeOptions, VectorCorpus
from mm_rerank_components.adapt.pipeline import adapt_from_corpus, label_free_options
from mm_rerank_components.calibration import SigmoidCalibrator

FUSIONS = ("raw-merge", "rrf", "minmax", "zscore")
#: metadata fields the built-in tasks use for "this passage and this picture are one item"
PAIR_FIELDS = ("stamp", "item", "unit", "building", "species")


def _task(name: str) -> Any:
    from mm_rerank_components.eval import tasks

    return {
        "gcompris-explore": tasks.gcompris_explore_task,
        "wesnoth-units": tasks.wesnoth_units_task,
        "tuxpaint-mixed": tasks.tuxpaint_mixed_task,
    }[name]()


def _corpus(task: Any, embedder: Any, cache: Path) -> VectorCorpus:
    from mm_rerank_components.eval.embeddings import cached_embeddings

    docs = list(task.docs.values())
    texts = [d for d in docs if d.image is None]
    images = [d for d in docs if d.image is not None]
    vectors: dict[str, Any] = {}
    if texts:
        vectors.update(
            zip(
                [d.id for d in texts],
                cached_embeddings(embedder, "text", [d.text for d in texts], cache),
                strict=True,
            )
        )
    if images:
        vectors.update(
            zip(
                [d.id for d in images],
                cached_embeddings(embedder, "image", [d.image for d in images], cache),
                strict=True,
            )
        )
    titles = {d.id: Path(str(d.image)).stem for d in images}
    return VectorCorpus(docs, vectors, lambda qs: embedder.embed_texts(list(qs)), titles=titles)


def run_task(name: str, scorer: Any, embedder: Any, cache: Path, k: int, options: Any) -> dict[str, Any]:
    from mm_rerank_components.defaults import load_default_model

    task = _task(name)
    corpus = _corpus(task, embedder, cache)
    start = time.perf_counter()
    result = adapt_from_corpus(corpus, scorer, options)
    train_s = time.perf_counter() - start
    default = load_default_model()
    base = MultimodalReranker(scorer, SigmoidCalibrator())
    qids = task.query_ids("test")
    pools = corpus.retrieve_many([task.queries[q] for q in qids], k, k)
    per: dict[str, list[tuple[float, float]]] = {p: [] for p in (*FUSIONS, "default", "label-free")}
    pairs: dict[str, list[tuple[str, str, float, int]]] = {"default": [], "label-free": []}
    for qid, pool in zip(qids, pools, strict=True):
        query = task.queries[qid]
        raw = [r.raw_score for r in sorted(base.rerank(query, pool), key=lambda r: r.index)]
        ids = [c.id for c in pool]
        rel = task.qrels[qid]
        scores = {f: _route_scores(pool, f) for f in FUSIONS}
        scores["default"] = list(default.predict(query, pool, raw))
        scores["label-free"] = list(result.model.predict(query, pool, raw))
        for p, values in scores.items():
            per[p].append(_metrics(_order(ids, [float(v) for v in values]), rel))
        for p in pairs:
            for c, v in zip(pool, scores[p], strict=True):
                kind = "image" if c.image is not None else "text"
                pairs[p].append((qid, kind, float(v), int(rel.get(c.id, 0) > 0)))
    return {
        "task": name,
        "queries": len(qids),
        "train_s": round(train_s, 1),
        "per_query": per,
        "pairs": pairs,
        "report": {k2: result.report[k2] for k2 in ("pseudo_queries", "counts", "calibration")},
    }


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    from mm_rerank_components.eval.stats import paired_bootstrap
    from mm_rerank_components.eval.targets import citl_interval

    out: dict[str, Any] = {}
    sets = [(r["task"], [r]) for r in results] + [("pooled", results)]
    for label, chosen in sets:
        groups = [r["task"] for r in chosen for _ in range(r["queries"])]
        entry: dict[str, Any] = {"queries": len(groups)}
        for m, metric in enumerate(("recall@10", "ndcg@10")):
            vals = {p: [v[m] for r in chosen for v in r["per_query"][p]] for p in chosen[0]["per_query"]}
            entry[metric] = {p: float(np.mean(v)) for p, v in vals.items()}
            for ref in (*FUSIONS, "default"):
                b = paired_bootstrap(vals["label-free"], vals[ref], groups=groups)
                entry[metric][f"vs {ref}"] = {k: b[k] for k in ("diff", "lo", "hi", "verdict")}
        if label != "pooled":
            for row in ("default", "label-free"):
                for kind in ("text", "image"):
                    sel = [x for x in chosen[0]["pairs"][row] if x[1] == kind]
                    ci = citl_interval([x[2] for x in sel], [x[3] for x in sel], [x[0] for x in sel])
                    conf = [x for x in sel if x[2] >= 0.1]
                    entry[f"citl {row} {kind}"] = {
                        "ratio": (sum(x[2] for x in conf) / max(1, sum(x[3] for x in conf)))
                        if conf
                        else float("nan"),
                        "ratio_lo": 1 + ci["lo"],
                        "ratio_hi": 1 + ci["hi"],
                        "pairs": len(conf),
                    }
        out[label] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["gcompris-explore", "wesnoth-units"])
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--max-queries", type=int, default=600)
    parser.add_argument("--margin", type=float, default=0.0, help="teacher filter margin; < 0: off")
    parser.add_argument("--no-pair-fields", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/labelfree_quality.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from mm_rerank_components.eval.embeddings import StarterEmbedder
    from mm_rerank_components.scorers.starter import StarterScorer

    scorer, embedder = StarterScorer(), StarterEmbedder()
    cache = Path(os.environ.get("MM_RERANK_CACHE", ".cache/data")) / "embeddings"
    options = label_free_options(
        k_text=args.k,
        k_image=args.k,
        label_free=LabelFreeOptions(
            max_queries=args.max_queries,
            pair_fields=() if args.no_pair_fields else PAIR_FIELDS,
            false_negative_margin=None if args.margin < 0 else args.margin,
        ),
    )
    results = [run_task(t, scorer, embedder, cache, args.k, options) for t in args.tasks]
    summary = summarise(results)
    print(f"load {os.getloadavg()[0]:.2f}; label-free options: {options}")
    for r in results:
        print(f"{r['task']}: trained in {r['train_s']} s on {r['report']['pseudo_queries']}")
    for label, entry in summary.items():
        print(f"\n{label} ({entry['queries']} test queries)")
        for metric in ("recall@10", "ndcg@10"):
            t = entry[metric]
            print(f"  {metric}: " + ", ".join(f"{p} {t[p]:.3f}" for p in (*FUSIONS, "default", "label-free")))
            for ref in (*FUSIONS, "default"):
                v = t[f"vs {ref}"]
                print(
                    f"    label-free vs {ref}: {v['diff']:+.3f} "
                    f"[{v['lo']:+.3f}, {v['hi']:+.3f}] {v['verdict']}"
                )
        for key, v in entry.items():
            if key.startswith("citl"):
                print(
                    f"  {key}: predicted/observed {v['ratio']:.2f} "
                    f"[{v['ratio_lo']:.2f}, {v['ratio_hi']:.2f}] ({v['pairs']} pairs >= 0.1)"
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    slim = [{k: v for k, v in r.items() if k not in ("per_query", "pairs")} for r in results]
    args.out.write_text(json.dumps({"summary": summary, "runs": slim}, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
