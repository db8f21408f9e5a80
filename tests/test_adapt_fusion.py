"""Learned fusion: features, training, determinism, calibration and the LearnedFusionReranker."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from typing import Any

import numpy as np
import pytest

from mm_rerank_components import Candidate, MultimodalReranker, Query
from mm_rerank_components.adapt import (
    FeatureSpec,
    FusionModel,
    LabelledList,
    LearnedFusionReranker,
    fit_fusion,
)
from mm_rerank_components.adapt.features import bm25_pool_scores
from mm_rerank_components.calibration import PlattCalibrator, SigmoidCalibrator
from mm_rerank_components.scorers import FakeScorer


def _synthetic(n_queries: int = 40, seed: int = 1, informative: str = "meta") -> list[LabelledList]:
    """Lists where the raw score is pure noise and one signal marks the two positives."""
    rng = np.random.default_rng(seed)
    lists = []
    for q in range(n_queries):
        candidates, raw, labels = [], [], []
        for j in range(20):
            route = "text" if j < 10 else "image"
            relevant = j in (2, 13)
            signal = float(rng.normal(2.0 if relevant else 0.0, 0.5))
            candidates.append(
                Candidate(
                    f"q{q}-d{j}",
                    text=f"passage {j}" if route == "text" else None,
                    image=b"not decoded here" if route == "image" else None,
                    source=route,
                    retrieval_score=signal if informative == "retrieval" else float(rng.normal()),
                    metadata={"signal": signal if informative == "meta" else float(rng.normal())},
                )
            )
            raw.append(float(rng.normal()))
            labels.append(int(relevant))
        lists.append(LabelledList(f"query {q}", candidates, raw, labels))
    return lists


def _positives_on_top(model: FusionModel, lists: list[LabelledList]) -> float:
    hits = 0
    for item in lists:
        probs = model.predict(item.query, item.candidates, item.raw_scores)
        top = sorted(range(len(probs)), key=lambda i: -probs[i])[:2]
        hits += sum(item.labels[i] for i in top)
    return hits / (2 * len(lists))


def test_fusion_learns_an_informative_metadata_field() -> None:
    train, test = _synthetic(40, seed=1), _synthetic(20, seed=2)
    model = fit_fusion(train, seed=0, metadata_fields=["signal"])
    assert _positives_on_top(model, test) > 0.9
    weights = dict(model.weight_table())
    assert max(weights, key=lambda n: abs(weights[n])) == "meta:signal"
    # without the field the raw score is noise: far worse
    blind = fit_fusion(train, seed=0)
    assert _positives_on_top(blind, test) < 0.5


def test_fusion_learns_from_route_similarity() -> None:
    train, test = (
        _synthetic(40, seed=3, informative="retrieval"),
        _synthetic(20, seed=4, informative="retrieval"),
    )
    model = fit_fusion(train, seed=0)
    assert _positives_on_top(model, test) > 0.9
    fused = model.training["train_metrics"]["fused"]["recall@10"]
    assert fused > model.training["train_metrics"]["raw_score"]["recall@10"]


def test_same_seed_identical_weights_and_scores() -> None:
    lists = _synthetic(30, seed=5)
    a = fit_fusion(lists, seed=7, metadata_fields=["signal"], max_pairs_per_query=20)
    b = fit_fusion(lists, seed=7, metadata_fields=["signal"], max_pairs_per_query=20)
    assert np.array_equal(a.weights, b.weights) and a.bias == b.bias
    item = lists[0]
    assert a.predict(item.query, item.candidates, item.raw_scores) == b.predict(
        item.query, item.candidates, item.raw_scores
    )
    # another seed samples other pairs (allowed to differ; here it does, since pairs are subsampled)
    c = fit_fusion(lists, seed=8, metadata_fields=["signal"], max_pairs_per_query=20)
    assert not np.array_equal(a.weights, c.weights)


def test_to_dict_round_trip_is_json_and_exact() -> None:
    lists = _synthetic(12, seed=6)
    model = fit_fusion(lists, seed=0, metadata_fields=["signal"])
    text = json.dumps(model.to_dict())
    again = FusionModel.from_dict(json.loads(text))
    item = lists[3]
    assert again.predict(item.query, item.candidates, item.raw_scores) == model.predict(
        item.query, item.candidates, item.raw_scores
    )
    assert again.feature_names == model.feature_names


def test_from_dict_rejects_other_json() -> None:
    with pytest.raises(ValueError, match="not a learned-fusion model"):
        FusionModel.from_dict({"format": "something-else"}, source="weights.json")


def test_calibration_is_per_modality_and_honest_in_the_large() -> None:
    lists = _synthetic(60, seed=8, informative="retrieval")
    model = fit_fusion(lists, seed=0)
    stats = model.calibrator.stats
    assert set(stats) == {"text", "image"}
    for entry in stats.values():
        assert entry["ece"] < 0.05
        assert abs(entry["mean_probability"] - entry["positive_rate"]) < 0.02
    assert model.training["calibration"] == "out-of-fold"


def test_missing_values_are_explicit_features() -> None:
    spec = FeatureSpec(routes=("image", "text"), metadata_fields=("year",))
    candidates = [
        Candidate("a", text="red fox", source="text", retrieval_score=0.5, metadata={"year": 0}),
        Candidate("b", image=b"x", source="image"),  # no retrieval score, no caption, no year
        Candidate("c", text="owl", source="somewhere-else", retrieval_score=0.1, metadata={"year": "old"}),
    ]
    x = spec.transform(None, candidates, [0.0, 0.0, 1.0])
    col = {n: j for j, n in enumerate(spec.names)}
    assert x[:, col["query_text_missing"]].tolist() == [1, 1, 1]
    assert x[:, col["retrieval_missing"]].tolist() == [0, 1, 0]
    assert x[:, col["doc_text_missing"]].tolist() == [0, 1, 0]
    # a real zero year is a value; a missing or non-numeric one is flagged
    assert x[:, col["meta:year"]].tolist() == [0, 0, 0]
    assert x[:, col["meta_missing:year"]].tolist() == [0, 1, 1]
    assert x[2, col["route:<other>"]] == 1 and x[0, col["route:text"]] == 1
    assert x[0, col["rr:text"]] == pytest.approx(1 / 61)


def test_route_rank_follows_retrieval_score() -> None:
    spec = FeatureSpec(routes=("text",), bm25=False)
    candidates = [
        Candidate(f"t{i}", text="x", source="text", retrieval_score=s) for i, s in enumerate([0.2, 0.9])
    ]
    x = spec.transform("q", candidates, [0.0, 0.0])
    col = {n: j for j, n in enumerate(spec.names)}
    assert x[:, col["rr:text"]].tolist() == pytest.approx([1 / 62, 1 / 61])
    assert x[:, col["minmax:text"]].tolist() == [0.0, 1.0]


def test_bm25_uses_the_pool() -> None:
    scores = bm25_pool_scores("red fox den", ["the red fox sleeps in its den", "an owl at night", None])
    assert scores[0] is not None and scores[0] > 0
    assert scores[1] == 0.0 and scores[2] is None
    assert bm25_pool_scores(None, ["text"]) == [None]


def test_reranker_keeps_failed_candidates_last_and_maps_indices() -> None:
    lists = _synthetic(12, seed=9, informative="retrieval")
    model = fit_fusion(lists, seed=0)
    base = MultimodalReranker(FakeScorer(), on_error="keep")
    reranker = LearnedFusionReranker(base, model)
    hits = [
        Candidate("t0", text="red fox", source="text", retrieval_score=0.1),
        Candidate("broken", image="/nonexistent/picture.png", source="image", retrieval_score=3.0),
        Candidate("t1", text="red fox in snow", source="text", retrieval_score=2.5),
        Candidate("t2", text="owl", source="text", retrieval_score=-1.0),
    ]
    ranked = reranker.rerank(Query("red fox"), hits, top_n=1)
    assert [r.id for r in ranked] == ["t1", "broken"]
    assert ranked[0].index == 2 and ranked[0].raw_score == 1.0  # FakeScorer's raw word overlap
    assert ranked[-1].error is not None and math.isnan(ranked[-1].raw_score)
    assert ranked[-1].candidate.metadata["rerank_error"] == ranked[-1].error
    full = reranker.rerank("red fox", hits)
    assert [r.rank for r in full] == [0, 1, 2, 3]
    assert all(0.0 <= r.score <= 1.0 for r in full)
    assert full == [*sorted(full[:-1], key=lambda r: -r.score), full[-1]]
    assert reranker.rerank("red fox", hits, threshold=1.0)[-1].id == "broken"
    assert reranker.rerank("red fox", []) == []


def test_reranker_arerank_matches_rerank() -> None:
    import asyncio

    model = fit_fusion(_synthetic(12, seed=10), seed=0)
    reranker = LearnedFusionReranker(MultimodalReranker(FakeScorer()), model)
    hits = [
        Candidate("a", text="fox", source="text", retrieval_score=0.3),
        Candidate("b", text="owl", source="text"),
    ]
    assert asyncio.run(reranker.arerank("fox", hits)) == reranker.rerank("fox", hits)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="one raw score and one label"):
        LabelledList("q", [Candidate("a", text="x")], [0.1, 0.2], [1])
    with pytest.raises(ValueError, match="grades"):
        LabelledList("q", [Candidate("a", text="x")], [0.1], [0.5])
    with pytest.raises(ValueError, match="at least one relevant"):
        fit_fusion([LabelledList("q", [Candidate("a", text="x")], [0.1], [0])])
    with pytest.raises(TypeError, match="MultimodalReranker"):
        LearnedFusionReranker(object(), fit_fusion(_synthetic(4)))  # type: ignore[arg-type]


def test_bm25s_debug_logging_is_not_forced_on() -> None:
    import logging

    bm25_pool_scores("red fox", ["a red fox"])
    # bm25s sets DEBUG on import; the feature code hands the level back to the application
    assert logging.getLogger("bm25s").getEffectiveLevel() == logging.getLogger().getEffectiveLevel()


def test_empty_and_unlabelled_pools_and_image_queries(red_png: object) -> None:
    lists = _synthetic(12, seed=11, informative="retrieval")
    lists.append(LabelledList("nothing found", [], [], []))
    lists.append(LabelledList("no positive", lists[0].candidates, lists[0].raw_scores, [0] * 20))
    model = fit_fusion(lists, seed=0)
    assert model.training["queries"] == 14
    reranker = LearnedFusionReranker(MultimodalReranker(FakeScorer()), model)
    hits = [
        Candidate("t", text="red fox", source="text", retrieval_score=1.0),
        Candidate("i", image=str(red_png), source="image", retrieval_score=0.5),
    ]
    ranked = reranker.rerank(Query(image=str(red_png)), hits)  # no query text: BM25 is marked missing
    assert sorted(r.id for r in ranked) == ["i", "t"]
    assert all(0.0 <= r.score <= 1.0 for r in ranked)


def test_routes_named_differently_at_serving_time_map_by_kind() -> None:
    import dataclasses

    lists = _synthetic(16, seed=12, informative="retrieval")
    model = fit_fusion(lists, seed=0)
    assert model.spec.route_by_kind == {"image": "image", "text": "text"}
    again = FusionModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again.spec.route_by_kind == model.spec.route_by_kind
    item = lists[0]
    renamed = [
        dataclasses.replace(c, source="mm_images" if c.source == "image" else "mm_text")
        for c in item.candidates
    ]
    assert model.predict(item.query, renamed, item.raw_scores) == model.predict(
        item.query, item.candidates, item.raw_scores
    )
    unrouted = [dataclasses.replace(c, source=None) for c in item.candidates]
    assert again.predict(item.query, unrouted, item.raw_scores) == model.predict(
        item.query, item.candidates, item.raw_scores
    )
    with pytest.raises(ValueError, match="route_by_kind"):
        FeatureSpec(routes=("text",), route_by_kind={"image": "nope"})


def test_adapt_imports_no_heavy_dependency() -> None:
    import subprocess
    import sys

    code = (
        "import sys, mm_rerank_components.adapt, mm_rerank_components.adapt.pipeline, "
        "mm_rerank_components.adapt.folder, mm_rerank_components.cli.adapt; "
        "print(sorted(m for m in ('torch', 'chromadb', 'bm25s', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_fusion_options_are_checked_and_shared() -> None:
    from mm_rerank_components.adapt.fusion import FusionOptions

    options = FusionOptions(listwise=True, modality_floor=2, bm25=False)
    assert options.replace(seed=3).seed == 3 and options.replace(seed=3).listwise
    with pytest.raises(ValueError, match=r"unknown fusion option\(s\) \['nope'\]"):
        options.replace(nope=1)
    with pytest.raises(ValueError, match="calibrate_by must be one of query, group, got 'source'"):
        FusionOptions(calibrate_by="source")
    with pytest.raises(ValueError, match="l2 must be a finite number >= 0, got -1"):
        FusionOptions(l2=-1)
    with pytest.raises(ValueError, match="modality_floor must be an integer 0..5, got 9"):
        FusionOptions(modality_floor=9)
    lists = _synthetic(12, seed=4, informative="retrieval")
    by_options = fit_fusion(lists, FusionOptions(bm25=False, seed=2))
    by_keywords = fit_fusion(lists, bm25=False, seed=2)
    assert by_options.to_dict() == by_keywords.to_dict()


def test_route_free_head_scores_lists_without_route_signals() -> None:
    from dataclasses import replace

    from mm_rerank_components.adapt.fusion import strip_routes

    train, test = (
        _synthetic(40, seed=1, informative="retrieval"),
        _synthetic(10, seed=2, informative="retrieval"),
    )
    model = fit_fusion(train, seed=0, bm25=False)
    head = model.route_free
    assert head is not None and head.spec.routes == () and head.route_free is None
    item = test[0]
    bare = strip_routes(item.candidates)
    assert all(c.source is None and c.retrieval_score is None for c in bare)
    assert model.head_for(item.candidates) is model and model.head_for(bare) is head
    # one candidate without a score sends the whole list to the route-free head (one scale per list)
    partial = [replace(item.candidates[0], retrieval_score=None), *item.candidates[1:]]
    assert model.predict(item.query, partial, item.raw_scores) == model.predict(
        item.query, bare, item.raw_scores
    )
    assert model.predict(item.query, bare, item.raw_scores) == head.predict(item.query, bare, item.raw_scores)
    # the heads differ: the full one reads the (informative) retrieval scores
    assert model.predict(item.query, item.candidates, item.raw_scores) != head.predict(
        item.query, bare, item.raw_scores
    )
    again = FusionModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again.predict(item.query, bare, item.raw_scores) == model.predict(
        item.query, bare, item.raw_scores
    )
    assert fit_fusion(train, seed=0, bm25=False, route_free=False).route_free is None
    nested = {**model.to_dict(), "route_free": model.to_dict()}
    with pytest.raises(ValueError, match="route_free must be one learned-fusion model"):
        FusionModel.from_dict(nested)


def test_group_calibration_holds_out_whole_groups(caplog: pytest.LogCaptureFixture) -> None:
    lists = _synthetic(24, seed=5, informative="retrieval")
    grouped = [
        LabelledList(x.query, x.candidates, x.raw_scores, x.labels, group=f"source{i % 3}")
        for i, x in enumerate(lists)
    ]
    model = fit_fusion(grouped, seed=0, bm25=False, calibrate_by="group")
    assert model.training["calibration"] == "leave-one-group-out"
    assert model.training["calibration_folds"] == 3
    with caplog.at_level("WARNING"):
        fallback = fit_fusion(lists, seed=0, bm25=False, calibrate_by="group")
    assert fallback.training["calibration"] == "out-of-fold" and "calibrating on query folds" in caplog.text


def test_a_modality_map_never_reverses_the_fused_order(caplog: pytest.LogCaptureFixture) -> None:
    """A picture map fitted with slope <= 0 would give the picture the model rates highest the lowest
    probability (measured: an adapted reranker on Widelands put the query photo's own record last
    among pictures); such a modality uses the pooled map, so its order is the fused score's."""
    rng = np.random.default_rng(3)
    lists = []
    for q in range(40):
        candidates, raw, labels = [], [], []
        for j in range(20):
            is_text = j < 10
            relevant = j in (1, 2) if is_text else j == 15 and q % 2 == 0
            # passages: relevant ones carry a high signal; the few relevant pictures a low one
            signal = float(rng.normal((2.0 if is_text else -2.0) if relevant else 0.0, 0.3))
            candidates.append(
                Candidate(
                    f"q{q}-d{j}",
                    text=None if not is_text else f"passage {j}",
                    image=None if is_text else b"not decoded here",
                    metadata={"signal": signal},
                )
            )
            raw.append(float(rng.normal()))
            labels.append(int(relevant))
        lists.append(LabelledList(f"query {q}", candidates, raw, labels))
    with caplog.at_level(logging.WARNING):
        model = fit_fusion(lists, seed=0, metadata_fields=["signal"])
    assert "slope <= 0" in model.calibrator.stats["image"]["map"]
    assert model.calibrator.stats["image"]["fallback"] == "reversed"  # what the adapt report reads
    # said once, with what is done instead (the Platt fit's own warning is left to this one)
    assert caplog.text.count("image map of the fused scores had slope") == 1
    assert "higher raw scores are *less* often relevant" not in caplog.text
    assert "image" not in model.calibrator.calibrators
    for item in lists[:10]:
        fused = model.fused_scores(item.query, item.candidates, item.raw_scores)
        probs = model.predict(item.query, item.candidates, item.raw_scores)
        pictures = [i for i, c in enumerate(item.candidates) if c.image is not None]
        by_fused = sorted(pictures, key=lambda i: -fused[i])
        assert [probs[i] for i in by_fused] == sorted((probs[i] for i in pictures), reverse=True)


