"""What the example scripts share: command-line options, opening (and filling) the Chroma database, the
reranker, the LLM choice and terminal output. Not part of the package; copy what you need.

Every example runs offline: the first stage and the reranker use the starter models that ship inside
PyPI packages, and with no LLM configured the answer is extractive (and says so).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# transformers' per-load progress bars would interleave with the chat output
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from mm_rerank_components.answer import Evidence, LLMConfig, format_evidence
from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = ROOT / ".cache" / "quickstart_db"
DEFAULT_EXPORT = ROOT / ".cache" / "gcompris_explore"


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the answer and its evidence."""
    print(message, file=sys.stderr, flush=True)


def parser(description: str) -> argparse.ArgumentParser:
    """The command line every example shares."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--question", "-q", help="answer this one question and exit (default: a chat loop)")
    p.add_argument(
        "--db",
        type=Path,
        default=DEFAULT_DB,
        help=f"embedded Chroma folder (default: {DEFAULT_DB.relative_to(ROOT)}, the quickstart's)",
    )
    p.add_argument(
        "--data",
        type=Path,
        help="folder of passages and pictures to ingest first (re-runs skip unchanged files); default: "
        "when the database is empty, the GCompris sample (fetched with apt-get download)",
    )
    p.add_argument(
        "--reranker",
        type=Path,
        help="a reranker folder adapted to your data (written by mm-rerank adapt); default: the label-free "
        "default reranker",
    )
    p.add_argument(
        "--read-captions",
        action="store_true",
        help="also read each captioned picture's caption as a passage, as mm-rerank query/serve "
        "--read-captions (opt-in; see docs/calibration.md)",
    )
    p.add_argument("--top-n", type=int, default=5, help="evidence items kept after reranking (default 5)")
    p.add_argument("--k", type=int, default=16, help="first-stage hits per collection (default 16)")
    p.add_argument(
        "--extractive",
        action="store_true",
        help="ignore any configured LLM and answer extractively (MM_RERANK_LLM=off does the same)",
    )
    return p


def open_retriever(args: argparse.Namespace) -> ChromaMultiCollectionRetriever:
    """The multi-collection retriever over ``--db``, ingesting ``--data`` (or the GCompris sample) first."""
    started = time.perf_counter()
    retriever = ChromaMultiCollectionRetriever(path=args.db, k_text=args.k, k_image=args.k)
    retriever.create_collections()
    folder: Path | None = args.data
    if folder is None and sum(retriever.count().values()) == 0:
        from mm_rerank_components.eval.datasets import export_gcompris_explore

        log(f"{args.db} is empty: fetching the GCompris sample into {DEFAULT_EXPORT} (apt-get download)")
        folder = export_gcompris_explore(DEFAULT_EXPORT)
    if folder is not None:
        if not folder.is_dir():
            raise SystemExit(f"--data {folder} is not a folder")
        report = retriever.ingest_folder(folder)
        log(f"ingested {folder}: {report.summary()}")
        for failure in report.failed:
            log(f"  not ingested: {failure}")
    retriever.warm_up()
    counts = ", ".join(f"{name}: {n}" for name, n in retriever.count().items())
    log(f"retriever ready on {retriever.describe()} ({counts}) in {time.perf_counter() - started:.1f} s")
    return retriever


def make_reranker(folder: Path | None = None, *, read_captions: bool = False) -> Any:
    """The label-free product default (:func:`mm_rerank_components.defaults.default_reranker`): the offline
    starter scorer fused with the first stage's signals, on one calibrated scale for passages and pictures,
    the same reranker ``mm-rerank query``, ``mm-rerank serve`` and the web chat use. With ``folder`` (the
    examples' ``--reranker``), the reranker ``mm-rerank adapt`` wrote there instead.

    ``on_error="keep"``: a candidate that cannot be read (a picture deleted since ingest) stays in the
    results with its error instead of failing the question; the answer is written from the rest.
    ``read_captions`` (the examples' ``--read-captions``) also reads each captioned picture's caption as
    a passage, as ``mm-rerank query --read-captions`` and ``mm-rerank serve --read-captions`` do.
    """
    if folder is not None:
        from mm_rerank_components import load_reranker

        if not folder.is_dir():
            raise SystemExit(f"--reranker {folder} is not a folder (write one with mm-rerank adapt)")
        reranker = load_reranker(folder, on_error="keep", cache=True)
        reranker.read_captions = read_captions
        log(f"reranker: the folder {folder}" + (", captions read as passages" if read_captions else ""))
        return reranker
    from mm_rerank_components.defaults import default_reranker
    from mm_rerank_components.scorers.starter import StarterScorer

    scorer = StarterScorer()
    scorer.load()  # load the weights now, not during the first question
    if read_captions:
        log("reranker: the default, captions read as passages")
    return default_reranker(scorer, cache=True, on_error="keep", read_captions=read_captions)


#: The name the web chat example used; the same reranker.
make_default_reranker = make_reranker


def llm_config(args: argparse.Namespace) -> LLMConfig | None:
    """The LLM from the environment (see ``mm_rerank_components.answer``), or None for extractive mode."""
    if args.extractive:
        return None
    config = LLMConfig.from_env()
    log(
        f"LLM: {config.model} at {config.base_url}"
        if config
        else "LLM: none configured (set MM_RERANK_LLM_MODEL and MM_RERANK_LLM_BASE_URL for one); "
        "answers are extractive"
    )
    return config


def show(answer: str, evidence: Sequence[Evidence], seconds: float | None = None) -> None:
    """Print an answer and its ranked evidence."""
    print(answer.strip())
    took = f" ({seconds:.2f} s)" if seconds is not None else ""
    print(f"\nEvidence, reranked on the unified scale{took}:")
    print(format_evidence(evidence, max_chars=160) if evidence else "(none)")
    for e in evidence:
        if e.image:
            print(f"  [{e.rank}] picture: {e.image}")


def chat_loop(ask: Callable[[str], Any], intro: str) -> None:
    """Read questions from the terminal until EOF, ``exit`` or ``quit``."""
    print(intro)
    while True:
        try:
            question = input("\nyou> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if question.lower() in ("exit", "quit", ":q"):
            return
        if question:
            ask(question)


def quiet_libraries() -> None:
    """Keep third-party progress chatter out of the terminal."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
