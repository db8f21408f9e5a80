"""``mm-rerank ingest`` flags for the document caps (DocumentOptions): each flag reaches the reader, unset
flags keep the library's defaults, and bad values are refused naming the flag, the value and the fix."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

pytest.importorskip("pypdf")

from mm_rerank_components import cli
from mm_rerank_components.cli.ingest import DOCUMENT_DEFAULTS, _document_options, register
from mm_rerank_components.ingest.documents import DocumentOptions
from mm_rerank_components.ingest.documents.synthetic import SyntheticPage, make_pdf

FAST = ["--embedder", "hashing", "--no-progress", "--workers", "1"]


def _parse(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mm-rerank")
    register(parser.add_subparsers())
    return parser.parse_args(["ingest", "folder", "--db", "db", *flags])


def test_help_defaults_are_the_library_defaults() -> None:
    defaults = DocumentOptions()
    assert {name: getattr(defaults, name) for name in DOCUMENT_DEFAULTS} == DOCUMENT_DEFAULTS


def test_unset_flags_keep_the_defaults() -> None:
    options = _document_options(_parse())
    expected = DocumentOptions()
    for name in (*DOCUMENT_DEFAULTS, "render_pages"):
        assert getattr(options, name) == getattr(expected, name)
    assert Path(options.figures_dir or "").name == "figures"


def test_each_flag_reaches_the_options() -> None:
    options = _document_options(
        _parse(
            "--max-pages",
            "5",
            "--max-figures",
            "7",
            "--min-figure-side",
            "16",
            "--max-document-chars",
            "1000",
            "--document-timeout",
            "2.5",
            "--render-pages",
            "--render-dpi",
            "50",
        )
    )
    got = (options.max_pages, options.max_figures, options.min_figure_side, options.max_chars)
    assert got == (5, 7, 16, 1000)
    assert (options.max_seconds, options.render_pages, options.render_dpi) == (2.5, True, 50)
    assert _document_options(_parse("--document-timeout", "none")).max_seconds is None


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--max-pages", "0", "--max-pages must be a whole number >= 1, got '0'"),
        ("--max-figures", "many", "--max-figures must be a whole number >= 1, got 'many'"),
        ("--min-figure-side", "-4", "--min-figure-side must be a whole number >= 1 (pixels), got '-4'"),
        ("--render-dpi", "1.5", "--render-dpi must be a whole number >= 1, got '1.5'"),
        (
            "--document-timeout",
            "0",
            "--document-timeout must be a number of seconds > 0 (or 'none' for no cap)",
        ),
        ("--document-timeout", "soon", "got 'soon'"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse(flag, value)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_ingest_renders_pages_and_caps_pages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("chromadb")
    pytest.importorskip("pypdfium2")
    folder = tmp_path / "in"
    folder.mkdir()
    pages = [SyntheticPage(["Hello", "Figure 1: red"], [(40, 40, (255, 0, 0))]), SyntheticPage(["Two"])]
    (folder / "a.pdf").write_bytes(make_pdf(pages))
    db = tmp_path / "db"
    assert (
        cli.main(["ingest", str(folder), "--db", str(db), *FAST, "--render-pages", "--render-dpi", "36"]) == 0
    )
    assert "2 text + 3 image records" in capsys.readouterr().out  # 1 figure + 2 page pictures
    rc = cli.main(["ingest", str(folder), "--db", str(tmp_path / "db2"), *FAST, "--max-pages", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert (
        "PDF has 2 pages, over max_pages=1; raise DocumentOptions(max_pages=...) (mm-rerank ingest --max-pages)"
        in err
    )
