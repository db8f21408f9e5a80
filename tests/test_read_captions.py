"""``read_captions``: a captioned picture's caption read as a passage by the route-free head (opt-in)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from mm_rerank_components import Candidate, MultimodalReranker, Query
from mm_rerank_components.adapt import LearnedFusionReranker
from mm_rerank_components.adapt.fusion import strip_routes
from mm_rerank_components.defaults import default_reranker, load_default_model
from mm_rerank_components.scorers import FakeScorer
from mm_rerank_components.types import Modality

QUERY = "the red planet and its ice caps"


def _hits(red_png: Path, blue_png: Path) -> list[Candidate]:
    return [
        Candidate("uranus", text="Uranus is an ice giant", source="mm_text", retrieval_score=0.52),
        Candidate("mars", text="Mars is red and its caps hold ice", source="mm_text", retrieval_score=0.48),
        Candidate(
            "mars.png",
            image=str(red_png),
            text="Mars, the red planet, with its ice caps",
            source="mm_images",
            retrieval_score=0.12,
        ),
        Candidate("plain.png", image=str(blue_png), source="mm_images", retrieval_score=0.11),
    ]


def test_caption_probability_is_the_route_free_heads_reading_of_the_caption(
    red_png: Path, blue_png: Path
) -> None:
    model = load_default_model(None)
    hits = _hits(red_png, blue_png)
    raw = [0.45, 0.5, 0.3, 0.2]
    read = model.caption_probabilities(QUERY, hits, raw, [None, None, 0.7, None])
    assert read[0] is None and read[1] is None and read[3] is None
    # computed independently: the route-free head on the bare list plus the caption as a passage
    head = model.route_free
    assert head is not None
    given = [*strip_routes(hits), Candidate("mars.png", text=hits[2].text)]
    kinds: list[Modality] = ["text", "text", "image", "image", "text"]
    expected = head.calibrator.calibrate(head.fused_scores(QUERY, given, [*raw, 0.7]), kinds)
    assert read[2] == pytest.approx(expected[-1], abs=1e-12)
    # a caption score for a picture without a caption, or for a passage, is ignored
    assert model.caption_probabilities(QUERY, hits, raw, [0.9, None, None, 0.9]) == [None] * 4
    with pytest.raises(ValueError, match="4 candidates but 3 caption scores"):
        model.caption_probabilities(QUERY, hits, raw, [None, None, 0.7])


def test_predict_takes_the_larger_probability_and_leaves_the_rest(red_png: Path, blue_png: Path) -> None:
    model = load_default_model(None)
    model.modality_floor = 0
    hits = _hits(red_png, blue_png)
    raw = [0.45, 0.5, 0.3, 0.2]
    plain = model.predict(QUERY, hits, raw)
    assert model.predict(QUERY, hits, raw, None) == plain
    for caption_raw in (0.9, -0.5):
        both = model.predict(QUERY, hits, raw, [None, None, caption_raw, None])
        caption = model.caption_probabilities(QUERY, hits, raw, [None, None, caption_raw, None])[2]
        assert caption is not None
        assert both[2] == pytest.approx(max(plain[2], caption))
        assert [both[i] for i in (0, 1, 3)] == [plain[i] for i in (0, 1, 3)]
    high = model.predict(QUERY, hits, raw, [None, None, 0.9, None])
    assert high[2] > plain[2]


def test_reranker_opt_in_lifts_a_matching_caption(red_png: Path, blue_png: Path) -> None:
    hits = _hits(red_png, blue_png)
    off = {r.candidate.id: r.score for r in default_reranker(FakeScorer()).rerank(QUERY, hits)}
    on_reranker = default_reranker(FakeScorer(), read_captions=True)
    assert isinstance(on_reranker, LearnedFusionReranker) and on_reranker.read_captions
    results = on_reranker.rerank(QUERY, hits)
    on = {r.candidate.id: r.score for r in results}
    assert on["mars.png"] > off["mars.png"]
    assert {k: on[k] for k in ("uranus", "mars", "plain.png")} == {
        k: off[k] for k in ("uranus", "mars", "plain.png")
    }
    # what rerank computed is the model's own prediction with the scorer's score of the caption alone
    model = on_reranker.model
    raw = [r.raw_score for r in sorted(results, key=lambda r: r.index)]
    caption_raw = FakeScorer().score(Query(QUERY), [Candidate("c", text=hits[2].text)])[0]
    expected = model.predict(QUERY, hits, raw, [None, None, caption_raw, None])
    assert on["mars.png"] == pytest.approx(expected[2], abs=1e-9)
    with pytest.raises(TypeError, match="read_captions must be True or False"):
        LearnedFusionReranker(MultimodalReranker(FakeScorer()), model, read_captions="yes")  # type: ignore[arg-type]


class _NoCaptions(FakeScorer):
    """Fails on text-only candidates whose id ends in .png (the caption views)."""

    def score(self, query: Query, candidates: Any) -> list[float]:
        if any(c.image is None and c.id.endswith(".png") for c in candidates):
            raise RuntimeError("caption scoring down")
        return super().score(query, candidates)


def test_a_caption_that_cannot_be_scored_is_reported_and_the_picture_kept(
    red_png: Path, blue_png: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hits = _hits(red_png, blue_png)
    reranker = default_reranker(_NoCaptions(), read_captions=True, on_error="keep", batch_size=1)
    plain = {
        r.candidate.id: r.score for r in default_reranker(_NoCaptions(), on_error="keep").rerank(QUERY, hits)
    }
    with caplog.at_level(logging.WARNING):
        results = reranker.rerank(QUERY, hits)
    assert {r.candidate.id: r.score for r in results} == pytest.approx(plain)
    assert all(r.error is None for r in results) and len(results) == 4
    assert "caption of 'mars.png' not scored" in caplog.text


def test_cli_query_flag_turns_it_on_for_learned_fusion_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from mm_rerank_components import cli
    from mm_rerank_components.cli import query

    args = argparse.Namespace(reranker=None, scorer="starter", read_captions=True)
    reranker, label = query._make_reranker(args)  # the starter scorer loads its models lazily
    assert isinstance(reranker, LearnedFusionReranker) and reranker.read_captions
    assert label.endswith("captions read as passages")
    reranker, _ = query._make_reranker(
        argparse.Namespace(reranker=None, scorer="starter", read_captions=False)
    )
    assert reranker.read_captions is False
    status = cli.main(["query", "red fox", "--db", str(tmp_path), "--scorer", "fake", "--read-captions"])
    assert status == 2
    assert "--read-captions needs learned fusion" in capsys.readouterr().err


def test_a_captioned_picture_uses_its_own_map_only_when_the_calibrator_has_one(
    red_png: Path, blue_png: Path
) -> None:
    import copy

    from mm_rerank_components.calibration import PlattCalibrator

    model = load_default_model(None)
    model.modality_floor = 0
    hits = _hits(red_png, blue_png)
    raw = [0.45, 0.5, 0.3, 0.2]
    assert model.calibration_modalities(hits) == ["text", "text", "image", "image"]
    plain = model.predict(QUERY, hits, raw)
    own = copy.deepcopy(model)
    own.calibrator.calibrators["text+image"] = PlattCalibrator(1.0, 3.0)
    assert own.calibration_modalities(hits) == ["text", "text", "text+image", "image"]
    mapped = own.predict(QUERY, hits, raw)
    fused = own.fused_scores(QUERY, hits, raw)[2]
    assert mapped[2] == pytest.approx(float(PlattCalibrator(1.0, 3.0).predict([fused])[0]))
    assert mapped[2] != pytest.approx(plain[2])
    assert [mapped[i] for i in (0, 1, 3)] == [plain[i] for i in (0, 1, 3)]


def _data_uri(path: Path) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def test_serve_reads_captions_like_the_reranker_in_process(
    red_png: Path, blue_png: Path, tmp_path: Path
) -> None:
    """``serve --reranker FOLDER --read-captions`` gives the scores of ``load_reranker(FOLDER)`` with
    ``read_captions`` on, and says so in its model id; without the flag it gives the plain folder's."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mm_rerank_components.adapt.folder import load_reranker, save_reranker
    from mm_rerank_components.serving import RerankEngine, ServeConfig, create_app
    from mm_rerank_components.serving.protocol import document_with_signals

    folder = save_reranker(tmp_path / "folder", load_default_model(None), scorer=FakeScorer())
    hits = [
        Candidate(
            c.id,
            text=c.text,
            image=_data_uri(Path(c.image)) if c.image else None,
            source=c.source,
            retrieval_score=c.retrieval_score,
        )
        for c in _hits(red_png, blue_png)
    ]
    expected = {}
    for read in (False, True):
        reranker = load_reranker(folder)
        reranker.read_captions = read
        expected[read] = {r.candidate.id: r.score for r in reranker.rerank(QUERY, hits)}
    assert expected[True]["mars.png"] > expected[False]["mars.png"]
    body = {"query": QUERY, "documents": [document_with_signals(c) for c in hits]}
    for read in (False, True):
        engine = RerankEngine(ServeConfig(reranker_folder=str(folder), read_captions=read))
        try:
            response = TestClient(create_app(engine)).post("/v1/rerank", json=body)
        finally:
            engine.close()
        assert response.status_code == 200, response.text
        served = {hits[r["index"]].id: r["relevance_score"] for r in response.json()["results"]}
        assert served == pytest.approx(expected[read], abs=1e-6)
        assert response.json()["model"] == ("reranker:folder+captions" if read else "reranker:folder")


def test_serve_read_captions_needs_learned_fusion(capsys: pytest.CaptureFixture[str]) -> None:
    from mm_rerank_components import cli
    from mm_rerank_components.cli.serve import config_from_args
    from mm_rerank_components.serving import ServeConfig

    with pytest.raises(ValueError, match="read_captions needs learned fusion.*scorer='fake'"):
        ServeConfig(scorer="fake", read_captions=True)
    with pytest.raises(ValueError, match="must be True or False"):
        ServeConfig(read_captions="yes")  # type: ignore[arg-type]
    assert ServeConfig(read_captions=True).read_captions  # the product default: learned fusion
    assert cli.main(["serve", "--scorer", "fake", "--read-captions", "--port", "1"]) == 2
    assert "--read-captions needs learned fusion" in capsys.readouterr().err
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    from mm_rerank_components.cli import serve

    serve.register(sub)
    config = config_from_args(parser.parse_args(["serve", "--read-captions"]))
    assert config.read_captions and config.scorer == "default"
