"""Picture queries whose photo is in the corpus: is its own record ranked first? Scorer maps vs fusion.

``default_reranker()`` reads a picture query with the starter scorer's shipped per-modality maps, not
with its learned fusion. ``scripts/picture_queries_check.py`` found the fusion (refitted without the
task) better on R@10 for picture queries; this script checks what a user asking with a photo that is
in the corpus sees first. Every built-in picture that has an item query is asked as the query with its
own record kept among the candidates (all splits); per task and pooled (stratified by task), the share
of queries whose own record is ranked first and its mean reciprocal rank, minus the shipped maps', with
a paired bootstrap 95% CI over queries, for the fusion (``fusion``) and for what ``mm-rerank adapt
--data`` gives (``adapted``: that fusion fitted further on the task's dev text queries), which reads
picture queries with its fusion.

Usage (reads the caches ``mm-rerank eval`` and ``picture_queries_check.py`` fill; about 2 minutes)::

    python scripts/picture_query_routing_check.py [--threads 1]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fit_default as fd  # the sibling scripts: prepare, fit_without; picture queries
import picture_queries_check as pqc

from mm_rerank_components.adapt import fit_fusion
from mm_rerank_components.defaults import DEFAULT_DEPTH, FIT_OPTIONS
from mm_rerank_components.eval.learned import labelled_lists
from mm_rerank_components.eval.stats import paired_bootstrap, pooled
from mm_rerank_components.scorers.starter import StarterScorer


def own_record_ranks(pq: pqc.PictureQueries, probs: list[float], qids: list[str]) -> list[int]:
    """The rank (0 = first) of each picture query's own record under ``probs`` (flat, in query order)."""
    ranks, at = [], 0
    for qid in qids:
        items = pq.raw[qid]
        mine = probs[at : at + len(items)]
        own = next(i for i, item in enumerate(items) if item[0] == qid[3:])  # "pq:<doc id>"
        ranks.append(sum(p > mine[own] for p in mine))
        at += len(items)
    return ranks


def main() -> int:
    cache, prepared = fd.check_setup(fd.check_parser(__doc__).parse_args())
    scorer = StarterScorer()
    shipped = scorer.default_calibrator()
    if shipped is None:
        raise RuntimeError("the starter scorer ships a calibration; this install lacks it")
    per_task: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for p in prepared:
        task, picture = pqc.picture_task(p, keep_self=True)
        first = pqc.picture_first_stage(p, task, picture, keep_self=True)
        pq = pqc.PictureQueries(task, first, pqc.raw_scores("", p, task, picture, first, scorer, cache, True))
        qids = task.query_ids("all")
        raw, mods, _, _ = pqc._pairs(pq, qids)
        default = fd.fit_without(prepared, p, FIT_OPTIONS)
        dev = labelled_lists(p, "starter", p.task.query_ids("dev"), *DEFAULT_DEPTH)
        adapted = fit_fusion(dev, scorer="starter", seed=0, prior=default)
        readings = {
            "fusion": pqc.fusion_probabilities(pq, default, qids),
            "adapted": pqc.fusion_probabilities(pq, adapted, qids),
            "shipped": [float(v) for v in shipped.calibrate(raw, mods)],  # type: ignore[arg-type]
        }
        per_task[p.task.name] = {}
        for name, probs in readings.items():
            ranks = own_record_ranks(pq, probs, qids)
            per_task[p.task.name][name] = ([float(r == 0) for r in ranks], [1.0 / (r + 1) for r in ranks])
        for reading in ("fusion", "adapted"):
            for k, metric in enumerate(("own record first", "own record MRR")):
                b = paired_bootstrap(per_task[p.task.name][reading][k], per_task[p.task.name]["shipped"][k])
                print(
                    f"{p.task.name} ({len(qids)} picture queries) {metric}: {reading} {b['a']:.3f}, shipped "
                    f"maps {b['b']:.3f}, {reading} minus shipped {b['diff']:+.3f} "
                    f"[{b['lo']:+.3f}, {b['hi']:+.3f}]",
                    flush=True,
                )
    for reading in ("fusion", "adapted"):
        for k, metric in enumerate(("own record first", "own record MRR")):
            b = pooled({t: (v[reading][k], v["shipped"][k]) for t, v in per_task.items()})
            print(
                f"pooled {metric}: {reading} minus shipped {b['diff']:+.3f} [{b['lo']:+.3f}, {b['hi']:+.3f}]"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
