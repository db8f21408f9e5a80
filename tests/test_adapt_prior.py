"""Learned fusion that starts from a prior model (``fit_fusion(prior=...)``, ``mm-rerank adapt --prior``)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from mm_rerank_components.adapt import FusionModel, fit_fusion
from mm_rerank_components.adapt.fusion import PRIOR_STRENGTHS
from mm_rerank_components.adapt.pipeline import AdaptOptions, _prior_model, label_free_options
from tests.test_adapt_fusion import _positives_on_top, _synthetic


def _prior(informative: str = "meta") -> FusionModel:
    return fit_fusion(_synthetic(40, seed=11, informative=informative), seed=0, metadata_fields=["signal"])


def test_a_few_queries_stay_near_the_prior() -> None:
    prior = _prior()
    few = _synthetic(6, seed=12)  # fewer than 10 lists: the strongest penalty, no cross-validation
    model = fit_fusion(few, seed=0, prior=prior)
    assert model.training["prior"]["strength"] == PRIOR_STRENGTHS[-1]
    assert model.spec == prior.spec
    np.testing.assert_array_equal(model.mean, prior.mean)
    fresh = fit_fusion(few, seed=0, metadata_fields=["signal"])
    # pulled towards the prior: closer to its weights than a fit from scratch on the same 6 queries
    assert np.linalg.norm(model.weights - prior.weights) < np.linalg.norm(fresh.weights - prior.weights)
    assert _positives_on_top(model, _synthetic(20, seed=13)) > 0.9


def test_cross_validation_lets_the_data_overrule_a_wrong_prior() -> None:
    prior = _prior("meta")  # the prior trusts the metadata field; here only the route similarity counts
    lists = _synthetic(40, seed=14, informative="retrieval")
    model = fit_fusion(lists, seed=0, prior=prior)
    info = model.training["prior"]
    assert set(info["out_of_fold_loss"]) == {str(s) for s in PRIOR_STRENGTHS}
    assert info["strength"] < PRIOR_STRENGTHS[-1]
    assert info["out_of_fold_loss"][str(info["strength"])] == min(info["out_of_fold_loss"].values())
    test = _synthetic(20, seed=15, informative="retrieval")
    assert _positives_on_top(model, test) > 0.9
    assert _positives_on_top(prior, test) < 0.5
    # the prior's spec wins over the options' feature switches, and the model saves and reloads exactly
    assert fit_fusion(lists, seed=0, prior=prior, bm25=False, listwise=True).spec == prior.spec
    again = FusionModel.from_dict(model.to_dict())
    item = test[0]
    assert again.predict(item.query, item.candidates, item.raw_scores) == model.predict(
        item.query, item.candidates, item.raw_scores
    )


def test_adapt_options_prior_is_checked_and_both_runs_start_from_the_default() -> None:
    with pytest.raises(ValueError, match="prior must be one of"):
        AdaptOptions(prior="shipped")
    assert AdaptOptions().prior == "default"
    assert label_free_options().prior == "default"
    assert label_free_options(prior=None).prior is None
    assert _prior_model(AdaptOptions(prior=None), "anything") is None


def test_default_prior_only_for_the_scorer_it_was_fitted_for(caplog: pytest.LogCaptureFixture) -> None:
    from mm_rerank_components.defaults import load_default_model

    shipped = load_default_model()
    name = shipped.calibrator.scorer
    assert name
    model = _prior_model(AdaptOptions(), name)
    assert model is not None and model.spec == shipped.spec
    with caplog.at_level(logging.INFO, logger="mm_rerank_components.adapt.pipeline"):
        assert _prior_model(AdaptOptions(), "fake:v1") is None
    assert "from scratch" in caplog.text


def test_the_eval_adapted_row_starts_from_a_default_of_the_same_scorer_only() -> None:
    from mm_rerank_components.eval.learned import adapted_prior

    prior = _prior()  # fitted without a scorer name
    assert adapted_prior(prior, "fake:v1") is None  # another scorer: its raw scores mean something else
    named = fit_fusion(_synthetic(20, seed=16), seed=0, metadata_fields=["signal"], scorer="fake:v1")
    assert adapted_prior(named, "fake:v1") is named
    assert adapted_prior(None, "fake:v1") is None


def test_the_report_says_whether_the_fit_started_from_the_default() -> None:
    from mm_rerank_components.adapt.pipeline import _fusion_line

    few = _synthetic(6, seed=17)
    with_prior = fit_fusion(few, seed=0, prior=_prior()).training
    assert "from the default, pulled towards it with penalty 10" in _fusion_line(with_prior)
    plain = fit_fusion(few, seed=0).training
    assert _fusion_line(plain).endswith("(seed 0, l2 0.01)")


class _Stop(Exception):
    pass


def test_the_eval_label_free_row_starts_from_the_task_default_never_the_shipped_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from mm_rerank_components.adapt import corpus, pipeline
    from mm_rerank_components.eval.learned import label_free_union

    seen: dict[str, object] = {}

    def fake_adapt(corpus: object, scorer: object, options: AdaptOptions, prior: object = None) -> None:
        seen["options_prior"], seen["prior"] = options.prior, prior
        raise _Stop

    monkeypatch.setattr(pipeline, "adapt_from_corpus", fake_adapt)
    monkeypatch.setattr(corpus, "VectorCorpus", lambda *a, **k: object())
    task = SimpleNamespace(name="tuxpaint-mixed", docs={})
    target = SimpleNamespace(
        task=task,
        first=SimpleNamespace(vectors=lambda: {"d": [1.0]}),
        scored={"fake": SimpleNamespace(scorer="fake:v1")},
    )
    scorer = SimpleNamespace(name="fake:v1")
    loto_default = fit_fusion(_synthetic(20, seed=16), seed=0, metadata_fields=["signal"], scorer="fake:v1")
    for models, expected in (({("default", task.name): loto_default}, loto_default), ({}, None)):
        seen.clear()
        with pytest.raises(_Stop):
            label_free_union(target, scorer, None, "fake", 16, 16, models)  # type: ignore[arg-type]
        # the options never name the shipped default (fitted on every built-in task, this one too)
        assert seen["options_prior"] is None and seen["prior"] is expected


def test_the_cli_label_free_run_starts_from_the_default_unless_told_not_to() -> None:
    from mm_rerank_components.cli import _parser
    from mm_rerank_components.cli.adapt import _options

    parser = _parser()
    args = parser.parse_args(["adapt", "--db", "db", "--out", "out"])
    assert _options(args, label_free=True).prior == "default"
    args = parser.parse_args(["adapt", "--db", "db", "--out", "out", "--prior", "none"])
    assert _options(args, label_free=True).prior is None


def test_the_eval_records_the_penalty_each_prior_fit_chose() -> None:
    from mm_rerank_components.eval.learned import training_summary

    few = _synthetic(6, seed=18)
    summary = training_summary(
        {("adapted", "t"): fit_fusion(few, seed=0, prior=_prior()), ("default", "t"): fit_fusion(few, seed=0)}
    )
    assert summary["adapted/t"]["prior_strength"] == PRIOR_STRENGTHS[-1]  # fewer than 10 lists: the strongest
    assert "prior_strength" not in summary["default/t"]
    assert summary["default/t"]["queries"] == 6
