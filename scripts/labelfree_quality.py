"""Held-out quality of label-free adaptation on the built-in tasks (no label of the task is used to train).

For each task: the corpus (its documents, embedded with the starter first stage, cached) becomes a
``VectorCorpus``; ``adapt_from_corpus`` trains on pseudo-queries only (it never sees a task query or
label); the task's *test* queries then rank their first-stage pools (k_text = k_image = 16) with
raw-merge, RRF, min-max, z-score (first-stage scores), the shipped default and the label-free model.

Reported: R@10 and nDCG@10 per task and pooled, with paired bootstrap 95% CIs over queries
(eval/stats.py, stratified by task when pooled); calibration per task x modality on the test pairs
(eval/targets.calibration_figures: ECE, and predicted/observed among pairs predicted >= 0.1 with its
query-bootstrap CI); how many test queries equal a pseudo-query's text (leak check).

    python scripts/labelfree_quality.py [--tasks gcompris-explore wesnoth-units] [--config NAME ...]

``--config`` runs several label-free configurations on the same scored pools (raw scores are memoised,
so a second configuration costs little); each is compared with the fusions and the default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from adapt_speed import _metrics, _order, _route_scores

from mm_rerank_components import MultimodalReranker
from mm_rerank_components.adapt.corpus import VectorCorpus, pseudo_queries
from mm_rerank_components.adapt.pipeline import AdaptOptions, adapt_from_corpus, label_free_options
from mm_rerank_components.calibration import SigmoidCalibrator
from mm_rerank_components.scorers.base import BaseScorer

FUSIONS = ("raw-merge", "rrf", "minmax", "zscore")
#: metadata fields the built-in tasks use for "this passage and this picture are one item"; off by default
#: (they encode the tasks' relevance pairs), on with ``--config pair-fields``
PAIR_FIELDS = ("stamp", "item", "unit")


class MemoScorer(BaseScorer):
    """A scorer whose raw scores are memoised by (query, candidate id): configurations share scoring."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = str(inner.name)
        self.outputs_probabilities = bool(getattr(inner, "outputs_probabilities", False))
        self.modalities = inner.modalities
        self.reuses = getattr(inner, "reuses", frozenset())
        self.image_side = getattr(inner, "image_side", None)
        self.memo: dict[tuple[str, str], float] = {}

    def needs_pixels(self, candidate: Any) -> bool:
        return bool(self.inner.needs_pixels(candidate)) if isinstance(self.inner, BaseScorer) else True

    def default_calibrator(self) -> Any:
        return self.inner.default_calibrator() if isinstance(self.inner, BaseScorer) else None

    def spec(self) -> str:
        return str(self.inner.spec())

    def score(self, query: Any, candidates: Sequence[Any]) -> list[float]:
        key = str(query)
        todo = [c for c in candidates if (key, c.id) not in self.memo]
        if todo:
            for c, v in zip(todo, self.inner.score(query, todo), strict=True):
                self.memo[(key, c.id)] = float(v)
        return [self.memo[(key, c.id)] for c in candidates]


def configurations(pair_fields: tuple[str, ...]) -> dict[str, AdaptOptions]:
    """Every configuration this script can compare (named; ``--config`` picks)."""
    base = label_free_options(k_text=16, k_image=16)
    lf = base.label_free
    return {
        "lf": base,
        "lf-pairs": replace(base, label_free=replace(lf, pair_fields=pair_fields)),
        "lf-no-teacher": replace(base, label_free=replace(lf, false_negative_margin=None)),
        "lf-unlabelled": replace(base, label_free=replace(lf, unlabelled_modality="drop")),
    }


def _corpus(task: Any, embedder: Any, cache: Path, side: int | None) -> VectorCorpus:
    from mm_rerank_components.eval.embeddings import cached_embeddings

    docs = list(task.docs.values())
    vectors: dict[str, Any] = {}
    for kind in ("text", "image"):
        members = [d for d in docs if (d.image is not None) == (kind == "image")]
        if members:
            inputs = [d.image if kind == "image" else d.text for d in members]
            vecs = cached_embeddings(embedder, kind, inputs, cache)
            vectors.update(zip([d.id for d in members], vecs, strict=True))
    titles = {d.id: Path(str(d.image)).stem for d in docs if d.image is not None}
    docs = [_decoded(d, side) for d in docs]
    return VectorCorpus(docs, vectors, lambda qs: embedder.embed_texts(list(qs)), titles=titles)


