"""Every Python and shell block of README.md and docs/*.md runs as written, and the printed outputs the
pages show are what the code prints (issue 23).

``scripts/regen_doc_outputs.py`` runs a page's blocks in order in a scratch folder holding the sample
files the docs name (``my_folder/``, ``photo.jpg``, ``fox.jpg``, ``my_labels.jsonl``) and rewrites each
output marked ``<!-- output -->``; the tests here run the same code and fail when a block raises or an
output drifted (then run ``python scripts/regen_doc_outputs.py PAGE`` and review the diff).

A block that cannot run here is marked ``<!-- docs-test: skip REASON -->`` with one of the script's
``SKIP_REASONS`` (a server, a GPU, a model hub, the network, the set-up, minutes of work); the markers
are counted and capped below, so the list stays short and grows only on purpose.

Pages in :data:`PENDING` still hold blocks that fail as written; each is listed with why and whose
page it is, and reported as an expected failure (not run) until its blocks are fixed or marked.
:data:`PENDING_BLOCKS` does the same for single blocks of pages that otherwise run. Pages that load
Hugging Face checkpoints by hub id (``TINY_HUB_PAGES``) run on an offline cache of tiny random stand-ins;
blocks skipped because they fetch the built-in tasks' Debian data run on the repository's warm cache.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import regen_doc_outputs as docs  # noqa: E402

#: The most blocks that may be marked skip, over README.md and docs/*.md (raise it only with a reason):
#: 12 set-up, server, example, adapt and evaluation blocks, and 7 benchmark commands (benchmarks*.md, security.md);
#: +5 in serving.md: its foreground `serve` commands, Ray Serve (2), Docker and the load test (its other
#: blocks run against a server a block starts in the background); +2 in evaluation.md: the extras' install
#: with a full evaluation, and the dataset loaders (Debian data: run below on a warm cache); +4 in
#: adaptation.md: the label-free benchmarks, and the GCompris export and two adapt runs on it (Debian data:
#: run below on a warm cache); +1 in scale.md: ingest on a Ray cluster into a Chroma server (its local Ray
#: ingests run); +1 in scorers.md: its `pip install` of the models extra.
MAX_SKIPPED = 32

#: A skip reason with this phrase marks a block that only needs the built-in tasks' Debian data, which a
#: fresh machine downloads: :func:`test_data_blocks_run_on_a_warm_data_cache` runs it where it is cached.
WARM_CACHE = "runs it on a warm cache"

#: Pages whose blocks do not all run as written yet: page -> why (owner). Found by running every block
#: (issue 23, 2026-12-07); each needs its blocks fixed (sample files, whole programs) or marked.
PENDING: dict[str, str] = {}


#: Single blocks that do not run as written yet, on pages that otherwise do: page -> {a snippet of the
#: block's code: why}. The page test leaves them out; each is reported as an expected failure (not run).
PENDING_BLOCKS: dict[str, dict[str, str]] = {
    "docs/scorers.md": {
        'JinaRerankerM0Scorer("jinaai/jina-reranker-m0"': "jina-reranker-m0 runs its own modelling code from "
        "its hub repository (trust_remote_code=True); there is no hub here and no tiny stand-in can be built "
        "from a config without writing that code ourselves (tests/test_scorers_jina_m0.py tests the scorer "
        "on a stand-in object with compute_score)",
    },
}


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO))


def _runnable_pages() -> list[Path]:
    return [p for p in docs.doc_files() if any(b.skip is None for b in docs.blocks(p))]


def test_skip_markers_are_few_and_name_a_known_reason() -> None:
    skipped = [b for page in docs.doc_files() for b in docs.blocks(page) if b.skip is not None]
    for block in skipped:
        assert block.skip is not None and block.skip.startswith(docs.SKIP_REASONS), (
            f"{block.where}: skip reason {block.skip!r} must start with one of {docs.SKIP_REASONS}"
        )
    listing = "\n".join(f"{b.where}: {b.skip}" for b in skipped)
    assert len(skipped) <= MAX_SKIPPED, (
        f"{len(skipped)} blocks are marked skip (at most {MAX_SKIPPED}):\n{listing}"
    )
    # README's two set-up commands are the only skipped blocks of the page a newcomer reads first that
    # are not a server, a benchmark or an evaluation
    readme = [b for b in skipped if b.path.name == "README.md" and (b.skip or "").startswith("is the set-up")]
    assert len(readme) >= 2


def test_pending_pages_exist_and_still_have_blocks() -> None:
    pages = {_relative(p) for p in _runnable_pages()}
    assert set(PENDING) <= pages, f"no longer runnable pages in PENDING: {set(PENDING) - pages}"


def test_pending_blocks_each_name_one_runnable_block() -> None:
    for page, snippets in PENDING_BLOCKS.items():
        runnable = [b for b in docs.blocks(REPO / page) if b.skip is None]
        for snippet in snippets:
            found = [b.where for b in runnable if snippet in b.code]
            assert len(found) == 1, f"{page}: pending snippet {snippet!r} matches {found or 'no block'}"


@pytest.mark.parametrize(
    "snippet",
    [
        pytest.param(snippet, id=f"{page}:{snippet[:30]}", marks=pytest.mark.xfail(reason=why, run=False))
        for page, snippets in PENDING_BLOCKS.items()
        for snippet, why in snippets.items()
    ],
)
def test_pending_block_runs_as_written(snippet: str) -> None:
    """Each pending block, reported (not run) until it can run here; remove it from PENDING_BLOCKS then."""
    raise AssertionError(f"block {snippet!r} is pending")


def test_output_markers_follow_a_block(tmp_path: Path) -> None:
    """An ``<!-- output -->`` right after a block is parsed as that block's output, never lost."""
    page = tmp_path / "page.md"
    page.write_text('```python\nprint("a")\nprint(2 + 3)\n```\n\n<!-- output -->\n```text\nstale\n```\n')
    (block,) = docs.blocks(page)
    assert block.output is not None
    outputs = {block.line: docs.run_python(block.code, {})}
    assert docs.apply_outputs(page, outputs).endswith("<!-- output -->\n```text\na\n5\n```\n")


