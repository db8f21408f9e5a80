"""Refit the label-free product default (``starter/data/default_fusion.json``) on every built-in query.

The training tasks are :data:`mm_rerank_components.eval.sources.DEFAULT_SOURCES` (one per real source).

The default is learned fusion over the starter scorer's raw score and the routes' signals, absolute,
per-query normalised and listwise, without BM25, with a modality floor (settings:
:data:`mm_rerank_components.defaults.FIT_OPTIONS`). It is fitted on **every** query of the built-in
tasks at the default depth; the evaluation measures it honestly by refitting it leave-one-task-out
(``mm-rerank eval``), never on the queries it was fitted on.

``--diagnose`` also prints why the earlier default (Platt per modality on the raw score) drifts out of
domain: fitted on one task, applied to the other, per modality, mean predicted probability vs
observed relevance rate (all pairs and pairs predicted >= 0.1), and the pictures' share of the top 10.

``--loto`` instead measures settings leave-one-task-out in seconds (fit on every other task, test on
one task's test queries) and writes nothing: per task, R@10 and nDCG@10 against the best of RRF,
min-max and z-score for that metric (paired bootstrap 95% CI), the pictures' share of the top 10 and,
per modality, mean predicted vs observed among pairs predicted >= 0.1. ``--l2``,
``--bm25/--no-bm25``, ``--listwise/--no-listwise``, ``--floor K`` (the modality floor) and
``--one-map`` (one Platt map for both modalities) vary the shipped settings; ``--composition`` adds,
per task and modality, what fills the top 10 and ranks 11-20 (slots, mean predicted, observed rate).
``--captioned`` adds Tux Paint with captioned pictures (each picture a text+image document holding
its French caption), the default fitted on the other tasks, as it reads captioned pictures now and
as it did before.
``--no-routes`` adds the default on candidates without ``source`` and ``retrieval_score`` (what a
retriever that returns no scores hands over) against the scorer's own calibration.

Usage (reads the caches ``mm-rerank eval`` fills; computes them when missing)::

    python scripts/fit_default.py [--out PATH] [--diagnose] [--threads 1]
    python scripts/fit_default.py --loto [--l2 0.1] [--bm25] [--no-listwise] [--floor 0] [--one-map]
    python scripts/fit_default.py --loto --captioned --no-routes --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mm_rerank_components.adapt.fusion import FusionOptions
from mm_rerank_components.calibration import calibration_in_the_large, fit_calibrator
from mm_rerank_components.defaults import DEFAULT_DEPTH, FIT_OPTIONS, default_model_path, fit_default_model
from mm_rerank_components.eval.datasets import default_cache_dir
from mm_rerank_components.eval.embeddings import StarterEmbedder
from mm_rerank_components.eval.learned import PreparedTask, labelled_lists
from mm_rerank_components.eval.pipelines import compute_first_stage, score_union
from mm_rerank_components.eval.sources import DEFAULT_SOURCES, load_builtin_task
from mm_rerank_components.scorers.starter import StarterScorer


def prepare(cache: Path, depth: tuple[int, int]) -> list[PreparedTask]:
    embedder = StarterEmbedder()
    scorer = StarterScorer()
    out = []
    for task in (load_builtin_task(name, cache) for name in DEFAULT_SOURCES):
        first = compute_first_stage(task, embedder, cache / "embeddings")
        # dev then test, as mm-rerank eval orders them, so its score cache is read back
        qids = task.query_ids("dev") + task.query_ids("test")
        scored = score_union(task, first, scorer, qids, *depth, cache_dir=cache / "embeddings")
        out.append(PreparedTask(task, first, {"starter": scored}))
    return out


def fit_without(prepared: list[PreparedTask], held_out: PreparedTask, options: FusionOptions) -> Any:
    """The default's model fitted with ``options`` on every query of every task but ``held_out``."""
    from mm_rerank_components.adapt import fit_fusion

    train = [
        x
        for p in prepared
        if p is not held_out
        for x in labelled_lists(p, "starter", p.task.query_ids("all"), *DEFAULT_DEPTH)
    ]
    return fit_fusion(train, options, scorer=held_out.scored["starter"].scorer)


