"""The mm-rerank command line, with the model-free embedder and scorer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("chromadb")

from PIL import Image

from mm_rerank_components import cli

FAST = ["--embedder", "hashing"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "fox.txt").write_text("Red fox\n\nThe red fox lives in dens.\n")
    (root / "owl.txt").write_text("Owls\n\nOwls hunt at night.\n")
    Image.new("RGB", (16, 16), (220, 20, 20)).save(root / "red.png")
    Image.new("RGB", (16, 16), (20, 20, 220)).save(root / "blue.jpg")
    (root / "metadata.jsonl").write_text(
        json.dumps({"file_name": "red.png", "caption": "A red square"}) + "\n"
    )
    return root


def test_ingest_then_query_prints_a_ranked_mixed_table(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "db")
    assert cli.main(["ingest", str(folder), "--db", db, *FAST, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "2 passages, 2 pictures" in out and "4 added, 0 updated, 0 unchanged, 0 failed" in out
    # red.png carries a caption: what to do about the default's reading of it, with this database
    said = " ".join(out.split())  # the hint is wrapped at 110 characters
    assert "1 of 2 pictures carry a caption" in said and f"`mm-rerank adapt --db {db} --out FOLDER`" in said

    assert cli.main(["query", "red fox", "--db", db, *FAST, "--scorer", "fake"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["rank", "modality", "score", "route", "title", "/", "path"]
    first = lines[1].split()
    assert first[:4] == ["1", "text", "1.000", "text->mm_text"] and "Red fox (fox.txt)" in lines[1]
    assert any("text+image" in line and "A red square (red.png)" in line for line in lines[1:5])
    assert any(line.split()[1:2] == ["image"] and "blue.jpg" in line for line in lines[1:5])
    assert "4 candidates, reranked by fake" in out
    assert "cold (first query after loading): first stage" in out and "warm (same query again, once" in out
    assert "models loaded in" in out and "load average" in out


def test_reingest_reports_unchanged(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "db")
    cli.main(["ingest", str(folder), "--db", db, *FAST, "--no-progress"])
    capsys.readouterr()
    assert cli.main(["ingest", str(folder), "--db", db, *FAST, "--no-progress"]) == 0
    assert "0 added, 0 updated, 4 unchanged" in capsys.readouterr().out
    (folder / "metadata.jsonl").unlink()  # no caption left: the picture is rewritten, and no hint
    assert cli.main(["ingest", str(folder), "--db", db, *FAST, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "0 added, 1 updated, 3 unchanged" in out and "carry a caption" not in out


def test_ingest_errors_are_listed_and_exit_nonzero(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "broken.webp").write_bytes(b"RIFF0000WEBPjunk")
    (folder / "notes.xyz").write_bytes(b"PK")
    db = str(tmp_path / "db")
    assert cli.main(["ingest", str(folder), "--db", db, *FAST, "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "4 added" in captured.out
    assert "FAILED " in captured.err and "broken.webp" in captured.err
    assert "skipped " in captured.err and "notes.xyz: unsupported file type '.xyz'" in captured.err
    assert "1 file(s) could not be ingested" in captured.err
    assert cli.main(["ingest", str(folder), "--db", db, *FAST, "--fail-fast"]) == 1
    assert "stopped (--fail-fast)" in capsys.readouterr().err


def test_query_json_image_query_and_no_rerank(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "db")
    cli.main(["ingest", str(folder), "--db", db, *FAST, "--no-progress"])
    capsys.readouterr()
    args = ["--db", db, *FAST, "--scorer", "fake", "--json"]
    assert cli.main(["query", "--image", str(folder / "red.png"), *args]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert rows[0]["path"].endswith("red.png") and rows[0]["score"] == 1.0 and rows[0]["rank"] == 1
    # a picture query's scores are an order, not calibrated probabilities: said on stderr, JSON stays clean
    assert "this query holds a picture" in captured.err and "Read them as an order" in captured.err
    assert cli.main(["query", "owls", "--db", db, *FAST, "--scorer", "fake"]) == 0
    out = capsys.readouterr().out
    assert "holds a picture" not in out
    # the answer holds the captioned red.png, and no map of this reranker saw a captioned picture
    assert "text+image" in out and "pictures that carry a caption" in out
    assert cli.main(["query", "owls", "--db", db, *FAST, "--scorer", "fake", "--top-n", "1"]) == 0
    assert "carry a caption" not in capsys.readouterr().out  # only the Owls passage shown
    assert cli.main(["query", "owls", "--db", db, *FAST, "--scorer", "none", "--top-n", "1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:3] == ["1", "text", "-"] and "Owls (owl.txt)" in out
    assert "holds a picture" not in out


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["query", "--db", str(tmp_path / "db"), *FAST]) == 2
    assert "give a question, --image PATH, or both" in capsys.readouterr().err
    assert cli.main(["query", "x", "--image", "nope.png", "--db", str(tmp_path), *FAST]) == 2
    assert "image not found: 'nope.png'" in capsys.readouterr().err
    assert cli.main(["query", "x", "--db", str(tmp_path / "db"), *FAST, "--scorer", "fake"]) == 2
    assert "is not a folder: ingest into it first" in capsys.readouterr().err  # and nothing was created
    assert not (tmp_path / "db").exists()
    data = tmp_path / "data"
    data.mkdir()
    (data / "fox.txt").write_text("Red fox\n\nA red fox.\n")
    other = ["--text-collection", "other_text", "--image-collection", "other_images"]
    assert cli.main(["ingest", str(data), "--db", str(tmp_path / "db2"), *FAST, *other, "--no-progress"]) == 0
    capsys.readouterr()
    assert cli.main(["query", "x", "--db", str(tmp_path / "db2"), *FAST, "--scorer", "fake"]) == 1
    assert "collection 'mm_text' does not exist" in capsys.readouterr().err
    assert cli.main(["ingest", str(tmp_path / "missing"), "--db", str(tmp_path / "db"), *FAST]) == 1
    assert "folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["query", "x", "--db", "a", "--server", "h:1"])
    assert exc.value.code == 2
    assert cli.main(["--threads", "0", "info", "--db", str(tmp_path / "db"), *FAST]) == 1
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err
    assert cli.main(["info", "--server", "nonsense", *FAST]) == 1
    assert "bad Chroma server address 'nonsense'" in capsys.readouterr().err


def _saved_fake_reranker(folder: Path) -> Path:
    """A learned-fusion reranker folder over FakeScorer, fitted on a few synthetic labelled lists."""
    from mm_rerank_components import Candidate, Query
    from mm_rerank_components.adapt import LabelledList, fit_fusion, save_reranker
    from mm_rerank_components.scorers import FakeScorer

    scorer = FakeScorer()
    words = ["fox", "owl", "cat", "dog", "frog", "snow"]
    lists = []
    for q, target in enumerate(words * 3):
        candidates = [
            Candidate(
                f"q{q}d{j}",
                text=f"a {target if j == q % 4 else words[(q + j + 1) % len(words)]} here",
                source="mm_text" if j < 3 else "mm_images",
                retrieval_score=0.9 if j == q % 4 else 0.1 * j,
            )
            for j in range(5)
        ]
        query = Query(f"the {target}")
        labels = [int(j == q % 4) for j in range(5)]
        lists.append(LabelledList(query, candidates, scorer.score(query, candidates), labels))
    return save_reranker(folder, fit_fusion(lists, seed=0), scorer=scorer)


def test_query_with_a_saved_reranker_folder(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "db")
    cli.main(["ingest", str(folder), "--db", db, *FAST, "--no-progress"])
    saved = _saved_fake_reranker(tmp_path / "my-reranker")
    capsys.readouterr()
    assert cli.main(["query", "red fox", "--db", db, *FAST, "--reranker", str(saved), "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[1:5]]
    scores = [float(row[2]) for row in rows]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert f"4 candidates, reranked by reranker folder {saved}" in out
    assert "warm (same query again, median of 2; the scorer's own caches are warm)" in out
    assert cli.main(["query", "x", "--db", db, *FAST, "--reranker", str(tmp_path / "nope")]) == 2
    assert "is not a folder (write one with mm-rerank adapt)" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["query", "x", "--db", db, *FAST, "--reranker", str(tmp_path / "empty")]) == 1
    assert "mm-rerank query: error:" in capsys.readouterr().err


def test_info_counts_records(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "db")
    cli.main(["ingest", str(folder), "--db", db, *FAST, "--no-progress"])
    capsys.readouterr()
    assert cli.main(["info", "--db", db, *FAST]) == 0
    out = capsys.readouterr().out
    assert "mm_text: 2 records" in out and "mm_images: 2 records" in out


def test_eval_dispatches_the_rest_of_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    import mm_rerank_components.cli.eval as cli_eval

    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(list(argv))
        return 0

    monkeypatch.setattr(cli_eval, "main", fake_main)
    assert cli.main(["eval", "--task", "gcompris", "--scorer", "fake"]) == 0
    assert seen == [["--task", "gcompris", "--scorer", "fake"]]


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "mm-rerank"
    if not exe.exists():
        pytest.skip("package not installed in this environment")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "ingest" in out.stdout and "query" in out.stdout


def test_eval_summary_lines_name_each_verdict() -> None:
    from mm_rerank_components.cli.eval import _check_line

    base = {"name": "default: calibration", "detail": "d"}
    assert (
        _check_line({**base, "verdict": "n/a", "passes": True})
        == "[n/a, not measurable] default: calibration: d"
    )
    assert _check_line({**base, "verdict": "tie", "passes": False}).startswith("[tie, target not reached]")
    assert _check_line({**base, "verdict": "met", "passes": True}).startswith("[met] ")
