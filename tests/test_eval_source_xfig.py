"""The xfig-doc task builder: caption queries, pictures without captions, passages without the caption
sentence, relevance, skip rules and the split; all offline on a tiny PDF + HTML sample made here.

The one test that builds the real task runs only when the xfig manuals are on this machine (fetched by
``scripts/fetch_doc_sample.sh`` or already unpacked in the eval cache).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from mm_rerank_components.adapt.splits import assign_split
from mm_rerank_components.eval.datasets import DatasetUnavailableError, default_cache_dir
from mm_rerank_components.eval.sources import TASK_NAMES
from mm_rerank_components.eval.sources.xfig import (
    XFIG_PACKAGE,
    build_caption_task,
    caption_query,
    strip_captions,
    xfig_documents,
)
from mm_rerank_components.eval.tasks import EvalTask
from mm_rerank_components.ingest.documents.synthetic import SyntheticPage, make_pdf

PDF_CAPTION = "Figure 1: The drawing tools panel of the editor"
FIGCAPTION = "A rotated ellipse with its bounding box"


def _picture(path: Path, colour: tuple[int, int, int], size: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)


def _page(title: str, body: str) -> str:
    return f"<html><head><title>{title}</title></head><body>{body}</body></html>"


def _sample(root: Path) -> list[Path]:
    """A manual folder: two HTML pages sharing a banner with a third, and a PDF with a captioned figure."""
    for i, name in enumerate(("banner", "zoom", "ellipse", "dash", "file", "help1", "help2", "plain")):
        _picture(root / "html" / "images" / f"{name}.png", (30 * i, 200 - 20 * i, 90))
    banner = '<img src="images/banner.png" alt="XFIG Users Manual">'
    drawing = _page(
        "Drawing",
        f"{banner}<h1>Drawing</h1><p>Buttons of the panel.</p>"
        '<p><img src="images/zoom.png" alt="[Zoom Scale Button]"> sets the magnification.</p>'
        '<img src="images/dash.png" alt="-"><img src="images/file.png" alt="[file.png]">'
        '<img src="images/plain.png" alt="">'
        "<h2>Ellipses</h2><p>An ellipse is drawn from its centre.</p>"
        f'<figure><img src="images/ellipse.png"><figcaption>{FIGCAPTION}</figcaption></figure>'
        "<p>Rotate it with the angle button.</p>",
    )
    editing = _page(
        "Editing",
        f"{banner}<h1>Editing</h1><p>Menus of the editor.</p>"
        '<img src="images/help1.png" alt="[Help Menu Button]">'
        '<img src="images/help2.png" alt="[Help Menu Button]">',
    )
    third = _page("Credits", f"{banner}<h1>Credits</h1><p>Written by many people.</p>")
    for name, text in (("drawing", drawing), ("editing", editing), ("credits", third)):
        (root / "html" / f"{name}.html").write_text(text, encoding="utf-8")
    pdf = make_pdf(
        [
            SyntheticPage(
                ["Using the tools", "The panel has buttons for every shape.", PDF_CAPTION],
                [(60, 40, (250, 0, 0))],
            ),
            SyntheticPage(["Screenshot of the canvas follows"], [(50, 50, (0, 0, 250))]),
        ]
    )
    (root / "howto.pdf").write_bytes(pdf)
    return [*sorted((root / "html").glob("*.html")), root / "howto.pdf"]


@pytest.fixture()
def sample_task(tmp_path: Path) -> EvalTask:
    root = tmp_path / "manual"
    documents = _sample(root)
    return build_caption_task("sample", "a sample", root, documents, tmp_path / "figures")


def test_queries_are_cleaned_captions_and_the_rules_drop_the_rest(sample_task: EvalTask) -> None:
    # kept: an alt text (brackets dropped), a figcaption, a PDF "Figure N:" caption (prefix dropped).
    # dropped: the banner (3 pages), "-", a file name, an empty alt, a caption two pictures share, and
    # the PDF figure that has only nearby text.
    assert sorted(sample_task.queries.values()) == sorted(
        ["Zoom Scale Button", FIGCAPTION, "The drawing tools panel of the editor"]
    )
    summary = sample_task.summary()
    # every distinct picture is a document: 8 HTML pictures and 2 PDF figures
    assert summary["image_documents"] == 10
    assert summary["queries"] == 3


def test_pictures_carry_no_text_and_passages_lose_the_caption(sample_task: EvalTask) -> None:
    pictures = [d for d in sample_task.docs.values() if d.image is not None]
    assert pictures and all(d.text is None for d in pictures)
    passages = {i: d.text or "" for i, d in sample_task.docs.items() if d.image is None}
    assert passages
    for text in passages.values():
        assert FIGCAPTION not in text
        assert "drawing tools panel" not in text
    # the rest of the passage is kept
    assert (
        "An ellipse is drawn from its centre. Rotate it with the angle button."
        in passages["txt:html/drawing.html#s2"]
    )
    assert "The panel has buttons for every shape." in passages["txt:howto.pdf#p1"]


def test_relevance_links_picture_and_its_passage(sample_task: EvalTask) -> None:
    by_query = {text: sample_task.qrels[qid] for qid, text in sample_task.queries.items()}
    assert by_query["Zoom Scale Button"] == {"img:html/images/zoom.png": 1, "txt:html/drawing.html#s1": 1}
    assert by_query[FIGCAPTION] == {"img:html/images/ellipse.png": 1, "txt:html/drawing.html#s2": 1}
    assert by_query["The drawing tools panel of the editor"] == {
        "img:howto.pdf#figure1": 1,
        "txt:howto.pdf#p1": 1,
    }
    for qrels in sample_task.qrels.values():
        for doc_id in qrels:
            assert doc_id in sample_task.docs


def test_split_is_the_seeded_hash_of_the_picture_id(sample_task: EvalTask, tmp_path: Path) -> None:
    for qid, split in sample_task.splits.items():
        assert split == assign_split(qid.removeprefix("q:"))
    again = build_caption_task(
        "sample", "a sample", tmp_path / "manual", _sample(tmp_path / "manual"), tmp_path / "figures"
    )
    assert again.splits == sample_task.splits
    assert again.queries == sample_task.queries


def test_skips_are_counted_in_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "manual"
    with caplog.at_level(logging.INFO, logger="mm_rerank_components.eval.sources.xfig"):
        build_caption_task("sample", "a sample", root, _sample(root), tmp_path / "figures")
    message = caplog.records[-1].getMessage()
    assert "'caption shared by several pictures': 2" in message
    assert "'a file name as caption': 1" in message
    assert "'on 3+ documents (banner)': 1" in message


def test_no_captioned_figure_is_a_clear_error(tmp_path: Path) -> None:
    page = tmp_path / "a.html"
    page.write_text(_page("A", "<p>Only text.</p>"), encoding="utf-8")
    with pytest.raises(DatasetUnavailableError, match="no captioned figure"):
        build_caption_task("empty", "none", tmp_path, [page], tmp_path / "figures")


def test_caption_cleaning_and_stripping() -> None:
    assert caption_query("Fig. 12: Export panel") == ("Export panel", "")
    assert caption_query(None) == (None, "no caption")
    assert caption_query("[Top]")[0] is None
    assert strip_captions("A ﬁle\nFigure 1: x y\nend", ["Figure 1: x y"]) == "A file end"


def test_registered_as_a_builtin_task() -> None:
    assert "xfig-doc" in TASK_NAMES


def test_a_folder_without_the_manuals_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError, match="does not hold the xfig manuals"):
        xfig_documents(tmp_path)


def _real_doc_root() -> Path | None:
    repo = Path(__file__).resolve().parents[1]
    for candidate in (
        repo / ".cache" / "doc-sample" / "xfig-doc" / "xfig",
        default_cache_dir() / XFIG_PACKAGE / "usr" / "share" / "doc" / "xfig",
    ):
        if (candidate / "xfig-howto.pdf").is_file() and (candidate / "html").is_dir():
            return candidate
    return None


@pytest.mark.slow
def test_real_xfig_task(tmp_path: Path) -> None:
    root = _real_doc_root()
    if root is None:
        pytest.skip(
            "the xfig manuals are not on this machine: run `bash scripts/fetch_doc_sample.sh` (or "
            "`mm-rerank eval --task xfig-doc` once, which fetches the xfig-doc Debian package)"
        )
    task = build_caption_task("xfig-doc", "real", root, xfig_documents(root), tmp_path / "figures")
    summary = task.summary()
    assert summary["queries"] >= 50
    assert summary["dev_queries"] > 0 and summary["test_queries"] > 0
    assert summary["image_documents"] > summary["queries"]
    pdf_queries = [q for q in task.queries if ".pdf#figure" in q]
    assert pdf_queries, "the how-to's captioned figures make queries"
    for qid in pdf_queries:
        passages = [task.docs[d].text or "" for d in task.qrels[qid] if d.startswith("txt:")]
        assert passages and not any(task.queries[qid] in p for p in passages)
    for qid, qrels in task.qrels.items():
        assert f"img:{qid.removeprefix('q:')}" in qrels
        assert any(d.startswith("txt:") for d in qrels)
