"""The quickstart: real photos and expert-written passages, ingested into Chroma and queried, offline.

1. fetch the GCompris "explore" activities (Debian's gcompris-qt-data, via ``apt-get download``), unpack
   their Qt resource archives and export 82 photos + 82 passages into ``.cache/gcompris_explore``;
2. ingest them into an embedded Chroma database at ``.cache/quickstart_db`` with the offline starter
   models (MiniLM text encoder, EfficientNet-Lite0 image encoder, one embedding space);
3. ask a few questions (text, image, text + image): the first stage takes 16 hits from each collection,
   and the label-free default reranker (:func:`~mm_rerank_components.defaults.default_reranker`: the
   starter scorer fused with the first stage's signals) puts the 32 mixed hits on one scale; a
   question with text also gets an extractive answer (no LLM) quoting the sentence the same models
   score best, and naming the item it comes from;
4. ask the same questions again and print both timings, labelled: **cold** is the first time a question
   is asked after the models loaded, **warm** the same question again (no score cache);
5. adapt the reranker to this corpus without labels (what ``mm-rerank adapt --db`` does: the corpus writes
   its own training queries), save it to ``.cache/quickstart_adapted`` and ask the first question again
   with it (``--no-adapt`` skips this step).

Run from the repository root after ``pip install -e ".[all]"``::

    python scripts/quickstart.py
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from pathlib import Path

from mm_rerank_components import Query, RankedCandidate
from mm_rerank_components.adapt.pipeline import adapt
from mm_rerank_components.answer import Evidence, ExtractiveAnswerer
from mm_rerank_components.cli import format_table, set_threads
from mm_rerank_components.defaults import default_reranker, scores_note
from mm_rerank_components.eval.datasets import export_gcompris_explore
from mm_rerank_components.ingest import ingest_folder, scan_folder
from mm_rerank_components.reranker import Reranker
from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever
from mm_rerank_components.scorers.starter import StarterScorer

#: (label, question text or None, photo file name in the exported folder or None)
QUESTIONS: list[tuple[str, str | None, str | None]] = [
    ("text", "Which farm animal gives us milk?", None),
    ("text", "Which animal has a comb on its head?", None),
    ("text", "a huge white bear that hunts on the Arctic sea ice", None),
    ("image", None, "monuments-eiffel-tower.webp"),
    ("text + image", "What does this animal eat?", "world-animals-koala.webp"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
        help="cap torch CPU threads; default: the starter models' own policy (one thread per call when the "
        "machine is busy or calls run at once, a few for a big batch alone; MM_RERANK_THREADS fixes it)",
    )
    parser.add_argument(
        "--adapted",
        type=Path,
        default=Path(".cache/quickstart_adapted"),
        help="where the reranker adapted to this corpus (no labels) is saved",
    )
    parser.add_argument("--no-adapt", action="store_true", help="skip the label-free adaptation step")
    return parser.parse_args(argv)


def ask(
    retriever: ChromaMultiCollectionRetriever, reranker: Reranker, query: Query
) -> tuple[list[RankedCandidate], int, dict[str, float]]:
    """All candidates reranked (best first), their number, and the seconds per stage."""
    t1 = time.perf_counter()
    candidates = retriever.retrieve(query)
    t2 = time.perf_counter()
    ranked = reranker.rerank(query, candidates)
    t3 = time.perf_counter()
    return ranked, len(candidates), {"first_stage": t2 - t1, "rerank": t3 - t2, "total": t3 - t1}


def ms(timing: dict[str, float]) -> str:
    return ", ".join(
        f"{stage.replace('_', ' ')} {seconds * 1000:.0f} ms" for stage, seconds in timing.items()
    )


def first_pass(
    retriever: ChromaMultiCollectionRetriever, reranker: Reranker, folder: Path, top_n: int
) -> list[dict[str, float]]:
    """Ask each question once (cold), print its table, answer and timings; return the timings."""
    print("== 4. questions: 16 text + 16 image hits, reranked on one scale")
    answerer = ExtractiveAnswerer(reranker=reranker)  # the same models score the answer's sentences
    cold: list[dict[str, float]] = []
    noted: set[str] = set()
    for label, text, photo in QUESTIONS:
        query = Query(text=text, image=str(folder / photo) if photo else None)
        ranked, n, timing = ask(retriever, reranker, query)
        cold.append(timing)
        asked = " + ".join(
            part for part in (f'"{text}"' if text else "", f"[photo {photo}]" if photo else "") if part
        )
        print(f"\n-- {label} query: {asked}")
        print(format_table([(r.candidate, r.score) for r in ranked[:top_n]]))
        note = scores_note(reranker, query, (r.candidate.modality for r in ranked[:top_n]))
        if note is not None and note not in noted:  # each note once: why these scores are not one scale
            print("   " + textwrap.fill(note, 100).replace("\n", "\n   "))
            noted.add(note)
        if text:  # the answerer reads the top 10, which may reach below the rows shown
            evidence = [Evidence.from_ranked(r) for r in ranked[: answerer.max_evidence]]
            print("   " + answerer.compose(query, evidence).replace("\n", "\n   "))
        print(f"   {n} candidates; cold (first time asked): {ms(timing)}")
    return cold


def adapted_pass(
    retriever: ChromaMultiCollectionRetriever, scorer: StarterScorer, out: Path, top_n: int
) -> None:
    """Adapt the default to this corpus without labels, save it, and ask the first question again."""
    print(f"\n== 6. adapted to this corpus without labels (as `mm-rerank adapt --db DB --out {out}` does)")
    t = time.perf_counter()
    result = adapt(retriever=retriever, scorer=scorer, out=out)
    training = result.model.training
    print(
        f"   {training['queries']} pseudo-queries written by the corpus itself (captions, titles, spans of "
        f"passages), {training['pairs']} pairs; {time.perf_counter() - t:.1f} s; saved to {out} "
        f"(`mm-rerank query --reranker {out} ...`)"
    )
    label, text, _ = QUESTIONS[0]
    query = Query(text=text)
    ranked, _, _ = ask(retriever, result.reranker, query)
    print(f'\n-- {label} query, adapted reranker: "{text}"')
    print(format_table([(r.candidate, r.score) for r in ranked[:top_n]]))
    note = scores_note(result.reranker, query, (r.candidate.modality for r in ranked[:top_n]))
    if note is None:  # its maps were fitted on this corpus's captioned photos
        print("   (no note: this reranker was calibrated on the corpus's captioned photos)")
    else:
        print("   " + textwrap.fill(note, 100).replace("\n", "\n   "))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # keep the output to our own tables
    args = parse_args(argv)
    if args.threads is not None:
        set_threads(args.threads)

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
    scorer = StarterScorer()
    reranker = default_reranker(scorer)  # the label-free default: starter scorer + learned fusion
    retriever.create_collections()
    retriever.warm_up()
    scorer.load()
    print(f"   loaded in {time.perf_counter() - t:.1f} s")

    print(f"== 3. ingest into {args.db} (embedded Chroma; re-runs skip unchanged files)")
    report = ingest_folder(folder, retriever, scan=scan)
    rate = report.written / report.seconds if report.written and report.seconds > 0 else 0.0
    print(f"   {report.summary()}")
    print(f"   {report.seconds:.1f} s" + (f", {rate:.1f} new records/s" if rate else ""))
    for failure in report.failed:
        print(f"   FAILED {failure}")

    cold = first_pass(retriever, reranker, folder, args.top_n)
    print(
        "\n== 5. the same questions again (warm: the models, the database and the starter scorer's own "
        "embedding caches hold these candidates now)"
    )
    for (label, text, photo), first in zip(QUESTIONS, cold, strict=True):
        query = Query(text=text, image=str(folder / photo) if photo else None)
        _, _, timing = ask(retriever, reranker, query)
        print(f"   {label:<13} cold total {first['total'] * 1000:5.0f} ms | warm: {ms(timing)}")
    if not args.no_adapt:
        adapted_pass(retriever, scorer, args.adapted, args.top_n)
    load = f"load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"\nquickstart done in {time.perf_counter() - started:.1f} s ({os.cpu_count()} CPUs, {load})")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
