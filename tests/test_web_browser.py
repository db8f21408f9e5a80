"""End to end in a real browser: Debian's headless Chromium, driven by Playwright, against the web chat
served by uvicorn on 127.0.0.1 (a free port) through the shared ``live_server`` fixture.

Chromium is ``MM_RERANK_CHROMIUM``, else ``/usr/bin/chromium``, else the copy of Debian's chromium that
``scripts/setup_test.sh`` unpacks into ``.cache/chromium`` without root; ``playwright install`` is never
run. Without any of them the tests are skipped locally and FAIL when ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from mm_rerank_components import MultimodalReranker
from mm_rerank_components.answer import Answer, Evidence, ExtractiveAnswerer, RAGPipeline
from mm_rerank_components.scorers import FakeScorer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent


def _find_chromium() -> str:
    named = os.environ.get("MM_RERANK_CHROMIUM")
    if named:
        return named
    for candidate in ("/usr/bin/chromium", str(REPO / ".cache" / "chromium" / "chromium")):
        if os.path.exists(candidate):
            return candidate
    return "/usr/bin/chromium"


CHROMIUM = _find_chromium()
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _require_chromium() -> None:
    if os.path.exists(CHROMIUM) or shutil.which(CHROMIUM):
        return
    message = (
        f"{CHROMIUM} not found: run 'bash scripts/setup_test.sh' (unpacks Debian's chromium into "
        ".cache/chromium, no root) or set MM_RERANK_CHROMIUM"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def server_url(tmp_path: Path, live_server: Callable[..., Any]) -> str:
    return str(live_server(_app(_pipeline(tmp_path, on_error="raise")), lifespan="auto").url)


@pytest.fixture
def keeping_server_url(tmp_path: Path, live_server: Callable[..., Any]) -> str:
    return str(live_server(_app(_pipeline(tmp_path, on_error="keep")), lifespan="auto").url)


def _pipeline(tmp_path: Path, on_error: str) -> RAGPipeline:
    from test_web_app import write_corpus

    from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction

    ef = HashingEmbeddingFunction()
    retriever = ChromaMultiCollectionRetriever(
        path=tmp_path / "db",
        text_embedding_function=ef,
        image_embedding_function=ef,
        k_text=3,
        k_image=3,
        candidate_image="original",
    )
    assert retriever.ingest_folder(write_corpus(tmp_path / "corpus")).failed == []
    reranker = MultimodalReranker(FakeScorer(), on_error=on_error)  # type: ignore[arg-type]
    return RAGPipeline(retriever, reranker, answerer=ExtractiveAnswerer(), top_n=5)


def _app(pipeline: RAGPipeline) -> Any:
    """The web chat for ``pipeline``; served by the shared harness (tests/_live_server.py)."""
    from mm_rerank_components.web import create_app

    return create_app(pipeline, title="Browser test chat")


def test_chat_page_shows_answer_with_ranked_evidence(server_url: str, tmp_path: Path) -> None:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(server_url + "/")
            assert page.title() == "Browser test chat"
            page.fill("#question", "the blue sea")
            page.click("#send")
            page.wait_for_selector("ol.evidence li.item", timeout=20_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('ol.evidence img')].every(i => i.complete)",
                timeout=20_000,
            )

            answer = page.inner_text(".answer")
            assert "extractive answer (no LLM configured)" in answer
            assert "[1]" in answer

            items = page.query_selector_all("ol.evidence li.item")
            assert 2 <= len(items) <= 5
            modalities = [item.get_attribute("data-modality") for item in items]
            assert set(modalities) <= {"text", "image", "text+image"}
            assert "text" in modalities and any(m != "text" for m in modalities)
            labels = [item.query_selector(".modality").inner_text() for item in items]  # type: ignore[union-attr]
            assert labels == modalities
            scores = [float(item.get_attribute("data-score") or "nan") for item in items]
            assert scores == sorted(scores, reverse=True)
            shown = [item.query_selector(".score").inner_text() for item in items]  # type: ignore[union-attr]
            assert shown == [f"score {s:.3f}" for s in scores]
            # every picture here is captioned and no map of this reranker saw one: said under the evidence
            assert "text+image" in modalities
            assert "pictures that carry a caption" in page.inner_text(".turn .note")

            widths = page.eval_on_selector_all("ol.evidence img", "imgs => imgs.map(i => i.naturalWidth)")
            assert len(widths) == sum(m != "text" for m in modalities)
            assert all(w > 0 for w in widths), widths

            page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)
            assert (tmp_path / "chat.png").stat().st_size > 5_000
            if os.environ.get("MM_RERANK_SCREENSHOT"):
                page.screenshot(path=os.environ["MM_RERANK_SCREENSHOT"], full_page=True)
        finally:
            browser.close()


def test_unreadable_picture_is_shown_as_such_without_its_path(
    keeping_server_url: str, tmp_path: Path
) -> None:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    (tmp_path / "corpus" / "red.png").unlink()  # deleted after ingest
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(keeping_server_url + "/")
            page.fill("#question", "a red apple")
            page.click("#send")
            page.wait_for_selector("ol.evidence li.item", timeout=20_000)
            notes = page.locator("ol.evidence .error").all_inner_texts()
            assert notes == ["This item could not be read; the answer does not use it."]
            assert "extractive answer (no LLM configured)" in page.inner_text(".answer")
            assert " ms" in page.inner_text("h2")  # the per-step timings are shown
            assert str(tmp_path) not in page.content()
        finally:
            browser.close()


def test_picture_question_through_the_upload_button(server_url: str, tmp_path: Path) -> None:
    """Issue 23: ask with a picture from the page's file picker; the matching picture ranks first. The
    screenshot goes to MM_RERANK_SCREENSHOT when set (kept out of the repository)."""
    _require_chromium()
    from PIL import Image
    from playwright.sync_api import sync_playwright

    photo = tmp_path / "my question.png"
    Image.new("RGB", (120, 90), (215, 35, 30)).save(photo)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(server_url + "/")
            page.set_input_files("#picture", str(photo))
            assert page.inner_text("#chosen-name") == "my question.png"
            page.fill("#question", "What is this?")
            page.click("#send")
            page.wait_for_selector("ol.evidence li.item", timeout=20_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)",
                timeout=20_000,
            )
            # the question shows the picture asked with; the form lets it go for the next question
            assert page.eval_on_selector(".question img", "i => i.naturalWidth") == 120
            assert not page.is_visible("#chosen")
            first = page.query_selector("ol.evidence li.item")
            assert first is not None and first.get_attribute("data-modality") != "text"
            assert float(first.get_attribute("data-score") or "0") > 0.9
            assert first.query_selector(".rank").inner_text() == "[1]"  # type: ignore[union-attr]
            assert first.query_selector(".title").inner_text() == "a red apple"  # type: ignore[union-attr]
            # a picture question's scores are an order: the page says so under the evidence
            assert "Read them as an order" in page.inner_text(".turn .note")
            page.screenshot(path=str(tmp_path / "picture.png"), full_page=True)
            assert (tmp_path / "picture.png").stat().st_size > 5_000
            if os.environ.get("MM_RERANK_SCREENSHOT"):
                page.screenshot(path=os.environ["MM_RERANK_SCREENSHOT"], full_page=True)
        finally:
            browser.close()


class _MarkdownAnswerer:
    """An answerer whose answer is Markdown with injection attempts, as an LLM could write it."""

    name = "llm:markdown-test"
    text = (
        "### Foxes\n"
        "The **red fox** hunts *voles* [1]; see [the guide](https://example.org/fox).\n"
        "- one `x < y`\n"
        "- two\n\n"
        "<script>window.__pwned = 1</script>\n"
        '<img src=x onerror="window.__pwned = 2">\n'
        "[click](javascript:window.__pwned=3) **<b onmouseover=alert(1)>bold</b>**"
    )

    def answer(self, question: str, evidence: Sequence[Evidence]) -> Answer:
        return Answer(question=question, text=self.text, evidence=list(evidence), answerer=self.name)


def test_markdown_answer_is_rendered_without_running_what_it_holds(
    tmp_path: Path, live_server: Callable[..., Any]
) -> None:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    from mm_rerank_components import Candidate

    class OneHit:
        def retrieve(self, query: object) -> list[Candidate]:
            return [Candidate("fox", text="Red fox. The red fox hunts voles.")]

    pipeline = RAGPipeline(OneHit(), MultimodalReranker(FakeScorer()), answerer=_MarkdownAnswerer(), top_n=1)
    url = live_server(_app(pipeline), lifespan="auto").url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            dialogs: list[str] = []

            def on_dialog(dialog: Any) -> None:
                dialogs.append(dialog.message)
                dialog.dismiss()

            page.on("dialog", on_dialog)
            page.goto(url + "/")
            page.fill("#question", "red fox")
            page.click("#send")
            page.wait_for_selector(".answer .md", timeout=20_000)
            page.wait_for_timeout(300)  # let any injected handler run, if one got in
            md = page.locator(".answer .md")
            assert (
                md.locator("h5").inner_text() == "Foxes"
            )  # "###": headings start at h3 below the page's h1/h2
            assert md.locator("strong").first.inner_text() == "red fox"
            assert md.locator("em").inner_text() == "voles"
            assert md.locator("li").all_inner_texts() == ["one x < y", "two"]
            assert md.locator("code").inner_text() == "x < y"
            links = md.locator("a")
            assert links.count() == 1 and links.get_attribute("href") == "https://example.org/fox"
            assert links.get_attribute("rel") == "noopener noreferrer nofollow"
            # the tags are shown as text, never made into elements; nothing ran
            assert md.locator("script, img, b, [onerror], [onmouseover]").count() == 0
            assert "<script>window.__pwned = 1</script>" in md.inner_text()
            assert page.evaluate("() => window.__pwned") is None and dialogs == []
            page.locator(".md strong").last.hover()
            assert dialogs == []
        finally:
            browser.close()
