"""Measure the starter models on Tux Paint's captioned photo stamps: caption -> image retrieval.

Task: every PNG stamp outside the ``symbols`` and ``cartoon`` folders whose ``.txt`` file starts with an
English caption (the first line, before the ``xx.utf8=`` translations) is one image; each caption is one
query, and its relevant images are those with the same caption (case-insensitive). The gallery is all
those images.

Reported:
* first stage: Recall@1/5/10/32 of the plain cosine between the caption's MiniLM embedding and the
  image's ConSE embedding (``StarterModels`` defaults, i.e. what the Chroma image route stores);
* reranked: Recall@10 after :class:`~mm_rerank_components.scorers.starter.StarterScorer` reorders the
  first stage's top 32 (so it cannot exceed the first stage's Recall@32);
* throughput: images/s end to end (open + decode + embed) for both, on this machine's CPU threads.

Get the stamps (Debian package, no other network access needed):

    mkdir -p .cache && cd .cache && apt-get download tuxpaint-stamps-default
    dpkg-deb -x tuxpaint-stamps-default_*.deb tuxpaint && cd ..
    .venv/bin/python scripts/starter_tuxpaint_eval.py --stamps .cache/tuxpaint/usr/share/tuxpaint/stamps

``--ablations`` also re-runs the first stage with the image preprocessing done wrong in the usual ways
(PyTorch symmetric padding, BatchNorm eps 1e-5, ImageNet mean/std inputs, centre crop, alpha channel
dropped), to show that the choices in ``starter/efficientnet.py`` and ``starter/preprocess.py`` matter.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def load_stamps(stamps: Path) -> list[tuple[Path, str]]:
    items: list[tuple[Path, str]] = []
    for png in sorted(stamps.rglob("*.png")):
        rel = png.relative_to(stamps).parts
        if rel[0] == "symbols" or "cartoon" in rel[:-1]:
            continue
        txt = png.with_suffix(".txt")
        if not txt.is_file():
            continue
        first = txt.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
        caption = first[0].strip() if first else ""
        if caption and ".utf8=" not in caption:
            items.append((png, caption))
    return items


def recall_at(sims: np.ndarray, relevant: np.ndarray, k: int) -> float:
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return float(np.take_along_axis(relevant, top, axis=1).any(axis=1).mean())


def rerank_recall(first: np.ndarray, second: np.ndarray, relevant: np.ndarray, n: int, k: int) -> float:
    hits = []
    for i in range(len(first)):
        top = np.argsort(-first[i], kind="stable")[:n]
        order = top[np.argsort(-second[i][top], kind="stable")][:k]
        hits.append(bool(relevant[i][order].any()))
    return float(np.mean(hits))


def timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stamps", type=Path, default=Path(".cache/tuxpaint/usr/share/tuxpaint/stamps"))
    parser.add_argument("--rerank-depth", type=int, default=32)
    parser.add_argument("--n-views", type=int, default=None, help="StarterScorer n_views (default: its own)")
    parser.add_argument("--ablations", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import torch

    from mm_rerank_components.scorers.starter import StarterScorer
    from mm_rerank_components.starter import StarterModels
    from mm_rerank_components.types import Candidate, Query

    if not args.stamps.is_dir():
        raise SystemExit(f"{args.stamps} is not a folder; see this script's docstring to fetch the stamps")
    items = load_stamps(args.stamps)
    captions = [c for _, c in items]
    lowered = np.array([c.lower() for c in captions])
    relevant = lowered[:, None] == lowered[None, :]
    print(f"{len(items)} captioned photo stamps, {len(set(lowered))} distinct captions")
    print(
        f"torch threads: {torch.get_num_threads()}, os.cpu_count(): {os.cpu_count()}, load: {os.getloadavg()}"
    )

    models = StarterModels()
    settings = {"n_views": args.n_views} if args.n_views else {}
    scorer = StarterScorer(models=models, image_cache_size=0, **settings)  # no cache: honest timings
    scorer.load()  # weights and class prompts, so the timings below are those of a warm service
    paths = [p for p, _ in items]

    def open_all() -> list[Image.Image]:
        return [Image.open(p) for p in paths]

    queries = models.embed_texts(captions)
    first_emb, first_s = timed(lambda: models.embed_images(open_all()))
    feats, second_s = timed(lambda: scorer._image_features(open_all()))
    first = queries @ first_emb.T
    dim = models.dim
    second = np.zeros_like(first)
    for i, caption in enumerate(captions):
        q, q_sqrt_dist = scorer._query_features(Query(caption))
        second[i] = feats[:, :dim] @ q + scorer.class_match_weight * (feats[:, dim:] @ q_sqrt_dist)

    # the matrix must equal what StarterScorer.score returns through the Scorer protocol
    probe = scorer.score(
        Query(captions[0]), [Candidate(str(i), image=Image.open(paths[i])) for i in range(4)]
    )
    assert np.allclose(probe, second[0, :4], atol=1e-4), (probe, second[0, :4])

    n = args.rerank_depth
    figures = {
        "images": len(items),
        "distinct_captions": len(set(lowered)),
        "random_recall@10": float(relevant.sum(1).mean() * 10 / len(items)),
        "first_stage": {f"recall@{k}": recall_at(first, relevant, k) for k in (1, 5, 10, n)},
        "scorer_full_gallery": {f"recall@{k}": recall_at(second, relevant, k) for k in (1, 5, 10)},
        f"rerank_top{n}": {f"recall@{k}": rerank_recall(first, second, relevant, n, k) for k in (1, 5, 10)},
        "first_stage_images_per_s": len(items) / first_s,
        "scorer_images_per_s": len(items) / second_s,
        "scorer": scorer.name,
        "first_stage_models": models.name,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(figures, indent=2), flush=True)
    if args.ablations:
        figures["ablations_first_stage_recall@10"] = ablations(models, open_all, queries, relevant)
        print(json.dumps(figures["ablations_first_stage_recall@10"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


def ablations(
    models: object, open_all: Callable[[], list[Image.Image]], queries: np.ndarray, relevant: np.ndarray
) -> dict[str, float]:
    """First-stage Recall@10 with one preprocessing or architecture choice changed at a time."""
    import torch

    from mm_rerank_components.starter import preprocess
    from mm_rerank_components.starter.conse import conse
    from mm_rerank_components.starter.efficientnet import SameConv2d, load_efficientnet_lite0

    class_emb = models.class_embeddings()  # type: ignore[attr-defined]
    top_k = models.top_k  # type: ignore[attr-defined]

    def run(net: torch.nn.Module, prepare: Callable[[Image.Image], np.ndarray]) -> float:
        probs = []
        with torch.inference_mode():
            images = open_all()
            for start in range(0, len(images), 32):
                x = torch.from_numpy(np.stack([prepare(im) for im in images[start : start + 32]]))
                probs.append(net(x).softmax(-1).numpy())
        emb = conse(np.concatenate(probs), class_emb, top_k)
        value = recall_at(queries @ emb.T, relevant, 10)
        print(f"  ablation {len(out)}: recall@10 {value:.3f}", flush=True)
        return value

    def right(im: Image.Image) -> np.ndarray:
        return preprocess.to_array([preprocess.letterbox(im)])[0]

    def imagenet_norm(im: Image.Image) -> np.ndarray:
        arr = np.asarray(preprocess.letterbox(im), dtype=np.float32) / 255.0
        arr = (arr - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
        return arr.transpose(2, 0, 1).astype(np.float32)

    def centre_crop(im: Image.Image) -> np.ndarray:
        rgb = preprocess.to_rgb_on_white(im)
        w, h = rgb.size
        s = min(w, h)
        square = rgb.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        return preprocess.to_array([square.resize((224, 224), Image.Resampling.BICUBIC)])[0]

    def on_black(im: Image.Image) -> np.ndarray:
        return preprocess.to_array([preprocess.letterbox(im.convert("RGB"))])[0]

    out: dict[str, float] = {}
    net = load_efficientnet_lite0()
    out["as shipped (TF SAME, eps 1e-3, [-1,1], letterbox on white)"] = run(net, right)
    out["inputs normalised with ImageNet mean/std"] = run(net, imagenet_norm)
    out["centre crop instead of letterbox"] = run(net, centre_crop)
    out["alpha dropped (convert('RGB'), usually black)"] = run(net, on_black)
    eps_net = load_efficientnet_lite0()
    for m in eps_net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 1e-5
    out["BatchNorm eps 1e-5"] = run(eps_net, right)
    sym_net = load_efficientnet_lite0()
    for m in sym_net.modules():
        if isinstance(m, SameConv2d) and not m.symmetric:
            m.symmetric = True
            m.padding = (m.kernel_size[0] // 2, m.kernel_size[1] // 2)
    out["PyTorch symmetric padding"] = run(sym_net, right)
    return out


if __name__ == "__main__":
    main()
