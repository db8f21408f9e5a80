"""Run the Python and shell blocks of README.md and docs/*.md, and rewrite the printed outputs they show.

A block's printed output lives in the ```` ```text ```` block right after it, introduced by an
``<!-- output -->`` line; this script runs the file's blocks in order (one namespace per file, like a
reader pasting them into one session) in a scratch folder holding the sample files the docs name
(:func:`make_sandbox`), and writes what each such block printed. ``--check`` only compares and exits 1
when a page shows an output the code no longer gives (``tests/test_docs_blocks.py`` runs that).

A block that truly cannot run here (it needs an LLM server, a GPU, a model hub, or the network) is
preceded by ``<!-- docs-test: skip REASON -->``; the reason is shown to readers of the raw file and must
start with one of :data:`SKIP_REASONS`.

Pages in :data:`TINY_HUB_PAGES` load Hugging Face checkpoints by hub id; they run in a process of their
own on an offline cache of tiny random stand-ins (:func:`use_tiny_hub`).

    python scripts/regen_doc_outputs.py            # rewrite the outputs in place
    python scripts/regen_doc_outputs.py --check    # exit 1 on drift
    python scripts/regen_doc_outputs.py --check docs/scorers.md   # a named page runs even without outputs
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNNABLE = ("python", "bash", "sh", "shell")
#: The only reasons a block may be left unrun (a marker's reason starts with one, details may follow).
SKIP_REASONS = (
    "needs an LLM server",
    "needs a GPU",
    "needs a model hub",
    "needs the network",
    "is the set-up",  # README's two commands: .ci/run runs the test command, the first is timed by hand
    "runs a server",  # a long-running process; tests/test_docs_blocks.py starts the documented ones
    "takes minutes",  # a full evaluation or benchmark run
)
OUTPUT_MARK = "<!-- output -->"
#: Pages whose blocks load Hugging Face checkpoints by hub id (no hub here): they run in a process of their
#: own with ``HF_HOME`` on an offline cache of tiny random stand-ins (:func:`use_tiny_hub`). Their scores
#: show the plumbing, never quality, so these pages show no scores as outputs.
TINY_HUB_PAGES = ("docs/scorers.md",)
_SKIP = re.compile(r"<!-- docs-test: skip (?P<reason>[^>]*?) -->")
_FENCE = re.compile(r"^```(?P<lang>[a-z]*)\s*$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the reason, when marked
    output: tuple[int, int] | None  # line span (0-based, exclusive end) of the output text, when marked

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The fenced Python and shell blocks of ``path``, with their skip marker and output span."""
    lines = path.read_text(encoding="utf-8").split("\n")
    out: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        lang = fence.group("lang")
        if lang in RUNNABLE:
            # the marker sits on one of the comment lines just above the fence
            k = i - 1
            mark = None
            while k >= 0 and lines[k].strip().startswith("<!--") and mark is None:
                mark = _SKIP.search(lines[k])
                k -= 1
            output = None
            j = end + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j + 1 < len(lines) and lines[j].strip() == OUTPUT_MARK and lines[j + 1].startswith("```"):
                close = j + 2
                while close < len(lines) and not lines[close].startswith("```"):
                    close += 1
                output = (j + 2, close)
            out.append(
                Block(
                    path,
                    i + 1,
                    lang,
                    "\n".join(lines[i + 1 : end]),
                    mark.group("reason") if mark else None,
                    output,
                )
            )
        i = end + 1
    return out


