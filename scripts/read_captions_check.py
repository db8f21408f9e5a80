"""Captioned pictures, leave-one-task-out: read as pictures only (the default) vs ``read_captions=True``.

The default is refitted on every built-in task but the one measured (as ``mm-rerank eval`` does), then
scores that task's test queries with its pictures carrying a caption (text+image documents), once as
shipped (a captioned picture read as a picture) and once with the caption also read as a passage
(:meth:`~mm_rerank_components.adapt.FusionModel.caption_probabilities`, the larger probability wins).
Three captioned variants:

* ``tuxpaint-fr``: each Tux Paint picture carries its French caption (the queries are English: a
  cross-language control, where the caption should change little);
* ``tuxpaint-en``: each carries its English caption. A query is one stamp's English caption, so other
  stamps' captions are near misses ("A green apple." for "A red apple."): the over-trust check;
* ``gcompris-title``: each GCompris photo carries its title, as the quickstart ingests it.

Prints, per variant, R@10, nDCG@10 and the pictures' share of the top 10 (read_captions minus shipped,
paired bootstrap 95% CI over test queries) and, per setting and modality, calibration among pairs
predicted >= 0.1 (mean predicted vs observed, query-bootstrap CI of the gap) and ECE.

Usage (reads the caches ``mm-rerank eval`` fills; about a minute warm)::

    python scripts/read_captions_check.py [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fit_default as fd  # the sibling script: prepare, fit_without

from mm_rerank_components import Candidate, Query
from mm_rerank_components.defaults import DEFAULT_DEPTH, FIT_OPTIONS
from mm_rerank_components.eval.datasets import default_cache_dir, fetch_tuxpaint_stamps
from mm_rerank_components.eval.embeddings import StarterEmbedder
from mm_rerank_components.eval.learned import PreparedTask, labelled_lists
from mm_rerank_components.eval.metrics import evaluate_run, per_query_values
from mm_rerank_components.eval.pipelines import (
    ScoredUnion,
    calibrated_run,
    compute_first_stage,
    score_union,
)
from mm_rerank_components.eval.stats import paired_bootstrap
from mm_rerank_components.eval.targets import calibration_figures
from mm_rerank_components.eval.tasks import EvalTask
from mm_rerank_components.scorers.starter import StarterScorer

SETTINGS = ("shipped", "read_captions")


def captioned(base: PreparedTask, name: str, caption_of: Callable[[str], str], cache: Path) -> PreparedTask:
    """``base``'s task with every picture carrying ``caption_of(doc_id)``, first stage and scores redone."""
    t = base.task
    docs = {d: replace(c, text=caption_of(d)) if c.image is not None else c for d, c in t.docs.items()}
    task = EvalTask(name, t.description, docs, t.queries, t.qrels, t.splits)
    first = compute_first_stage(task, StarterEmbedder(), cache / "embeddings")
    qids = task.query_ids("dev") + task.query_ids("test")
    scored = score_union(task, first, StarterScorer(), qids, *DEFAULT_DEPTH, cache_dir=cache / "embeddings")
    return PreparedTask(task, first, {"starter": scored})


def variants(prepared: list[PreparedTask], cache: Path) -> dict[str, tuple[PreparedTask, PreparedTask]]:
    """Variant name -> (the task the default must not see, its captioned version)."""
    by = {p.task.name: p for p in prepared}
    tux, gcompris = by["tuxpaint-mixed"], by["gcompris-explore"]
    english = {"img:" + s.id: s.caption for s in fetch_tuxpaint_stamps(cache)}
    return {
        "tuxpaint-fr": (
            tux,
            captioned(tux, "tuxpaint-fr", lambda d: tux.task.docs["fr:" + d[4:]].text or "", cache),
        ),
        "tuxpaint-en": (tux, captioned(tux, "tuxpaint-en", english.__getitem__, cache)),
        "gcompris-title": (
            gcompris,
            captioned(gcompris, "gcompris-title", lambda d: gcompris.task.queries["q:" + d[4:]], cache),
        ),
    }


def unions(model: Any, variant: PreparedTask, scorer: StarterScorer) -> dict[str, ScoredUnion]:
    """Both settings' probabilities on the variant's test queries."""
    test = variant.task.query_ids("test")
    items: dict[str, dict[str, list[tuple[str, Any, float]]]] = {s: {} for s in SETTINGS}
    for qid, item in zip(test, labelled_lists(variant, "starter", test, *DEFAULT_DEPTH), strict=True):
        hits = item.candidates
        views = [i for i, c in enumerate(hits) if c.image is not None and c.text]
        captions: list[float | None] = [None] * len(hits)
        query = Query(variant.task.queries[qid])
        for i, s in zip(
            views, scorer.score(query, [Candidate(hits[i].id, text=hits[i].text) for i in views]), strict=True
        ):
            captions[i] = s
        for setting, given in (("shipped", None), ("read_captions", captions)):
            probs = model.predict(item.query, hits, item.raw_scores, given)
            items[setting][qid] = [(c.id, c.modality, float(p)) for c, p in zip(hits, probs, strict=True)]
    return {s: ScoredUnion(s, items[s]) for s in SETTINGS}


def report(name: str, variant: PreparedTask, scored: dict[str, ScoredUnion]) -> list[str]:
    task, test = variant.task, variant.task.query_ids("test")
    metrics = {s: evaluate_run(task, calibrated_run(u, None, test), test) for s, u in scored.items()}
    lines = [f"== {name}: {len(test)} test queries (read_captions minus shipped)"]
    for metric in ("recall@10", "ndcg@10", "image_share@10"):
        r = paired_bootstrap(*(per_query_values(metrics[s], metric, test) for s in reversed(SETTINGS)))
        lines.append(
            f"  {metric}: {r['a']:.3f} vs {r['b']:.3f}: {r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]"
        )
    for setting, union in scored.items():
        probs, mods, labels, queries = [], [], [], []
        for qid in test:
            for doc, kind, p in union.items[qid]:
                probs.append(p)
                mods.append("text" if kind == "text" else "image")
                labels.append(1 if task.qrels[qid].get(doc, 0) > 0 else 0)
                queries.append(qid)
        for modality, fig in calibration_figures(probs, mods, labels, queries).items():
            b = fig["above_0.1"]
            lo, hi = 100 * b.get("lo", float("nan")), 100 * b.get("hi", float("nan"))
            lines.append(
                f"  {setting:13s} {modality:5s} >=0.1: {b['mean_predicted']:.3f} predicted vs "
                f"{b['observed_rate']:.3f} observed ({b['pairs']} pairs), "
                f"gap {100 * b['relative_gap']:+.0f}% [{lo:+.0f}%, {hi:+.0f}%]; ECE {fig['ece']:.3f}"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads is not None:
        from mm_rerank_components.cli._common import set_threads

        set_threads(args.threads)
    cache = args.cache_dir or default_cache_dir()
    prepared = fd.prepare(cache, DEFAULT_DEPTH)
    scorer = StarterScorer()
    for name, (held_out, variant) in variants(prepared, cache).items():
        model = fd.fit_without(prepared, held_out, FIT_OPTIONS)
        for line in report(name, variant, unions(model, variant, scorer)):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
