"""Mining from both routes, database matching by content, adapt() end to end and ``mm-rerank adapt``.

Model-free: the hashing embedding function (retrievers/fake.py) and FakeScorer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mm_rerank_components import Candidate
from mm_rerank_components.adapt import load_reranker
from mm_rerank_components.adapt.corpus import UnmatchedLabelError
from mm_rerank_components.adapt.labels import LabelError, load_labels
from mm_rerank_components.adapt.mining import index_labels, match_documents, mine
from mm_rerank_components.adapt.pipeline import adapt, format_report

if TYPE_CHECKING:
    from mm_rerank_components.retrievers.chroma import ChromaMultiCollectionRetriever

pytest.importorskip("chromadb")

COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20), "yellow": (230, 230, 20)}
ANIMALS = ["fox", "whale", "frog", "canary", "owl", "cat"]


def _dataset(folder: Path, n_queries: int = 24) -> Path:
    """Passages and coloured pictures; each query's positives are one passage and one picture."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    lines: list[dict[str, object]] = []
    # one picture per colour: the hashing embedding reads only the colour, and tied vectors would make
    # Chroma's order among them (and so the mined pools) arbitrary
    for colour, rgb in COLOURS.items():
        Image.new("RGB", (24, 24), rgb).save(folder / f"{colour}.png")
        lines.append({"type": "doc", "id": f"img-{colour}", "image": f"{colour}.png"})
    for colour in COLOURS:
        for animal in ANIMALS:
            lines.append(
                {
                    "type": "doc",
                    "id": f"txt-{colour}-{animal}",
                    "text": f"the {colour} {animal} sleeps near the {ANIMALS[(ANIMALS.index(animal) + 1) % 6]}",
                    "metadata": {"year": 2000 + len(animal)},
                }
            )
    queries = [(c, a) for a in ANIMALS for c in COLOURS][:n_queries]
    for i, (colour, animal) in enumerate(queries):
        lines.append(
            {
                "type": "query",
                "id": f"q{i}",
                "text": f"{colour} {animal}",
                "relevant": [f"txt-{colour}-{animal}", f"img-{colour}"],
            }
        )
    path = folder / "labels.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    return path


def _retriever(client: Any) -> ChromaMultiCollectionRetriever:
    from mm_rerank_components.retrievers.chroma import ChromaMultiCollectionRetriever
    from mm_rerank_components.retrievers.fake import HashingEmbeddingFunction

    ef = HashingEmbeddingFunction()
    return ChromaMultiCollectionRetriever(
        client=client, text_embedding_function=ef, image_embedding_function=ef, image_query_searches_text=True
    )


def test_mining_counts_both_routes_and_never_mines_a_positive(tmp_path: Path) -> None:
    import chromadb

    labels = load_labels(_dataset(tmp_path / "data"))
    retriever = _retriever(chromadb.PersistentClient(path=str(tmp_path / "db")))
    match = index_labels(labels, retriever)
    assert not match.unmatched
    mined = mine(labels, retriever, match, k_text=5, k_image=4)
    routes = mined.route_counts()
    assert set(routes) == {"mm_text", "mm_images"}
    assert routes["mm_text"]["candidates"] == 5 * len(labels.queries)
    assert routes["mm_images"]["candidates"] == 4 * len(labels.queries)
    for route in routes.values():
        assert route["hard_negatives"] == route["candidates"] - route["positives"]
    assert routes["mm_text"]["positives"] > 0 and routes["mm_images"]["positives"] > 0
    for item in mined.lists:
        positives = set(item.query.relevant)
        for candidate, grade in zip(item.candidates, item.grades, strict=True):
            assert (grade > 0) == (candidate.id in positives)
        # every positive is either in the pool or counted as not retrieved
        found = sum(1 for g in item.grades if g > 0)
        assert found + sum(item.positives_missed.values()) == len(positives)


