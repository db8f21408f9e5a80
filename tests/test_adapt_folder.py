"""The saved reranker folder: round trip through load_reranker and both framework adapters, no pickles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from langchain_core.documents import Document
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle, TextNode

from mm_rerank_components import Candidate, MultimodalReranker, Query
from mm_rerank_components.adapt import (
    LabelledList,
    LearnedFusionReranker,
    fit_fusion,
    load_reranker,
    save_reranker,
)
from mm_rerank_components.adapt.folder import RerankerFolderError, read_config
from mm_rerank_components.integrations.langchain import MultimodalRerankCompressor
from mm_rerank_components.integrations.llama_index import MultimodalRerankPostprocessor
from mm_rerank_components.scorers import FakeScorer

WORDS = ["fox", "owl", "cat", "dog", "frog", "snow", "forest", "night", "river", "stone"]


def _lists(scorer: FakeScorer, n: int = 24, seed: int = 0) -> list[LabelledList]:
    rng = np.random.default_rng(seed)
    out = []
    for q in range(n):
        target = WORDS[q % len(WORDS)]
        candidates = []
        for j in range(12):
            word = target if j in (1, 7) else WORDS[int(rng.integers(len(WORDS)))]
            if word == target and j not in (1, 7):
                word = "pebble"
            route = "mm_text" if j < 8 else "mm_images"
            candidates.append(
                Candidate(
                    f"q{q}d{j}",
                    text=f"a {word} {WORDS[int(rng.integers(len(WORDS)))]}",
                    source=route,
                    retrieval_score=float(rng.normal(0.5 if j in (1, 7) else 0.0, 0.3)),
                    metadata={"year": int(rng.integers(1990, 2020))},
                )
            )
        query = Query(f"the {target}")
        raw = scorer.score(query, candidates)
        out.append(LabelledList(query, candidates, raw, [int(j in (1, 7)) for j in range(12)]))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[LearnedFusionReranker, Path]:
    scorer = FakeScorer()
    model = fit_fusion(_lists(scorer), seed=3, metadata_fields=["year"])
    folder = tmp_path_factory.mktemp("reranker") / "my-reranker"
    save_reranker(folder, model, scorer=scorer, trained_on={"data_sha256": "abc", "queries": 24})
    return LearnedFusionReranker(MultimodalReranker(FakeScorer()), model), folder


def _hits() -> list[Candidate]:
    return [
        Candidate(
            "a", text="a fox in the snow", source="mm_text", retrieval_score=0.7, metadata={"year": 2001}
        ),
        Candidate("b", text="an owl at night", source="mm_text", retrieval_score=0.9),
        Candidate("c", text="fox", source="mm_images", retrieval_score=0.2, metadata={"year": 2019}),
        Candidate("d", text="river stone", retrieval_score=None),
    ]


def test_round_trip_through_load_reranker(trained: tuple[LearnedFusionReranker, Path]) -> None:
    original, folder = trained
    loaded = load_reranker(folder)
    assert isinstance(loaded, LearnedFusionReranker)
    before = original.rerank("the fox", _hits())
    after = loaded.rerank("the fox", _hits())
    assert [(r.id, r.index, r.score, r.raw_score) for r in after] == [
        (r.id, r.index, r.score, r.raw_score) for r in before
    ]
    assert np.array_equal(loaded.model.weights, original.model.weights)


def test_folder_holds_only_json_and_records_training(trained: tuple[LearnedFusionReranker, Path]) -> None:
    _, folder = trained
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["calibration.json", "config.json", "fusion.json"]
    for path in folder.iterdir():
        json.loads(path.read_text(encoding="utf-8"))  # every file is plain JSON
        assert not path.read_bytes().startswith(b"\x80")  # no pickle protocol header
    config = read_config(folder)
    assert config["scorer"] == {"spec": "fake", "options": {}, "name": "fake"}
    assert config["trained_on"]["data_sha256"] == "abc"
    assert config["seed"] == 3 and "meta:year" in config["feature_names"]
    assert config["package_version"]
    assert config["training"]["pairs"] > 0


def test_round_trip_through_llama_index(trained: tuple[LearnedFusionReranker, Path]) -> None:
    original, folder = trained
    nodes = [
        NodeWithScore(node=TextNode(id_="t1", text="an owl at night"), score=0.9),
        NodeWithScore(node=TextNode(id_="t2", text="a fox in the snow"), score=0.4),
        NodeWithScore(node=TextNode(id_="t3", text="fox fox"), score=0.1),
    ]
    bundle = QueryBundle("the fox")
    outs = []
    for reranker in (original, load_reranker(folder)):
        post = MultimodalRerankPostprocessor(reranker=reranker)
        out = post.postprocess_nodes(nodes, query_bundle=bundle)
        outs.append([(n.node.node_id, float(n.score or 0.0)) for n in out])
    assert outs[0] == outs[1]
    assert [s for _, s in outs[0]] == sorted((s for _, s in outs[0]), reverse=True)


def test_round_trip_through_langchain(trained: tuple[LearnedFusionReranker, Path]) -> None:
    original, folder = trained
    docs = [
        Document("an owl at night", id="t1"),
        Document("a fox in the snow", id="t2"),
        Document("fox fox", id="t3"),
    ]
    outs = []
    for reranker in (original, load_reranker(folder)):
        compressed = MultimodalRerankCompressor(reranker=reranker).compress_documents(docs, "the fox")
        outs.append([(d.id, d.metadata["relevance_score"]) for d in compressed])
    assert outs[0] == outs[1]
    assert outs[0][-1][0] == "t1"


def test_image_nodes_through_loaded_reranker(
    trained: tuple[LearnedFusionReranker, Path], red_png: Path
) -> None:
    _, folder = trained
    post = MultimodalRerankPostprocessor(reranker=load_reranker(folder, on_error="keep"))
    nodes = [
        NodeWithScore(node=TextNode(id_="t1", text="a fox"), score=0.9),
        NodeWithScore(node=ImageNode(id_="i1", image_path=str(red_png)), score=0.3),
        NodeWithScore(node=ImageNode(id_="bad", image_path="/nonexistent/x.png"), score=0.3),
    ]
    out = post.postprocess_nodes(nodes, query_bundle=QueryBundle("fox"))
    assert [n.node.node_id for n in out][-1] == "bad"
    assert len(out) == 3


def test_round_trip_through_the_top_level_load_reranker(trained: tuple[LearnedFusionReranker, Path]) -> None:
    from mm_rerank_components import load_reranker

    original, folder = trained
    with pytest.raises(TypeError, match="moved: use mm_rerank_components.load_reranker"):
        MultimodalReranker.load(folder)
    loaded = load_reranker(folder)
    before = original.rerank("the fox", _hits())
    after = loaded.rerank("the fox", _hits())
    assert [(r.id, r.score) for r in after] == [(r.id, r.score) for r in before]


def test_missing_and_bad_files_name_the_folder_and_file(
    trained: tuple[LearnedFusionReranker, Path], tmp_path: Path
) -> None:
    _, folder = trained
    with pytest.raises(RerankerFolderError, match="does not exist"):
        load_reranker(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(RerankerFolderError, match=r"broken: config\.json is missing"):
        load_reranker(broken)
    for name in ("config.json", "fusion.json", "calibration.json"):
        (broken / name).write_text((folder / name).read_text(encoding="utf-8"), encoding="utf-8")
    (broken / "fusion.json").unlink()
    with pytest.raises(RerankerFolderError, match=r"broken: fusion\.json is missing"):
        load_reranker(broken)
    (broken / "fusion.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RerankerFolderError, match=r"broken: fusion\.json is not valid JSON \(line 1"):
        load_reranker(broken)
    payload = json.loads((folder / "fusion.json").read_text(encoding="utf-8"))
    payload["weights"] = payload["weights"][:-1]
    (broken / "fusion.json").write_text(json.dumps(payload), encoding="utf-8")
    with pytest.raises(RerankerFolderError, match=r"fusion\.json.*must each hold"):
        load_reranker(broken)


def test_scorer_must_match_what_it_was_trained_on(trained: tuple[LearnedFusionReranker, Path]) -> None:
    _, folder = trained
    with pytest.raises(RerankerFolderError, match="trained on scores of 'fake'"):
        load_reranker(folder, scorer=FakeScorer(name="other"))
    assert load_reranker(folder, scorer=FakeScorer()).rerank("fox", _hits())[0].id in {"a", "c"}


def test_custom_scorer_needs_to_be_passed(tmp_path: Path) -> None:
    class MyScorer(FakeScorer):
        pass

    scorer = MyScorer(name="mine")
    model = fit_fusion(_lists(scorer, n=6), seed=0)
    save_reranker(tmp_path / "r", model, scorer=scorer)
    # a subclass may score differently, so it is never rebuilt as its base class
    assert read_config(tmp_path / "r")["scorer"]["spec"] is None
    with pytest.raises(RerankerFolderError, match="'mine', which cannot be rebuilt"):
        load_reranker(tmp_path / "r")
    save_reranker(tmp_path / "r2", model, scorer_info={"kind": "custom", "name": "mine", "settings": {}})
    with pytest.raises(
        RerankerFolderError, match=r"pass it yourself: load_reranker\(folder, scorer=\.\.\.\)"
    ):
        load_reranker(tmp_path / "r2")
    assert load_reranker(tmp_path / "r2", scorer=scorer).rerank("fox", _hits())


def test_adapters_from_folder(trained: tuple[LearnedFusionReranker, Path]) -> None:
    original, folder = trained
    docs = [Document("an owl at night", id="t1"), Document("a fox in the snow", id="t2")]
    via_folder = MultimodalRerankCompressor.from_folder(str(folder)).compress_documents(docs, "the fox")
    direct = MultimodalRerankCompressor(reranker=original).compress_documents(docs, "the fox")
    assert [(d.id, d.metadata["relevance_score"]) for d in via_folder] == [
        (d.id, d.metadata["relevance_score"]) for d in direct
    ]
    nodes = [
        NodeWithScore(node=TextNode(id_="t1", text="an owl at night"), score=0.9),
        NodeWithScore(node=TextNode(id_="t2", text="a fox in the snow"), score=0.4),
    ]
    post = MultimodalRerankPostprocessor.from_folder(str(folder), top_n=1)
    out = post.postprocess_nodes(nodes, query_bundle=QueryBundle("the fox"))
    direct_nodes = MultimodalRerankPostprocessor(reranker=original, top_n=1).postprocess_nodes(
        nodes, query_bundle=QueryBundle("the fox")
    )
    assert [(n.node.node_id, n.score) for n in out] == [(n.node.node_id, n.score) for n in direct_nodes]


def test_starter_scorer_settings_round_trip() -> None:
    from mm_rerank_components.adapt.folder import rebuild_scorer, scorer_spec
    from mm_rerank_components.scorers.starter import StarterScorer

    scorer = StarterScorer(top_k=10, window_chars=300, caption_weight=0.25)
    spec = json.loads(json.dumps(scorer_spec(scorer)))
    assert spec["spec"] == "starter" and spec["options"]["window_chars"] == 300
    assert rebuild_scorer(spec).name == scorer.name
    spec["name"] = "starter:something-else"
    with pytest.raises(RerankerFolderError, match="builds it differently"):
        rebuild_scorer(spec)


def test_folders_written_before_the_registry_still_load() -> None:
    from mm_rerank_components.adapt.folder import rebuild_scorer
    from mm_rerank_components.scorers.starter import StarterScorer

    scorer = StarterScorer(top_k=10, window_chars=300)
    settings = {"top_k": 10, "window_chars": 300, "prompt_styles": list(scorer.prompt_styles)}
    old = {"kind": "starter", "name": scorer.name, "settings": settings}
    assert rebuild_scorer(old).name == scorer.name
    record = {"kind": "fake", "name": "fake(overrides=bb3d02d8)", "settings": {"overrides": {"a": 0.9}}}
    fake = rebuild_scorer(record)
    assert fake.name == "fake(overrides=bb3d02d8)"
    with pytest.raises(RerankerFolderError, match="pass it yourself"):
        rebuild_scorer({"kind": "custom", "name": "mine", "settings": {"class": "x.Y"}})
