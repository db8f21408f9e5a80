"""Listwise features and the modality floor of learned fusion (the label-free default's two priors)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mm_rerank_components import Candidate
from mm_rerank_components.adapt import FusionModel, LabelledList, fit_fusion
from mm_rerank_components.adapt.features import LISTWISE_TEMPERATURES, FeatureSpec, listwise_scales
from mm_rerank_components.adapt.fusion import FLOOR_WINDOW, apply_modality_floor
from mm_rerank_components.defaults import FIT_SETTINGS, default_reranker, load_default_model
from mm_rerank_components.scorers.fake import FakeScorer


def _hits(n_text: int = 6, n_image: int = 6) -> list[Candidate]:
    hits = [
        Candidate(f"t{i}", text=f"passage {i}", source="text", retrieval_score=0.6 - 0.05 * i)
        for i in range(n_text)
    ]
    hits += [
        Candidate(f"i{i}", image=f"p{i}.png", source="image", retrieval_score=0.4 - 0.02 * i)
        for i in range(n_image)
    ]
    return hits


def test_listwise_features_are_log_shares_within_each_modality() -> None:
    spec = FeatureSpec(routes=("image", "text"), bm25=False, listwise={"text": 0.1, "image": 0.2})
    hits = _hits(3, 2)
    raw = [0.5, 0.4, 0.1, 0.9, 0.3]
    x = spec.transform("q", hits, raw)
    col = {n: j for j, n in enumerate(spec.names)}
    for t in LISTWISE_TEMPERATURES:
        text = x[:3, col[f"listwise:text@{t:g}"]]
        image = x[3:, col[f"listwise:image@{t:g}"]]
        assert math.isclose(float(np.exp(text).sum()), 1.0) and math.isclose(float(np.exp(image).sum()), 1.0)
        expected = np.asarray(raw[:3]) / (t * 0.1)
        expected -= np.log(np.exp(expected).sum())
        assert np.allclose(text, expected)
        # a column belongs to its modality only
        assert not x[3:, col[f"listwise:text@{t:g}"]].any() and not x[:3, col[f"listwise:image@{t:g}"]].any()
    # crowding: the same top score counts for less when a near-duplicate scores alike
    alone = spec.transform("q", hits, [0.9, 0.2, 0.1, 0.5, 0.5])[0, col["listwise:text@1"]]
    crowded = spec.transform("q", hits, [0.9, 0.9, 0.1, 0.5, 0.5])[0, col["listwise:text@1"]]
    assert crowded < alone


def test_listwise_spec_round_trips_and_checks_its_scales() -> None:
    spec = FeatureSpec(routes=("text",), bm25=False, listwise={"text": 0.1})
    assert FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    plain = FeatureSpec(routes=("text",), bm25=False)
    assert "listwise" not in plain.to_dict() and not any(n.startswith("listwise") for n in plain.names)
    with pytest.raises(ValueError, match="'audio'"):
        FeatureSpec(routes=("text",), listwise={"audio": 0.1})
    with pytest.raises(ValueError, match="-1"):
        FeatureSpec(routes=("text",), listwise={"text": -1.0})
    assert listwise_scales([0.2, 0.2, 0.1, 0.5], ["text", "text", "image", "image"]) == {"image": 0.2}


def test_the_floor_lifts_the_short_modality_just_enough_and_keeps_orders() -> None:
    probs = [0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.3, 0.2, 0.1]
    mods = ["image"] * 11 + ["text"] * 3
    out = apply_modality_floor(probs, mods, 3)
    top = sorted(range(len(out)), key=lambda i: -out[i])[:FLOOR_WINDOW]
    assert sum(mods[i] == "text" for i in top) == 3
    assert out[:11] == probs[:11]  # the other modality is untouched
    assert out[11] > out[12] > out[13]  # order within the lifted modality kept
    assert probs[6] > out[13] > probs[7]  # the third passage is lifted just past the 8th picture
    # enough of both already, or too few of the short one: nothing changes
    balanced = ["image", "text"] * 7
    assert apply_modality_floor(probs, balanced, 3) == probs
    assert apply_modality_floor(probs, ["image"] * 12 + ["text"] * 2, 3) == probs
    assert apply_modality_floor(probs, mods, 0) == probs
    assert apply_modality_floor(probs, ["text"] * 14, 3) == probs


def _lists(seed: int) -> list[LabelledList]:
    rng = np.random.default_rng(seed)
    out = []
    for q in range(24):
        hits = _hits()
        raw = [float(v) for v in rng.normal(0.3, 0.1, len(hits))]
        labels = [0] * len(hits)
        good = int(rng.integers(len(hits)))
        raw[good] += 0.3
        labels[good] = 1
        out.append(LabelledList(f"q{q}", hits, raw, labels))
    return out


def test_fit_with_listwise_and_floor_is_seeded_saved_and_served(tmp_path: Path) -> None:
    one = fit_fusion(_lists(0), bm25=False, listwise=True, modality_floor=3, seed=0)
    two = fit_fusion(_lists(0), bm25=False, listwise=True, modality_floor=3, seed=0)
    assert np.array_equal(one.weights, two.weights) and one.modality_floor == 3
    assert set(one.spec.listwise) == {"text", "image"}
    data = json.loads(json.dumps(one.to_dict()))
    assert data["modality_floor"] == 3 and data["features"]["listwise"] == one.spec.listwise
    back = FusionModel.from_dict(data)
    hits = _hits()
    raw = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    assert back.predict("q", hits, raw) == one.predict("q", hits, raw)
    probs = back.predict("q", hits, raw)
    top = sorted(range(len(hits)), key=lambda i: -probs[i])[:10]
    assert min(sum(hits[i].modality == m for i in top) for m in ("text", "image")) >= 3
    with pytest.raises(ValueError, match="modality_floor must be an integer 0..5, got 7"):
        FusionModel.from_dict({**data, "modality_floor": 7}, source="m.json")
    with pytest.raises(ValueError, match="got 6"):
        fit_fusion(_lists(0), bm25=False, modality_floor=6)
    # a folder saved before these options (no listwise, no floor keys) still loads
    old = {k: v for k, v in fit_fusion(_lists(0), bm25=False).to_dict().items() if k != "modality_floor"}
    assert FusionModel.from_dict(old).modality_floor == 0


def test_the_shipped_default_uses_both_priors_and_the_floor_can_be_turned_off() -> None:
    assert FIT_SETTINGS["listwise"] and FIT_SETTINGS["modality_floor"] == 2
    model = load_default_model()
    assert model.modality_floor == 2 and set(model.spec.listwise) == {"text", "image"}
    assert default_reranker(FakeScorer()).model.modality_floor == 2
    assert default_reranker(FakeScorer(), modality_floor=0).model.modality_floor == 0
    with pytest.raises(ValueError, match="modality_floor must be an integer 0..5.*got 9"):
        default_reranker(FakeScorer(), modality_floor=9)


def test_a_captioned_picture_is_read_as_a_picture_when_only_pictures_were_trained() -> None:
    model = fit_fusion(_lists(0), bm25=False, listwise=True, modality_floor=2, seed=0)
    assert model.spec.modalities == ("image", "text")
    captioned = [
        Candidate(f"c{i}", image=f"p{i}.png", text=f"caption {i}", source="image", retrieval_score=0.4)
        for i in range(3)
    ]
    assert {model.spec.modality_of(c) for c in captioned} == {"image"}
    raw = [0.9, 0.5, 0.1]
    probs = model.predict("q", captioned, raw)
    # its raw score counts (same route signals, so only the raw score can order them)
    assert probs[0] > probs[1] > probs[2]
    x = model.spec.transform("q", captioned, raw)
    col = {n: j for j, n in enumerate(model.spec.names)}
    assert x[:, col["raw:image"]].tolist() == raw and not x[:, col["raw:text+image"]].any()
    # a model saved before the field existed reads every modality in its own (untrained) columns
    old = FusionModel.from_dict({**model.to_dict(), "features": {**model.spec.to_dict(), "modalities": []}})
    assert old.spec.modality_of(captioned[0]) == "text+image"
    # a text-only candidate stays text; the floor counts a captioned picture as a picture
    assert model.spec.modality_of(Candidate("t", text="x")) == "text"
    mixed = captioned + [
        Candidate(f"t{i}", text=f"t{i}", source="text", retrieval_score=0.1) for i in range(9)
    ]
    probs = model.predict("q", mixed, [0.01, 0.01, 0.01] + [0.9] * 9)
    top = sorted(range(len(mixed)), key=lambda i: -probs[i])[:10]
    assert sum(mixed[i].image is not None for i in top) >= 2
    assert load_default_model().spec.modalities == ("image", "text")


def test_a_candidate_without_a_retrieval_score_gets_its_routes_training_means() -> None:
    from mm_rerank_components.adapt.fusion import impute_route_features

    model = fit_fusion(_lists(0), bm25=False, listwise=True, seed=0)
    assert set(model.impute) == {f"{f}:{r}" for f in ("sim", "rr", "minmax", "z") for r in ("image", "text")}
    texts = [c for c in _hits() if c.image is None]
    assert model.impute["sim:text"] == pytest.approx(float(np.mean([c.retrieval_score for c in texts])))
    bare = [Candidate("t", text="passage"), Candidate("i", image="p.png")]
    x = model.spec.transform("q", bare, [0.5, 0.5])
    col = {n: j for j, n in enumerate(model.spec.names)}
    assert x[0, col["sim:text"]] == 0.0 and x[:, col["retrieval_missing"]].tolist() == [1.0, 1.0]
    filled = impute_route_features(model.spec, x, model.impute)
    assert filled[0, col["sim:text"]] == model.impute["sim:text"]
    assert filled[1, col["z:image"]] == model.impute["z:image"] and filled[0, col["sim:image"]] == 0.0
    assert x[0, col["sim:text"]] == 0.0  # the input is not modified
    # candidates with a retrieval score keep theirs; the means survive the JSON round trip
    hits = _hits()
    y = model.spec.transform("q", hits, [0.1] * len(hits))
    assert np.array_equal(impute_route_features(model.spec, y, model.impute), y)
    back = FusionModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert back.impute == model.impute and back.predict("q", bare, [0.5, 0.5]) == model.predict(
        "q", bare, [0.5, 0.5]
    )
    with pytest.raises(ValueError, match="impute must map feature names"):
        FusionModel.from_dict({**model.to_dict(), "impute": {"nope": 1.0}}, source="m.json")
    old = {k: v for k, v in model.to_dict().items() if k != "impute"}
    assert FusionModel.from_dict(old).impute == {}