def diagnose(prepared: list[PreparedTask], depth: tuple[int, int]) -> list[dict[str, Any]]:
    """Platt per modality fitted on one task's raw scores, measured on the other task's test pairs."""
    rows = []
    for source in prepared:
        for target in prepared:
            if target is source:
                continue
            su = source.scored["starter"].restrict(source.first, *depth)
            raw, mods, labels, _ = su.pairs(source.task, source.task.query_ids("all"))
            cal = fit_calibrator(raw, mods, labels, method="platt", scorer=su.scorer)
            tu = target.scored["starter"].restrict(target.first, *depth)
            test = target.task.query_ids("test")
            shares = []
            p_all: list[float] = []
            m_all: list[str] = []
            y_all: list[int] = []
            for qid in test:
                items = tu.items[qid]
                probs = cal.calibrate([s for _, _, s in items], [m for _, m, _ in items])
                top = sorted(range(len(items)), key=lambda i: -probs[i])[:10]
                shares.append(np.mean([items[i][1] != "text" for i in top]))
                p_all += probs
                m_all += [m for _, m, _ in items]
                y_all += [1 if target.task.qrels[qid].get(d, 0) > 0 else 0 for d, _, _ in items]
            p, y, m = np.asarray(p_all), np.asarray(y_all), np.asarray(m_all, dtype=object)
            for modality in sorted(set(m_all)):
                mask = m == modality
                big = calibration_in_the_large(p[mask], y[mask])
                rows.append(
                    {
                        "fitted_on": source.task.name,
                        "measured_on": target.task.name,
                        "modality": modality,
                        "mean_predicted": float(p[mask].mean()),
                        "observed_rate": float(y[mask].mean()),
                        "above_0.1": big,
                        "pairs_in_lowest_bin": float(np.mean(p[mask] < 0.1)),
                        "image_share@10": float(np.mean(shares)),
                    }
                )
    return rows


def _one_map(model: Any) -> Any:
    """The model with its pooled Platt map used for every modality (the fused order is kept)."""
    from mm_rerank_components.calibration import PerModalityCalibrator

    cal = model.calibrator
    model.calibrator = PerModalityCalibrator(
        {"all": cal.calibrators["all"]}, fallback="all", scorer=cal.scorer, method="platt"
    )
    return model


def loto_unions(
    prepared: list[PreparedTask],
    options: FusionOptions,
    *,
    routes: bool = True,
    one_map: bool = False,
    prior_em: str | None = None,
) -> dict[str, Any]:
    """Per task: the default refitted on every other task, its probabilities on the task's test queries.

    ``routes=False`` hands the model the candidates without ``source`` and ``retrieval_score``.
    """
    from mm_rerank_components.eval.learned import fusion_union

    out = {}
    for p in prepared:
        model = fit_without(prepared, p, options)
        if one_map:
            model = _one_map(model)
        test = p.task.query_ids("test")
        union = fusion_union(model, p, "starter", test, *DEFAULT_DEPTH, routes=routes)
        if prior_em is not None:
            head = model.head_for([]) if routes else (model.route_free or model)
            union = _prior_em(union, head, prior_em)
        out[p.task.name] = union
    return out


def em_prior(p: np.ndarray, prior: float, iterations: int = 200) -> tuple[np.ndarray, float]:
    """Saerens et al. (2002): probabilities calibrated at ``prior`` re-estimated for the pool's own prior
    by EM on the pool's predictions alone (no labels)."""
    p = np.clip(p, 1e-9, 1 - 1e-9)
    new_prior, q = prior, p
    for _ in range(iterations):
        a, b = new_prior / prior, (1 - new_prior) / (1 - prior)
        q = a * p / (a * p + b * (1 - p))
        if abs(float(q.mean()) - new_prior) < 1e-7:
            break
        new_prior = float(q.mean())
    return q, new_prior


