"""Captioned pictures, leave-one-task-out: four readings of a picture that carries a caption.

For each built-in task, the default is refitted on every other task (as ``mm-rerank eval`` does) and
scores that task's test queries with its pictures carrying a caption (text+image documents):

* ``shipped``: as the default reads a captioned picture without options: as a picture (its raw score,
  which mixes caption and pixels, through the picture columns and the picture map);
* ``read_captions``: the caption also read as a passage, the larger probability wins
  (:meth:`~mm_rerank_components.adapt.FusionModel.caption_probabilities`);
* ``caption_map``: as shipped, but the fused score goes through a Platt map of its own for captioned
  pictures (:func:`fit_caption_map` here), fitted on the captioned variants
  of the *other* tasks only;
* ``combiner``: as shipped, but a captioned picture's probability is ``sigmoid(a * f_pic + b * f_cap + c)``,
  ``f_pic`` its fused score as a picture, ``f_cap`` its caption's fused score read as a passage (the
  route-free head's), ``(a, b, c)`` a logistic regression on the other tasks' captioned variants
  (:func:`fit_combiner`; measured, not adopted: see docs/calibration.md);
* ``shift``: as shipped, but a captioned picture's map is the picture map moved by ``b`` in log-odds (same
  slope), ``b`` fitted on the other tasks' captioned variants (:func:`fit_caption_shift`; measured, not
  adopted: see docs/calibration.md);
* ``shipped_bare``, ``combiner_bare`` and ``shift_bare``: shipped, combiner and shift without route
  signals (the route-free head), the latter two compared with the first.

Captioned variants (a name or title caption is the item's query text, so the other items' captions
are near misses):

* ``tuxpaint-fr``: each Tux Paint picture carries its French caption (the queries are English);
* ``tuxpaint-en``: each carries its English caption ("A green apple." is a near miss for "A red apple.");
* ``gcompris-title``: each GCompris photo carries its title, as the quickstart ingests it;
* ``wesnoth-name``, ``widelands-name``, ``freeorion-name``: each picture carries its item's name.

Prints, per variant, R@10, nDCG@10 and the pictures' share of the top 10 of each setting against
``shipped`` (paired bootstrap 95% CI over test queries) and, per setting, calibration among captioned
pictures and passages predicted >= 0.1 (mean predicted vs observed, query-bootstrap CI) and ECE.

Usage (reads the caches ``mm-rerank eval`` fills; a few minutes warm)::

    python scripts/read_captions_check.py [--threads 1]
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fit_default as fd  # the sibling script: prepare, fit_without

from mm_rerank_components import Query
from mm_rerank_components.adapt.fusion import caption_view, strip_routes
from mm_rerank_components.calibration import PlattCalibrator, expected_calibration_error
from mm_rerank_components.defaults import DEFAULT_DEPTH, FIT_OPTIONS
from mm_rerank_components.eval.datasets import fetch_tuxpaint_stamps
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

SETTINGS = (
    "shipped",
    "read_captions",
    "caption_map",
    "combiner",
    "shift",
    "shipped_bare",
    "combiner_bare",
    "shift_bare",
)


def captioned(
    base: PreparedTask, name: str, caption_of: Callable[[str], str | None], cache: Path
) -> PreparedTask:
    """``base``'s task with every picture carrying ``caption_of(doc_id)`` (``None``: none), first stage and
    scores redone."""
    t = base.task
    docs = {d: replace(c, text=caption_of(d)) if c.image is not None else c for d, c in t.docs.items()}
    task = EvalTask(name, t.description, docs, t.queries, t.qrels, t.splits)
    first = compute_first_stage(task, StarterEmbedder(), cache / "embeddings")
    qids = task.query_ids("dev") + task.query_ids("test")
    scored = score_union(task, first, StarterScorer(), qids, *DEFAULT_DEPTH, cache_dir=cache / "embeddings")
    return PreparedTask(task, first, {"starter": scored})


def _item_name(queries: dict[str, str]) -> Callable[[str], str | None]:
    """A picture ``img:X``'s caption: the query text of item ``X`` (``q:X``), if there is one."""
    return lambda doc: queries.get("q:" + doc[4:])


def variants(prepared: list[PreparedTask], cache: Path) -> dict[str, tuple[PreparedTask, PreparedTask]]:
    """Variant name -> (the task the default must not see, its captioned version)."""
    by = {p.task.name: p for p in prepared}
    tux = by["tuxpaint-mixed"]
    english = {"img:" + s.id: s.caption for s in fetch_tuxpaint_stamps(cache)}
    out = {
        "tuxpaint-fr": (
            tux,
            captioned(tux, "tuxpaint-fr", lambda d: tux.task.docs["fr:" + d[4:]].text, cache),
        ),
        "tuxpaint-en": (tux, captioned(tux, "tuxpaint-en", english.get, cache)),
    }
    for base, name in (
        ("gcompris-explore", "gcompris-title"),
        ("wesnoth-units", "wesnoth-name"),
        ("widelands-items", "widelands-name"),
        ("freeorion-items", "freeorion-name"),
    ):
        p = by[base]
        out[name] = (p, captioned(p, name, _item_name(dict(p.task.queries)), cache))
    return out


