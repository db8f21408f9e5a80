"""Calibrators on synthetic data: monotone, in [0, 1], ECE drops after fitting, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mm_rerank_components.calibration import (
    Calibrator,
    IsotonicCalibrator,
    PerModalityCalibrator,
    PerQueryStandardizer,
    PlattCalibrator,
    TemperatureCalibrator,
    calibration_in_the_large,
    expected_calibration_error,
    fit_calibrator,
    load_calibrator,
    pool_adjacent_violators,
    reliability_bins,
)


def _synthetic(seed: int = 0, n: int = 3000) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Text scores near 0.3 (cosines), image scores near 20 (logits-ish): same relevance, two scales."""
    rng = np.random.default_rng(seed)
    half = n // 2
    rel = rng.random(n) < 0.3
    text = np.where(rel[:half], rng.normal(0.55, 0.08, half), rng.normal(0.35, 0.08, half))
    image = np.where(rel[half:], rng.normal(24.0, 2.0, n - half), rng.normal(20.0, 2.0, n - half))
    return np.concatenate([text, image]), ["text"] * half + ["image"] * (n - half), rel.astype(float)


@pytest.mark.parametrize("method", ["platt", "isotonic", "standardize+platt"])
def test_fit_calibrator_lowers_ece_and_unifies_scales(method: str) -> None:
    raw, mods, labels = _synthetic()
    qids = [i // 30 for i in range(len(raw))]
    cal = fit_calibrator(raw, mods, labels, method=method, query_ids=qids, scorer="synthetic")
    assert isinstance(cal, Calibrator)
    test_raw, test_mods, test_labels = _synthetic(seed=1)
    if method.startswith("standardize"):
        probs = np.concatenate(
            [
                cal.calibrate(list(test_raw[i : i + 30]), test_mods[i : i + 30])
                for i in range(0, len(test_raw), 30)
            ]
        )
    else:
        probs = np.array(cal.calibrate(list(test_raw), test_mods))
    assert np.all((probs >= 0) & (probs <= 1))
    naive = 1 / (1 + np.exp(-test_raw))  # a plain sigmoid of the raw scores
    assert expected_calibration_error(naive, test_labels) > 0.3
    assert expected_calibration_error(probs, test_labels) < 0.05
    for modality in ("text", "image"):
        mask = np.array(test_mods) == modality
        assert expected_calibration_error(probs[mask], test_labels[mask]) < 0.06


@pytest.mark.parametrize(
    "cal",
    [PlattCalibrator(), IsotonicCalibrator(), TemperatureCalibrator()],
    ids=["platt", "isotonic", "temperature"],
)
def test_fitted_maps_are_monotone_and_bounded(cal: PlattCalibrator) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 2, 2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-1.5 * x))).astype(float)
    cal.fit(x, y)
    grid = np.linspace(-20, 20, 401)
    probs = cal.predict(grid)
    assert np.all(np.diff(probs) >= 0)
    assert probs.min() >= 0 and probs.max() <= 1
    assert probs[-1] > 0.9 and probs[0] < 0.1


def test_platt_recovers_known_parameters() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(0, 1, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-(3.0 * x - 1.0)))).astype(float)
    cal = PlattCalibrator().fit(x, y)
    assert cal.a == pytest.approx(3.0, rel=0.1)
    assert cal.b == pytest.approx(-1.0, abs=0.1)


def test_temperature_cools_overconfident_logits() -> None:
    rng = np.random.default_rng(5)
    true_logit = rng.normal(0, 1.5, 5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-true_logit))).astype(float)
    cal = TemperatureCalibrator().fit(4.0 * true_logit, y)
    assert cal.temperature == pytest.approx(4.0, rel=0.15)


def test_temperature_rejects_anticorrelated_scores() -> None:
    with pytest.raises(ValueError, match="less often relevant .* even with an intercept"):
        TemperatureCalibrator().fit([-3.0, -2.0, 2.0, 3.0], [1, 1, 0, 0])