class _ShippedCalibrationScorer(FakeScorer):
    """FakeScorer with a calibration of its own, as the starter scorer ships one."""

    def default_calibrator(self) -> Any:
        from mm_rerank_components.calibration import PlattCalibrator

        return PlattCalibrator(a=2.0, b=-1.0)


def test_picture_queries_go_to_the_scorers_own_calibration_when_the_fusion_never_saw_one(
    red_png: object,
) -> None:
    from mm_rerank_components.adapt.folder import picture_query_reranker

    model = fit_fusion(_synthetic(12, seed=12, informative="retrieval"), seed=0)
    assert model.training["picture_queries"] == 0
    base = MultimodalReranker(_ShippedCalibrationScorer(), SigmoidCalibrator())
    own = picture_query_reranker(base, model)
    assert own is not None and isinstance(own.calibrator, PlattCalibrator) and own.scorer is base.scorer
    reranker = LearnedFusionReranker(base, model, picture_queries=own)
    hits = [
        Candidate("t", text="red fox", source="text", retrieval_score=1.0),
        Candidate("i", image=str(red_png), source="image", retrieval_score=0.5),
    ]
    photo = Query(image=str(red_png))
    assert reranker.rerank(photo, hits, top_n=1) == own.rerank(photo, hits, top_n=1)
    assert reranker.rerank(photo, hits) != LearnedFusionReranker(base, model).rerank(photo, hits)
    # a text query still goes through the fusion
    assert reranker.rerank("red fox", hits) == LearnedFusionReranker(base, model).rerank("red fox", hits)
    # no routing when the scorer has no calibration of its own, or when the fusion learned picture queries
    assert picture_query_reranker(MultimodalReranker(FakeScorer(), SigmoidCalibrator()), model) is None
    model.training["picture_queries"] = 3
    assert picture_query_reranker(base, model) is None
    with pytest.raises(TypeError, match="picture_queries must be a MultimodalReranker"):
        LearnedFusionReranker(base, model, picture_queries=object())  # type: ignore[arg-type]


