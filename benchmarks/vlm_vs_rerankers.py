"""Batched VLMYesNoScorer vs AnswerDotAI rerankers' MonoVLMRanker on base64 images (CPU, tiny model).

Both rank the same ``--n`` photo-like pictures (640x480 JPEG by default, given as base64 strings) for one
query with the same tiny random Qwen2-VL folder and the MonoQwen prompt ("... answer True or False"):

* ``ours``: ``MultimodalReranker(VLMYesNoScorer(folder, prompt="monoqwen"))`` on ``Candidate(image=b64)``
  (the reranker decodes the base64, the scorer batches);
* ``rerankers``: ``MonoVLMRanker(folder).rank(query, [b64...])``, its one-image-at-a-time loop.

transformers 5 cannot build the Qwen2-VL processor class without torchvision, which is not installed
here, so MonoVLMRanker is given a small processor stand-in with the processor's interface
(``apply_chat_template``, ``__call__(text=, images=)``, a ``tokenizer``) built on this package's Qwen-VL
input builder; its model loading, prompt and scoring loop are its own. Both sides therefore share the
pixel preprocessing code: the comparison measures the scoring loop and batching, not the processors.

    OMP_NUM_THREADS=1 python benchmarks/vlm_vs_rerankers.py [--n 50] [--rounds 3] [--width 640 --height 480]
        [--format JPEG|PNG]

Needs the ``bench`` extra (``rerankers``). Random weights: only time and score agreement are measured.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mm_rerank_components import Candidate, MultimodalReranker, Query
from mm_rerank_components.scorers._qwen_vision import QwenVLInputs
from mm_rerank_components.scorers.vlm import VLMYesNoScorer
from mm_rerank_components.testing import build_tiny_qwen_vl


class ProcessorStandIn:
    """The slice of ``Qwen2VLProcessor`` MonoVLMRanker calls, on this package's Qwen-VL input builder."""

    def __init__(self, folder: Path) -> None:
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        image_processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        self.tokenizer = tokenizer
        self.inputs = QwenVLInputs(tokenizer, image_processor, wants_token_types=True)

    def apply_chat_template(self, messages: Any, **kwargs: Any) -> str:
        return str(self.tokenizer.apply_chat_template(messages, **kwargs))

    def __call__(self, text: Any, images: Any, return_tensors: str = "pt") -> Any:
        from transformers import BatchFeature

        texts = [text] if isinstance(text, str) else list(text)
        pictures = [images] if not isinstance(images, list) else images
        return BatchFeature(self.inputs.encode(texts, pictures))


def pictures(n: int, width: int, height: int, fmt: str, seed: int = 0) -> list[str]:
    """``n`` photo-like pictures (smooth colour gradients with mild noise, as base64 ``fmt``: JPEG at
    quality 90 or PNG)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(0.002, 0.02, size=3), rng.uniform(0, 6.3, size=3), rng.uniform(60, 200, size=3)
        planes = [c[k] + 50 * np.sin(a[k] * xs + b[k]) * np.cos(a[(k + 1) % 3] * ys) for k in range(3)]
        pixels = np.stack(planes, axis=-1) + rng.normal(0, 6, size=(height, width, 3))
        buffer = io.BytesIO()
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        out.append(base64.b64encode(buffer.getvalue()).decode())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--format", default="JPEG", choices=["JPEG", "PNG"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "vlm_vs_rerankers.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from rerankers.models import monovlm_ranker

    folder = build_tiny_qwen_vl(Path(tempfile.mkdtemp(prefix="tiny-qwen2vl-")), [f"w{i}" for i in range(50)])
    stand_in = ProcessorStandIn(folder)
    monovlm_ranker.AutoProcessor.from_pretrained = lambda *a, **k: stand_in
    theirs = monovlm_ranker.MonoVLMRanker(
        str(folder),
        processor_name=str(folder),
        dtype="fp32",
        device="cpu",
        verbose=0,
        attention_implementation="sdpa",
    )
    scorer = VLMYesNoScorer(folder, prompt="monoqwen", local_files_only=True, device="cpu", dtype="float32")
    ours = MultimodalReranker(scorer)
    query = "w1 w2 w3"
    images = pictures(args.n, args.width, args.height, args.format)
    candidates = [Candidate(f"p{i}", image=b64) for i, b64 in enumerate(images)]

    def run_ours() -> list[float]:
        ranked = ours.rerank(Query(query), candidates)
        return [r.score for r in sorted(ranked, key=lambda r: r.index)]

    def run_theirs() -> list[float]:
        ranked = theirs.rank(query, images)
        return [r.score for r in sorted(ranked.results, key=lambda r: int(r.document.doc_id))]

    a, b = run_ours(), run_theirs()  # warm-up, and the scores to compare
    times: dict[str, list[float]] = {"ours": [], "rerankers": []}
    for r in range(args.rounds):
        pair = [("ours", run_ours), ("rerankers", run_theirs)]
        for name, fn in pair if r % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "n_images": args.n,
        "size": [args.width, args.height],
        "format": args.format,
        "rounds": args.rounds,
        "threads": args.threads,
        "median_s": med,
        "ratio_ours_over_rerankers": med["ours"] / med["rerankers"],
        "max_score_difference": max(abs(x - y) for x, y in zip(a, b, strict=True)),
        "load_average": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{'contender':<12} {'median s':>9}")
    for name, value in med.items():
        print(f"{name:<12} {value:>9.3f}")
    print(
        f"ours / rerankers: {result['ratio_ours_over_rerankers']:.2f}; largest score difference "
        f"{result['max_score_difference']:.2e}; load average {os.getloadavg()[0]:.2f}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
