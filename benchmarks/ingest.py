"""Ingest throughput of pictures against the classifier's own throughput, measured in the same run.

The target (issue 13): ingest at least 0.7x as many pictures per second as the starter image model
classifies on its own. Both sides see the same pictures at the same size (decoded, at most 1024 px):

* **model**: ``StarterModels.embed_images_and_classes`` on pictures already decoded in memory, in batches
  of ``--batch-size`` (the ConSE embedding and the compact classes ingest stores, nothing else);
* **ingest**: ``ingest_folder`` of the same picture files into a fresh embedded Chroma database (read,
  decode and preview in a worker pool, embed, classify, upsert), for each ``--workers`` value.

The model is timed before and after the ingest runs of each round and their mean is the reference, so a
change in machine load during the run affects both sides; ``--repeat N`` runs N rounds and reports the
median ratio. CPU milliseconds per picture (all threads) are reported too: on a machine without an idle
core, decoding cannot overlap the model, and the CPU figures show what ingest adds to the model's work. Prints a table and writes JSON to ``benchmarks/results/ingest.json``::

    python benchmarks/ingest.py                          # GCompris photos from .cache/gcompris_explore
    python benchmarks/ingest.py --folder my_photos --limit 64 --workers 1 2 --repeat 3
    python benchmarks/ingest.py --folder my_photos --workers 2 --ray 1 2   # also on Ray Data (issue 21)

With ``--ray N ...`` each round also ingests the same pictures with
:func:`~mm_rerank_components.ingest.ray.ingest_folder_ray` (``workers=N``: decode tasks, classifier and
embedder actors, each with ``--threads`` torch threads) into a fresh database, and reports its pictures/s
against the single-process ingest with the most decode workers in the same round (``x local``), and
whether its record ids equal the single-process ones. Starting the local Ray instance is timed apart
(a cluster is started once, not per ingest); the actors' model loading is inside the ingest time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mm_rerank_components.ingest import IMAGE_EXTENSIONS, ingest_folder
from mm_rerank_components.ingest.records import shrink
from mm_rerank_components.media import load_image
from mm_rerank_components.retrievers import ChromaMultiCollectionRetriever


def _pictures(folder: Path, limit: int) -> list[Path]:
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not found:
        raise SystemExit(
            f"no pictures under {folder}; pass --folder, or export the GCompris sample first "
            "(python -c 'from mm_rerank_components.eval.datasets import export_gcompris_explore as e; e()')"
        )
    return found[:limit] if limit > 0 else found


def _model_rate(models: Any, images: list[Any], batch_size: int) -> tuple[float, float]:
    """Pictures per second, and CPU milliseconds per picture (all threads of the process)."""
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(images), batch_size):
        models.embed_images_and_classes(images[i : i + batch_size])
    cpu_ms = (time.process_time() - cpu) * 1000 / len(images)
    return len(images) / (time.perf_counter() - start), cpu_ms


def _ingest_rate(folder: Path, n: int, models: Any, batch_size: int, workers: int) -> dict[str, Any]:
    from mm_rerank_components.starter.chroma import (
        StarterImageEmbeddingFunction,
        StarterTextEmbeddingFunction,
    )

    with tempfile.TemporaryDirectory(prefix="mm-ingest-bench-") as tmp:
        retriever = ChromaMultiCollectionRetriever(
            path=Path(tmp) / "db",
            text_embedding_function=StarterTextEmbeddingFunction(models=models),
            image_embedding_function=StarterImageEmbeddingFunction(models=models),
        )
        cpu = time.process_time()
        report = ingest_folder(folder, retriever, batch_size=batch_size, workers=workers)
        cpu_ms = (time.process_time() - cpu) * 1000 / n
        if not report.ok or report.added != n:
            raise SystemExit(f"ingest failed: {report.summary()}: {[str(f) for f in report.failed]}")
        return {
            "workers": workers,
            "seconds": round(report.seconds, 3),
            "pictures_per_s": n / report.seconds,
            "cpu_ms_per_picture": round(cpu_ms, 1),
            "ids": _ids(retriever),
        }


def _copy(pictures: list[Path], folder: Path) -> None:
    folder.mkdir()
    for i, path in enumerate(pictures):
        shutil.copyfile(path, folder / f"{i:05d}{path.suffix.lower()}")


def _ids(retriever: Any) -> list[str]:
    return sorted(retriever.store.collection("image", create=False).get(include=[])["ids"])


def _ray_rate(folder: Path, n: int, batch_size: int, workers: int, threads: int) -> dict[str, Any]:
    """``ingest_folder_ray`` of the round's folder (the one the local runs read: ids include the path)
    into a fresh database."""
    from mm_rerank_components.ingest.ray import ingest_folder_ray

    with tempfile.TemporaryDirectory(prefix="mm-ingest-bench-ray-") as tmp:
        retriever = ChromaMultiCollectionRetriever(path=Path(tmp) / "db", embedder="starter")
        report = ingest_folder_ray(folder, retriever, workers=workers, threads=threads, batch_size=batch_size)
        if not report.ok or report.added != n:
            raise SystemExit(f"ray ingest failed: {report.summary()}: {[str(f) for f in report.failed]}")
        return {
            "ray_workers": workers,
            "seconds": round(report.seconds, 3),
            "pictures_per_s": n / report.seconds,
            "ids": _ids(retriever),
        }


def _round(pictures: list[Path], models: Any, images: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """Model alone, each ingest run, model alone again; ratios against the mean of the two model runs."""
    before, cpu_before = _model_rate(models, images, args.batch_size)
    with tempfile.TemporaryDirectory(prefix="mm-ingest-bench-pics-") as tmp:
        folder = Path(tmp) / "pics"  # one folder per round: every run ingests the same paths (same ids)
        _copy(pictures, folder)
        n = len(pictures)
        runs = [_ingest_rate(folder, n, models, args.batch_size, w) for w in args.workers]
        ray_runs = [_ray_rate(folder, n, args.batch_size, r, args.threads) for r in args.ray]
    after, cpu_after = _model_rate(models, images, args.batch_size)
    for run in runs:
        run["ratio_to_model"] = round(run["pictures_per_s"] / ((before + after) / 2), 3)
    local = runs[-1]  # the most decode workers
    for run in ray_runs:
        run["ratio_to_local"] = round(run["pictures_per_s"] / local["pictures_per_s"], 3)
        run["ratio_to_model"] = round(run["pictures_per_s"] / ((before + after) / 2), 3)
        run["same_ids_as_local"] = run.pop("ids") == local["ids"]
        run["pictures_per_s"] = round(run["pictures_per_s"], 2)
    for run in runs:
        run["pictures_per_s"] = round(run["pictures_per_s"], 2)
        run.pop("ids")
    return {
        "model_pictures_per_s": [round(before, 2), round(after, 2)],
        "model_cpu_ms_per_picture": [round(cpu_before, 1), round(cpu_after, 1)],
        "ingest": runs,
        "ray": ray_runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folder", type=Path, default=Path(".cache/gcompris_explore"))
    parser.add_argument("--limit", type=int, default=0, help="pictures used (0 = all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="decoding threads to try")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 suits a busy machine)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of model / ingest runs / model")
    parser.add_argument("--ray", type=int, nargs="*", default=[], help="Ray Data workers to try (issue 21)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ingest.json"))
    args = parser.parse_args(argv)
    ray_start_s = None
    if args.ray:
        import ray

        t = time.perf_counter()
        ray.init(num_cpus=max(args.ray), include_dashboard=False, log_to_driver=False)
        ray_start_s = round(time.perf_counter() - t, 2)

    import torch

    from mm_rerank_components.starter.models import StarterModels

    torch.set_num_threads(args.threads)
    pictures = _pictures(args.folder, args.limit)
    models = StarterModels()
    images = [shrink(load_image(p)) for p in pictures]  # decoded once, outside every timing
    models.embed_images_and_classes(images[:2])  # load the weights and the class prompts
    load_before = os.getloadavg()
    rounds = [_round(pictures, models, images, args) for _ in range(args.repeat)]
    summary = []
    for w in args.workers:
        ratios = [r["ratio_to_model"] for rnd in rounds for r in rnd["ingest"] if r["workers"] == w]
        rates = [r["pictures_per_s"] for rnd in rounds for r in rnd["ingest"] if r["workers"] == w]
        cpu = [r["cpu_ms_per_picture"] for rnd in rounds for r in rnd["ingest"] if r["workers"] == w]
        summary.append(
            {
                "workers": w,
                "pictures_per_s_median": round(statistics.median(rates), 2),
                "ratio_to_model_median": round(statistics.median(ratios), 3),
                "cpu_ms_per_picture_median": round(statistics.median(cpu), 1),
                "ratios": ratios,
            }
        )
    ray_summary = []
    for n in args.ray:
        rows = [r for rnd in rounds for r in rnd["ray"] if r["ray_workers"] == n]
        ray_summary.append(
            {
                "ray_workers": n,
                "pictures_per_s_median": round(statistics.median(r["pictures_per_s"] for r in rows), 2),
                "ratio_to_local_median": round(statistics.median(r["ratio_to_local"] for r in rows), 3),
                "ratio_to_model_median": round(statistics.median(r["ratio_to_model"] for r in rows), 3),
                "same_ids_as_local": all(r["same_ids_as_local"] for r in rows),
                "ratios_to_local": [r["ratio_to_local"] for r in rows],
            }
        )
    model_rates = [x for rnd in rounds for x in rnd["model_pictures_per_s"]]
    model_cpu = [x for rnd in rounds for x in rnd["model_cpu_ms_per_picture"]]

    result = {
        "pictures": len(pictures),
        "folder": str(args.folder),
        "batch_size": args.batch_size,
        "torch_threads": args.threads,
        "repeat": args.repeat,
        "model_pictures_per_s_median": round(statistics.median(model_rates), 2),
        "model_cpu_ms_per_picture_median": round(statistics.median(model_cpu), 1),
        "ingest": summary,
        "ray": ray_summary,
        "ray_start_s": ray_start_s,
        "rounds": rounds,
        "target_ratio": 0.7,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_start": [round(x, 2) for x in load_before],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    print(
        f"{len(pictures)} pictures from {args.folder}, batch {args.batch_size}, torch threads {args.threads}"
    )
    print(
        f"load average at start {result['machine']['load_average_start']}, at end {result['machine']['load_average_end']}"
    )
    print(f"{'what':<30}{'pictures/s':>11}{'x model':>9}{'CPU ms/pic':>12}  x model per round")
    print(
        f"{'model alone':<30}{statistics.median(model_rates):>11.1f}{1.0:>9.2f}{statistics.median(model_cpu):>12.0f}"
    )
    for row in summary:
        label = f"ingest, {row['workers']} decode worker(s)"
        shown = " ".join(f"{r:.2f}" for r in row["ratios"])
        print(
            f"{label:<30}{row['pictures_per_s_median']:>11.1f}{row['ratio_to_model_median']:>9.2f}"
            f"{row['cpu_ms_per_picture_median']:>12.0f}  {shown}"
        )
    for row in ray_summary:
        label = f"ingest on Ray, {row['ray_workers']} worker(s)"
        shown = " ".join(f"{r:.2f}" for r in row["ratios_to_local"])
        print(
            f"{label:<30}{row['pictures_per_s_median']:>11.1f}{row['ratio_to_model_median']:>9.2f}"
            f"{'':>12}  x local (most decode workers) {row['ratio_to_local_median']:.2f} per round: {shown}; "
            f"same ids as local: {row['same_ids_as_local']}"
        )
    if ray_start_s is not None:
        print(f"starting local Ray took {ray_start_s:.1f} s (not in the ingest times)")
    print("(medians over rounds; CPU time counts every thread of the process)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