def test_fit_fusion_counts_picture_queries() -> None:
    lists = _synthetic(12, seed=13, informative="retrieval")
    lists[0] = LabelledList(
        Query(image=b"a photo", text="fox"), lists[0].candidates, lists[0].raw_scores, lists[0].labels
    )
    assert fit_fusion(lists, seed=0).training["picture_queries"] == 1


def test_a_reranker_calibrates_captions_only_when_its_maps_saw_captioned_pictures() -> None:
    from mm_rerank_components import MultimodalReranker
    from mm_rerank_components.defaults import CAPTIONED_NOTE, default_reranker, scores_note
    from mm_rerank_components.scorers import FakeScorer

    plain = _synthetic(12, seed=21, informative="retrieval")
    model = fit_fusion(plain, seed=0)
    assert model.training["captioned_pictures"] == 0
    captioned = [
        LabelledList(
            item.query,
            [dataclasses.replace(c, text="a caption") if c.image is not None else c for c in item.candidates],
            item.raw_scores,
            item.labels,
        )
        for item in plain
    ]
    fitted = fit_fusion(captioned, seed=0)
    assert fitted.training["captioned_pictures"] == 12 * 10
    base = MultimodalReranker(FakeScorer())
    assert not LearnedFusionReranker(base, model).calibrates_captions
    assert LearnedFusionReranker(base, fitted).calibrates_captions
    # reading the caption as a passage takes the passage map: not what was calibrated
    assert not LearnedFusionReranker(base, fitted, read_captions=True).calibrates_captions
    # the shipped default never saw a captioned picture: an answer holding one says so
    default = default_reranker(FakeScorer())
    assert not default.calibrates_captions
    assert scores_note(default, Query("fox"), ["text", "text+image"]) == CAPTIONED_NOTE
    assert scores_note(LearnedFusionReranker(base, fitted), Query("fox"), ["text", "text+image"]) is None
    assert scores_note(default, Query("fox"), ["text", "image"]) is None