def test_temperature_fits_an_intercept_on_positive_scores_with_a_low_base_rate() -> None:
    # cosine-like scores, all positive, 4% relevant and higher scores more often relevant: without an
    # intercept the slope had to go negative to explain the base rate ("less often relevant": wrong)
    rng = np.random.default_rng(6)
    x = rng.uniform(0.1, 0.7, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-(12.0 * x - 7.5)))).astype(float)
    cal = TemperatureCalibrator().fit(x, y)
    assert 1 / cal.temperature == pytest.approx(12.0, rel=0.15)
    assert cal.bias == pytest.approx(-7.5, rel=0.15)
    probs = cal.predict(x)
    assert probs.mean() == pytest.approx(y.mean(), abs=0.005)
    # old files without a bias still load (bias 0)
    assert TemperatureCalibrator(2.0).predict([0.0]).tolist() == [0.5]


def test_calibration_in_the_large_among_confident_pairs() -> None:
    out = calibration_in_the_large([0.01] * 96 + [0.5] * 4, [0] * 96 + [1, 1, 0, 0])
    assert out["pairs"] == 4 and out["mean_predicted"] == 0.5 and out["observed_rate"] == 0.5
    assert out["relative_gap"] == 0.0
    assert calibration_in_the_large([0.01, 0.02], [0, 1])["pairs"] == 0
    assert calibration_in_the_large([0.3], [0])["relative_gap"] == float("inf")


def test_pav_matches_brute_force_on_small_input() -> None:
    assert pool_adjacent_violators(np.array([3.0, 1.0, 2.0])).tolist() == [2.0, 2.0, 2.0]
    fitted = pool_adjacent_violators(np.array([1.0, 5.0, 2.0, 2.0, 6.0, 0.0]))
    assert np.all(np.diff(fitted) >= 0)
    assert fitted.sum() == pytest.approx(16.0)  # PAV preserves the (unweighted) total


def test_isotonic_ties_share_one_value_and_distinct_scores_stay_ordered() -> None:
    cal = IsotonicCalibrator(eps=0).fit([1, 1, 2, 3, 4, 4], [0, 1, 1, 1, 1, 1])
    p = cal.predict([1, 1, 1.5, 3.5])
    assert p[0] == p[1] == pytest.approx(0.5)
    assert p[1] < p[2] < p[3]


def test_per_query_standardizer_is_label_free_and_per_modality() -> None:
    std = PerQueryStandardizer()
    probs = std.calibrate([0.2, 0.4, 0.6, 18.0, 20.0, 22.0], ["text"] * 3 + ["image"] * 3)
    assert probs[:3] == pytest.approx(probs[3:])  # same z-scores in both modalities
    assert probs[1] == pytest.approx(0.5)
    assert std.calibrate([5.0], ["text"]) == [0.5]  # one candidate: std 0 -> z 0
    assert std.outputs_probabilities is False  # it orders a list; it is not P(relevant)


def test_per_modality_calibrator_needs_a_map_or_fallback() -> None:
    cal = PerModalityCalibrator({"text": PlattCalibrator(1, 0)})
    with pytest.raises(ValueError, match="no calibration for 'image' candidates"):
        cal.calibrate([0.1, 0.2], ["text", "image"])
    with_fallback = PerModalityCalibrator({"text": PlattCalibrator(1, 0)}, fallback="text")
    assert with_fallback.calibrate([0.0], ["image"]) == [0.5]
    with pytest.raises(ValueError, match="fallback 'image' has no calibrator"):
        PerModalityCalibrator({"text": PlattCalibrator()}, fallback="image")


