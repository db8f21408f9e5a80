"""Issue 23, the command line as a newcomer meets it: ``query --threshold``, ``query`` on a missing database
(an error that creates nothing), each ingest failure printed once, and one rank convention across Python,
the CLI, ``POST /v1/search`` rows and the web chat (documented in docs/cli.md, "Ranks: one convention")."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

pytest.importorskip("chromadb")

from test_cli import folder  # noqa: F401  (the fixture: two passages, two pictures)

from mm_rerank_components import MultimodalReranker, Query, cli
from mm_rerank_components.scorers import FakeScorer

FAST = ["--embedder", "hashing"]


@pytest.fixture
def db(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:  # noqa: F811
    path = str(tmp_path / "db")
    assert cli.main(["ingest", str(folder), "--db", path, *FAST, "--no-progress"]) == 0
    capsys.readouterr()
    return path


def _json_rows(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_threshold_keeps_only_rows_at_or_above_it(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["query", "red fox", "--db", db, *FAST, "--scorer", "fake", "--json", "--top-n", "0"]
    assert cli.main(base) == 0
    everything = _json_rows(capsys)
    scores = [row["score"] for row in everything]
    cut = sorted(scores)[len(scores) // 2]  # a threshold that keeps some rows and drops others
    assert min(scores) < cut <= max(scores)
    assert cli.main([*base, "--threshold", str(cut)]) == 0
    kept = _json_rows(capsys)
    assert kept == [row for row in everything if row["score"] >= cut]
    assert cli.main([*base, "--threshold", "1.5"]) == 2
    assert "--threshold must be a unified score between 0 and 1, got 1.5" in capsys.readouterr().err
    no_rerank = ["query", "red fox", "--db", db, *FAST, "--scorer", "none", "--threshold", "0.5"]
    assert cli.main(no_rerank) == 2
    assert "--threshold needs a reranker" in capsys.readouterr().err


def test_query_on_a_missing_database_is_an_error_that_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "mistyped_db"
    assert cli.main(["query", "red fox", "--db", str(missing), *FAST, "--scorer", "fake"]) == 2
    err = capsys.readouterr().err
    assert (
        f"--db '{missing}' is not a folder: ingest into it first (mm-rerank ingest FOLDER --db {missing})"
        in err
    )
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["query", "red fox", "--db", str(empty), *FAST, "--scorer", "fake"]) == 2
    assert "holds no Chroma database" in capsys.readouterr().err
    assert list(empty.iterdir()) == []


def test_each_ingest_failure_is_printed_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "fox.txt").write_text("Red fox\n\nThe red fox lives in dens.\n")
    (data / "broken.png").write_bytes(b"not a picture")
    with caplog.at_level(logging.WARNING):
        status = cli.main(["ingest", str(data), "--db", str(tmp_path / "db"), *FAST, "--no-progress"])
    assert status == 1
    err = capsys.readouterr().err
    logged = [r.getMessage() for r in caplog.records if "broken.png" in r.getMessage()]
    assert err.count("broken.png") == 1 and f"FAILED {data / 'broken.png'}: cannot decode image" in err
    assert logged == []  # the library's own warning is not printed a second time by the CLI
    # a library user (no CLI) still gets the warning
    from mm_rerank_components.ingest import ingest_folder
    from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction

    ef = HashingEmbeddingFunction()
    retriever = ChromaMultiCollectionRetriever(
        path=tmp_path / "db2", text_embedding_function=ef, image_embedding_function=ef
    )
    with caplog.at_level(logging.WARNING):
        assert len(ingest_folder(data, retriever).failed) == 1
    assert any("not ingested" in r.getMessage() and "broken.png" in r.getMessage() for r in caplog.records)


def test_one_rank_convention_across_python_cli_http_rows_and_web(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mm_rerank_components.answer import ExtractiveAnswerer, RAGPipeline
    from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction
    from mm_rerank_components.serving.search import search

    assert (
        cli.main(["query", "red fox", "--db", db, *FAST, "--scorer", "fake", "--json", "--top-n", "0"]) == 0
    )
    cli_rows = [(row["rank"], row["id"]) for row in _json_rows(capsys)]
    assert [rank for rank, _ in cli_rows] == list(range(1, len(cli_rows) + 1))  # 1-based

    ef = HashingEmbeddingFunction()
    retriever = ChromaMultiCollectionRetriever(
        path=db, text_embedding_function=ef, image_embedding_function=ef
    )
    reranker = MultimodalReranker(FakeScorer())
    query = Query("red fox")
    ranked = reranker.rerank(query, retriever.retrieve(query))
    assert [r.rank for r in ranked] == list(range(len(ranked)))  # Python: the 0-based list position
    assert all(ranked[r.rank] is r for r in ranked)
    python_rows = [(r.rank + 1, r.id) for r in ranked]
    assert python_rows == cli_rows

    http_rows = [(row["rank"], row["id"]) for row in search(retriever, reranker, query, top_n=0)]
    assert http_rows == cli_rows  # POST /v1/search returns these rows

    pipeline = RAGPipeline(retriever, reranker, answerer=ExtractiveAnswerer(), top_n=len(ranked))
    web = [(e["rank"], e["id"]) for e in pipeline.ask("red fox").to_dict()["evidence"]]
    assert web == cli_rows[: len(web)] and web