@pytest.mark.slow
@pytest.mark.parametrize(
    "page",
    [
        pytest.param(
            _relative(p),
            marks=[pytest.mark.xfail(reason=PENDING[_relative(p)], run=False)]
            if _relative(p) in PENDING
            else [],
        )
        for p in _runnable_pages()
    ],
)
def test_page_blocks_run_as_written_and_outputs_match(page: str) -> None:
    """Pages in ``TINY_HUB_PAGES`` run in a process of their own on an offline cache of tiny random
    stand-ins for the checkpoints they name (``regen_doc_outputs.use_tiny_hub``)."""
    path = REPO / page
    pending = tuple(PENDING_BLOCKS.get(page, {}))
    if page in docs.TINY_HUB_PAGES:
        new = docs.render_isolated(path, pending)
    else:
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
            new = docs.apply_outputs(path, docs.run_file(path, docs.make_sandbox(Path(tmp)), pending))
    shown = path.read_text(encoding="utf-8")
    assert new == shown, (
        f"{page} shows outputs its blocks no longer print: run `python scripts/regen_doc_outputs.py {page}` "
        "and review the diff"
    )


@pytest.mark.slow
def test_data_blocks_run_on_a_warm_data_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks skipped for the network because they download the built-in tasks' Debian packages run as
    written, page by page in order (one namespace per page), with the data cache a full evaluation or
    the quickstart left in the repository."""
    pages = {
        page: [b for b in docs.blocks(page) if b.skip and WARM_CACHE in b.skip] for page in docs.doc_files()
    }
    pages = {page: marked for page, marked in pages.items() if marked}
    assert pages, f"no block's skip reason names {WARM_CACHE!r}: drop this test"
    cache = REPO / ".cache" / "data"
    if not any((cache / "debs").glob("*.deb")):
        pytest.skip(f"no Debian data cached in {cache} (a full `mm-rerank eval` fetches it)")
    monkeypatch.setenv("MM_RERANK_CACHE", str(cache))
    for page, marked in pages.items():
        sandbox = docs.make_sandbox(tmp_path / page.stem)
        monkeypatch.chdir(sandbox)
        namespace: dict[str, object] = {"__name__": "__doc_block__"}
        for block in marked:
            try:
                if block.lang == "python":
                    docs.run_python(block.code, namespace)
                else:
                    docs.run_shell(block.code, sandbox)
            except Exception as exc:
                raise AssertionError(f"{block.where}: the {block.lang} block failed: {exc!r}") from exc