def make_sandbox(folder: Path) -> Path:
    """The sample files the docs name, in ``folder``: ``my_folder/`` (three passages, two captioned
    pictures), ``photo.jpg``, ``fox.jpg``, ``photos/`` (two pictures), ``my_labels.jsonl``
    (:func:`write_sample_labels`) and the calibration files docs/scorers.md passes
    (:func:`write_sample_calibrations`)."""
    from PIL import Image

    data = folder / "my_folder"
    data.mkdir(parents=True, exist_ok=True)
    passages = {
        "cow.txt": "Cow\n\nThe cow is a farm animal that gives us milk.\n",
        "fox.txt": "Red fox\n\nThe red fox hunts voles in the snow.\n",
        "koala.txt": "Koala\n\nThe koala eats eucalyptus leaves.\n",
    }
    for name, text in passages.items():
        (data / name).write_text(text, encoding="utf-8")
    pictures = (("cow.png", (240, 240, 235), "a cow"), ("fox.png", (220, 90, 20), "a red fox"))
    lines = []
    for name, colour, caption in pictures:
        Image.new("RGB", (96, 64), colour).save(data / name)
        lines.append(f'{{"file_name": "{name}", "caption": "{caption}"}}')
    (data / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    Image.new("RGB", (96, 64), (215, 95, 25)).save(folder / "photo.jpg")
    Image.new("RGB", (96, 64), (225, 85, 15)).save(folder / "fox.jpg")
    (folder / "photos").mkdir(exist_ok=True)
    Image.new("RGB", (96, 64), (230, 100, 30)).save(folder / "photos" / "fox_jump.jpg")
    Image.new("RGB", (64, 96), (245, 245, 250)).save(folder / "photos" / "owl.jpg")
    write_sample_labels(folder / "my_labels.jsonl", passages)
    write_sample_calibrations(folder)
    return folder


#: Calibration files docs/scorers.md passes as ``calibrator=`` (files a reader fits on their own labelled
#: pairs): file -> Platt ``(a, b)`` for every modality, a raw scale's rough shape, not a fit.
SAMPLE_CALIBRATIONS = {
    "colqwen_calibration.json": (0.5, -5.0),  # MaxSim sums
    "colbert_calibration.json": (0.5, -5.0),
    "ce_calibration.json": (1.0, 0.0),  # cross-encoder logits
}


def write_sample_calibrations(folder: Path) -> None:
    """The :data:`SAMPLE_CALIBRATIONS` files, recorded as samples (``scorer``), not fitted on any model."""
    from mm_rerank_components.calibration import PerModalityCalibrator, PlattCalibrator

    for name, (a, b) in SAMPLE_CALIBRATIONS.items():
        maps = {m: PlattCalibrator(a, b) for m in ("text", "image", "text+image")}
        PerModalityCalibrator(maps, scorer="docs sample: not fitted", method="platt").save(folder / name)


#: The sample's labelled questions: (id, text, relevant documents, split); at least one per split.
SAMPLE_QUERIES = (
    ("q1", "Which farm animal gives us milk?", ("cow", "cow-photo"), "dev"),
    ("q2", "Where does the red fox hunt?", ("fox", "fox-photo"), "dev"),
    ("q3", "What does the koala eat?", ("koala",), "dev"),
    ("q4", "a photo of a cow", ("cow-photo", "cow"), "test"),
    ("q5", "fox in the snow", ("fox-photo", "fox"), "test"),
    ("q6", "eucalyptus", ("koala",), "test"),
)


def write_sample_labels(path: Path, passages: dict[str, str]) -> None:
    """``my_labels.jsonl`` in the evaluation's format (docs/evaluation.md) over the sample folder's
    passages and pictures (image paths relative to ``path``'s folder)."""
    import json

    rows: list[dict[str, object]] = [
        {"type": "task", "name": "sample-animals", "description": "questions about the sample folder"}
    ]
    rows += [{"type": "doc", "id": Path(n).stem, "text": t.strip()} for n, t in passages.items()]
    rows += [
        {"type": "doc", "id": f"{a}-photo", "image": f"my_folder/{a}.png", "text": c}
        for a, c in (("cow", "a cow"), ("fox", "a red fox"))
    ]
    rows += [
        {"type": "query", "id": q, "text": text, "relevant": list(rel), "split": split}
        for q, text, rel, split in SAMPLE_QUERIES
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def run_python(code: str, namespace: dict[str, object]) -> str:
    """Run ``code`` in ``namespace`` and return what it printed."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(compile(code, "<doc block>", "exec"), namespace)
    return buffer.getvalue()


def run_shell(code: str, cwd: Path, timeout: float = 600) -> str:
    """Run ``code`` with bash -e in ``cwd``, the project's .venv first on PATH; raise on failure."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def use_tiny_hub(sandbox: Path) -> None:
    """Point Hugging Face at an offline cache in ``sandbox`` holding tiny random stand-ins for the
    checkpoints the docs load (``mm_rerank_components.testing.build_docs_models``; local model folders
    go into ``sandbox``). Call it before anything imports ``huggingface_hub``: it reads these variables
    once."""
    hf_home = sandbox / ".hf"
    os.environ.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    from mm_rerank_components.testing import build_docs_models

    build_docs_models(hf_home, sandbox)


def run_file(path: Path, sandbox: Path, pending: tuple[str, ...] = ()) -> dict[int, str]:
    """Run the runnable blocks of ``path`` in order in ``sandbox``; the printed output of each marked one.
    A block whose code contains one of ``pending`` (known to fail, listed in tests/test_docs_blocks.py)
    is not run."""
    namespace: dict[str, object] = {"__name__": "__doc_block__"}
    outputs: dict[int, str] = {}
    old = Path.cwd()
    os.chdir(sandbox)
    try:
        for block in blocks(path):
            if block.skip is not None or any(snippet in block.code for snippet in pending):
                continue
            try:
                if block.lang == "python":
                    printed = run_python(block.code, namespace)
                else:
                    printed = run_shell(block.code, sandbox)
            except Exception as exc:
                raise RuntimeError(f"{block.where}: the {block.lang} block failed: {exc!r}") from exc
            if block.output is not None:
                outputs[block.line] = printed
    finally:
        os.chdir(old)
        _forget_chroma_clients()
    return outputs


def _forget_chroma_clients() -> None:
    """Chroma caches one client per path string: the next page's ``chroma_db`` (a new scratch folder, the
    same relative name) must not reach this page's deleted one."""
    try:
        from chromadb.api.client import SharedSystemClient
    except ImportError:
        return
    SharedSystemClient.clear_system_cache()


def apply_outputs(path: Path, outputs: dict[int, str]) -> str:
    """The text of ``path`` with each marked output replaced by what the block printed."""
    lines = path.read_text(encoding="utf-8").split("\n")
    for block in sorted(blocks(path), key=lambda b: -b.line):
        if block.output is None or block.line not in outputs:
            continue
        start, end = block.output
        lines[start:end] = outputs[block.line].rstrip("\n").split("\n")
    return "\n".join(lines)


def _render(path: Path, pending: tuple[str, ...], tiny_hub: bool) -> str:
    """The text of ``path`` with its outputs as its blocks print them now, run in a fresh sandbox."""
    import tempfile

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        sandbox = make_sandbox(Path(tmp))
        if tiny_hub:
            use_tiny_hub(sandbox)
        return apply_outputs(path, run_file(path, sandbox, pending))


def render_isolated(path: Path, pending: tuple[str, ...]) -> str:
    """:func:`_render` with the tiny hub, in a process of its own (Hugging Face reads ``HF_HOME`` once)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "page.md"
        command = [sys.executable, str(Path(__file__).resolve()), "--tiny-hub", "--write-to", str(out)]
        command += [arg for snippet in pending for arg in ("--pending", snippet)]
        result = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=1800)
        if result.returncode != 0:
            raise RuntimeError(f"{path.relative_to(REPO)}: exit {result.returncode}\n{result.stderr[-4000:]}")
        return out.read_text(encoding="utf-8")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when an output drifted")
    parser.add_argument(
        "--pending", action="append", default=[], help="skip blocks whose code contains this (repeatable)"
    )
    parser.add_argument(
        "--tiny-hub", action="store_true", help="run one page in this process on the tiny hub"
    )
    parser.add_argument("--write-to", type=Path, help="with --tiny-hub: write the page's new text here")
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        help="pages (default: README.md and docs/*.md, those with outputs; named pages always run)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    pending = tuple(args.pending)
    if args.tiny_hub:
        if len(args.files) != 1 or args.write_to is None:
            raise SystemExit("--tiny-hub runs exactly one page and needs --write-to FILE")
        args.write_to.write_text(_render(args.files[0].resolve(), pending, True), encoding="utf-8")
        return 0
    files = [p.resolve() for p in args.files] or [p for p in doc_files() if any(b.output for b in blocks(p))]
    drifted = []
    for path in files:
        if str(path.relative_to(REPO)) in TINY_HUB_PAGES:
            new = render_isolated(path, pending)
        else:
            new = _render(path, pending, False)
        if new != path.read_text(encoding="utf-8"):
            drifted.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    verb = "drifted" if args.check else "rewritten"
    for path in drifted:
        print(f"{verb}: {path.relative_to(REPO)}")
    return 1 if args.check and drifted else 0


if __name__ == "__main__":
    sys.exit(main())