def captioned_pictures_by_head(
    model: Any, lists: Sequence[Any]
) -> Iterator[tuple[str, Any, np.ndarray, np.ndarray]]:
    """Per head of ``model`` (``main`` on the lists as given, ``route_free`` on them without route
    signals): the head, and the fused scores and 0/1 labels of the captioned pictures in ``lists``."""
    heads = [("main", model, False)] + ([("route_free", model.route_free, True)] if model.route_free else [])
    for name, head, bare in heads:
        scores: list[float] = []
        labels: list[float] = []
        for item in lists:
            given = strip_routes(item.candidates) if bare else list(item.candidates)
            fused = head.fused_scores(item.query, given, item.raw_scores)
            for c, f, y in zip(given, fused, item.labels, strict=True):
                if c.modality == "text+image":
                    scores.append(f)
                    labels.append(1.0 if y > 0 else 0.0)
        yield name, head, np.asarray(scores), np.asarray(labels)


def fit_caption_map(model: Any, lists: Sequence[Any]) -> dict[str, Any]:
    """Give ``model`` (and its route-free head) a Platt map of its own for captioned pictures (measured
    here, not adopted: see docs/calibration.md).

    A model whose features read a captioned picture (``text+image``) as a picture calibrates it with the
    picture map, learned on pictures without captions: a caption moves the raw score where that map
    was never fitted. This fits a ``"text+image"`` map on the model's fused scores of the captioned
    pictures in ``lists`` (labelled lists whose pictures carry captions), for the main head on the lists
    as given and for the route-free head on the same lists without route signals. Weights, features
    and every other map are unchanged, so uncaptioned candidates score exactly as before.

    Returns the fit statistics per head (pairs, positives, ECE), also kept in each calibrator's ``stats``.
    Raises ValueError when the lists hold no captioned picture with both relevant and non-relevant pairs.
    """
    out: dict[str, Any] = {}
    for name, head, scores, y_arr in captioned_pictures_by_head(model, lists):
        if not 0 < y_arr.sum() < len(y_arr):
            raise ValueError(
                f"a captioned-picture map needs relevant and non-relevant text+image pairs, got "
                f"{int(y_arr.sum())} relevant of {len(y_arr)}"
            )
        cal = PlattCalibrator().fit(scores, y_arr)
        head.calibrator.calibrators["text+image"] = cal
        probs = cal.predict(scores)
        entry = {
            "pairs": len(scores),
            "positives": int(y_arr.sum()),
            "ece": expected_calibration_error(probs, y_arr),
            "fitted_on": "captioned pictures, fused scores of this model",
        }
        head.calibrator.stats["text+image"] = entry
        out[name] = entry
    return out


def fit_offset(offsets: np.ndarray, labels: np.ndarray, steps: int = 100) -> float:
    """The ``b`` that maximises the likelihood of ``labels`` under ``sigmoid(offsets + b)`` (Newton)."""
    b = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(offsets + b)))
        hess = float((p * (1 - p)).sum())
        if hess <= 0:
            break
        step = float((p - labels).sum()) / hess
        b -= step
        if abs(step) < 1e-10:
            break
    return b


def fit_caption_shift(model: Any, lists: Sequence[Any]) -> dict[str, Any]:
    """Configuration 4 (rule in docs/calibration.md): per head, a ``text+image`` map that is the picture
    map moved by ``b`` in log-odds (same slope), ``b`` fitted on the captioned pictures in ``lists``.

    Returns per head the shift and the pairs it was fitted on; uncaptioned candidates are unchanged.
    """
    out: dict[str, Any] = {}
    for name, head, scores, labels in captioned_pictures_by_head(model, lists):
        picture = head.calibrator.calibrators["image"]
        shift = fit_offset(picture.a * scores + picture.b, labels)
        head.calibrator.calibrators["text+image"] = PlattCalibrator(picture.a, picture.b + shift)
        out[name] = {"shift": round(shift, 4), "pairs": len(scores), "positives": int(labels.sum())}
    return out


