"""Label-free adaptation: pseudo-queries from the corpus, the teacher filter, label matching, and
``adapt`` / ``mm-rerank adapt`` without labels. Model-free (hashing embeddings, FakeScorer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mm_rerank_components import Candidate
from mm_rerank_components.adapt.corpus import (
    CorpusRecord,
    LabelFreeOptions,
    UnmatchedLabelError,
    VectorCorpus,
    drop_likely_false_negatives,
    match_labels,
    pseudo_queries,
)
from mm_rerank_components.adapt.labels import load_labels

ANIMALS = ["fox", "whale", "frog", "canary", "owl", "cat", "horse", "eagle"]


def _records() -> list[CorpusRecord]:
    out = []
    for a in ANIMALS:
        out.append(
            CorpusRecord(
                f"t-{a}",
                "text",
                text=f"The {a} is an animal. Many people think the {a} lives near rivers and old forests.",
                path=f"/docs/{a}.txt",
            )
        )
        out.append(CorpusRecord(f"i-{a}", "image", title=f"{a}_photo-01", path=f"/pics/{a}.jpg"))
    return out


def test_pseudo_queries_balance_modalities_and_pair_by_file_stem() -> None:
    queries = pseudo_queries(_records(), LabelFreeOptions(max_queries=8, seed=3))
    kinds = [q.kind for q in queries]
    assert kinds.count("picture-title") == 4 and kinds.count("passage-span") == 4
    for q in queries:
        animal = q.source.split("-", 1)[1]
        # the record and its cross-modal sibling (same file stem) are the positives
        assert q.positives == {f"t-{animal}", f"i-{animal}"}
        assert 1 <= len(q.text.split()) <= 8
        if q.kind == "picture-title":
            assert q.text == f"{animal} photo 01"
    assert pseudo_queries(_records(), LabelFreeOptions(max_queries=8, seed=3)) == queries


def test_pair_fields_and_the_sibling_cap() -> None:
    records = [
        CorpusRecord(
            "t1", "text", text="A long passage about the red fox and its den.", metadata={"doc": "a"}
        ),
        CorpusRecord("i1", "image", title="zzz", metadata={"doc": "a", "cat": "x"}),
        *[CorpusRecord(f"i{n}", "image", title=f"pic{n}", metadata={"cat": "x"}) for n in range(2, 8)],
    ]
    options = LabelFreeOptions(max_queries=20, pair_fields=("doc", "cat"), max_siblings=3)
    by_source = {q.source: q for q in pseudo_queries(records, options)}
    assert by_source["t1"].positives == {"t1", "i1"}  # "cat" ties 7 pictures: a category, ignored
    assert by_source["i2"].positives == {"i2"}


def test_titles_without_a_word_give_no_query() -> None:
    records = [
        CorpusRecord("i1", "image", title="IMG_20230101_1234"),
        CorpusRecord("i2", "image", title="9f8e7d"),
    ]
    assert [q.text for q in pseudo_queries(records)] == ["IMG 20230101 1234"]


def test_teacher_filter_drops_negatives_above_the_positive_of_their_modality() -> None:
    cands = [
        Candidate("p", text="a"),
        Candidate("n1", text="b"),
        Candidate("n2", text="c"),
        Candidate("img", image="x.png"),
    ]
    assert drop_likely_false_negatives(cands, [0.5, 0.7, 0.4, 0.9], [1, 0, 0, 0], 0.0) == [0, 2, 3]
    assert drop_likely_false_negatives(cands, [0.5, 0.7, 0.4, 0.9], [1, 0, 0, 0], 0.3) == [0, 1, 2, 3]
    assert drop_likely_false_negatives(cands, [0.5, 0.7, 0.4, 0.9], [1, 0, 0, 0], None) == [0, 1, 2, 3]


def test_unlabelled_modality_is_dropped_only_when_asked(tmp_path: Path) -> None:
    from dataclasses import replace

    from mm_rerank_components.adapt.corpus import labelled_modalities_only
    from mm_rerank_components.adapt.pipeline import adapt_from_corpus, label_free_options

    cands = [Candidate("p", text="a"), Candidate("n", text="b"), Candidate("i", image="x.png")]
    assert labelled_modalities_only(cands, [1, 0, 0]) == [0, 1]
    assert labelled_modalities_only(cands, [1, 0, 1]) == [0, 1, 2]
    with pytest.raises(ValueError, match="unlabelled_modality must be 'negative' or 'drop', got 'keep'"):
        LabelFreeOptions(unlabelled_modality="keep")
    base = label_free_options(k_text=4, k_image=4)
    corpus = _vector_corpus(tmp_path)
    kept = adapt_from_corpus(corpus, "fake", base).report
    drop = replace(base, label_free=replace(base.label_free, unlabelled_modality="drop"))
    dropped = adapt_from_corpus(corpus, "fake", drop).report
    assert kept["pseudo_queries"]["dropped_unlabelled_modality"] == 0
    assert dropped["pseudo_queries"]["dropped_unlabelled_modality"] > 0
    # no pair field and no shared stem: every pool holds positives of one modality only
    assert (
        dropped["scoring"]["pairs"]
        == kept["scoring"]["pairs"] - dropped["pseudo_queries"]["dropped_unlabelled_modality"]
    )


def _labels_file(tmp_path: Path, passage: str) -> Path:
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps({"query": "fox", "pos": [passage]}) + "\n", encoding="utf-8")
    return path


def test_matching_normalises_whitespace(tmp_path: Path) -> None:
    records = [CorpusRecord("r1", "text", text="Foxes live in dens.")]
    labels = load_labels(_labels_file(tmp_path, "Foxes  live in\ndens.\n"))
    match = match_labels(labels, records)
    assert list(match.records.values()) == [["r1"]] and not match.unmatched


def test_unmatched_label_names_file_line_and_nearest_record(tmp_path: Path) -> None:
    records = [
        CorpusRecord("r1", "text", text="Foxes live in dens."),
        CorpusRecord("r2", "text", text="Owls."),
    ]
    labels = load_labels(_labels_file(tmp_path, "Foxes live in burrows."))
    with pytest.raises(
        UnmatchedLabelError, match=r"labels\.jsonl:1: no record holds this passage .*nearest record 'r1'"
    ):
        match_labels(labels, records)
    match = match_labels(labels, records, allow_unmatched=True)
    assert len(match.unmatched) == 1 and "nearest record 'r1'" in next(iter(match.unmatched.values()))


def _vector_corpus(folder: Path) -> VectorCorpus:
    from PIL import Image

    from mm_rerank_components.retrievers.fake import HashingEmbeddingFunction

    ef = HashingEmbeddingFunction()
    docs = []
    for i, a in enumerate(ANIMALS):
        docs.append(
            Candidate(
                f"t-{a}",
                text=f"The {a} sleeps in the forest. A {a} eats berries at night.",
                metadata={"doc": a},
            )
        )
        Image.new("RGB", (16, 16), (30 * i, 20, 200 - 20 * i)).save(folder / f"{a}.png")
        docs.append(Candidate(f"i-{a}", image=str(folder / f"{a}.png"), metadata={"doc": a, "n": i}))
    texts = [d.text if d.text is not None else Path(str(d.image)).stem for d in docs]
    vectors = {d.id: np.asarray(v) for d, v in zip(docs, ef(texts), strict=True)}
    return VectorCorpus(docs, vectors, lambda qs: np.asarray(ef(list(qs))))


def test_adapt_from_corpus_in_memory_trains_both_modalities(tmp_path: Path) -> None:
    from mm_rerank_components.adapt.pipeline import adapt_from_corpus, format_report, label_free_options

    options = label_free_options(k_text=4, k_image=4)
    corpus = _vector_corpus(tmp_path)
    result = adapt_from_corpus(corpus, "fake", options)
    report = result.report
    assert report["mode"] == "label-free"
    assert report["pseudo_queries"]["with_positive_in_pool"] > 0
    assert report["counts"]["by_modality"]["text"]["positives"] > 0
    assert report["counts"]["by_modality"]["image"]["positives"] > 0
    assert result.model.modality_floor == 2 and not report["modalities_without_positive"]
    text = format_report(report)
    assert "pseudo-queries:" in text and "teacher filter (GPL)" in text and "calibration per modality" in text
    assert f"pairs with {report['scoring']['scorer']}," in text and report["scoring"]["scorer"]  # named
    pool = corpus.retrieve_many(["fox"], 4, 4)[0]
    ranked = result.reranker.rerank("fox", pool)
    assert len(ranked) == len(pool) and all(0.0 <= r.score <= 1.0 for r in ranked)


def _chroma(tmp_path: Path) -> Any:
    import chromadb
    from PIL import Image

    from mm_rerank_components.retrievers.chroma import ChromaMultiCollectionRetriever
    from mm_rerank_components.retrievers.fake import HashingEmbeddingFunction

    ef = HashingEmbeddingFunction()
    retriever = ChromaMultiCollectionRetriever(
        client=chromadb.PersistentClient(path=str(tmp_path / "db")),
        text_embedding_function=ef,
        image_embedding_function=ef,
        image_query_searches_text=True,
    )
    colours = [(200, 20, 20), (20, 20, 200), (20, 200, 20), (230, 230, 20), (90, 90, 90), (200, 100, 0)]
    pictures = []
    for (r, g, b), a in zip(colours, ANIMALS, strict=False):
        path = tmp_path / f"{a}.png"
        Image.new("RGB", (24, 24), (r, g, b)).save(path)
        pictures.append(str(path))
    retriever.add_images(pictures, captions=[f"a {Path(p).stem} in the wild" for p in pictures])
    retriever.add_texts([f"The {a} sleeps in the forest. A {a} eats berries at night." for a in ANIMALS])
    return retriever


def test_label_free_adapt_saves_a_loadable_folder(tmp_path: Path) -> None:
    pytest.importorskip("chromadb")
    from mm_rerank_components.adapt import load_reranker
    from mm_rerank_components.adapt.pipeline import adapt

    retriever = _chroma(tmp_path)
    result = adapt(retriever=retriever, scorer="fake", out=tmp_path / "r", k_text=4, k_image=4)
    kinds = result.report["pseudo_queries"]["by_kind"]
    assert kinds.get("picture-caption", 0) > 0 and kinds.get("passage-span", 0) > 0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["trained_on"]["label_free"] is True
    assert {"queries", "retrieve", "score", "fusion", "save"} <= set(result.report["timings"])
    hits = retriever.retrieve("fox", k_text=4, k_image=4)
    loaded = load_reranker(tmp_path / "r")
    assert [(r.id, round(r.score, 9)) for r in loaded.rerank("fox", hits)] == [
        (r.id, round(r.score, 9)) for r in result.reranker.rerank("fox", hits)
    ]
    with pytest.raises(ValueError, match="label-free adaptation to your corpus"):
        adapt(scorer="fake")


def test_cli_adapt_without_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("chromadb")
    from mm_rerank_components.cli import main

    _chroma(tmp_path)
    args = ["adapt", "--db", str(tmp_path / "db"), "--embedder", "hashing", "--scorer", "fake"]
    code = main(
        [*args, "--out", str(tmp_path / "r"), "--k-text", "4", "--k-image", "4", "--max-queries", "10"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "label-free: the corpus of" in captured.out and (tmp_path / "r" / "fusion.json").is_file()
    assert main(["adapt", "--out", str(tmp_path / "x"), "--scorer", "fake"]) == 2
    assert "--db DB" in capsys.readouterr().err


def test_cli_unmatched_label_exits_2_and_allow_unmatched_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("chromadb")
    from mm_rerank_components.cli import main

    _chroma(tmp_path)
    data = tmp_path / "labels.jsonl"
    lines = [
        {"query": "fox", "pos": ["The fox sleeps in the forest. A fox eats berries at night.\n"]},
        {"query": "owl", "pos": ["The owl sleeps in the forest. An owl eats berries at night."]},
        {"query": "frog", "pos": ["The frog sleeps in the forest. A frog eats berries at night."]},
    ]
    data.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    args = [
        "adapt",
        "--data",
        str(data),
        "--db",
        str(tmp_path / "db"),
        "--embedder",
        "hashing",
        "--scorer",
        "fake",
    ]
    args += ["--k-text", "4", "--k-image", "0", "--out"]
    assert main([*args, str(tmp_path / "r1")]) == 2
    err = capsys.readouterr().err
    assert "labels.jsonl:2: no record holds this passage" in err and "nearest record" in err
    assert "labels.jsonl:1" not in err  # the trailing newline of line 1 is whitespace: it matched
    assert main([*args, str(tmp_path / "r2"), "--allow-unmatched"]) == 0
    capsys.readouterr()


def test_modality_with_no_positive_is_an_error(tmp_path: Path) -> None:
    pytest.importorskip("chromadb")
    from mm_rerank_components.adapt.pipeline import AdaptLabelsError, adapt

    retriever = _chroma(tmp_path)
    data = tmp_path / "labels.jsonl"
    data.write_text(
        json.dumps({"query": "fox", "pos": ["The fox sleeps in the forest. A fox eats berries at night."]})
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(AdaptLabelsError, match=r"the database holds pictures \(6 pictures\) but no labelled"):
        adapt(data, retriever=retriever, scorer="fake", k_text=4, k_image=4)


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from mm_rerank_components.testing import build_bert_cross_encoder

    words = sorted({w for a in ANIMALS for w in (a, f"{a}s")} | {"the", "a", "in", "at", "sleeps", "eats"})
    return Path(build_bert_cross_encoder(tmp_path_factory.mktemp("ce"), words))


@pytest.mark.slow
def test_label_free_with_a_cross_encoder_and_a_router(tmp_path: Path, cross_encoder_dir: Path) -> None:
    """Any scorer: a tiny random cross-encoder reads the passages, FakeScorer the pictures (a text-only
    scorer cannot read a picture: ModalityRouter sends each modality to one that can). Both modalities
    get pseudo-labelled positives and their own calibration; the folder reloads with the same scores."""
    from mm_rerank_components.adapt import load_reranker
    from mm_rerank_components.adapt.pipeline import adapt_from_corpus, label_free_options
    from mm_rerank_components.scorers import FakeScorer
    from mm_rerank_components.scorers.registry import scorer_from_spec
    from mm_rerank_components.scorers.routing import ModalityRouter

    cross = scorer_from_spec(f"cross-encoder:{cross_encoder_dir}", device="cpu", max_length=64)
    corpus = _vector_corpus(tmp_path)
    router = ModalityRouter({"text": cross, "image": FakeScorer()})
    result = adapt_from_corpus(corpus, router, label_free_options(k_text=4, k_image=4), out=tmp_path / "r")
    counts = result.report["counts"]["by_modality"]
    assert counts["text"]["positives"] > 0 and counts["image"]["positives"] > 0
    assert result.report["scoring"]["failed"] == 0
    assert set(result.report["calibration"]) >= {"text", "image"}
    pool = corpus.retrieve_many(["the fox sleeps"], 4, 4)[0]
    loaded = load_reranker(tmp_path / "r", scorer=router)
    assert [(r.id, round(r.score, 9)) for r in loaded.rerank("the fox sleeps", pool)] == [
        (r.id, round(r.score, 9)) for r in result.reranker.rerank("the fox sleeps", pool)
    ]


@pytest.mark.slow
def test_label_free_with_a_text_only_cross_encoder_on_passages(
    tmp_path: Path, cross_encoder_dir: Path
) -> None:
    """A cross-encoder spec alone on a corpus of passages: trained, saved with its spec, reloaded by spec."""
    from mm_rerank_components.adapt import load_reranker
    from mm_rerank_components.adapt.pipeline import adapt_from_corpus, label_free_options
    from mm_rerank_components.retrievers.fake import HashingEmbeddingFunction

    ef = HashingEmbeddingFunction()
    docs = [
        Candidate(f"t-{a}", text=f"The {a} sleeps in the forest. A {a} eats berries at night.")
        for a in ANIMALS
    ]
    vectors = {d.id: np.asarray(v) for d, v in zip(docs, ef([d.text or "" for d in docs]), strict=True)}
    corpus = VectorCorpus(docs, vectors, lambda qs: np.asarray(ef(list(qs))))
    spec = f"cross-encoder:{cross_encoder_dir}"
    result = adapt_from_corpus(corpus, spec, label_free_options(k_text=4, k_image=0), out=tmp_path / "r")
    assert result.report["counts"]["by_modality"]["text"]["positives"] > 0
    assert result.report["corpus"]["records"] == {"text": len(ANIMALS)}
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["trained_on"]["label_free"] is True and config["scorer"]["spec"].startswith(
        "cross-encoder:"
    )
    pool = corpus.retrieve_many(["owl at night"], 4, 0)[0]
    ranked = load_reranker(tmp_path / "r").rerank("owl at night", pool)
    assert [r.id for r in ranked] == [r.id for r in result.reranker.rerank("owl at night", pool)]
