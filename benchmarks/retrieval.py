"""Query latency (cold and warm) and ingest throughput of the Chroma retriever + reranker, on your corpus.

On a fresh embedded Chroma database, in one process:

1. loads the models (timed apart);
2. ingests the corpus: passages per second and pictures per second;
3. measures the models' own throughput **in the same run** on the same records (the text encoder on the
   passages, the picture classifier on already decoded pictures), so ingest is judged as a ratio to
   what the models allow on this machine at this load;
4. asks every query twice: the **cold** pass is the first time this corpus is queried (models loaded and
   initialised on an unrelated input, nothing of this corpus cached), the **warm** pass asks the same
   queries again (no reranker score cache, but the scorer's own caches, e.g. the starter scorer's
   passage and picture embeddings, now hold this corpus). For each pass it reports
   p50/p95 of the first stage (embed the query, ``--k`` hits from each collection), the rerank of the
   merged candidates, and their total.

Prints a table, the machine and its load, and writes JSON to ``benchmarks/results/`` (git-ignored)::

    python benchmarks/retrieval.py                          # GCompris explore: 82 photos + 82 passages
    python benchmarks/retrieval.py --task tuxpaint          # Tux Paint: 430 photos + 430 captions
    python benchmarks/retrieval.py --task mixed --threads 1 --images original --decode-all
        # a cold corpus of Tux Paint pictures converted to WebP, JPEG and PNG (one third each), with
        # a passage per picture; --decode-all also runs the reranker that decodes every picture (as
        # before pixels on demand) in the same run, for the ratio
    python benchmarks/retrieval.py --data labels.jsonl      # your labelled data (eval JSONL format)
    python benchmarks/retrieval.py --folder my_folder       # a folder; queries = its titles and captions
    python benchmarks/retrieval.py --reranker my-reranker   # a saved adapted reranker (mm-rerank adapt)
    python benchmarks/retrieval.py --threads 1              # pin torch threads (default: the package's)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_rerank_components import Candidate, Query

STAGES = ("first_stage", "rerank", "total")
#: the batch size ingest writes with (``add_texts``/``add_images`` default), used for the models alone too
INGEST_BATCH = 32


@dataclass
class Corpus:
    """What to ingest and ask: passages, pictures and text queries (or a folder to ingest as is)."""

    name: str
    texts: list[Candidate] = field(default_factory=list)
    images: list[Candidate] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    folder: Path | None = None


# -- corpora ----------------------------------------------------------------------------------------------


def corpus_from_task(task: Any) -> Corpus:
    """An :class:`~mm_rerank_components.eval.tasks.EvalTask` (built-in or ``--data`` JSONL)."""
    texts = [doc for doc in task.docs.values() if doc.image is None]
    images = [doc for doc in task.docs.values() if doc.image is not None]
    return Corpus(task.name, texts, images, [task.queries[q] for q in task.query_ids("all")])


def corpus_from_folder(folder: Path) -> Corpus:
    """A folder as ``mm-rerank ingest`` reads it; the queries are its passage titles and picture captions."""
    from mm_rerank_components.ingest import scan_folder

    scan = scan_folder(folder)
    texts = [Candidate(r.id, text=r.text, metadata=dict(r.metadata)) for r in scan.texts]
    images = [Candidate(r.id, image=str(r.path), metadata=dict(r.metadata)) for r in scan.images]
    titles = [str(r.metadata.get("title") or "") for r in scan.texts]
    captions = [str(r.metadata.get("caption") or "") for r in scan.images]
    queries = list(dict.fromkeys(q for q in titles + captions if q.strip()))
    if not queries:
        raise SystemExit(f"--folder {folder}: no passage titles or picture captions to ask as queries")
    return Corpus(folder.name, texts, images, queries, folder=folder)


FORMATS = ("WEBP", "JPEG", "PNG")


def build_mixed_folder(out: Path, pictures: int, cache_dir: Path | None = None) -> Path:
    """A folder of ``pictures`` Debian Tux Paint stamps, converted round-robin to WebP, JPEG and PNG
    (transparency composited on white, as the reranker reads them), each with its caption as a sidecar,
    and one passage per picture (its English caption as the title, its French caption and its folder as
    the text): ``2 * pictures`` documents, written here so nothing is committed."""
    from PIL import Image

    from mm_rerank_components.eval.datasets import fetch_tuxpaint_stamps
    from mm_rerank_components.media import load_image

    raster = [s for s in fetch_tuxpaint_stamps(cache_dir) if s.image_path.suffix.lower() in (".png", ".jpg")]
    stamps = spread(raster, pictures)
    out.mkdir(parents=True, exist_ok=True)
    for n, stamp in enumerate(stamps):
        fmt = FORMATS[n % len(FORMATS)]
        stem = f"{n:04d}-{stamp.id.replace('/', '-')}"
        image: Image.Image = load_image(str(stamp.image_path))
        name = f"{stem}.{fmt.lower()}"
        image.save(out / name, fmt, **({"quality": 85} if fmt in ("WEBP", "JPEG") else {}))
        (out / f"{stem}.caption.txt").write_text(stamp.caption + "\n", encoding="utf-8")
        (out / f"{stem}.txt").write_text(
            f"{stamp.caption}\n\n{stamp.caption_fr} ({stamp.folder})\n", encoding="utf-8"
        )
    return out


def load_corpus(args: argparse.Namespace, workdir: Path) -> Corpus:
    from mm_rerank_components.eval import tasks

    if args.folder is not None:
        return corpus_from_folder(args.folder)
    if args.task == "mixed":
        corpus = corpus_from_folder(build_mixed_folder(workdir / "mixed", args.mixed_pictures))
        corpus.name = f"mixed-{len(corpus.images)}"
        return corpus
    if args.data is not None:
        return corpus_from_task(tasks.load_labelled_jsonl(args.data))
    if args.task == "tuxpaint":
        return corpus_from_task(tasks.tuxpaint_mixed_task())
    return corpus_from_task(tasks.gcompris_explore_task())


def spread(items: list[Any], limit: int) -> list[Any]:
    """At most ``limit`` items spread evenly over ``items`` (all when ``limit`` is 0)."""
    if not limit or len(items) <= limit:
        return list(items)
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


# -- models -----------------------------------------------------------------------------------------------


def make_reranker(args: argparse.Namespace) -> tuple[Any, str]:
    """The reranker under test, without a score cache (so the warm pass really scores)."""
    if args.reranker is not None:
        from mm_rerank_components.adapt.folder import load_reranker

        return load_reranker(args.reranker), f"folder {args.reranker}"
    if args.scorer == "none":
        return None, "none"
    from mm_rerank_components import MultimodalReranker

    if args.scorer == "fake":
        from mm_rerank_components.scorers.fake import FakeScorer

        return MultimodalReranker(FakeScorer()), "fake"
    if args.scorer == "default":
        from mm_rerank_components.defaults import default_reranker

        return default_reranker(), "default_reranker() (starter + shipped fusion)"
    from mm_rerank_components.scorers.starter import StarterScorer

    return MultimodalReranker(StarterScorer()), "MultimodalReranker(StarterScorer())"


def decode_all_reranker() -> Any:
    """The default reranker as it was before pixels on demand: its scorer reads every picture's pixels
    (decoded in full), even when the stored class list stands in for them. Scores are the same."""
    from mm_rerank_components.defaults import default_reranker
    from mm_rerank_components.scorers.starter import StarterScorer

    class DecodeAll(StarterScorer):
        image_side = None

        def needs_pixels(self, candidate: Candidate) -> bool:
            return candidate.image is not None

    return default_reranker(DecodeAll())


def make_retriever(args: argparse.Namespace, path: Path) -> Any:
    from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever

    kwargs: dict[str, Any] = {}
    if args.embedder == "hashing":
        from mm_rerank_components.retrievers import HashingEmbeddingFunction

        ef = HashingEmbeddingFunction()
        kwargs = {"text_embedding_function": ef, "image_embedding_function": ef}
    return ChromaMultiCollectionRetriever(
        path=path, k_text=args.k, k_image=args.k, candidate_image=args.images, **kwargs
    )


def load_models(retriever: Any, reranker: Any) -> None:
    """Load every model, then run the reranker once on an input unrelated to the corpus, so the cold pass
    pays for nothing the first query of a started service would not (lazy kernels, thread pools)."""
    from PIL import Image

    from mm_rerank_components.scorers.base import BaseScorer

    retriever.create_collections()
    retriever.warm_up()
    if reranker is None:
        return
    scorer = getattr(reranker, "scorer", None)
    if isinstance(scorer, BaseScorer):
        scorer.load()
    picture = Image.new("RGB", (64, 48), (120, 130, 140))
    unrelated = [
        Candidate("warm-up-text", text="A sentence nobody searches for.", source="text"),
        Candidate("warm-up-image", image=picture, source="image"),
    ]
    reranker.rerank(Query(text="warm up the models"), unrelated)


# -- ingest and the models' own throughput --------------------------------------------------------------


def ingest(retriever: Any, corpus: Corpus) -> dict[str, Any]:
    """Write the corpus; passages and pictures are timed apart (a folder is ingested in one go)."""
    if corpus.folder is not None:
        t = time.perf_counter()
        report = retriever.ingest_folder(corpus.folder)
        seconds = time.perf_counter() - t
        return {"records": report.written, "seconds": seconds, "failed": [str(f) for f in report.failed]}
    out: dict[str, Any] = {"failed": []}
    if corpus.texts:
        t = time.perf_counter()
        report = retriever.add_texts(
            [c.text or "" for c in corpus.texts],
            ids=[c.id for c in corpus.texts],
            metadatas=[dict(c.metadata) for c in corpus.texts],
        )
        out["passages"] = {"n": report.written, "seconds": time.perf_counter() - t}
        out["failed"] += [str(f) for f in report.failed]
    if corpus.images:
        t = time.perf_counter()
        report = retriever.add_images(
            [str(c.image) for c in corpus.images],
            ids=[c.id for c in corpus.images],
            captions=[c.text for c in corpus.images],
            metadatas=[dict(c.metadata) for c in corpus.images],
        )
        out["pictures"] = {"n": report.written, "seconds": time.perf_counter() - t}
        out["failed"] += [str(f) for f in report.failed]
    return out


def model_throughput(retriever: Any, corpus: Corpus, sample: int) -> dict[str, Any]:
    """Passages/s of the text encoder and pictures/s of the picture model alone (decoded beforehand), on
    up to ``sample`` records of the corpus, through the same store calls and batch size ingest uses."""
    from mm_rerank_components.ingest import as_store
    from mm_rerank_components.ingest.records import shrink
    from mm_rerank_components.media import load_image

    store = as_store(retriever)
    out: dict[str, Any] = {}
    texts = [c.text for c in spread(corpus.texts, sample) if c.text]
    if texts:
        t = time.perf_counter()
        for start in range(0, len(texts), INGEST_BATCH):
            store.embed_texts(texts[start : start + INGEST_BATCH], kind="text", query=False)
        out["text_encoder"] = {"n": len(texts), "seconds": time.perf_counter() - t}
    pictures = [shrink(load_image(str(c.image))) for c in spread(corpus.images, sample)]
    if pictures:
        t = time.perf_counter()
        for start in range(0, len(pictures), INGEST_BATCH):
            store.embed_pictures(pictures[start : start + INGEST_BATCH])
        out["picture_model"] = {"n": len(pictures), "seconds": time.perf_counter() - t}
    return out


# -- queries ----------------------------------------------------------------------------------------------


def timed_pass(retriever: Any, reranker: Any, queries: list[Query]) -> dict[str, Any]:
    """One pass over ``queries``: milliseconds per stage, and the mean number of candidates."""
    ms: dict[str, list[float]] = {stage: [] for stage in STAGES}
    sizes: list[int] = []
    for query in queries:
        t0 = time.perf_counter()
        candidates = retriever.retrieve(query)
        t1 = time.perf_counter()
        if reranker is not None:
            reranker.rerank(query, candidates)
        t2 = time.perf_counter()
        ms["first_stage"].append((t1 - t0) * 1000)
        ms["rerank"].append((t2 - t1) * 1000)
        ms["total"].append((t2 - t0) * 1000)
        sizes.append(len(candidates))
    stats: dict[str, Any] = {stage: summarise(values) for stage, values in ms.items()}
    stats["candidates_mean"] = round(statistics.fmean(sizes), 1) if sizes else 0.0
    return stats


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarise(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 0.5), 1),
        "p95_ms": round(percentile(ms, 0.95), 1),
        "mean_ms": round(statistics.fmean(ms), 1) if ms else float("nan"),
    }


# -- report -----------------------------------------------------------------------------------------------


def rate(block: dict[str, Any] | None) -> float | None:
    if not block or not block.get("seconds"):
        return None
    return float(block["n"]) / float(block["seconds"])


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    threads: int | None = None
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:
        pass
    return {
        "cpus": os.cpu_count(),
        "torch_threads": threads,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "processor": platform.processor() or None,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def ingest_lines(ingest_stats: dict[str, Any], raw: dict[str, Any]) -> list[str]:
    lines = []
    for kind, model in (("passages", "text_encoder"), ("pictures", "picture_model")):
        ingested, alone = rate(ingest_stats.get(kind)), rate(raw.get(model))
        if ingested is None:
            continue
        line = f"ingest {kind}: {ingest_stats[kind]['n']} in {ingest_stats[kind]['seconds']:.1f} s = {ingested:.1f}/s"
        if alone:
            line += (
                f"; {model.replace('_', ' ')} alone {alone:.1f}/s (same run); ratio {ingested / alone:.2f}"
            )
        lines.append(line)
    if "records" in ingest_stats:  # a folder: passages and pictures in one go
        alone_rates = [
            f"{model.replace('_', ' ')} alone {r:.1f}/s"
            for model in ("text_encoder", "picture_model")
            if (r := rate(raw.get(model))) is not None
        ]
        seconds = ingest_stats["seconds"]
        lines.append(
            f"ingest: {ingest_stats['records']} records in {seconds:.1f} s = "
            f"{ingest_stats['records'] / seconds if seconds else 0:.1f}/s; "
            + "; ".join(alone_rates)
            + " (same run)"
        )
    return lines


def print_report(payload: dict[str, Any]) -> None:
    m = payload["machine"]
    print(
        f"{payload['corpus']}: {payload['passages']} passages + {payload['pictures']} pictures; "
        f"queries: {', '.join(f'{n} {group}' for group, n in payload['queries'].items())}; "
        f"reranker {payload['reranker']}; images={payload['images']}, "
        f"k={payload['k']} per collection"
    )
    print(
        f"machine: {m['platform']}, {m['cpus']} CPUs, torch threads {m['torch_threads']}, "
        f"load average {m['load_average_before'][0]:.1f} -> {m['load_average_after'][0]:.1f}"
    )
    print(f"models loaded in {payload['model_load_s']:.1f} s")
    for line in ingest_lines(payload["ingest"], payload["model_throughput"]):
        print(line)
    print(f"\n{'pass':<10} {'stage':<12} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
    for name, block in payload["passes"].items():
        for stage in STAGES:
            s = block[stage]
            print(
                f"{name:<10} {stage:<12} {s['n']:>4} {s['p50_ms']:>8.1f} {s['p95_ms']:>8.1f} {s['mean_ms']:>8.1f}"
            )
    for name, block in payload["passes"].items():
        first, rerank = block["first_stage"]["p50_ms"], block["rerank"]["p50_ms"]
        if first > 0:
            print(
                f"{name}: rerank p50 / first stage p50 = {rerank / first:.1f}x ({block['candidates_mean']} candidates)"
            )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--task",
        choices=("gcompris", "tuxpaint", "mixed"),
        default="gcompris",
        help="a built-in corpus; mixed: Tux Paint pictures as WebP, JPEG and PNG plus a passage each",
    )
    source.add_argument("--data", type=Path, help="labelled JSONL (eval format: doc and query lines)")
    source.add_argument("--folder", type=Path, help="a folder of passages and pictures (as mm-rerank ingest)")
    parser.add_argument("--embedder", choices=("starter", "hashing"), default="starter")
    parser.add_argument(
        "--scorer",
        choices=("starter", "default", "fake", "none"),
        default="default",
        help="default (the product default): defaults.default_reranker(); starter: "
        "MultimodalReranker(StarterScorer()); "
        "fake: FakeScorer; none: first stage only",
    )
    parser.add_argument("--reranker", type=Path, help="a saved adapted reranker folder (replaces --scorer)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: the package's)"
    )
    parser.add_argument("--k", type=int, default=16, help="hits per collection (default 16: 32 candidates)")
    parser.add_argument(
        "--images", choices=("preview", "original"), default="preview", help="what the reranker decodes"
    )
    parser.add_argument(
        "--queries", type=int, default=90, help="text queries, spread over the corpus (0 = all)"
    )
    parser.add_argument("--image-queries", type=int, default=0, help="also ask this many pictures as queries")
    parser.add_argument("--sample", type=int, default=64, help="records for the models' own throughput")
    parser.add_argument(
        "--mixed-pictures",
        type=int,
        default=450,
        help="pictures of --task mixed (default 450: 900 documents)",
    )
    parser.add_argument(
        "--decode-all",
        action="store_true",
        help="also run the default reranker decoding every picture (before pixels on demand), same run",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mm-rerank-bench-") as tmp:
        corpus = load_corpus(args, Path(tmp))
        groups = {"text": [Query(text=q) for q in spread(corpus.queries, args.queries)]}
        if args.image_queries:
            groups["image"] = [Query(image=str(c.image)) for c in spread(corpus.images, args.image_queries)]
        reranker, label = make_reranker(args)
        rerankers = {"": reranker}
        if args.decode_all:
            rerankers["decode-all "] = decode_all_reranker()
            label += "; decode-all: the same, decoding every picture (as before pixels on demand)"
        retriever = make_retriever(args, Path(tmp) / "db")
        t = time.perf_counter()
        for each in rerankers.values():
            load_models(retriever, each)
        load_s = time.perf_counter() - t
        ingest_stats = ingest(retriever, corpus)
        raw = model_throughput(retriever, corpus, args.sample)
        # every cold pass runs before any warm one: a warm pass may reuse what any cold pass cached
        passes = {
            f"{when} {prefix}{group}": timed_pass(retriever, each, queries)
            for when in ("cold", "warm")
            for prefix, each in rerankers.items()
            for group, queries in groups.items()
        }
    payload = {
        "benchmark": "retrieval",
        "corpus": corpus.name,
        "passages": len(corpus.texts),
        "pictures": len(corpus.images),
        "queries": {group: len(queries) for group, queries in groups.items()},
        "reranker": label,
        "embedder": args.embedder,
        "images": args.images,
        "k": args.k,
        "machine": machine(load_before),
        "model_load_s": round(load_s, 2),
        "ingest": ingest_stats,
        "model_throughput": raw,
        "passes": passes,
    }
    print_report(payload)
    for failure in ingest_stats["failed"]:
        print(f"  not ingested: {failure}", file=sys.stderr)
    out = args.out or Path("benchmarks/results") / f"retrieval-{corpus.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
