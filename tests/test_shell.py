"""``mm-rerank shell``: queries one per line from a process that loads its models once (issue 21)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chromadb")

from PIL import Image

from mm_rerank_components.cli import main
from mm_rerank_components.cli import shell as shell_module
from mm_rerank_components.cli.shell import parse_line, serve_lines
from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever


@pytest.fixture
def db(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "fox.txt").write_text("Red fox\n\nThe red fox lives in dens.\n")
    (folder / "owl.txt").write_text("Owl\n\nOwls hunt at night.\n")
    Image.new("RGB", (32, 24), (220, 20, 20)).save(folder / "red.png")
    assert (
        main(["ingest", str(folder), "--db", str(tmp_path / "db"), "--embedder", "hashing", "--no-progress"])
        == 0
    )
    return tmp_path / "db"


def _args(**extra: Any) -> argparse.Namespace:
    return argparse.Namespace(k_text=4, k_image=4, top_n=3, **extra)


def test_lines_are_parsed_with_clear_errors(tmp_path: Path) -> None:
    picture = tmp_path / "p.png"
    Image.new("RGB", (8, 8)).save(picture)
    assert parse_line("  ") is None
    assert parse_line(f":image {picture} red things") == ("red things", str(picture))
    assert parse_line(f":image {picture}") == (None, str(picture))
    with pytest.raises(ValueError, match="image not found"):
        parse_line(":image nowhere.png")
    with pytest.raises(ValueError, match="unknown command ':imgae'"):
        parse_line(":imgae x")


def test_the_shell_loads_once_and_answers_every_line(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mm_rerank_components.reranker import MultimodalReranker
    from mm_rerank_components.scorers.fake import FakeScorer

    warmed: list[object] = []
    real = shell_module.warm_up_for
    monkeypatch.setattr(shell_module, "warm_up_for", lambda r, q: (warmed.append(q), real(r, q)))
    retriever = ChromaMultiCollectionRetriever(path=db, embedder="hashing")
    out = io.StringIO()
    lines = ["red fox\n", ":bogus\n", "\n", "owls at night\n", ":quit\n", "never asked\n"]
    answered = serve_lines(lines, retriever, MultimodalReranker(FakeScorer()), _args(), out)
    text = out.getvalue()
    assert answered == 2 and len(warmed) == 1
    assert "fox" in text and "unknown command ':bogus'" in text and "never asked" not in text
    assert text.count("first query") == 1 and text.count("\nquery: ") == 1


def test_the_shell_command_reads_standard_input(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("red fox\nowls\n"))
    code = main(["shell", "--db", str(db), "--embedder", "hashing", "--scorer", "fake", "--top-n", "2"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("ms search and rerank") == 2


def test_the_shell_notes_once_that_picture_query_scores_are_an_order(db: Path, tmp_path: Path) -> None:
    from PIL import Image

    from mm_rerank_components.reranker import MultimodalReranker
    from mm_rerank_components.scorers.fake import FakeScorer

    picture = tmp_path / "query.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(picture)
    retriever = ChromaMultiCollectionRetriever(path=db, embedder="hashing")
    out = io.StringIO()
    lines = ["red fox\n", f":image {picture} red things\n", f":image {picture}\n"]
    assert serve_lines(lines, retriever, MultimodalReranker(FakeScorer()), _args(), out) == 3
    text = out.getvalue()
    assert text.count("this query holds a picture") == 1
    assert text.index("this query holds a picture") > text.index("first query")  # after the picture query


def test_the_shell_notes_once_that_captioned_picture_scores_are_not_calibrated(tmp_path: Path) -> None:
    from mm_rerank_components.defaults import default_reranker
    from mm_rerank_components.scorers.fake import FakeScorer

    folder = tmp_path / "captioned"
    folder.mkdir()
    (folder / "fox.txt").write_text("Red fox\n\nThe red fox lives in dens.\n")
    Image.new("RGB", (32, 24), (220, 20, 20)).save(folder / "red.png")
    (folder / "red.caption.txt").write_text("A red square")
    args = ["ingest", str(folder), "--db", str(tmp_path / "db"), "--embedder", "hashing", "--no-progress"]
    assert main(args) == 0
    retriever = ChromaMultiCollectionRetriever(path=tmp_path / "db", embedder="hashing")
    out = io.StringIO()
    assert (
        serve_lines(["red fox\n", "a red square\n"], retriever, default_reranker(FakeScorer()), _args(), out)
        == 2
    )
    text = out.getvalue()
    assert "text+image" in text  # the captioned picture is in the answers
    assert text.count("pictures that carry a caption") == 1  # said once, under the first answer
    assert text.index("pictures that carry a caption") < text.index("\nquery: ")
