"""Do pictures and passages mean the same at the same score, on sources the default never saw?

Issue 19 puts it as: off the training sources, pictures the default scores about 0.3 are relevant
about twice as often as passages scored 0.3. This measures exactly that, leave-one-task-out: for each
built-in task the default is refitted on the other four (as ``mm-rerank eval`` does) and scores the
task's test queries; the pairs of the five held-out tasks are pooled and cut into score bins. Per bin
and modality: pairs, mean predicted, observed relevance rate (bootstrap 95% CI); then pictures' observed
rate minus passages' in the same bin, which is 0 on one scale (paired: whole queries are resampled,
within each task; :func:`~mm_rerank_components.eval.targets.same_score_table`).

Readings (each leave-one-task-out, test queries):

* ``default``: the default with the route signals the retriever gives;
* ``default-no-routes``: the same candidates without ``source`` and ``retrieval_score`` (an HTTP
  client's documents, nodes a user built), read by the route-free head;
* ``default-captioned``: the six captioned variants of ``scripts/read_captions_check.py`` (Tux Paint
  with French or English captions, GCompris titles, Wesnoth/Widelands/FreeOrion names), read as the
  default reads a captioned picture (as a picture), with route signals;
* ``captioned-shift``: the same with configuration 4 of docs/calibration.md (the picture map moved in
  log-odds for captioned pictures, fitted on the other tasks' captioned variants;
  ``read_captions_check.fit_caption_shift``; measured, not adopted).

A measurement, not a fit: nothing here is chosen or shipped. Per task, the 0.2-0.4 bin's difference
is printed too (small samples; read the pooled line first).

Usage (reads the caches ``mm-rerank eval`` fills; a few minutes warm)::

    python scripts/same_score_check.py [--threads 1] [--json PATH]
"""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fit_default as fd  # the sibling script: prepare, fit_without, labelled_pairs
import read_captions_check as rc  # the captioned variants

from mm_rerank_components.defaults import DEFAULT_DEPTH
from mm_rerank_components.eval.learned import PreparedTask, fusion_union, labelled_lists
from mm_rerank_components.eval.report import same_score_lines
from mm_rerank_components.eval.targets import PooledPairs, same_score_table

READINGS = ("default", "default-no-routes", "default-captioned", "captioned-shift")


def _add(pool: PooledPairs, task: PreparedTask, union: Any, group: str) -> None:
    """Add ``union``'s test pairs of ``task`` to ``pool``, in ``group``."""
    pool.add(*fd.labelled_pairs(task.task, union.items, task.task.query_ids("test")), group)


def collect(prepared: list[PreparedTask], cache: Path) -> dict[str, PooledPairs]:
    """Each reading's held-out test pairs, grouped by held-out task or captioned variant."""
    found = rc.variants(prepared, cache)
    out = {r: PooledPairs() for r in READINGS}
    for held_out, mine, model in rc.held_out_variants(prepared, found):
        test = held_out.task.query_ids("test")
        for reading, routes in (("default", True), ("default-no-routes", False)):
            union = fusion_union(model, held_out, "starter", test, *DEFAULT_DEPTH, routes=routes)
            _add(out[reading], held_out, union, held_out.task.name)
        others = [
            item
            for base, v in found.values()
            if base is not held_out
            for item in labelled_lists(v, "starter", v.task.query_ids("all"), *DEFAULT_DEPTH)
        ]
        shifted = copy.deepcopy(model)
        rc.fit_caption_shift(shifted, others)
        for name, variant in mine.items():
            for reading, m in (("default-captioned", model), ("captioned-shift", shifted)):
                union = fusion_union(m, variant, "starter", variant.task.query_ids("test"), *DEFAULT_DEPTH)
                _add(out[reading], variant, union, name)
    return out


def _pct(x: float) -> str:
    return "  -  " if math.isnan(x) else f"{100 * x:3.0f}%"


def _diff(row: dict[str, Any]) -> str:
    """Pictures minus passages, observed, in points with its interval."""
    if math.isnan(row["diff"]):
        return "–"
    ci = "[no interval]" if math.isnan(row["lo"]) else f"[{100 * row['lo']:+.0f}, {100 * row['hi']:+.0f}]"
    return f"{100 * row['diff']:+.0f} {ci}"


def per_group_lines(pool: PooledPairs, edges: tuple[float, float] = (0.2, 0.4)) -> list[str]:
    """Per task (group): the one bin's pictures and passages and their difference."""
    lines = []
    for group in sorted(set(pool.groups)):
        keep = [i for i, g in enumerate(pool.groups) if g == group]
        row = same_score_table(
            [pool.probs[i] for i in keep],
            [pool.mods[i] for i in keep],
            [pool.labels[i] for i in keep],
            [pool.queries[i] for i in keep],
            edges=edges,
        )[0]
        img, txt = row["image"], row["text"]
        lines.append(
            f"  {group:17s} {edges[0]}-{edges[1]}: pictures {img['pairs']:3d} pairs observed "
            f"{_pct(img['observed'])}, passages {txt['pairs']:3d} pairs observed {_pct(txt['observed'])}; "
            f"difference {_diff(row)}"
        )
    return lines


def main() -> int:
    parser = fd.check_parser(__doc__)
    parser.add_argument("--json", type=Path, default=None, help="also write the tables as JSON here")
    args = parser.parse_args()
    cache, prepared = fd.check_setup(args)
    collected = collect(prepared, cache)
    out = {reading: pool.table() for reading, pool in collected.items()}
    for line in same_score_lines(out):
        print(line)
    for reading, pairs in collected.items():
        print(f"per held-out set, {reading}:")
        for line in per_group_lines(pairs):
            print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