def test_database_documents_are_matched_by_content(tmp_path: Path) -> None:
    import chromadb

    data = _dataset(tmp_path / "data", n_queries=6)
    labels = load_labels(data)
    retriever = _retriever(chromadb.PersistentClient(path=str(tmp_path / "db")))
    # the user's database holds the same content under its own ids, minus one passage and one picture
    texts = {k: d for k, d in labels.docs.items() if d.image is None and k != "txt-red-fox"}
    retriever.add_texts([d.text or "" for d in texts.values()])  # ids = ingest's content hash
    images = [d for k, d in labels.docs.items() if d.image is not None and k != "img-blue"]
    retriever.add_images([str(d.image) for d in images])
    match = match_documents(labels, retriever)
    assert set(match.unmatched) == {"txt-red-fox", "img-blue"}
    assert "exact passage text" in match.unmatched["txt-red-fox"]
    assert all(r != k for k, ids in match.records.items() for r in ids)  # the database's ids, not ours
    mined = mine(labels, retriever, match, k_text=4, k_image=4)
    assert len(mined.lists) == len(labels.queries)  # red fox still has its picture
    for item in mined.lists:
        positive_ids = {r for k in item.query.relevant for r in match.records.get(k, [])}
        assert {c.id for c, g in zip(item.candidates, item.grades, strict=True) if g > 0} <= positive_ids
        assert not any(
            c.id in positive_ids for c, g in zip(item.candidates, item.grades, strict=True) if g == 0
        )


def test_query_whose_positives_are_all_missing_is_reported(tmp_path: Path) -> None:
    import chromadb

    data = tmp_path / "labels.jsonl"
    data.write_text(
        json.dumps({"query": "red fox", "pos": ["the red fox sleeps"]})
        + "\n"
        + json.dumps({"query": "owl", "pos": ["an owl"], "neg": ["a cat"]})
        + "\n",
        encoding="utf-8",
    )
    retriever = _retriever(chromadb.PersistentClient(path=str(tmp_path / "db")))
    retriever.add_texts(["the red fox sleeps", "a cat", "a dog"])
    with pytest.raises(
        UnmatchedLabelError,
        match=r"labels\.jsonl:2: no record holds this passage 'an owl'; "
        r"nearest record '[^']+': 'a dog'",
    ):
        adapt(data, retriever=retriever, scorer="fake", k_text=3, k_image=0)
    result = adapt(data, retriever=retriever, scorer="fake", k_text=3, k_image=0, allow_unmatched=True)
    assert result.report["matching"]["unmatched_documents"] == 1
    assert result.report["matching"]["skipped_queries"] == 1
    assert "labels.jsonl:2: none of its 1 relevant documents" in result.report["matching"]["skipped"][0]
    assert result.report["mining"]["queries"] == 1


def test_adapt_end_to_end_saves_a_loadable_deterministic_reranker(tmp_path: Path) -> None:
    import chromadb

    data = _dataset(tmp_path / "data")
    kwargs = {"scorer": "fake", "k_text": 6, "k_image": 4, "seed": 1, "metadata_fields": ["year"]}
    first = adapt(data, out=tmp_path / "r1", embedder="hashing", **kwargs)  # type: ignore[arg-type]
    # the same seed on the same pools gives byte-identical weights. (A freshly built database may return
    # first-stage ties in another order, so both runs here read one database.)
    retriever = _retriever(chromadb.PersistentClient(path=str(tmp_path / "db")))
    index_labels(load_labels(data), retriever)
    runs = [adapt(data, out=tmp_path / f"db{i}", retriever=retriever, **kwargs) for i in range(2)]  # type: ignore[arg-type]
    assert (tmp_path / "db0" / "fusion.json").read_text() == (tmp_path / "db1" / "fusion.json").read_text()
    assert runs[0].model.weights.tolist() == runs[1].model.weights.tolist()
    report = first.report
    assert report["mining"]["routes"]["mm_text"]["hard_negatives"] > 0
    assert report["mining"]["routes"]["mm_images"]["hard_negatives"] > 0
    assert set(report["calibration"]) == {"text", "image"}
    assert report["fusion"]["pairs"] > 0 and "meta:year" in first.model.feature_names
    assert set(report["timings"]) >= {"labels", "index", "retrieve", "score", "fusion", "save", "total"}
    config = json.loads((tmp_path / "r1" / "config.json").read_text())
    assert config["trained_on"]["data_sha256"] == load_labels(data).sha256
    assert config["trained_on"]["by_route"]["mm_images"]["candidates"] == 4 * 24
    text = format_report(report)
    for needle in ("mining (k_text=6, k_image=4)", "mm_images", "hard negatives", "ECE", "saved:"):
        assert needle in text
    assert "FALLBACK" not in text  # both modalities' maps kept their own (positive) slope
    flipped = {**report, "calibration": {**report["calibration"]}}
    flipped["calibration"]["image"] = {
        **report["calibration"]["image"],
        "map": "pooled ('all'): this modality's own fit had slope <= 0",
        "fallback": "reversed",
    }
    assert (
        "FALLBACK: image calibration: pooled ('all'): this modality's own fit had slope <= 0"
        in format_report(flipped)
    )
    loaded = load_reranker(tmp_path / "r1")
    pool = first.reranker.rerank("red fox", _pool_for(first, "red fox"))
    again = loaded.rerank("red fox", _pool_for(first, "red fox"))
    assert [(r.id, r.score) for r in pool] == [(r.id, r.score) for r in again]


