"""Picture queries on the built-in tasks: the starter scorer's calibration for them, leave-one-task-out.

``default_reranker()`` sends a query that holds a picture to the starter scorer calibrated per modality
with its shipped maps (fitted on *text* queries). This measures those maps on picture queries against
Platt maps fitted on picture queries (measured, not adopted: see docs/calibration.md).

Each task's pictures are asked as the query, in four setups: the query's own record **removed** from
the candidates, or **kept** and counted relevant (a photo asked about that is in the corpus), each with
the pictures uncaptioned or **captioned** (Tux Paint: English captions; GCompris: titles; Wesnoth,
Widelands, FreeOrion: item names). Relevant are also the other documents of the item's text query (its
passage; on Tux Paint also the stamps that share its caption). Candidates are what the product retrieves
for a picture query: the picture's starter embedding against the image collection and, since the
starter models share one space, the text collection (``image_query_searches_text``), 16 + 16, merged as
the retriever merges. A query's split is its item's text-query split.

Readings, on each task's test-split picture queries:

* ``shipped``: the starter scorer's shipped per-modality calibration (text-query maps);
* ``loto-platt``: Platt per modality fitted on the "kept" picture queries (every split) of the four
  other tasks, text and image maps on uncaptioned pictures, the text+image map on captioned ones; a
  modality without relevant and irrelevant pairs there keeps the shipped map;
* ``fusion-default``: the learned fusion of the default refitted without the task (fitted on text
  queries), reading the picture query's candidates with their route signals;
* ``fusion-adapted``: what ``mm-rerank adapt --data`` gives a user: that default fitted further on the
  task's dev *text* queries (``fit_fusion(prior=...)``), on the same candidates.

Prints, per setup and task, R@10 and nDCG@10 of each reading against RRF, min-max and z-score over the
same candidates and against each other (paired bootstrap 95% CI over queries), per reading and
modality the calibration among pairs predicted >= 0.1 (mean predicted vs observed, query-bootstrap CI
of the gap) and ECE, and the pooled comparison (stratified by task). ``--write PATH`` writes the maps
fitted on all five tasks (a calibration file ``load_calibrator`` reads; not shipped).

Usage (reads the caches ``mm-rerank eval`` fills; raw scores are cached under the cache folder; about
4 minutes cold, 2.5 minutes warm: it also fits each task's default and adapted fusion)::

    python scripts/picture_queries_check.py [--threads 1] [--write PATH]
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fit_default as fd  # the sibling script: prepare

from mm_rerank_components import Query
from mm_rerank_components.adapt import FusionModel, fit_fusion
from mm_rerank_components.defaults import DEFAULT_DEPTH, FIT_OPTIONS
from mm_rerank_components.eval.datasets import fetch_tuxpaint_stamps
from mm_rerank_components.eval.learned import PreparedTask, labelled_lists
from mm_rerank_components.eval.metrics import evaluate_run, per_query_values
from mm_rerank_components.eval.pipelines import FirstStage, fusion_run, ranking_to_run
from mm_rerank_components.eval.stats import paired_bootstrap, pooled
from mm_rerank_components.eval.targets import calibration_figures
from mm_rerank_components.eval.tasks import EvalTask
from mm_rerank_components.scorers.starter import StarterScorer

READINGS = ("shipped", "loto-platt", "fusion-default", "fusion-adapted")
FUSIONS = ("rrf", "minmax", "zscore")


@dataclass
class PictureQueries:
    """One task's picture queries: the task they form, their first stage and the scorer's raw scores."""

    task: EvalTask
    first: FirstStage
    #: ``{query id: [(doc id, modality, raw score), ...]}`` in the merged candidate order
    raw: dict[str, list[tuple[str, str, float]]]


def picture_task(p: PreparedTask, keep_self: bool) -> tuple[EvalTask, dict[str, str]]:
    """The task whose queries are ``p``'s pictures (``pq:<doc id>``), and each query's picture doc id.

    ``keep_self``: the query's own record is a relevant candidate (a photo asked about that is in the
    corpus); else it is left out of the candidates and the labels."""
    t = p.task
    qrels: dict[str, dict[str, int]] = {}
    queries: dict[str, str] = {}
    splits: dict[str, Any] = {}
    picture: dict[str, str] = {}
    for qid, rel in t.qrels.items():
        for doc in rel:
            if rel[doc] <= 0 or t.docs[doc].image is None:
                continue
            others = {d: g for d, g in rel.items() if d != doc and g > 0}
            pq = "pq:" + doc
            if not others or pq in queries:
                continue
            queries[pq] = f"<picture {doc}>"
            qrels[pq] = {**others, doc: 1} if keep_self else others
            splits[pq] = t.splits[qid]
            picture[pq] = doc
    return EvalTask(t.name + "-pictures", t.description, t.docs, queries, qrels, splits), picture


def picture_first_stage(
    p: PreparedTask, task: EvalTask, picture: dict[str, str], keep_self: bool
) -> FirstStage:
    """Both routes' cosines for each picture query (its own record out of reach unless ``keep_self``)."""
    first = p.first
    if first.text_vectors is None or first.image_vectors is None:
        raise RuntimeError("the first stage kept no document vectors")
    row = {d: i for i, d in enumerate(first.image_ids)}
    qids = list(task.queries)
    q = first.image_vectors[[row[picture[qid]] for qid in qids]]
    image_scores = q @ first.image_vectors.T
    for i, qid in enumerate(qids):
        if not keep_self:
            image_scores[i, row[picture[qid]]] = -np.inf
    return FirstStage(
        qids,
        first.text_ids,
        first.image_ids,
        q @ first.text_vectors.T,
        image_scores,
        text_vectors=first.text_vectors,
        image_vectors=first.image_vectors,
    )


