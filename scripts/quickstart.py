"""The quickstart: real photos and expert-written passages, ingested into Chroma and queried, offline.

1. fetch the GCompris "explore" activities (Debian's gcompris-qt-data, via ``apt-get download``), unpack
   their Qt resource archives and export 82 photos + 82 passages into ``.cache/gcompris_explore``;
2. ingest them into an embedded Chroma database at ``.cache/quickstart_db`` with the offline starter
   models (MiniLM text encoder, EfficientNet-Lite0 image encoder, one embedding space);
3. ask a few questions (text, image, text + image): the first stage takes 16 hits from each collection,
   and :class:`MultimodalReranker` with :class:`StarterScorer` puts the 32 mixed hits on one scale.

Run from the repository root after ``pip install -e ".[all]"``::

    python scripts/quickstart.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from mm_rerank_components import MultimodalReranker, Query
from mm_rerank_components.cli import format_table, set_threads
from mm_rerank_components.eval.datasets import export_gcompris_explore
from mm_rerank_components.ingest import ingest_folder, scan_folder
from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever
from mm_rerank_components.scorers.starter import StarterScorer

#: (label, question text or None, photo file name in the exported folder or None)
QUESTIONS: list[tuple[str, str | None, str | None]] = [
    ("text", "Which farm animal gives us milk?", None),
    ("text", "a huge white bear that hunts on the Arctic sea ice", None),
    ("image", None, "monuments-eiffel-tower.webp"),
    ("text + image", "What does this animal eat?", "world-animals-koala.webp"),
]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # keep the output to our own tables
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path(".cache/gcompris_explore"), help="export folder")
    parser.add_argument("--db", type=Path, default=Path(".cache/quickstart_db"), help="Chroma folder")
    parser.add_argument("--top-n", type=int, default=8, help="rows shown per question (default 8)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads; default: 1 when the machine is already busy (load average above the "
        "number of cores), where more threads spin-wait and run several times slower; else torch's choice",
    )
    args = parser.parse_args(argv)
    threads = args.threads
    if threads is None and hasattr(os, "getloadavg") and os.getloadavg()[0] > (os.cpu_count() or 1):
        threads = 1
        print(f"(the machine is busy: load average {os.getloadavg()[0]:.1f}; using 1 torch thread)")
    if threads is not None:
        set_threads(threads)

    started = time.perf_counter()
    print("== 1. data: GCompris 'explore' photos and passages (Debian gcompris-qt-data)")
    t = time.perf_counter()
    folder = export_gcompris_explore(args.data)
    scan = scan_folder(folder)
    took = time.perf_counter() - t
    print(f"   {folder}: {len(scan.texts)} passages, {len(scan.images)} photos ({took:.1f} s)")

    print("== 2. models: offline starter encoders and scorer")
    t = time.perf_counter()
    # previews: the starter scorer reads 224-px images, so the reranker decodes the 384-px JPEG previews
    # stored at ingest instead of the 1024-px photos (the table still shows the photo files)
    retriever = ChromaMultiCollectionRetriever(path=args.db, candidate_image="preview")
    reranker = MultimodalReranker(StarterScorer())
    retriever.create_collections()
    retriever.warm_up()
    load = getattr(reranker.scorer, "load", None)
    if callable(load):
        load()
    print(f"   loaded in {time.perf_counter() - t:.1f} s")

    print(f"== 3. ingest into {args.db} (embedded Chroma; re-runs skip unchanged files)")
    report = ingest_folder(folder, retriever, scan=scan)
    rate = report.written / report.seconds if report.written and report.seconds > 0 else 0.0
    print(f"   {report.summary()}")
    print(f"   {report.seconds:.1f} s" + (f", {rate:.1f} new records/s" if rate else ""))
    for failure in report.failed:
        print(f"   FAILED {failure}")

    print("== 4. questions: 16 text + 16 image hits, reranked on one scale")
    for label, text, photo in QUESTIONS:
        image = str(folder / photo) if photo else None
        query = Query(text=text, image=image)
        t1 = time.perf_counter()
        candidates = retriever.retrieve(query)
        t2 = time.perf_counter()
        ranked = reranker.rerank(query, candidates, top_n=args.top_n)
        t3 = time.perf_counter()
        asked = " + ".join(
            part for part in (f'"{text}"' if text else "", f"[photo {photo}]" if photo else "") if part
        )
        print(f"\n-- {label} query: {asked}")
        print(format_table([(r.candidate, r.score) for r in ranked]))
        print(
            f"   {len(candidates)} candidates; first stage {(t2 - t1) * 1000:.0f} ms, "
            f"rerank {(t3 - t2) * 1000:.0f} ms, total {(t3 - t1) * 1000:.0f} ms"
        )
    print(f"\nquickstart done in {time.perf_counter() - started:.1f} s")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