def _decoded(doc: Any, side: int | None) -> Any:
    """A picture decoded once and shrunk to twice the scorer's side (a stored preview's role), so the
    core does not decode the file again for every pool it is in; passages as they are."""
    if doc.image is None or not side:
        return doc
    from PIL import Image

    with Image.open(str(doc.image)) as img:
        small = img.convert("RGB")
    small.thumbnail((2 * side, 2 * side))
    return replace(doc, image=small)


def _pairs(qid: str, pool: Sequence[Any], scores: Sequence[float], rel: dict[str, int]) -> list[tuple]:
    return [
        (qid, "image" if c.image is not None else "text", float(v), int(rel.get(c.id, 0) > 0))
        for c, v in zip(pool, scores, strict=True)
    ]


def run_task(name: str, scorer: Any, embedder: Any, cache: Path, configs: dict[str, AdaptOptions]) -> dict:
    """One task: fit each configuration on the corpus, then rank and calibrate the test queries."""
    from mm_rerank_components.eval.sources import load_builtin_task

    task = load_builtin_task(name)
    corpus = _corpus(task, embedder, cache, getattr(scorer, "image_side", None))
    models, train_s, reports = {}, {}, {}
    for label, options in configs.items():
        start = time.perf_counter()
        result = adapt_from_corpus(corpus, scorer, options)
        train_s[label] = round(time.perf_counter() - start, 1)
        models[label] = result.model
        reports[label] = {k: result.report[k] for k in ("pseudo_queries", "counts", "calibration")}
    made = {q.text.lower() for q in pseudo_queries(corpus.records(), next(iter(configs.values())).label_free)}
    out: dict[str, Any] = {"task": name, "train_s": train_s, "report": reports}
    for split in ("dev", "test"):
        out[split] = _judge(task, corpus, scorer, models, task.query_ids(split), configs)
        out[split]["queries_equal_to_a_pseudo_query"] = sum(
            1 for q in task.query_ids(split) if " ".join(task.queries[q].lower().split()) in made
        )
    return out


def _judge(task: Any, corpus: Any, scorer: Any, models: dict, qids: list[str], configs: dict) -> dict:
    """Every row's R@10/nDCG@10 per query, and the calibrated rows' (query, modality, p, label) pairs."""
    from mm_rerank_components.defaults import load_default_model

    default, base = load_default_model(), MultimodalReranker(scorer, SigmoidCalibrator())
    k = next(iter(configs.values())).k_text
    pools = corpus.retrieve_many([task.queries[q] for q in qids], k, k)
    rows = (*FUSIONS, "default", *models)
    per: dict[str, list[tuple[float, float]]] = {p: [] for p in rows}
    pairs: dict[str, list[tuple]] = {p: [] for p in ("default", *models)}
    for qid, pool in zip(qids, pools, strict=True):
        query, ids, rel = task.queries[qid], [c.id for c in pool], task.qrels[qid]
        raw = [r.raw_score for r in sorted(base.rerank(query, pool), key=lambda r: r.index)]
        scores = {f: _route_scores(pool, f) for f in FUSIONS}
        scores["default"] = list(default.predict(query, pool, raw))
        scores.update({lb: list(m.predict(query, pool, raw)) for lb, m in models.items()})
        for p in rows:
            per[p].append(_metrics(_order(ids, [float(v) for v in scores[p]]), rel))
        for p in pairs:
            pairs[p] += _pairs(qid, pool, scores[p], rel)
    return {"task": task.name, "queries": len(qids), "per_query": per, "pairs": pairs}


def _compare(chosen: list[dict], configs: Sequence[str]) -> dict[str, Any]:
    from mm_rerank_components.eval.stats import paired_bootstrap

    groups = [r["task"] for r in chosen for _ in range(r["queries"])]
    entry: dict[str, Any] = {"queries": len(groups)}
    for m, metric in enumerate(("recall@10", "ndcg@10")):
        vals = {p: [v[m] for r in chosen for v in r["per_query"][p]] for p in chosen[0]["per_query"]}
        entry[metric] = {p: float(np.mean(v)) for p, v in vals.items()}
        for cfg in configs:
            for ref in (*FUSIONS, "default"):
                b = paired_bootstrap(vals[cfg], vals[ref], groups=groups)
                entry[metric][f"{cfg} vs {ref}"] = {k: b[k] for k in ("diff", "lo", "hi", "verdict")}
    return entry


