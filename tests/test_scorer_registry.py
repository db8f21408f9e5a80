"""The one scorer registry: spec strings, round trips through ``spec()``, errors, and every face using it."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

import pytest

from mm_rerank_components import Candidate, MultimodalReranker, Query
from mm_rerank_components.calibration import SigmoidCalibrator
from mm_rerank_components.scorers import (
    SCORER_KINDS,
    BaseScorer,
    FakeScorer,
    FirstStageScorer,
    ScorerSpecError,
    scorer_from_spec,
)
from mm_rerank_components.scorers.registry import CalibratedScorer, parse_spec, scorer_kinds

WORDS = ["fox", "owl", "red", "snow", "night", "an", "a", "in", "the", "at"]


def test_every_kind_names_a_scorer_class_in_the_package() -> None:
    for kind in SCORER_KINDS.values():
        module_name, _, class_name = kind.target.partition(":")
        assert module_name.startswith("mm_rerank_components.scorers.")
        source = importlib.util.find_spec(module_name)
        assert source is not None and source.origin is not None, kind.kind
        assert f"class {class_name}(" in Path(source.origin).read_text(encoding="utf-8"), kind.kind
    assert set(SCORER_KINDS) >= {
        "starter",
        "fake",
        "first-stage",
        "cross-encoder",
        "vlm",
        "llm",
        "clip",
        "jina-m0",
        "late-interaction",
        "remote",
    }


def test_model_free_specs_round_trip_through_spec() -> None:
    for spec, options in (("fake", {}), ("fake", {"overrides": {"a": 0.9}}), ("first-stage", {})):
        scorer = scorer_from_spec(spec, **options)
        assert isinstance(scorer, BaseScorer)
        again = scorer_from_spec(scorer.spec(), **scorer.spec_options())
        assert type(again) is type(scorer) and again.name == scorer.name
    # built by hand, the package's own scorers still describe themselves
    assert FakeScorer(overrides={"b": 0.1}).spec_options() == {"overrides": {"b": 0.1}}
    assert FirstStageScorer().spec() == "first-stage"
    hits = [Candidate("a", text="red fox"), Candidate("b", text="owl")]
    assert scorer_from_spec("fake").score(Query("red fox"), hits) == FakeScorer().score(
        Query("red fox"), hits
    )


def test_starter_round_trips_with_its_settings() -> None:
    pytest.importorskip("torch")
    scorer = scorer_from_spec("starter", top_k=10, window_chars=300)
    assert scorer.spec() == "starter"
    again = scorer_from_spec(scorer.spec(), **scorer.spec_options())
    assert again.name == scorer.name
    from mm_rerank_components.scorers.starter import StarterScorer

    by_hand = StarterScorer(caption_weight=0.25)
    assert scorer_from_spec(by_hand.spec(), **by_hand.spec_options()).name == by_hand.name


def test_a_subclass_built_by_hand_has_no_spec() -> None:
    class Mine(FakeScorer):
        pass

    with pytest.raises(ValueError, match=r"'fake' \(Mine\) was not built from a spec"):
        Mine().spec()


def test_bad_specs_name_the_spec_and_the_accepted_kinds(tmp_path: Path) -> None:
    with pytest.raises(
        ScorerSpecError, match=r"unknown scorer 'fast'; use one of starter, fake, first-stage"
    ):
        scorer_from_spec("fast")
    with pytest.raises(ScorerSpecError, match="remote:URL"):
        scorer_from_spec("nope:thing")
    missing = tmp_path / "nothing-here"
    with pytest.raises(
        ScorerSpecError, match=r"'cross-encoder:.*nothing-here'.* is not a local model folder"
    ):
        scorer_from_spec(f"cross-encoder:{missing}")
    with pytest.raises(ScorerSpecError, match=r"give vlm:PATH"):
        scorer_from_spec("vlm:")
    with pytest.raises(ScorerSpecError, match=r"'fake' takes no ':...' part"):
        scorer_from_spec("fake:x")
    with pytest.raises(ScorerSpecError, match="is not an http"):
        scorer_from_spec("remote:ftp://host")
    with pytest.raises(ScorerSpecError, match="non-empty string"):
        scorer_from_spec("  ")
    with pytest.raises(TypeError):
        scorer_from_spec("fake", no_such_option=1)
    assert scorer_kinds()[-1] == "module:callable" and "late-interaction:PATH" in scorer_kinds()


def test_paths_are_recorded_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    kind, arg = parse_spec("cross-encoder:model")
    assert kind is not None and kind.kind == "cross-encoder" and arg == str((tmp_path / "model").resolve())


def test_remote_spec_builds_the_http_scorer_and_keeps_secrets_out_of_the_spec() -> None:
    pytest.importorskip("httpx")
    scorer = scorer_from_spec("remote:http://127.0.0.1:9/", api="cohere", api_key="secret", model="m")
    assert scorer.spec() == "remote:http://127.0.0.1:9"
    assert scorer.spec_options() == {"api": "cohere", "model": "m"}
    assert "secret" not in repr(scorer.spec_options())


def make_fake_reranker(**kwargs: Any) -> MultimodalReranker:
    """A factory for the ``module:callable`` form (this test module is importable as ``test_scorer_registry``)."""
    return MultimodalReranker(FakeScorer(**kwargs), SigmoidCalibrator())


def test_factory_specs_keep_a_rerankers_calibrator() -> None:
    scorer = scorer_from_spec("test_scorer_registry:make_fake_reranker", overrides={"x": 0.5})
    assert isinstance(scorer, CalibratedScorer) and scorer.name.startswith("fake(overrides=")
    assert isinstance(scorer.default_calibrator(), SigmoidCalibrator)
    assert scorer.spec() == "test_scorer_registry:make_fake_reranker"
    assert scorer.spec_options() == {"overrides": {"x": 0.5}}
    assert isinstance(MultimodalReranker(scorer).calibrator, SigmoidCalibrator)
    with pytest.raises(ScorerSpecError, match="unknown scorer 'no_such_module_here:make'"):
        scorer_from_spec("no_such_module_here:make")
    with pytest.raises(ScorerSpecError, match="cannot load the factory"):
        scorer_from_spec("test_scorer_registry:no_such_function")
    with pytest.raises(TypeError, match="not a Scorer"):
        scorer_from_spec("os.path:join", a="b")


def test_cli_scorer_arguments_use_the_registry(tmp_path: Path) -> None:
    from mm_rerank_components.cli._common import query_scorer_arg, reranker_from_spec, scorer_arg

    assert scorer_arg("fake") == "fake" and query_scorer_arg("none") == "none"
    (tmp_path / "m").mkdir()
    assert scorer_arg(f"clip:{tmp_path / 'm'}") == f"clip:{(tmp_path / 'm').resolve()}"
    with pytest.raises(argparse.ArgumentTypeError, match="unknown scorer 'startr'"):
        scorer_arg("startr")
    assert reranker_from_spec("none") is None
    assert reranker_from_spec("fake").scorer.spec() == "fake"


def test_multimodal_reranker_load_points_to_load_reranker(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"moved: use mm_rerank_components.load_reranker\(folder"):
        MultimodalReranker.load(tmp_path)


# -- model folders: tiny random models built from a config, loaded back with local_files_only ------------


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from mm_rerank_components.testing import build_bert_cross_encoder

    return Path(build_bert_cross_encoder(tmp_path_factory.mktemp("ce"), WORDS))


def test_cross_encoder_spec_round_trips(cross_encoder_dir: Path) -> None:
    scorer = scorer_from_spec(f"cross-encoder:{cross_encoder_dir}", device="cpu", max_length=64)
    assert scorer.spec() == f"cross-encoder:{cross_encoder_dir.resolve()}"
    assert scorer.spec_options() == {"max_length": 64}  # where it runs is not what it is
    again = scorer_from_spec(scorer.spec(), **scorer.spec_options())
    hits = [Candidate("a", text="a red fox"), Candidate("b", text="an owl at night")]
    assert again.name == scorer.name
    assert again.score(Query("red fox"), hits) == pytest.approx(scorer.score(Query("red fox"), hits))


def test_mm_rerank_serve_takes_a_cross_encoder_folder(cross_encoder_dir: Path) -> None:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from _live_server import LiveServer

    from mm_rerank_components.cli import _parser
    from mm_rerank_components.cli.serve import config_from_args
    from mm_rerank_components.serving.app import create_app
    from mm_rerank_components.serving.engine import RerankEngine

    args = _parser().parse_args(
        ["serve", "--scorer", f"cross-encoder:{cross_encoder_dir}", "--device", "cpu"]
    )
    engine = RerankEngine(config_from_args(args))
    try:
        assert engine.scorer.spec() == f"cross-encoder:{cross_encoder_dir.resolve()}"
        documents = ["a red fox in the snow", "an owl at night", "the fox"]
        direct = MultimodalReranker(scorer_from_spec(f"cross-encoder:{cross_encoder_dir}"))
        expected = direct.rerank("red fox", [Candidate(str(i), text=d) for i, d in enumerate(documents)])
        with LiveServer(create_app(engine)) as live:
            reply = httpx.post(
                live.url + "/v1/rerank", json={"query": "red fox", "documents": documents}, timeout=60
            )
        assert reply.status_code == 200, reply.text
        results = reply.json()["results"]
        assert [r["index"] for r in results] == [r.index for r in expected]
        got = [r["relevance_score"] for r in results]
        assert got == pytest.approx([r.score for r in expected], abs=1e-5)
    finally:
        engine.close()
