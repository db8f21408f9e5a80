"""Make docs/img/modality_gap.png: the modality gap and the unified scale, measured on the GCompris sample.

For each of the 82 GCompris "explore" items the query is the item's title ("Golden Temple"); its
relevant passage is its paragraph (title removed) and its relevant picture is its photo (no caption). All
82 paragraphs and 82 photos are candidates for every query.

Left: first-stage cosine similarities of the offline starter models (MiniLM for passages, EfficientNet
ConSE for photos): relevant and irrelevant pairs, per modality. Right: the same pairs' unified scores
from the product default, ``default_reranker()``, given each candidate's route and first-stage cosine as
its retrieval signals (as the Chroma retriever gives them). It also scores the pairs with the bare
scorer and its shipped per-modality calibration, ``MultimodalReranker(StarterScorer())``. The script
prints the numbers quoted in docs/concepts.md, with each reading's mean predicted probability against
the observed relevance rate per modality (calibration-in-the-large over all pairs).

    .venv/bin/python docs/img/modality_gap.py            # needs the sample: python scripts/quickstart.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def load_items(folder: Path) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text("utf-8").splitlines() if line]
    return sorted(rows, key=lambda r: r["id"])


def merged_rank(text_scores: np.ndarray, image_scores: np.ndarray, target: int) -> int:
    """1-based rank of image ``target`` in one list of all passages and photos sorted by score."""
    merged = np.concatenate([text_scores, image_scores])
    order = np.argsort(-merged, kind="stable")
    return int(np.where(order == len(text_scores) + target)[0][0]) + 1


def route_candidates(
    paragraphs: list[str], photos: list[str], text_cosines: np.ndarray, image_cosines: np.ndarray
) -> list[Any]:
    """Every passage and photo as the Chroma retriever gives them: its route, cosine and rank in the route."""
    from mm_rerank_components import Candidate

    out = []
    for kind, items, cosines, source in (
        ("t", paragraphs, text_cosines, "mm_text"),
        ("i", photos, image_cosines, "mm_images"),
    ):
        ranks = np.argsort(np.argsort(-cosines, kind="stable"), kind="stable")
        for j, item in enumerate(items):
            out.append(
                Candidate(
                    f"{kind}{j}",
                    text=item if kind == "t" else None,
                    image=item if kind == "i" else None,
                    source=source,
                    retrieval_score=float(cosines[j]),
                    metadata={"retrieval_rank": int(ranks[j])},
                )
            )
    return out


def plot(groups: dict[str, tuple[np.ndarray, np.ndarray]], n: int, out: Path) -> None:
    """Two panels of per-group score histograms: raw cosines (left) and unified scores (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "passages, relevant": "#2e7d32",
        "passages, irrelevant": "#a5d6a7",
        "photos, relevant": "#8e24aa",
        "photos, irrelevant": "#ce93d8",
    }
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    for ax, which, title, bins in (
        (axes[0], 0, "First stage: raw cosine similarity", np.linspace(-0.2, 1.0, 49)),
        (axes[1], 1, "After reranking: unified score", np.linspace(0.0, 1.0, 81)),
    ):
        for name, values in groups.items():
            ax.hist(
                values[which],
                bins=bins,
                density=True,
                histtype="stepfilled" if "irrelevant" not in name else "step",
                alpha=0.6 if "irrelevant" not in name else 1.0,
                linewidth=1.6,
                color=colours[name],
                label=name,
                edgecolor=colours[name],
            )
        ax.set_title(title, fontsize=11)
        ax.set_yticks([])
        ax.set_xlabel("score")
    axes[0].legend(fontsize=8, frameon=False, loc="upper right")
    fig.suptitle(
        f"GCompris sample, starter models: {n} title queries x {n} passages + {n} photos", fontsize=10
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT / ".cache" / "gcompris_explore")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("modality_gap.png"))
    parser.add_argument("--replot", action="store_true", help="redraw from .cache/modality_gap.npz")
    args = parser.parse_args()
    cache = ROOT / ".cache" / "modality_gap.npz"  # the scores, so the figure can be redrawn quickly
    if args.replot:
        saved = np.load(cache)
        n = saved["raw_text"].shape[0]
        mask = np.eye(n, dtype=bool)
        plot(
            {
                "passages, relevant": (saved["raw_text"][mask], saved["uni_text"][mask]),
                "passages, irrelevant": (saved["raw_text"][~mask], saved["uni_text"][~mask]),
                "photos, relevant": (saved["raw_image"][mask], saved["uni_image"][mask]),
                "photos, irrelevant": (saved["raw_image"][~mask], saved["uni_image"][~mask]),
            },
            n,
            args.out,
        )
        return

    from PIL import Image

    from mm_rerank_components import MultimodalReranker, Query
    from mm_rerank_components.defaults import default_reranker
    from mm_rerank_components.scorers import StarterScorer
    from mm_rerank_components.starter.models import StarterModels

    items = load_items(args.data)
    n = len(items)
    titles = [r["title"] for r in items]
    paragraphs = [r["text"] for r in items]
    photos = [str(args.data / r["file_name"]) for r in items]

    models = StarterModels()
    q = models.embed_texts(titles)
    t = models.embed_texts(paragraphs)
    im = models.embed_images([Image.open(p).convert("RGB") for p in photos])
    raw_text, raw_image = q @ t.T, q @ im.T  # cosines (unit vectors)

    scorer = StarterScorer()
    readings = {
        "default_reranker()": default_reranker(scorer, batch_size=64),
        "MultimodalReranker(StarterScorer())": MultimodalReranker(scorer, batch_size=64),
    }
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    eye = np.eye(n, dtype=bool)
    print(f"{n} queries x ({n} passages + {n} photos)")
    for label, reranker in readings.items():
        uni_text, uni_image = np.zeros((n, n)), np.zeros((n, n))
        for i, title in enumerate(titles):
            if i % 20 == 0:
                print(f"  {label}: reranking query {i + 1}/{n}", file=sys.stderr, flush=True)
            candidates = route_candidates(paragraphs, photos, raw_text[i], raw_image[i])
            for r in reranker.rerank(Query(title), candidates):
                kind, j = r.id[0], int(r.id[1:])
                (uni_text if kind == "t" else uni_image)[i, j] = r.score
        scores[label] = (uni_text, uni_image)
        print(f"{label}:")
        for name, raw, uni in (
            ("passages, relevant", raw_text[eye], uni_text[eye]),
            ("passages, irrelevant", raw_text[~eye], uni_text[~eye]),
            ("photos, relevant", raw_image[eye], uni_image[eye]),
            ("photos, irrelevant", raw_image[~eye], uni_image[~eye]),
        ):
            print(
                f"  {name:22s} raw cosine mean {raw.mean():.3f} (sd {raw.std():.3f})",
                f"unified mean {uni.mean():.3f}",
            )
        for name, uni in (("passages", uni_text), ("photos", uni_image)):
            print(
                f"  {name}: mean predicted {uni.mean():.4f} vs observed {eye.mean():.4f} "
                f"({uni.mean() / eye.mean():.2f}x)"
            )
    uni_text, uni_image = scores["default_reranker()"]
    groups = {
        "passages, relevant": (raw_text[eye], uni_text[eye]),
        "passages, irrelevant": (raw_text[~eye], uni_text[~eye]),
        "photos, relevant": (raw_image[eye], uni_image[eye]),
        "photos, irrelevant": (raw_image[~eye], uni_image[~eye]),
    }
    raw_ranks = [merged_rank(raw_text[i], raw_image[i], i) for i in range(n)]
    uni_ranks = [merged_rank(uni_text[i], uni_image[i], i) for i in range(n)]
    top5_raw = sum(r <= 5 for r in raw_ranks)
    top5_uni = sum(r <= 5 for r in uni_ranks)
    print(f"relevant photo in the merged top 5: raw cosine {top5_raw}/{n}, default_reranker() {top5_uni}/{n}")
    print(
        "median merged rank of the relevant photo:",
        f"raw cosine {np.median(raw_ranks):.0f}, default_reranker() {np.median(uni_ranks):.0f}",
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, raw_text=raw_text, raw_image=raw_image, uni_text=uni_text, uni_image=uni_image)

    plot(groups, n, args.out)


if __name__ == "__main__":
    main()