@pytest.mark.parametrize("method", ["platt", "isotonic", "temperature", "standardize", "standardize+platt"])
def test_json_round_trip(tmp_path, method: str) -> None:
    raw, mods, labels = _synthetic(n=600)
    if method == "temperature":
        raw = np.where(np.array(mods) == "text", (raw - 0.45) * 20, raw - 22)
    qids = [i // 20 for i in range(len(raw))]
    cal = fit_calibrator(raw, mods, labels, method=method, query_ids=qids, scorer="synthetic-v1")
    path = cal.save(tmp_path / "cal.json")
    data = json.loads(path.read_text())
    assert data["format"] == "mm-rerank-calibration"
    assert data["method"] == method
    loaded = load_calibrator(path)
    assert type(loaded) is type(cal)
    sample = list(raw[:20]), mods[:20]
    assert loaded.calibrate(*sample) == pytest.approx(cal.calibrate(*sample))
    if method != "standardize":
        assert data["scorer"] == "synthetic-v1"
        assert set(data["modalities"]) == {"text", "image"}
        assert data["stats"]["text"]["pairs"] == 300


def test_load_calibrator_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_calibrator(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_calibrator(bad)
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not an mm-rerank calibration file"):
        load_calibrator(bad)
    bad.write_text(
        json.dumps({"format": "mm-rerank-calibration", "version": 1, "type": "Nope", "params": {}})
    )
    with pytest.raises(ValueError, match="unknown calibrator type 'Nope'"):
        load_calibrator(bad)


def test_fit_calibrator_input_errors() -> None:
    with pytest.raises(ValueError, match="unknown calibration method 'magic'"):
        fit_calibrator([0.1, 0.2], ["text", "text"], [0, 1], method="magic")
    with pytest.raises(ValueError, match="labels must be 0/1"):
        fit_calibrator([0.1, 0.2], ["text", "text"], [0, 2])
    with pytest.raises(ValueError, match="got 2 scores but 1 labels"):
        fit_calibrator([0.1, 0.2], ["text", "text"], [0])
    with pytest.raises(ValueError, match="needs both relevant"):
        fit_calibrator([0.1, 0.2], ["text", "text"], [0, 0])
    with pytest.raises(ValueError, match="pass query_ids="):
        fit_calibrator([0.1, 0.2], ["text", "text"], [0, 1], method="standardize+platt")
    with pytest.raises(ValueError, match="must be finite"):
        fit_calibrator([0.1, float("nan")], ["text", "text"], [0, 1])


def test_ece_and_bins() -> None:
    assert expected_calibration_error([0.25, 0.25, 0.25, 0.25], [1, 0, 0, 0]) == 0.0
    assert expected_calibration_error([1.0, 0.0], [0, 1]) == 1.0
    bins = reliability_bins([0.0, 0.5, 1.0], [0, 1, 1], n_bins=4)
    assert [b["count"] for b in bins] == [1, 0, 1, 1]  # 1.0 falls in the last bin
    with pytest.raises(ValueError, match=r"probs must lie in \[0, 1\]"):
        expected_calibration_error([1.5], [1])


def test_reliability_plot_writes_png(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from mm_rerank_components.calibration import reliability_plot

    rng = np.random.default_rng(0)
    p = rng.random(200)
    y = (rng.random(200) < p).astype(float)
    out = tmp_path / "rel.png"
    reliability_plot({"text": (p, y), "image": (p**2, y)}, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shipped_starter_calibration_loads_and_covers_every_modality() -> None:
    from importlib import resources

    shipped = resources.files("mm_rerank_components.starter").joinpath("data", "starter_calibration.json")
    cal = load_calibrator(str(shipped))
    assert isinstance(cal, PerModalityCalibrator)
    assert cal.scorer is not None and cal.scorer.startswith("starter:")
    assert set(cal.calibrators) == {"text", "image", "text+image"}
    for modality, inner in cal.calibrators.items():
        assert isinstance(inner, PlattCalibrator) and inner.a > 0, modality
        low, high = cal.calibrate([0.0, 0.9], [modality, modality])
        assert 0.0 <= low < high <= 1.0
    # the modality gap in numbers: one raw cosine means different things for text and images
    text_p, image_p = cal.calibrate([0.5, 0.5], ["text", "image"])
    assert text_p != pytest.approx(image_p, abs=0.05)