def _calibration(chosen: list[dict], row: str) -> dict[str, Any]:
    from mm_rerank_components.eval.targets import calibration_figures

    sel = [x for r in chosen for x in r["pairs"][row]]
    figs = calibration_figures(
        [x[2] for x in sel], [x[1] for x in sel], [x[3] for x in sel], [f"{x[0]}" for x in sel]
    )
    out: dict[str, Any] = {}
    for kind, fig in figs.items():
        big = fig["above_0.1"]
        ratio = 1 + big["relative_gap"] if big.get("relative_gap") is not None else float("nan")
        out[kind] = {
            "ece": fig["ece"],
            "ratio": ratio,
            "ratio_lo": 1 + big["lo"],
            "ratio_hi": 1 + big["hi"],
            "pairs": big.get("pairs"),
            "relevant": big.get("relevant"),
            "in_band": bool(1 + big["lo"] <= 1.25 and 1 + big["hi"] >= 0.75),
            "chance_if_calibrated": big.get("chance_if_calibrated"),
        }
    from mm_rerank_components.calibration import expected_calibration_error

    out["all"] = {"ece": expected_calibration_error([x[2] for x in sel], [x[3] for x in sel])}
    return out


def summarise(runs: list[dict[str, Any]], configs: Sequence[str], split: str) -> dict[str, Any]:
    """Per task and pooled: ranking comparisons, and calibration of the default and each configuration."""
    out: dict[str, Any] = {}
    results = [r[split] for r in runs]
    for label, chosen in [(r["task"], [r]) for r in results] + [("pooled", results)]:
        entry = _compare(chosen, configs)
        entry["calibration"] = {row: _calibration(chosen, row) for row in ("default", *configs)}
        out[label] = entry
    return out


def _print(summary: dict[str, Any], configs: Sequence[str]) -> None:
    for label, entry in summary.items():
        print(f"\n{label} ({entry['queries']} queries)")
        for metric in ("recall@10", "ndcg@10"):
            t = entry[metric]
            rows = (*FUSIONS, "default", *configs)
            print(f"  {metric}: " + ", ".join(f"{p} {t[p]:.3f}" for p in rows))
            for cfg in configs:
                for ref in (*FUSIONS, "default"):
                    v = t[f"{cfg} vs {ref}"]
                    ci = f"{v['diff']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}] {v['verdict']}"
                    print(f"    {cfg} vs {ref}: {ci}")
        for row, cal in entry["calibration"].items():
            for kind, v in cal.items():
                if kind == "all":
                    print(f"  calibration {row}: ECE all {v['ece']:.3f}")
                    continue
                print(
                    f"  calibration {row} {kind}: ECE {v['ece']:.3f}; predicted/observed {v['ratio']:.2f} "
                    f"[{v['ratio_lo']:.2f}, {v['ratio_hi']:.2f}] ({v['pairs']} pairs >= 0.1, "
                    f"{v['relevant']} relevant) {'in band' if v['in_band'] else 'OUT of band'}"
                )


def redo_default(raw: dict[str, Any], scorer: Any, embedder: Any, cache: Path) -> str:
    """Judge the default row of a saved task again with the default file as it is now (the other rows
    are kept): every task then meets the same default. Returns the default file's sha256."""
    import hashlib

    from mm_rerank_components.defaults import default_model_path, load_default_model
    from mm_rerank_components.eval.sources import load_builtin_task

    task = load_builtin_task(raw["task"])
    corpus = _corpus(task, embedder, cache, getattr(scorer, "image_side", None))
    default, base = load_default_model(), MultimodalReranker(scorer, SigmoidCalibrator())
    for split in ("dev", "test"):
        qids = task.query_ids(split)
        pools = corpus.retrieve_many([task.queries[q] for q in qids], 16, 16)
        per, pairs = [], []
        for qid, pool in zip(qids, pools, strict=True):
            raw_scores = [
                r.raw_score for r in sorted(base.rerank(task.queries[qid], pool), key=lambda r: r.index)
            ]
            values = [float(v) for v in default.predict(task.queries[qid], pool, raw_scores)]
            per.append(_metrics(_order([c.id for c in pool], values), task.qrels[qid]))
            pairs += _pairs(qid, pool, values, task.qrels[qid])
        raw[split]["per_query"]["default"], raw[split]["pairs"]["default"] = per, pairs
    return hashlib.sha256(default_model_path().read_bytes()).hexdigest()[:12]


def _ci(v: dict[str, Any]) -> str:
    return f"{v['diff']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]"