def _pool_for(result: object, query: str) -> list[Candidate]:
    return [
        Candidate(
            "a", text=f"the {query} sleeps", source="mm_text", retrieval_score=0.9, metadata={"year": 2003}
        ),
        Candidate("b", text="the blue owl sleeps", source="mm_text", retrieval_score=0.4),
    ]


def test_bad_labels_stop_adapt(tmp_path: Path) -> None:
    data = tmp_path / "labels.jsonl"
    data.write_text(
        json.dumps({"type": "doc", "id": "d1", "text": "x"})
        + "\n"
        + json.dumps({"type": "query", "id": "q1", "text": "x", "relevant": ["d2"]})
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(LabelError, match=r"labels\.jsonl:2"):
        adapt(data, embedder="hashing", scorer="fake")


def test_cli_adapt_and_bad_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mm_rerank_components.cli import main

    data = _dataset(tmp_path / "data", n_queries=12)
    out = tmp_path / "reranker"
    code = main(
        [
            "adapt",
            "--data",
            str(data),
            "--out",
            str(out),
            "--scorer",
            "fake",
            "--embedder",
            "hashing",
            "--k-text",
            "5",
            "--k-image",
            "3",
            "--metadata-field",
            "year",
            "--seed",
            "2",
            "--listwise",
            "--modality-floor",
            "2",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "mining (k_text=5, k_image=3)" in captured.out and "calibration per modality" in captured.out
    assert (out / "config.json").is_file()
    assert json.loads((out / "config.json").read_text())["seed"] == 2
    from mm_rerank_components.adapt import load_reranker

    saved = load_reranker(out).model
    assert saved.modality_floor == 2 and any(n.startswith("listwise:") for n in saved.feature_names)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "x", "pos": []}\n', encoding="utf-8")
    code = main(
        [
            "adapt",
            "--data",
            str(bad),
            "--out",
            str(tmp_path / "nope"),
            "--scorer",
            "fake",
            "--embedder",
            "hashing",
        ]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert "bad labels" in captured.err and "bad.jsonl:1: query has no positive" in captured.err
    assert not (tmp_path / "nope").exists()


def test_cli_adapt_against_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import chromadb

    from mm_rerank_components.cli import main

    data = _dataset(tmp_path / "data", n_queries=8)
    labels = load_labels(data)
    retriever = _retriever(chromadb.PersistentClient(path=str(tmp_path / "db")))
    retriever.add_texts([d.text or "" for d in labels.docs.values() if d.image is None])
    retriever.add_images([str(d.image) for d in labels.docs.values() if d.image is not None])
    del retriever
    code = main(
        [
            "adapt",
            "--data",
            str(data),
            "--db",
            str(tmp_path / "db"),
            "--embedder",
            "hashing",
            "--out",
            str(tmp_path / "r"),
            "--scorer",
            "fake",
            "--k-text",
            "4",
            "--k-image",
            "4",
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["matching"]["mode"] == "database" and report["matching"]["unmatched_documents"] == 0
    assert set(report["mining"]["routes"]) == {"mm_text", "mm_images"}


def test_click_log_adds_weak_labels(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data", n_queries=8)
    clicks = tmp_path / "clicks.jsonl"
    lines = [
        {
            "query": "blue owl",
            "shown": ["txt-blue-cat", "txt-blue-owl", "img-blue"],
            "clicked": ["txt-blue-owl"],
        },
        {"query": "green cat", "shown": ["img-green", "txt-green-cat"], "clicked": []},
    ]
    clicks.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    result = adapt(data, clicks=clicks, embedder="hashing", scorer="fake", k_text=4, k_image=2)
    labels = result.report["labels"]
    assert labels["queries"] == 9 and labels["weak_queries"] == 1
    assert labels["click_lines"] == 2 and labels["click_lines_without_click"] == 1
    assert labels["labelled_negatives"] == 1  # txt-blue-cat was skipped above the click
    assert "2 click lines (1 without a click)" in format_report(result.report)
