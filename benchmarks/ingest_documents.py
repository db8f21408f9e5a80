"""PDF ingest throughput: pages/s and figures/s of reading (pypdf text + figure extraction) and of a full
ingest into embedded Chroma, on synthetic PDFs or on a folder of real ones.

Usage:
    python benchmarks/ingest_documents.py                       # 20 synthetic PDFs x 20 pages, 1 figure/page
    python benchmarks/ingest_documents.py --folder .cache/doc-sample/pdf   # real PDFs (scripts/fetch_doc_sample.sh)
    python benchmarks/ingest_documents.py --starter             # embed with the starter models, not hashing
    python benchmarks/ingest_documents.py --render-pages        # also draw every page (pypdfium2)

Prints the machine's load (``/proc/loadavg``) before and after: compare figures as ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from mm_rerank_components.ingest import ingest_folder, scan_folder
from mm_rerank_components.ingest.documents import DocumentOptions
from mm_rerank_components.ingest.documents.synthetic import SyntheticPage, make_pdf

WORDS = [
    "fox",
    "owl",
    "den",
    "forest",
    "night",
    "snow",
    "river",
    "hunt",
    "cub",
    "tail",
    "ear",
    "paw",
    "meadow",
    "branch",
    "nest",
]


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def synthetic_folder(root: Path, n_docs: int, n_pages: int, figures_per_page: int, seed: int = 0) -> None:
    """``n_docs`` PDFs of ``n_pages`` pages, each with 30 lines of text and captioned figures."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for d in range(n_docs):
        pages = []
        for p in range(n_pages):
            lines = [" ".join(rng.choices(WORDS, k=12)) for _ in range(30)]
            figures = []
            for f in range(figures_per_page):
                lines.append(
                    f"Figure {p * figures_per_page + f + 1}: a {rng.choice(WORDS)} in the {rng.choice(WORDS)}."
                )
                figures.append(
                    (rng.randint(200, 400), rng.randint(150, 300), tuple(rng.choices(range(256), k=3)))
                )
            pages.append(SyntheticPage(lines, figures))  # type: ignore[arg-type]
        (root / f"doc{d:03d}.pdf").write_bytes(make_pdf(pages))


def _retriever(db: Path, starter: bool) -> Any:
    from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever, HashingEmbeddingFunction

    if starter:
        return ChromaMultiCollectionRetriever(path=db)
    ef = HashingEmbeddingFunction()
    return ChromaMultiCollectionRetriever(path=db, text_embedding_function=ef, image_embedding_function=ef)


def run(folder: Path, work: Path, starter: bool, render_pages: bool = False) -> None:
    options = DocumentOptions(figures_dir=work / "figures", render_pages=render_pages)
    pdfs = sorted(folder.rglob("*.pdf"))
    size = sum(p.stat().st_size for p in pdfs)
    print(f"{len(pdfs)} PDFs, {size / 1e6:.1f} MB; load before: {_load()}")
    start = time.perf_counter()
    scan = scan_folder(folder, documents=options, max_bytes=200 * 1024 * 1024)
    read_s = time.perf_counter() - start
    pdf_texts = [t for t in scan.texts if str(t.metadata.get("document", "")).endswith(".pdf")]
    pages = len({(t.metadata["document_path"], t.metadata.get("page")) for t in pdf_texts})
    pdf_images = [i for i in scan.images if str(i.metadata.get("document", "")).endswith(".pdf")]
    rendered = sum(1 for i in pdf_images if i.metadata.get("page_image"))
    figures = len(pdf_images) - rendered
    captioned = sum(1 for i in pdf_images if i.caption)
    print(
        f"read (pypdf text + figures): {read_s:.2f} s, {pages} pages with text ({pages / read_s:.1f} pages/s), "
        f"{figures} PDF figures ({figures / read_s:.1f} figures/s, {captioned} captioned); all files: "
        f"{len(scan.texts)} passages, {len(scan.images)} pictures, {len(scan.failed)} failed, {len(scan.skipped)} skipped"
    )
    if render_pages:
        print(f"  of which {rendered} pages drawn as pictures ({rendered / read_s:.1f} pages/s overall)")
    for failure in scan.failed[:5]:
        print(f"  failed: {failure}")
    for note in scan.skipped[:5]:
        print(f"  skipped: {note}")
    retriever = _retriever(work / "db", starter)
    start = time.perf_counter()
    report = ingest_folder(folder, retriever, scan=scan)
    write_s = time.perf_counter() - start
    total = read_s + write_s
    print(
        f"embed + write ({'starter models' if starter else 'hashing embedder'}): {write_s:.2f} s; "
        f"end to end {pages / total:.1f} pages/s, {figures / total:.1f} figures/s; {report.summary()}"
    )
    print(f"load after: {_load()} (cores: {os.cpu_count()})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folder", type=Path, help="PDFs to ingest (default: synthetic ones)")
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--figures-per-page", type=int, default=1)
    parser.add_argument("--starter", action="store_true", help="embed with the starter models")
    parser.add_argument("--render-pages", action="store_true", help="also draw each page as a picture")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="mm-docs-bench-"))
    try:
        folder = args.folder
        if folder is None:
            folder = work / "pdfs"
            synthetic_folder(folder, args.docs, args.pages, args.figures_per_page)
            print(
                f"synthetic: {args.docs} PDFs x {args.pages} pages, {args.figures_per_page} figure(s) per page"
            )
        run(folder.resolve(), work, args.starter, args.render_pages)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