def markdown(summary: dict[str, Any], row: str) -> str:
    """The figures tables of one configuration (R@10, nDCG@10 and calibration per task x modality)."""
    lines = []
    for metric in ("recall@10", "ndcg@10"):
        lines += [
            f"| {metric} | queries | raw | RRF | min-max | z-score | default | label-free | "
            "vs best fusion | vs default |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for label, entry in summary.items():
            t = entry[metric]
            best = max(FUSIONS, key=lambda f: t[f])
            values = " | ".join(f"{t[p]:.3f}" for p in (*FUSIONS, "default", row))
            vs = f"{_ci(t[f'{row} vs {best}'])} ({best})"
            lines.append(
                f"| {label} | {entry['queries']} | {values} | {vs} | {_ci(t[f'{row} vs default'])} |"
            )
        lines.append("")
    lines += [
        "| calibration | modality | default: pred/obs [95% CI] (pairs >= 0.1, relevant), ECE | "
        "label-free: pred/obs [95% CI] (pairs, relevant), ECE |",
        "|---|---|---|---|",
    ]
    for label, entry in summary.items():
        for kind in ("text", "image"):
            cells = []
            for r in ("default", row):
                v = entry["calibration"][r].get(kind)
                if v is None:
                    cells.append("-")
                    continue
                mark = "" if v["in_band"] else " **out**"
                if v.get("chance_if_calibrated") is not None:
                    mark += f" (P = {v['chance_if_calibrated']:.2f} if calibrated)"
                cells.append(
                    f"{v['ratio']:.2f} [{v['ratio_lo']:.2f}, {v['ratio_hi']:.2f}] "
                    f"({v['pairs']}, {v['relevant']}){mark}, ECE {v['ece']:.3f}"
                )
            lines.append(f"| {label} | {kind} | {cells[0]} | {cells[1]} |")
    all_ece = {r: entry["calibration"][r]["all"]["ece"] for r in ("default", row)}
    lines.append(
        f"\npooled ECE over every pair: default {all_ece['default']:.3f}, label-free {all_ece[row]:.3f}"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    from mm_rerank_components.eval.sources import TASK_NAMES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES))
    parser.add_argument("--config", nargs="+", default=["lf"], help="configurations to compare")
    parser.add_argument("--max-queries", type=int, default=None, help="override max_queries")
    parser.add_argument("--from-raw", nargs="+", type=Path, help="summarise saved *.raw.json, run nothing")
    parser.add_argument(
        "--redo-default", action="store_true", help="with --from-raw: judge the default again"
    )
    parser.add_argument("--markdown", type=Path, help="write the first configuration's tables here")
    parser.add_argument("--out", type=Path, default=Path("reports/labelfree_quality.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from mm_rerank_components.eval.embeddings import StarterEmbedder
    from mm_rerank_components.scorers.starter import StarterScorer

    scorer, embedder = MemoScorer(StarterScorer()), StarterEmbedder()
    cache = Path(os.environ.get("MM_RERANK_CACHE", ".cache/data")) / "embeddings"
    every = configurations(PAIR_FIELDS)
    configs = {c: every[c] for c in args.config}
    if args.max_queries:
        configs = {
            c: replace(o, label_free=replace(o.label_free, max_queries=args.max_queries))
            for c, o in configs.items()
        }
    print(f"load {os.getloadavg()[0]:.2f}; {len(configs)} configuration(s): {configs}")
    results = [json.loads(p.read_text()) for p in args.from_raw or []]
    if args.redo_default:
        for path, raw in zip(args.from_raw or [], results, strict=True):
            raw["default_sha256"] = redo_default(raw, scorer, embedder, cache)
            path.write_text(json.dumps(raw, default=str))
            print(f"{raw['task']}: default row judged again with default_fusion.json {raw['default_sha256']}")
    for t in [] if args.from_raw else args.tasks:
        results.append(run_task(t, scorer, embedder, cache, configs))
        raw_out = args.out.with_suffix(f".{t}.raw.json")
        raw_out.parent.mkdir(parents=True, exist_ok=True)
        raw_out.write_text(json.dumps(results[-1], default=str))
    summary = {split: summarise(results, list(configs), split) for split in ("dev", "test")}
    for r in results:
        made = r["report"][args.config[0]]["pseudo_queries"]
        leak = r["test"]["queries_equal_to_a_pseudo_query"]
        print(f"{r['task']}: trained in {r['train_s']} s; {leak} of {r['test']['queries']} test queries")
        print(f"  equal a pseudo-query; {made}")
    for split in ("dev", "test"):
        print(f"\n===== {split} queries =====")
        _print(summary[split], list(configs))
    print(f"load {os.getloadavg()[0]:.2f}")
    if args.markdown:
        text = "".join(
            f"\n#### {split} queries, configuration {cfg}\n\n{markdown(summary[split], cfg)}"
            for split in ("test", "dev")
            for cfg in args.config[:1]
        )
        args.markdown.write_text(text, encoding="utf-8")
        print(f"wrote {args.markdown}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    slim = [{k: v for k, v in r.items() if k not in ("dev", "test")} for r in results]
    args.out.write_text(json.dumps({"summary": summary, "runs": slim}, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
