"""Label-free adaptation against the fusions and the leave-one-task-out default, per teacher-filter setting.

For each built-in training task (``eval.sources.DEFAULT_SOURCES``): ``adapt_from_corpus`` on the task's
documents alone (no query, no label) once per ``--margins`` value of
``LabelFreeOptions.false_negative_margin`` (``none`` = the filter off, the shipped setting) and per
``--priors`` value (``default``: the fit starts from, and is pulled towards, the default refitted on
the other four tasks, as shipped; ``none``: from scratch), and that default itself.
Label-free reads no query, so dev and test are both held out; per split and setting it prints the
calibration cells (pairs predicted >= 0.1, query-bootstrap CI of predicted/observed against +-25%),
ECE, and pooled R@10 / nDCG@10 against raw merge, RRF, min-max, z-score and the default (paired
bootstrap over queries, stratified by task). The shipped setting was chosen on dev by: fewer cells
wholly outside +-25%, then fewer ECE misses, then higher pooled R@10 (docs/adaptation.md).

Usage (reads the caches ``mm-rerank eval`` fills; about 6 minutes per setting on 2 busy cores)::

    python scripts/labelfree_loto.py --margins 0 none
    python scripts/labelfree_loto.py --margins none --priors none default
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fit_default import DEFAULT_DEPTH, calibration_cells, cell_lines, fit_without, prepare

from mm_rerank_components.adapt.corpus import VectorCorpus
from mm_rerank_components.adapt.pipeline import adapt_from_corpus, label_free_options
from mm_rerank_components.cli._common import set_threads
from mm_rerank_components.defaults import FIT_OPTIONS
from mm_rerank_components.eval.datasets import default_cache_dir
from mm_rerank_components.eval.embeddings import StarterEmbedder
from mm_rerank_components.eval.learned import PreparedTask, fusion_union
from mm_rerank_components.eval.metrics import evaluate_run, per_query_values
from mm_rerank_components.eval.pipelines import calibrated_run, fusion_run
from mm_rerank_components.eval.stats import pooled
from mm_rerank_components.scorers.starter import StarterScorer

OTHERS = ("raw-merge", "rrf", "minmax", "zscore", "default")


def _margin(value: str) -> float | None:
    return None if value.lower() == "none" else float(value)


def pooled_vs(
    prepared: list[PreparedTask],
    unions: dict[str, Any],
    defaults: dict[str, Any],
    split: str,
    metric: str,
    other: str,
) -> str:
    """``a vs b diff [lo, hi]`` of the label-free row against ``other``, pooled over the tasks."""
    data = {}
    for p in prepared:
        q = p.task.query_ids(split)
        a = evaluate_run(p.task, calibrated_run(unions[p.task.name], None, q), q)
        if other == "default":
            b = evaluate_run(p.task, calibrated_run(defaults[p.task.name], None, q), q)
        else:
            b = evaluate_run(p.task, fusion_run(p.first, other, q, *DEFAULT_DEPTH), q)
        data[p.task.name] = (per_query_values(a, metric, q), per_query_values(b, metric, q))
    r = pooled(data)
    return f"{r['a']:.3f} vs {r['b']:.3f} {r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--margins", nargs="+", default=["0", "none"], help="filter margins ('none' = off)")
    parser.add_argument(
        "--priors",
        nargs="+",
        choices=("none", "default"),
        default=["default"],
        help="start from the leave-one-task-out default ('default', as shipped) or from nothing ('none')",
    )
    args = parser.parse_args()
    set_threads(1)
    prepared = prepare(default_cache_dir(), DEFAULT_DEPTH)
    embedder, scorer = StarterEmbedder(), StarterScorer()
    settings = [(m, pr) for m in args.margins for pr in args.priors]
    unions: dict[tuple[str, str], dict[str, Any]] = {s: {} for s in settings}
    defaults: dict[str, Any] = {}
    for p in prepared:
        started, task = time.perf_counter(), p.task
        titles = {d: Path(str(c.image)).stem for d, c in task.docs.items() if isinstance(c.image, str)}
        corpus = VectorCorpus(
            list(task.docs.values()), p.first.vectors(), embedder.embed_texts, titles=titles
        )
        qids = task.query_ids("all")
        default = fit_without(prepared, p, FIT_OPTIONS)
        defaults[task.name] = fusion_union(default, p, "starter", qids, *DEFAULT_DEPTH)
        for margin, prior in settings:
            opts = label_free_options(k_text=DEFAULT_DEPTH[0], k_image=DEFAULT_DEPTH[1])
            free = dataclasses.replace(opts.label_free, false_negative_margin=_margin(margin))
            model = adapt_from_corpus(
                corpus,
                scorer,
                dataclasses.replace(opts, label_free=free, prior=None),  # never the shipped default
                prior=default if prior == "default" else None,
            ).model
            unions[margin, prior][task.name] = fusion_union(model, p, "starter", qids, *DEFAULT_DEPTH)
            chosen = model.training.get("prior")
            if chosen:
                print(f"{task.name}: margin {margin}, from the default: penalty {chosen['strength']:g}")
        print(f"{task.name}: {time.perf_counter() - started:.0f} s", flush=True)
    for split in ("dev", "test"):
        for margin, prior in settings:
            found = calibration_cells(prepared, unions[margin, prior], split)
            outside = sum(c["verdict"] == "missed" for c in found)
            ece = sum(c["ece"] > 0.03 for c in found)
            where = f"{split}, margin {margin}, prior {prior}"
            print(f"== {where}: cells wholly outside {outside}, ECE misses {ece}")
            for line in cell_lines(found):
                print(line)
            for metric in ("recall@10", "ndcg@10"):
                parts = [
                    f"vs {o} {pooled_vs(prepared, unions[margin, prior], defaults, split, metric, o)}"
                    for o in OTHERS
                ]
                print(f"  pooled {metric}: " + "; ".join(parts), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