def caption_fused(
    model: Any, query: Any, hits: Sequence[Any], raw: Sequence[float], captions: Sequence[float | None]
) -> list[float | None]:
    """The route-free head's fused score of each captioned picture's caption read as a passage of the
    list (as :meth:`FusionModel.caption_probabilities` computes it, before its map), else ``None``."""
    views = {
        i: v for i, h in enumerate(hits) if captions[i] is not None and (v := caption_view(h)) is not None
    }
    out: list[float | None] = [None] * len(hits)
    if not views:
        return out
    head = model.route_free or model
    fused = head.fused_scores(
        query, [*strip_routes(hits), *views.values()], [*raw, *(captions[i] for i in views)]
    )
    for i, f in zip(views, fused[len(hits) :], strict=True):
        out[i] = float(f)
    return out


def combiner_inputs(
    model: Any, item: Any, captions: Sequence[float | None], bare: bool
) -> list[tuple[int, float, float]]:
    """``(index, f_pic, f_cap)`` of each captioned picture of ``item``: the fused score its head gives the
    picture, and its caption's fused score read as a passage."""
    hits = strip_routes(item.candidates) if bare else list(item.candidates)
    head = model.route_free if bare and model.route_free else model
    pic = head.fused_scores(item.query, hits, item.raw_scores)
    cap = caption_fused(model, item.query, list(item.candidates), item.raw_scores, captions)
    return [(i, float(pic[i]), float(c)) for i, c in enumerate(cap) if c is not None]


