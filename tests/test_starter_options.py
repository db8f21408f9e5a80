"""StarterOptions (issue 20 item 4): one checked, frozen record of a StarterScorer's settings (no weights)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from test_starter_reuse import FakeModels

from mm_rerank_components.scorers.registry import scorer_from_spec
from mm_rerank_components.scorers.starter import StarterOptions, StarterScorer


def _fake() -> Any:
    return FakeModels()


def test_options_and_keyword_arguments_build_the_same_scorer() -> None:
    models = _fake()
    by_options = StarterScorer(StarterOptions(models=models, top_k=10, caption_weight=0.25))
    by_keywords = StarterScorer(models=models, top_k=10, caption_weight=0.25)
    overridden = StarterScorer(StarterOptions(models=models, top_k=10), caption_weight=0.25)
    assert by_options.name == by_keywords.name == overridden.name
    assert by_options.options == by_keywords.options == overridden.options
    assert by_keywords.top_k == 10 and by_keywords.caption_weight == 0.25
    assert by_keywords.name != StarterScorer(models=models).name


def test_options_are_frozen_and_normalised() -> None:
    opts = StarterOptions(prompt_styles=["name"], caption_weight=1, calibration_path="x.json")
    assert opts.prompt_styles == ("name",)
    assert isinstance(opts.caption_weight, float)
    assert str(opts.calibration_path) == "x.json" and not isinstance(opts.calibration_path, str)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.top_k = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_views": 0}, "n_views must be an int between 1 and 7, got 0"),
        ({"top_k": 2000}, "top_k must be an int between 1 and 1000, got 2000"),
        ({"class_k": 5}, r"class_k must be an int between top_k \(20\) and 1000, got 5"),
        ({"prompt_styles": ()}, "prompt_styles must be a non-empty subset of"),
        ({"caption_weight": 2}, "caption_weight must be between 0 and 1, got 2"),
        ({"class_match_weight": -1}, "class_match_weight must be >= 0, got -1"),
        ({"class_match_temperature": 0}, "class_match_temperature must be > 0, got 0"),
        ({"window_chars": 0}, "window_chars must be a positive int, got 0"),
        ({"text_cache_size": -1}, "text_cache_size must be an int >= 0, got -1"),
    ],
)
def test_bad_settings_name_the_value_in_options_and_keywords(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StarterOptions(**changes)
    with pytest.raises(ValueError, match=message):
        StarterScorer(models=_fake(), **changes)
    with pytest.raises(ValueError, match=message):
        StarterScorer(StarterOptions(models=_fake()), **changes)


def test_unknown_names_and_wrong_options_type_are_errors() -> None:
    with pytest.raises(TypeError, match=r"unknown StarterScorer option\(s\) \['topk'\]; use one of"):
        StarterScorer(models=_fake(), topk=3)
    with pytest.raises(TypeError, match="options must be a StarterOptions, got FakeModels"):
        StarterScorer(_fake())


def test_spec_options_are_the_scoring_fields_and_rebuild_the_scorer() -> None:
    scorer = StarterScorer(models=_fake(), top_k=10, window_chars=300, prompt_styles=("name",))
    spec, options = scorer.spec(), scorer.spec_options()
    scoring = {f.name for f in dataclasses.fields(StarterOptions) if f.metadata.get("score")}
    assert spec == "starter"
    assert set(options) == scoring | {"image_model"}
    assert options["top_k"] == 10 and options["prompt_styles"] == ["name"]
    options.pop("image_model")
    rebuilt = scorer_from_spec(spec, models=scorer.models, **options)
    assert rebuilt.name == scorer.name
