"""The label-free product default: relative inputs, the shipped model, and the eval's learned rows."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mm_rerank_components.adapt import FusionModel, LabelledList, LearnedFusionReranker
from mm_rerank_components.defaults import (
    FUSION_FIELDS,
    RelativeFusionModel,
    default_model_path,
    default_reranker,
    fit_default_model,
    load_default_model,
    relative_inputs,
)
from mm_rerank_components.eval.sources import DEFAULT_SOURCES, TASK_NAMES
from mm_rerank_components.scorers.fake import FakeScorer
from mm_rerank_components.types import Candidate


def _hits(shift: float = 0.0, scale: float = 1.0) -> list[Candidate]:
    out = []
    for i in range(6):
        out.append(
            Candidate(
                f"t{i}", text=f"passage {i}", source="text", retrieval_score=scale * (0.6 - 0.1 * i) + shift
            )
        )
        out.append(
            Candidate(
                f"i{i}", image=f"p{i}.png", source="image", retrieval_score=scale * (0.3 - 0.04 * i) + shift
            )
        )
    return out


def test_relative_inputs_do_not_move_with_the_corpus_scale() -> None:
    hits = _hits()
    raw = [c.retrieval_score or 0.0 for c in hits]
    a_cands, a_raw = relative_inputs(hits, raw)
    moved = _hits(shift=0.2, scale=3.0)  # another corpus: other offsets, other spread
    b_cands, b_raw = relative_inputs(moved, [3 * r + 0.2 for r in raw])
    assert np.allclose(a_raw, b_raw)
    assert np.allclose(
        [c.retrieval_score or 0.0 for c in a_cands], [c.retrieval_score or 0.0 for c in b_cands]
    )
    for field in FUSION_FIELDS:
        assert np.allclose([c.metadata[field] for c in a_cands], [c.metadata[field] for c in b_cands])
    # the top of each route gets min-max 1 and RRF 60/61
    assert a_cands[0].metadata[FUSION_FIELDS[0]] == 1.0 and a_cands[1].metadata[FUSION_FIELDS[0]] == 1.0
    assert a_cands[0].metadata[FUSION_FIELDS[1]] == pytest.approx(60 / 61)
    assert hits[0].retrieval_score == pytest.approx(0.6)  # inputs are not mutated
    with pytest.raises(ValueError, match="2 candidates but 1 raw scores"):
        relative_inputs(hits[:2], [0.1])


def test_relative_inputs_mark_candidates_without_a_retrieval_score() -> None:
    cands, raw = relative_inputs([Candidate("a", text="x"), Candidate("b", text="y")], [0.2, 0.4])
    assert [c.retrieval_score for c in cands] == [None, None]
    assert raw == pytest.approx([-1.0, 1.0])
    assert [c.metadata[FUSION_FIELDS[1]] for c in cands] == [0.0, 0.0]


def _lists(seed: int) -> list[LabelledList]:
    rng = np.random.default_rng(seed)
    lists = []
    for q in range(30):
        hits = _hits()
        labels = [1 if c.id in ("t0", "i1") else 0 for c in hits]
        raw = [float(v) for v in rng.normal(0, 0.05, len(hits)) + np.asarray(labels)]
        lists.append(LabelledList(f"query {q}", hits, raw, labels))
    return lists


def test_fit_default_model_is_seeded_and_round_trips(tmp_path: Path) -> None:
    one = fit_default_model(_lists(0), scorer="fake")
    two = fit_default_model(_lists(0), scorer="fake")
    assert np.array_equal(one.weights, two.weights)
    assert isinstance(one, FusionModel) and not isinstance(one, RelativeFusionModel)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(one.to_dict()))
    loaded = load_default_model(path)
    hits = _hits()
    raw = [1.0 if c.id in ("t0", "i1") else 0.0 for c in hits]
    assert loaded.predict("q", hits, raw) == pytest.approx(one.predict("q", hits, raw))
    probs = loaded.predict("q", hits, raw)
    assert max(range(len(hits)), key=probs.__getitem__) in (0, 3)  # t0 or i1 on top


def test_load_default_model_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="scripts/fit_default.py"):
        load_default_model(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_default_model(bad)


def test_the_shipped_default_loads_and_reranks_with_any_scorer(caplog: pytest.LogCaptureFixture) -> None:
    assert default_model_path().is_file()
    model = load_default_model()
    # the scorer's raw score and the routes' signals, absolute and per query; no BM25 (it did not
    # transfer across corpora, measured leave-one-task-out in docs/benchmarks.md)
    assert {"raw:text", "raw_z:image", "rr:text", "z:image"} <= set(model.feature_names)
    assert not model.spec.bm25 and "bm25_rel" not in model.feature_names
    trained_on = model.training["trained_on"]
    assert set(trained_on) == set(DEFAULT_SOURCES)  # every training source: refit when one is added
    assert set(DEFAULT_SOURCES) < set(TASK_NAMES)  # xfig-doc: measured, never fitted on
    reranker = default_reranker(FakeScorer())
    assert isinstance(reranker, LearnedFusionReranker)
    assert "fitted on" in caplog.text  # another scorer than the one it learned from: said so
    hits = [c for c in _hits() if c.text is not None]
    ranked = reranker.rerank("passage 0", hits, top_n=3)
    assert len(ranked) == 3 and all(0.0 <= r.score <= 1.0 for r in ranked)
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)


def test_relative_fusion_model_reads_relative_inputs(tmp_path: Path) -> None:
    from mm_rerank_components.defaults import FIT_OPTIONS

    relative = []
    for item in _lists(1):
        candidates, raw = relative_inputs(item.candidates, item.raw_scores)
        relative.append(LabelledList(item.query, candidates, raw, item.labels))
    from mm_rerank_components.adapt import fit_fusion

    plain = fit_fusion(relative, FIT_OPTIONS, metadata_fields=FUSION_FIELDS)
    model = RelativeFusionModel.from_dict(plain.to_dict())
    hits = _hits()
    raw = [1.0 if c.id in ("t0", "i1") else 0.0 for c in hits]
    candidates, rel_raw = relative_inputs(hits, raw)
    assert model.predict("q", hits, raw) == pytest.approx(plain.predict("q", candidates, rel_raw))


def test_the_default_maps_collection_names_onto_its_trained_routes() -> None:
    model = load_default_model()
    assert set(model.spec.routes) == {"text", "image"}
    renamed = [
        Candidate("t", text="a red fox", source="mm_text", retrieval_score=0.6),
        Candidate("i", image="fox.png", source="mm_images", retrieval_score=0.3),
        Candidate("n", text="no first stage"),  # no retrieval score: stays as it is
    ]
    routes = [c.source for c in model.canonical_routes(renamed)]
    assert routes == ["text", "image", None]
    assert renamed[0].source == "mm_text"  # copies, not mutated
    same = [
        Candidate("t", text="a red fox", source="text", retrieval_score=0.6),
        Candidate("i", image="fox.png", source="image", retrieval_score=0.3),
    ]
    assert model.predict("red fox", renamed[:2], [0.5, 0.4]) == pytest.approx(
        model.predict("red fox", same, [0.5, 0.4])
    )


def test_the_shipped_default_needs_no_bm25(monkeypatch: pytest.MonkeyPatch) -> None:
    from mm_rerank_components.adapt import features
    from mm_rerank_components.defaults import FIT_SETTINGS

    assert FIT_SETTINGS["bm25"] is False  # what the eval's leave-one-task-out refits use too

    def no_bm25s() -> None:
        raise ImportError("bm25s is not installed")

    monkeypatch.setattr(features, "_bm25s", no_bm25s)
    hits = [c for c in _hits() if c.text is not None]
    probs = load_default_model().predict("passage 0", hits, [0.1 * i for i in range(len(hits))])
    assert len(probs) == len(hits) and all(0.0 < p < 1.0 for p in probs)


def test_queries_with_a_picture_use_the_scorers_calibration_and_text_queries_the_fusion(
    red_png: Path,
) -> None:
    from mm_rerank_components import Query
    from mm_rerank_components.defaults import DefaultReranker

    reranker = default_reranker(FakeScorer())
    assert isinstance(reranker, DefaultReranker) and isinstance(reranker, LearnedFusionReranker)
    hits = _hits()[:4]
    hits = [
        h
        if h.image is None
        else Candidate(h.id, image=str(red_png), source="image", retrieval_score=h.retrieval_score)
        for h in hits
    ]
    # a picture in the query: exactly what the calibrated base reranker says
    picture = Query(text="passage 1", image=str(red_png))
    base = reranker.base.rerank(picture, hits, top_n=3)
    routed = reranker.rerank(picture, hits, top_n=3)
    assert [(r.index, r.score) for r in routed] == [(r.index, r.score) for r in base]
    # a text query: the learned fusion, whose scores are not the base's calibrated ones
    fused = reranker.rerank("passage 1", hits)
    plain = reranker.base.rerank("passage 1", hits)
    assert sorted(r.index for r in fused) == sorted(r.index for r in plain)
    assert {r.index: r.score for r in fused} != {r.index: r.score for r in plain}
    with pytest.raises(ValueError, match="top_n"):
        reranker.rerank(picture, hits, top_n=True)


def test_the_shipped_default_was_refitted_with_the_current_settings() -> None:
    """The shipped file must be refitted (python scripts/fit_default.py) whenever FIT_OPTIONS change."""
    from mm_rerank_components.defaults import FIT_OPTIONS

    model = load_default_model()
    training = model.training
    assert (training["l2"], training["pointwise"], training["seed"]) == (
        FIT_OPTIONS.l2,
        FIT_OPTIONS.pointwise,
        FIT_OPTIONS.seed,
    )
    assert model.modality_floor == FIT_OPTIONS.modality_floor
    assert bool(model.spec.listwise) == FIT_OPTIONS.listwise and model.spec.bm25 == FIT_OPTIONS.bm25
    expected = "leave-one-group-out" if FIT_OPTIONS.calibrate_by == "group" else "out-of-fold"
    assert training["calibration"] == expected
    # the route-free head scores candidates without retrieval signals (HTTP clients, user-built nodes)
    assert (model.route_free is not None) == FIT_OPTIONS.route_free
    if model.route_free is not None:
        hits = [replace(c, source=None, retrieval_score=None) for c in _hits() if c.text is not None]
        assert model.head_for(hits) is model.route_free