def _prior_em(union: Any, model: Any, scope: str) -> Any:
    """Each modality's probabilities adjusted by :func:`em_prior`, over the whole task or per query."""
    from mm_rerank_components.eval.pipelines import ScoredUnion

    stats = model.calibrator.stats
    items = {q: list(v) for q, v in union.items.items()}
    groups: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for qid, rows in items.items():
        for i, (_, modality, _) in enumerate(rows):
            groups.setdefault((qid if scope == "query" else "", modality), []).append((qid, i))
    for (_, modality), members in groups.items():
        prior = stats.get(modality, {}).get("positive_rate")
        if not prior:
            continue
        probs = np.asarray([items[q][i][2] for q, i in members])
        adjusted, _ = em_prior(probs, float(prior))
        for (q, i), v in zip(members, adjusted, strict=True):
            doc, m, _ = items[q][i]
            items[q][i] = (doc, m, float(v))
    return ScoredUnion(union.scorer, items)


def check_parser(doc: str | None) -> argparse.ArgumentParser:
    """The argument parser the check scripts share: ``--cache-dir`` and ``--threads`` (add your own)."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser


def check_setup(args: argparse.Namespace) -> tuple[Path, list[PreparedTask]]:
    """Apply ``--threads``; the cache folder and the five built-in tasks prepared at the default depth."""
    if args.threads is not None:
        from mm_rerank_components.cli._common import set_threads

        set_threads(args.threads)
    cache = args.cache_dir or default_cache_dir()
    return cache, prepare(cache, DEFAULT_DEPTH)


def labelled_pairs(
    task: Any, items: Mapping[str, Sequence[tuple[str, str, float]]], query_ids: Sequence[str]
) -> tuple[list[float], list[str], list[int], list[str]]:
    """Score, modality, 0/1 label and query id of every ``(doc, modality, score)`` of ``items[qid]``
    (a ``ScoredUnion``'s items), over ``query_ids`` of ``task``, in order."""
    probs, mods, labels, queries = [], [], [], []
    for qid in query_ids:
        for doc, kind, prob in items[qid]:
            probs.append(prob)
            mods.append(kind)
            labels.append(1 if task.qrels[qid].get(doc, 0) > 0 else 0)
            queries.append(qid)
    return probs, mods, labels, queries


def figure_lines(label: str, figures: Mapping[str, Any]) -> list[str]:
    """One line per modality of :func:`~mm_rerank_components.eval.targets.calibration_figures`' output:
    calibration among pairs predicted >= 0.1 with its CI, and ECE."""
    lines = []
    for modality, fig in figures.items():
        b = fig["above_0.1"]
        lo, hi = 100 * b.get("lo", float("nan")), 100 * b.get("hi", float("nan"))
        lines.append(
            f"  {label} {modality:5s} >=0.1: {b['mean_predicted']:.3f} predicted vs "
            f"{b['observed_rate']:.3f} observed ({b['pairs']} pairs), "
            f"gap {100 * b['relative_gap']:+.0f}% [{lo:+.0f}%, {hi:+.0f}%]; ECE {fig['ece']:.3f}"
        )
    return lines


def calibration_cells(
    prepared: list[PreparedTask], unions: dict[str, Any], split: str = "test"
) -> list[dict[str, Any]]:
    """Per task x modality, on ``split``'s queries: calibration-in-the-large among pairs predicted >= 0.1
    with its query-bootstrap 95% CI, whether that CI of predicted/observed overlaps [0.75, 1.25], and ECE."""
    from mm_rerank_components.eval.targets import calibration_figures

    cells = []
    for p in prepared:
        pairs = labelled_pairs(p.task, unions[p.task.name].items, p.task.query_ids(split))
        for modality, fig in calibration_figures(*pairs).items():
            big = fig["above_0.1"]
            lo, hi = big.get("lo", float("nan")), big.get("hi", float("nan"))
            measured = big["pairs"] > 0 and np.isfinite(lo) and np.isfinite(hi)
            cells.append(
                {
                    "task": p.task.name,
                    "modality": modality,
                    "pairs": big["pairs"],
                    "predicted": big["mean_predicted"],
                    "observed": big["observed_rate"],
                    "gap": big["relative_gap"],
                    "lo": lo,
                    "hi": hi,
                    "verdict": ("met" if lo <= 0.25 and hi >= -0.25 else "missed") if measured else "n/a",
                    "ece": fig["ece"],
                }
            )
    return cells


def ranking_lines(prepared: list[PreparedTask], unions: dict[str, Any]) -> list[str]:
    """Per task R@10 and nDCG@10 against the best fusion, picture share; pooled against every fusion."""
    from mm_rerank_components.eval.metrics import evaluate_run, per_query_values
    from mm_rerank_components.eval.pipelines import calibrated_run, fusion_run
    from mm_rerank_components.eval.stats import paired_bootstrap, pooled

    lines, per_task = [], {}
    for p in prepared:
        task, test = p.task, p.task.query_ids("test")
        metrics = evaluate_run(task, calibrated_run(unions[task.name], None, test), test)
        fusions = {
            f: evaluate_run(task, fusion_run(p.first, f, test, *DEFAULT_DEPTH), test) for f in LABEL_FREE
        }
        per_task[task.name] = (metrics, fusions, test)
        parts = [f"{task.name:17s}"]
        for metric in ("recall@10", "ndcg@10"):
            best = max(fusions, key=lambda f: fusions[f]["overall"][metric])
            r = paired_bootstrap(
                per_query_values(metrics, metric, test), per_query_values(fusions[best], metric, test)
            )
            parts.append(f"{metric} {r['a']:.3f} vs {best} {_ci(r)} {r['verdict']}")
        share = paired_bootstrap(
            per_query_values(metrics, "image_share@10", test),
            per_query_values(metrics, "relevant_image_share", test),
        )
        parts.append(
            f"pictures {100 * share['a']:.0f}% vs {100 * share['b']:.0f}% relevant, "
            f"{100 * share['diff']:+.0f} [{100 * share['lo']:+.0f}, {100 * share['hi']:+.0f}] points"
        )
        lines.append("; ".join(parts))
    for metric in ("recall@10", "ndcg@10"):
        parts = [f"pooled {metric}"]
        for f in LABEL_FREE:
            r = pooled(
                {
                    t: (per_query_values(m, metric, q), per_query_values(fs[f], metric, q))
                    for t, (m, fs, q) in per_task.items()
                }
            )
            parts.append(f"vs {f} {_ci(r)}")
        lines.append("; ".join(parts))
    return lines


LABEL_FREE = ("raw-merge", "rrf", "minmax", "zscore")


def _ci(r: dict[str, Any]) -> str:
    return f"{r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]"


def cell_lines(cells: list[dict[str, Any]]) -> list[str]:
    lines = []
    for c in cells:
        lines.append(
            f"  {c['task']:17s} {c['modality']:5s} >=0.1: {c['predicted']:.3f} predicted vs "
            f"{c['observed']:.3f} observed ({c['pairs']} pairs), gap {100 * c['gap']:+.0f}% "
            f"[{100 * c['lo']:+.0f}%, {100 * c['hi']:+.0f}%] {c['verdict']}; ECE {c['ece']:.3f}"
        )
    verdicts = [c["verdict"] for c in cells]
    worst = max(c["ece"] for c in cells)
    lines.append(
        f"  cells: {verdicts.count('met')} met, {verdicts.count('missed')} missed, "
        f"{verdicts.count('n/a')} n/a; worst ECE {worst:.3f}"
    )
    return lines


def composition_lines(prepared: list[PreparedTask], unions: dict[str, Any]) -> list[str]:
    """Per task and modality, the default's top 10 and ranks 11-20 over the test queries: slots, mean
    predicted probability and observed relevance rate (what would replace a picture in the top 10)."""
    from mm_rerank_components.eval.pipelines import calibrated_run

    lines = []
    for p in prepared:
        task, test = p.task, p.task.query_ids("test")
        run = calibrated_run(unions[task.name], None, test)
        cells: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for qid in test:
            info = {doc: (modality, prob) for doc, modality, prob in unions[task.name].items[qid]}
            ranked = sorted(run[qid], key=lambda d: -run[qid][d])[:20]
            for rank, doc in enumerate(ranked):
                modality = "image" if "image" in info[doc][0] else "text"
                relevant = 1.0 if task.qrels[qid].get(doc, 0) > 0 else 0.0
                where = "top 10" if rank < 10 else "ranks 11-20"
                cells.setdefault((modality, where), []).append((info[doc][1], relevant))
        parts = [f"{task.name:17s}"]
        for (modality, where), values in sorted(cells.items()):
            a = np.asarray(values)
            predicted, observed = a[:, 0].mean(), a[:, 1].mean()
            parts.append(
                f"{modality} {where}: {len(a)} slots, predicted {predicted:.3f}, observed {observed:.3f}"
            )
        lines.append("; ".join(parts))
    return lines


def loto(
    prepared: list[PreparedTask],
    options: FusionOptions,
    one_map: bool,
    routes: bool,
    prior_em: str | None = None,
    composition: bool = False,
) -> list[str]:
    """Leave-one-task-out lines for ``fit_fusion(options)``: fit on every other task, test on one;
    with ``composition``, also :func:`composition_lines` of the same models."""
    unions = loto_unions(prepared, options, routes=routes, one_map=one_map, prior_em=prior_em)
    lines = ranking_lines(prepared, unions) + cell_lines(calibration_cells(prepared, unions))
    return lines + (composition_lines(prepared, unions) if composition else [])


def captioned_check(prepared: list[PreparedTask], cache: Path, settings: FusionOptions) -> list[str]:
    """Tux Paint with captioned pictures: each picture carries its French caption (a text+image document).

    The default is fitted as shipped on every task but Tux Paint and measured on Tux Paint's test
    queries, both as it reads a captioned picture now (as a picture: its raw score and calibration)
    and as it did before (a modality it never saw: no raw-score signal), against the fusions.
    """
    import copy
    from dataclasses import replace

    from mm_rerank_components.eval.learned import fusion_union
    from mm_rerank_components.eval.metrics import evaluate_run, per_query_values
    from mm_rerank_components.eval.pipelines import calibrated_run, fusion_run
    from mm_rerank_components.eval.stats import paired_bootstrap
    from mm_rerank_components.eval.tasks import EvalTask

    tux = next(p for p in prepared if p.task.name == "tuxpaint-mixed")
    t = tux.task
    docs = {
        d: replace(c, text=t.docs["fr:" + d[4:]].text) if d.startswith("img:") else c
        for d, c in t.docs.items()
    }
    task = EvalTask("tuxpaint-captioned", t.description, docs, t.queries, t.qrels, t.splits)
    first = compute_first_stage(task, StarterEmbedder(), cache / "embeddings")
    qids = task.query_ids("dev") + task.query_ids("test")
    scored = score_union(task, first, StarterScorer(), qids, *DEFAULT_DEPTH, cache_dir=cache / "embeddings")
    captioned = PreparedTask(task, first, {"starter": scored})
    model = fit_without(prepared, tux, settings)
    before = copy.copy(model)
    before.spec = replace(model.spec, modalities=())
    test = task.query_ids("test")
    runs = {
        name: evaluate_run(
            task,
            calibrated_run(fusion_union(m, captioned, "starter", test, *DEFAULT_DEPTH), None, test),
            test,
        )
        for name, m in (("default", model), ("default, captioned pictures unmapped", before))
    }
    fusions = {
        f: evaluate_run(task, fusion_run(first, f, test, *DEFAULT_DEPTH), test)
        for f in ("rrf", "minmax", "zscore")
    }
    lines = [f"tuxpaint-captioned: {len(test)} test queries; pictures carry their French caption"]
    for name, metrics in runs.items():
        parts = [f"{name:38s}"]
        for metric in ("recall@10", "ndcg@10"):
            for f, other in fusions.items():
                r = paired_bootstrap(
                    per_query_values(metrics, metric, test), per_query_values(other, metric, test)
                )
                parts.append(
                    f"{metric} {r['a']:.3f} vs {f} {r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]"
                )
        parts.append(f"pictures {100 * metrics['image_share@10']:.0f}%")
        lines.append("; ".join(parts))
    return lines


def no_routes_check(prepared: list[PreparedTask], settings: FusionOptions) -> list[str]:
    """Leave-one-task-out, the default on candidates without ``source`` and ``retrieval_score``.

    What a reranker gets from a retriever that returns no scores (a plain LangChain retriever): the
    route features are missing, and the model gives them the route's training means. Compared with
    the scorer's own shipped calibration, the other label-free choice when there are no routes.
    """
    from dataclasses import replace

    from mm_rerank_components.eval.metrics import evaluate_run, per_query_values
    from mm_rerank_components.eval.pipelines import ScoredUnion, calibrated_run
    from mm_rerank_components.eval.stats import paired_bootstrap

    calibrator = StarterScorer().default_calibrator()
    if calibrator is None:
        raise RuntimeError("the starter scorer ships a calibration; this install lacks it")
    lines = []
    for p in prepared:
        model = fit_without(prepared, p, settings)
        test = p.task.query_ids("test")
        bare: dict[str, list[tuple[str, Any, float]]] = {}
        starter: dict[str, list[tuple[str, Any, float]]] = {}
        for qid, item in zip(test, labelled_lists(p, "starter", test, *DEFAULT_DEPTH), strict=True):
            stripped = [replace(c, source=None, retrieval_score=None) for c in item.candidates]
            probs = model.predict(item.query, stripped, item.raw_scores)
            bare[qid] = [(c.id, c.modality, float(v)) for c, v in zip(item.candidates, probs, strict=True)]
            cal = calibrator.calibrate(list(item.raw_scores), [c.modality for c in item.candidates])
            starter[qid] = [(c.id, c.modality, float(v)) for c, v in zip(item.candidates, cal, strict=True)]
        a = evaluate_run(p.task, calibrated_run(ScoredUnion("bare", bare), None, test), test)
        b = evaluate_run(p.task, calibrated_run(ScoredUnion("starter", starter), None, test), test)
        parts = [f"{p.task.name:17s} no retrieval scores"]
        for metric in ("recall@10", "ndcg@10"):
            r = paired_bootstrap(per_query_values(a, metric, test), per_query_values(b, metric, test))
            ci = f"{r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]"
            parts.append(f"{metric} {r['a']:.3f} vs calibrated starter {ci}")
        parts.append(f"pictures {100 * a['image_share@10']:.0f}% (starter {100 * b['image_share@10']:.0f}%)")
        lines.append("; ".join(parts))
    return lines


def _run_loto(args: argparse.Namespace, prepared: list[PreparedTask], cache: Path) -> int:
    changes = {
        key: value
        for key, value in (
            ("l2", args.l2),
            ("bm25", args.bm25),
            ("listwise", args.listwise),
            ("modality_floor", args.floor),
            ("calibrate_by", args.calibrate_by),
            ("route_free", args.route_free),
        )
        if value is not None
    }
    options = FIT_OPTIONS.replace(**changes)
    print(f"leave-one-task-out, {options}{', one Platt map' if args.one_map else ''}:")
    for line in loto(
        prepared, options, args.one_map, routes=True, prior_em=args.prior_em, composition=args.composition
    ):
        print(line)
    if args.captioned:
        for line in captioned_check(prepared, cache, options):
            print(line)
    if args.no_routes:
        print("the same models on candidates without source and retrieval_score:")
        for line in loto(prepared, options, args.one_map, routes=False, prior_em=args.prior_em):
            print(line)
        for line in no_routes_check(prepared, options):
            print(line)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=default_model_path(), help="where to write the model JSON"
    )
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--diagnose", action="store_true", help="print the old default's drift first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--loto", action="store_true", help="measure leave-one-task-out, write nothing")
    parser.add_argument("--l2", type=float, default=None, help="with --loto: the L2 penalty")
    parser.add_argument(
        "--bm25", action=argparse.BooleanOptionalAction, default=None, help="with --loto: BM25 features"
    )
    parser.add_argument(
        "--one-map", action="store_true", help="with --loto: one Platt map for both modalities"
    )
    parser.add_argument(
        "--listwise",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --loto: the listwise features",
    )
    parser.add_argument("--floor", type=int, default=None, help="with --loto: the modality floor (0 = none)")
    parser.add_argument(
        "--prior-em",
        choices=("task", "query"),
        default=None,
        help="with --loto: re-estimate each modality's prior from the test pools by EM (Saerens 2002), "
        "over the whole task or per query (label-free)",
    )
    parser.add_argument(
        "--calibrate-by", choices=("query", "group"), default=None, help="with --loto: calibration folds"
    )
    parser.add_argument(
        "--route-free",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --loto: the route-free head for lists without retrieval scores",
    )
    parser.add_argument(
        "--no-routes",
        action="store_true",
        help="with --loto: also measure the default on candidates without retrieval scores",
    )
    parser.add_argument(
        "--composition",
        action="store_true",
        help="with --loto: per task and modality, the top 10 and ranks 11-20 (slots, predicted, observed)",
    )
    parser.add_argument(
        "--captioned",
        action="store_true",
        help="with --loto: also measure Tux Paint with captioned pictures (text+image documents)",
    )
    args = parser.parse_args()
    if args.threads is not None:
        from mm_rerank_components.cli._common import set_threads

        set_threads(args.threads)
    cache = args.cache_dir or default_cache_dir()
    started = time.perf_counter()
    prepared = prepare(cache, DEFAULT_DEPTH)
    if args.loto:
        return _run_loto(args, prepared, cache)
    if args.diagnose:
        for row in diagnose(prepared, DEFAULT_DEPTH):
            big = row["above_0.1"]
            print(
                f"fitted on {row['fitted_on']:17s} measured on {row['measured_on']:17s} "
                f"{row['modality']:5s}: "
                f"mean predicted {row['mean_predicted']:.3f} vs observed {row['observed_rate']:.3f}; "
                f">= 0.1: {big['mean_predicted']:.3f} vs {big['observed_rate']:.3f} ({big['pairs']} pairs); "
                f"{100 * row['pairs_in_lowest_bin']:.0f}% of pairs below 0.1; "
                f"pictures in top 10: {100 * row['image_share@10']:.0f}%"
            )
    lists = [
        item
        for p in prepared
        for item in labelled_lists(p, "starter", p.task.query_ids("all"), *DEFAULT_DEPTH)
    ]
    model = fit_default_model(lists, scorer=prepared[0].scored["starter"].scorer)
    model.training["trained_on"] = {
        p.task.name: {"queries": len(p.task.queries), "split": "all"} for p in prepared
    }
    model.training["depth"] = list(DEFAULT_DEPTH)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(model.to_dict(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({len(lists)} queries, {model.training['pairs']} pairs)")
    for name, weight in model.weight_table()[:10]:
        print(f"  {name:28s} {weight:+.3f}")
    print(f"took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
