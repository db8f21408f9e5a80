"""``mm-rerank ingest`` and ``info``: links, size limits, embedders by name, server errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

pytest.importorskip("chromadb")

from PIL import Image

from mm_rerank_components import cli
from mm_rerank_components.cli._common import EMBEDDERS, embedder_spec

FAST = ["--embedder", "hashing", "--no-progress"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    outside = tmp_path / "outside.txt"
    outside.write_text("a secret outside the folder")
    root = tmp_path / "data"
    root.mkdir()
    (root / "fox.txt").write_text("Red fox\n\nThe red fox lives in dens.\n")
    (root / "big.txt").write_text("word " * 100)
    Image.new("RGB", (16, 16), (220, 20, 20)).save(root / "red.png")
    (root / "link.txt").symlink_to(outside)
    return root


def test_ingest_reports_links_and_big_files_then_info_counts(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "db")
    assert cli.main(["ingest", str(folder), "--db", db, "--max-bytes", "300", "--workers", "1", *FAST]) == 1
    err = capsys.readouterr().err
    assert "link.txt: symbolic link to outside the folder (follow_symlinks=True" in err
    assert "FAILED" in err and "big.txt" in err and "over the limit of 300" in err
    assert cli.main(["info", "--db", db, "--embedder", "hashing"]) == 0
    assert "mm_text: 1 records" in capsys.readouterr().out
    assert cli.main(["ingest", str(folder), "--db", db, "--follow-symlinks", *FAST]) == 0
    out = capsys.readouterr().out
    assert "2 added" in out  # big.txt and the followed link
    assert cli.main(["info", "--db", db]) == 0  # no embedder needed to look (the default is another one)
    out = capsys.readouterr().out
    assert 'mm_text: 3 records (embedder mm-rerank-hashing {"dim": 64})' in out
    assert "mm_images: 1 records" in out
    assert cli.main(["info", "--db", str(tmp_path / "empty")]) == 0
    assert "mm_text: 0 records\n" in capsys.readouterr().out


def test_embedder_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert EMBEDDERS == ("starter", "hashing", "clip:PATH")
    assert embedder_spec("starter") == "starter"
    assert embedder_spec(f"clip:{tmp_path}") == f"clip:{tmp_path}"
    with pytest.raises(SystemExit):
        cli.main(["info", "--db", str(tmp_path / "db"), "--embedder", f"clip:{tmp_path / 'nope'}"])
    assert "no CLIP model folder at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["info", "--db", str(tmp_path / "db"), "--embedder", "bert"])
    assert "unknown embedder 'bert'" in capsys.readouterr().err


def test_a_server_that_is_down_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["--server", f"127.0.0.1:{port}", "--timeout", "2", "--embedder", "hashing"]
    assert cli.main(["info", *args]) == 1
    assert f"cannot reach the Chroma server at http://127.0.0.1:{port}" in capsys.readouterr().err