def caption_scores_of(item: Any, scorer: StarterScorer) -> list[float | None]:
    """The scorer's raw score of each captioned picture's caption alone (``None`` elsewhere)."""
    hits = item.candidates
    views = {i: v for i, v in enumerate(map(caption_view, hits)) if v is not None}
    out: list[float | None] = [None] * len(hits)
    query = item.query if isinstance(item.query, Query) else Query(item.query)
    for i, s in zip(views, scorer.score(query, list(views.values())), strict=True):
        out[i] = s
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 100) -> np.ndarray:
    """Weights then intercept of a logistic regression of ``y`` on the columns of ``x`` (Newton steps,
    an L2 penalty of 1 so nearly separable data, as the name captions give, stays finite)."""
    design = np.column_stack([x, np.ones(len(x))])
    w = np.zeros(design.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        grad = design.T @ (p - y) + l2 * w
        hess = (design * (p * (1 - p))[:, None]).T @ design + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def fit_combiner(model: Any, lists: Sequence[Any], scorer: StarterScorer) -> dict[bool, np.ndarray]:
    """Configuration 3 (rule in docs/calibration.md): per head (``bare``: route-free), logistic regression
    of a captioned picture's relevance on (f_pic, f_cap), fitted on ``lists`` (other tasks' captioned
    variants). Returns ``{bare: (a, b, c)}``."""
    out: dict[bool, np.ndarray] = {}
    caps = [caption_scores_of(item, scorer) for item in lists]
    for bare in (False, True):
        x: list[tuple[float, float]] = []
        y: list[float] = []
        for item, c in zip(lists, caps, strict=True):
            for i, fp, fc in combiner_inputs(model, item, c, bare):
                x.append((fp, fc))
                y.append(1.0 if item.labels[i] > 0 else 0.0)
        out[bare] = fit_logistic(np.asarray(x), np.asarray(y))
        print(
            f"  combiner bare={bare}: a, b, c = {out[bare].round(3).tolist()}"
            f" on {len(y)} pairs, {sum(y):.0f} relevant"
        )
    return out


def combined(
    model: Any, item: Any, captions: Sequence[float | None], coef: np.ndarray, bare: bool
) -> list[float]:
    """``item``'s probabilities with each captioned picture's replaced by the combiner's (floor after)."""
    from mm_rerank_components.adapt.fusion import apply_modality_floor

    hits = strip_routes(item.candidates) if bare else list(item.candidates)
    floor, model.modality_floor = model.modality_floor, 0
    try:
        probs = model.predict(item.query, hits, item.raw_scores)
    finally:
        model.modality_floor = floor
    for i, fp, fc in combiner_inputs(model, item, captions, bare):
        probs[i] = float(1.0 / (1.0 + np.exp(-(coef[0] * fp + coef[1] * fc + coef[2]))))
    if floor > 0:
        kinds = ["image" if c.image is not None else "text" for c in hits]
        probs = apply_modality_floor(probs, kinds, floor)
    return probs


def unions(
    model: Any,
    mapped: Any,
    variant: PreparedTask,
    scorer: StarterScorer,
    coefs: dict[bool, np.ndarray],
    shifted: Any,
) -> dict[str, ScoredUnion]:
    """Each setting's probabilities on the variant's test queries (``mapped``: with a caption map;
    ``shifted``: with the caption shift)."""
    test = variant.task.query_ids("test")
    items: dict[str, dict[str, list[tuple[str, Any, float]]]] = {s: {} for s in SETTINGS}
    for qid, item in zip(test, labelled_lists(variant, "starter", test, *DEFAULT_DEPTH), strict=True):
        hits = item.candidates
        views = {i: v for i, v in enumerate(map(caption_view, hits)) if v is not None}
        captions: list[float | None] = [None] * len(hits)
        query = Query(variant.task.queries[qid])
        for i, s in zip(views, scorer.score(query, list(views.values())), strict=True):
            captions[i] = s
        for setting, m, given in (
            ("shipped", model, None),
            ("read_captions", model, captions),
            ("caption_map", mapped, None),
            ("shift", shifted, None),
        ):
            probs = m.predict(item.query, hits, item.raw_scores, given)
            items[setting][qid] = [(c.id, c.modality, float(p)) for c, p in zip(hits, probs, strict=True)]
        bare = strip_routes(hits)
        for setting, probs in (
            ("combiner", combined(model, item, captions, coefs[False], False)),
            ("shipped_bare", model.predict(item.query, bare, item.raw_scores)),
            ("combiner_bare", combined(model, item, captions, coefs[True], True)),
            ("shift_bare", shifted.predict(item.query, bare, item.raw_scores)),
        ):
            items[setting][qid] = [(c.id, c.modality, float(p)) for c, p in zip(hits, probs, strict=True)]
    return {s: ScoredUnion(s, items[s]) for s in SETTINGS}


def comparison_lines(
    variant: PreparedTask, scored: dict[str, ScoredUnion], against: dict[str, str], width: int
) -> list[str]:
    """On the variant's test queries: R@10, nDCG@10 and pictures' share of the top 10 of each setting in
    ``against`` minus its baseline (paired bootstrap), then every setting's calibration (a captioned
    picture counts as a picture); setting names padded to ``width``."""
    task, test = variant.task, variant.task.query_ids("test")
    metrics = {s: evaluate_run(task, calibrated_run(u, None, test), test) for s, u in scored.items()}
    lines = []
    for setting, base in against.items():
        for metric in ("recall@10", "ndcg@10", "image_share@10"):
            r = paired_bootstrap(
                per_query_values(metrics[setting], metric, test),
                per_query_values(metrics[base], metric, test),
            )
            lines.append(
                f"  {setting:{width}s} {metric}: {r['a']:.3f} vs {r['b']:.3f}: "
                f"{r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]"
            )
    for setting, union in scored.items():
        probs, kinds, labels, queries = fd.labelled_pairs(task, union.items, test)
        mods = ["text" if kind == "text" else "image" for kind in kinds]  # a captioned picture is a picture
        lines += fd.figure_lines(f"{setting:{width}s}", calibration_figures(probs, mods, labels, queries))
    return lines


def report(name: str, variant: PreparedTask, scored: dict[str, ScoredUnion]) -> list[str]:
    """Each setting against ``shipped`` (the ``_bare`` ones against ``shipped_bare``), then calibration."""
    against = {
        s: "shipped_bare" if s.endswith("_bare") else "shipped" for s in SETTINGS[1:] if s != "shipped_bare"
    }
    header = f"== {name}: {len(variant.task.query_ids('test'))} test queries (each setting minus shipped)"
    return [header, *comparison_lines(variant, scored, against, 13)]


def held_out_variants(
    prepared: list[PreparedTask], found: dict[str, tuple[PreparedTask, PreparedTask]]
) -> Iterator[tuple[PreparedTask, dict[str, PreparedTask], Any]]:
    """Each task that has captioned variants, held out: the task, its variants by name (from
    :func:`variants`) and the default refitted on the other tasks (it never saw the held-out one)."""
    for held_out in prepared:
        mine = {n: v for n, (base, v) in found.items() if base is held_out}
        if mine:
            yield held_out, mine, fd.fit_without(prepared, held_out, FIT_OPTIONS)


def main() -> int:
    cache, prepared = fd.check_setup(fd.check_parser(__doc__).parse_args())
    scorer = StarterScorer()
    found = variants(prepared, cache)
    for held_out, mine, model in held_out_variants(prepared, found):
        mapped = copy.deepcopy(model)
        others = [
            item
            for base, v in found.values()
            if base is not held_out
            for item in labelled_lists(v, "starter", v.task.query_ids("all"), *DEFAULT_DEPTH)
        ]
        stats = fit_caption_map(mapped, others)
        coefs = fit_combiner(model, others, scorer)
        shifted = copy.deepcopy(model)
        shift = fit_caption_shift(shifted, others)
        print(f"{held_out.task.name} held out: caption map fitted on {len(others)} captioned lists: {stats}")
        print(f"  caption shift: {shift}")
        for name, variant in mine.items():
            for line in report(name, variant, unions(model, mapped, variant, scorer, coefs, shifted)):
                print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