def raw_scores(
    tag: str,
    p: PreparedTask,
    task: EvalTask,
    picture: dict[str, str],
    first: FirstStage,
    scorer: StarterScorer,
    cache: Path,
    keep_self: bool,
) -> dict[str, list[tuple[str, str, float]]]:
    """The starter scorer's raw score of every candidate of every picture query (cached as JSON)."""
    key = hashlib.blake2b(
        json.dumps([scorer.name, DEFAULT_DEPTH, sorted(task.queries)]).encode(), digest_size=8
    ).hexdigest()
    tag += "kept-" if keep_self else ""
    path = cache / "embeddings" / f"picture-queries-{tag}{p.task.name}-{key}.json"
    if path.is_file():
        return {q: [(d, m, float(s)) for d, m, s in v] for q, v in json.loads(path.read_text()).items()}
    out: dict[str, list[tuple[str, str, float]]] = {}
    for qid in task.queries:
        union = [(d, r, s) for d, r, s in first.union(qid, *DEFAULT_DEPTH) if d != picture[qid] or keep_self]
        candidates = [replace(task.docs[d], source=r, retrieval_score=s) for d, r, s in union]
        image = task.docs[picture[qid]].image
        scores = scorer.score(Query(image=image), candidates)
        out[qid] = [(c.id, c.modality, float(s)) for c, s in zip(candidates, scores, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def _pairs(pq: PictureQueries, qids: list[str]) -> tuple[list[float], list[str], list[int], list[str]]:
    return fd.labelled_pairs(pq.task, pq.raw, qids)


def fit_platt(sets: list[PictureQueries], scorer: str, shipped: Any) -> Any:
    """Platt per modality on every picture query of ``sets``; a modality without both relevant and
    non-relevant pairs there keeps ``shipped``'s map (e.g. pictures, where each item has one)."""
    from mm_rerank_components.calibration import PerModalityCalibrator, PlattCalibrator

    raw: list[float] = []
    mods: list[str] = []
    labels: list[int] = []
    for pq in sets:
        r, m, y, _ = _pairs(pq, pq.task.query_ids("all"))
        raw, mods, labels = raw + r, mods + m, labels + y
    x, y_all, m_all = np.asarray(raw), np.asarray(labels), np.asarray(mods, dtype=object)
    maps: dict[str, Any] = dict(shipped.calibrators)
    stats: dict[str, Any] = {}
    for modality in sorted(set(mods)):
        mask = m_all == modality
        stats[modality] = {"pairs": int(mask.sum()), "positives": int(y_all[mask].sum())}
        if 0 < y_all[mask].sum() < mask.sum():
            maps[modality] = PlattCalibrator().fit(x[mask], y_all[mask])
            stats[modality]["map"] = "Platt on picture queries"
    for modality in maps:
        stats.setdefault(modality, {}).setdefault("map", "the starter scorer's shipped map (text queries)")
    fitted = PerModalityCalibrator(maps, fallback=shipped.fallback, scorer=scorer, method="platt")
    fitted.stats = stats
    return fitted


def with_caption_map(base: Any, sets: list[PictureQueries]) -> Any:
    """``base`` with its ``text+image`` map replaced by Platt on the captioned pictures of ``sets`` (``base``
    itself when they hold no relevant or no irrelevant captioned picture)."""
    from mm_rerank_components.calibration import PerModalityCalibrator, PlattCalibrator

    raw, labels = [], []
    for pq in sets:
        r, m, y, _ = _pairs(pq, pq.task.query_ids("all"))
        for score, modality, label in zip(r, m, y, strict=True):
            if modality == "text+image":
                raw.append(score)
                labels.append(label)
    maps = dict(base.calibrators)
    if not 0 < sum(labels) < len(labels):  # no relevant captioned picture there: keep the map
        return base
    maps["text+image"] = PlattCalibrator().fit(np.asarray(raw), np.asarray(labels))
    stats = {
        **base.stats,
        "text+image": {
            "pairs": len(raw),
            "positives": int(sum(labels)),
            "map": "Platt on captioned pictures under picture queries",
        },
    }
    out = PerModalityCalibrator(maps, fallback=base.fallback, scorer=base.scorer, method="platt")
    out.stats = stats
    return out


def captions_of(p: PreparedTask, cache: Path) -> dict[str, str]:
    """A caption for each picture of ``p``: Tux Paint's English caption, else its item's query text."""
    if p.task.name == "tuxpaint-mixed":
        return {"img:" + s.id: s.caption for s in fetch_tuxpaint_stamps(cache)}
    return {
        d: p.task.queries["q:" + d[4:]]
        for d in p.task.docs
        if d.startswith("img:") and "q:" + d[4:] in p.task.queries
    }


def fusion_probabilities(pq: PictureQueries, model: FusionModel, qids: list[str]) -> list[float]:
    """``model``'s probabilities of every candidate of each picture query in ``qids`` (flat, in
    :func:`_pairs`' order), the candidates carrying their route signals as the retriever hands them over."""
    out: list[float] = []
    for qid in qids:
        routes = {d: (r, s) for d, r, s in pq.first.union(qid, *DEFAULT_DEPTH)}
        items = pq.raw[qid]
        candidates = [
            replace(pq.task.docs[d], source=routes[d][0], retrieval_score=routes[d][1]) for d, _, _ in items
        ]
        query = Query(image=pq.task.docs[qid[3:]].image)  # "pq:<doc id>": the picture asked
        out += model.predict(query, candidates, [s for _, _, s in items])
    return out


def measure(pq: PictureQueries, readings: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Report lines for one task and each reading's metrics on its test-split picture queries
    (a reading: a calibrator of the raw scores, or a fusion model)."""
    task, test = pq.task, pq.task.query_ids("test")
    raw, mods, labels, queries = _pairs(pq, test)
    metrics: dict[str, Any] = {}
    lines = [f"== {task.name}: {len(test)} test picture queries"]
    fusions = {f: evaluate_run(task, fusion_run(pq.first, f, test, *DEFAULT_DEPTH), test) for f in FUSIONS}
    for reading, how in readings.items():
        if isinstance(how, FusionModel):
            probs = fusion_probabilities(pq, how, test)
        else:
            probs = list(how.calibrate(raw, mods))
        ranking: dict[str, list[str]] = {}
        at = 0
        for qid in test:
            items = pq.raw[qid]
            mine = probs[at : at + len(items)]
            at += len(items)
            ranking[qid] = [items[i][0] for i in sorted(range(len(items)), key=lambda i: -mine[i])]
        metrics[reading] = evaluate_run(task, ranking_to_run(ranking), test)
        parts = [f"  {reading:10s}"]
        for metric in ("recall@10", "ndcg@10"):
            parts.append(f"{metric} {metrics[reading]['overall'][metric]:.3f}")
            for f, other in fusions.items():
                r = paired_bootstrap(
                    per_query_values(metrics[reading], metric, test), per_query_values(other, metric, test)
                )
                parts.append(f"vs {f} {r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]")
        lines.append(" ".join(parts))
        lines += fd.figure_lines(f"{reading:10s}", calibration_figures(probs, mods, labels, queries))
    return lines, metrics


def compare(sets: dict[str, PictureQueries], readings: dict[str, dict[str, Any]]) -> None:
    """Per task and pooled over tasks, each reading's figures and ``loto-platt`` minus ``shipped``."""
    per_task: dict[str, dict[str, Any]] = {}
    for name, pq in sets.items():
        lines, metrics = measure(pq, readings[name])
        per_task[name] = metrics
        test = pq.task.query_ids("test")
        for reading in READINGS[1:]:
            for metric in ("recall@10", "ndcg@10"):
                r = paired_bootstrap(
                    *(per_query_values(metrics[x], metric, test) for x in (reading, "shipped"))
                )
                lines.append(
                    f"  {reading} minus shipped {metric}: {r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]"
                )
        print("\n".join(lines))
    for reading in READINGS[1:]:
        for metric in ("recall@10", "ndcg@10"):
            r = pooled(
                {
                    name: tuple(  # type: ignore[misc]
                        per_query_values(m[x], metric, sets[name].task.query_ids("test"))
                        for x in (reading, "shipped")
                    )
                    for name, m in per_task.items()
                }
            )
            print(
                f"pooled {metric}: {reading} minus shipped {r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]"
            )


def main() -> int:
    parser = fd.check_parser(__doc__)
    parser.add_argument("--write", type=Path, default=None, help="write the maps fitted on all five tasks")
    args = parser.parse_args()
    cache, prepared = fd.check_setup(args)
    scorer = StarterScorer()
    shipped = scorer.default_calibrator()
    if shipped is None:
        raise RuntimeError("the starter scorer ships a calibration; this install lacks it")
    # setup -> task -> picture queries; setups: own record removed / kept, pictures uncaptioned / captioned
    sets: dict[str, dict[str, PictureQueries]] = {}
    models: dict[str, dict[str, FusionModel]] = {}
    for p in prepared:
        default = fd.fit_without(prepared, p, FIT_OPTIONS)
        dev = labelled_lists(p, "starter", p.task.query_ids("dev"), *DEFAULT_DEPTH)
        adapted = fit_fusion(dev, scorer="starter", seed=0, prior=default)
        models[p.task.name] = {"fusion-default": default, "fusion-adapted": adapted}
        caption = captions_of(p, cache)
        for keep_self in (False, True):
            task, picture = picture_task(p, keep_self)
            first = picture_first_stage(p, task, picture, keep_self)
            own = "kept" if keep_self else "removed"
            raw = raw_scores("", p, task, picture, first, scorer, cache, keep_self)
            sets.setdefault(own, {})[p.task.name] = PictureQueries(task, first, raw)
            docs = {
                d: replace(c, text=caption.get(d)) if c.image is not None else c for d, c in task.docs.items()
            }
            ctask = EvalTask(
                task.name + "-captioned", task.description, docs, task.queries, task.qrels, task.splits
            )
            craw = raw_scores("captioned-", p, ctask, picture, first, scorer, cache, keep_self)
            sets.setdefault(own + ", captioned", {})[p.task.name] = PictureQueries(ctask, first, craw)
    names = list(sets["kept"])
    fitted: dict[str, Any] = {}
    for name in names:
        plain = fit_platt([s for n, s in sets["kept"].items() if n != name], scorer.name, shipped)
        fitted[name] = with_caption_map(plain, [c for n, c in sets["kept, captioned"].items() if n != name])
        print(f"{name} held out: maps from the other tasks' picture queries (own record kept):")
        print(f"  {fitted[name].stats}")
    for setup, by_task in sets.items():
        print(f"== picture queries, own record {setup}: the scorer's text-query maps vs picture-query maps")
        compare(by_task, {n: {"shipped": shipped, "loto-platt": fitted[n], **models[n]} for n in by_task})
    if args.write is not None:
        final = fit_platt(list(sets["kept"].values()), scorer.name, shipped)
        final = with_caption_map(final, list(sets["kept, captioned"].values()))
        final.save(str(args.write))
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
