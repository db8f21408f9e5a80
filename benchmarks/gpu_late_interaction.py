"""Speed of LateInteractionScorer (ColQwen2): 100 mixed candidates batched vs the one-at-a-time loop.

The same workload as ``benchmarks/gpu_vlm.py`` (one query; 50 passages of about 200 tokens and 50
images of 448x448) on a ColQwen2 built from a config with random weights (no download):

* ``--mode gpu-2b`` (default when CUDA is available): ColQwen2 on Qwen2-VL-2B shapes (128-d vectors), bf16;
* ``--mode cpu-tiny`` (``--cpu-tiny``): a tiny model in fp32 on the CPU, same workload shape. It checks
  the plumbing and the batching gain only; its figures say nothing about a GPU.

    python benchmarks/gpu_late_interaction.py [--cpu-tiny] [--repeats 5] [--batch-sizes 8,16,32] [--threads 1]

It reports the p50 latency of one batched ``score`` call and of ``batch_size=1`` (one forward pass per
candidate), the speed-up, and writes ``benchmarks/results/gpu_late_interaction_<mode>.json``. Random
weights: the scores are meaningless; only the time is measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path
from typing import Any

import gpu_vlm
import torch
import transformers

from mm_rerank_components.calibration import PerModalityCalibrator, PlattCalibrator
from mm_rerank_components.scorers.late_interaction import LateInteractionScorer


def build_model(
    shape: dict[str, dict[str, Any]], tokenizer: Any, device: torch.device, dtype: torch.dtype
) -> Any:
    vlm = gpu_vlm.build_config(shape, tokenizer)
    config = transformers.ColQwen2Config(
        vlm_config=vlm, embedding_dim=128 if shape is gpu_vlm.SHAPE_2B else 16
    )
    return gpu_vlm.instantiate(transformers.ColQwen2ForRetrieval, config, device, dtype)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["auto", "gpu-2b", "cpu-tiny"], default="auto")
    parser.add_argument("--cpu-tiny", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--naive-repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=lambda t: [int(x) for x in t.split(",")], default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    mode, device, dtype = gpu_vlm.pick_device(args)
    tokenizer = gpu_vlm.build_tokenizer()
    model = build_model(
        gpu_vlm.SHAPE_2B if mode == "gpu-2b" else gpu_vlm.SHAPE_TINY, tokenizer, device, dtype
    )
    calibrator = PerModalityCalibrator(
        {m: PlattCalibrator(0.1, 0.0) for m in ("text", "image", "text+image")}
    )
    common: dict[str, Any] = {
        "model": model,
        "tokenizer": tokenizer,
        "image_processor": gpu_vlm.image_processor(),
        "calibrator": calibrator,
        "device": device,
        "dtype": dtype,
        "max_pixels": 448 * 448,
        "max_batch_tokens": None,
    }
    query, candidates = gpu_vlm.workload()
    sweep: dict[int, list[float]] = {}
    for size in args.batch_sizes or ([8, 16, 32] if mode == "gpu-2b" else [16]):
        scorer = LateInteractionScorer(batch_size=size, **common)
        scorer.score(query, candidates)  # warm-up
        sweep[size] = gpu_vlm.time_calls(lambda s=scorer: s.score(query, candidates), args.repeats, device)
    best = min(sweep, key=lambda k: statistics.median(sweep[k]))
    naive = LateInteractionScorer(batch_size=1, **common)
    naive.score(query, candidates[:2] + candidates[-2:])
    naive_times = gpu_vlm.time_calls(lambda: naive.score(query, candidates), args.naive_repeats, device)
    p50, p50_naive = statistics.median(sweep[best]), statistics.median(naive_times)
    result = {
        "mode": mode,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "params": sum(p.numel() for p in model.parameters()),
        "candidates": len(candidates),
        "batch_size": best,
        "batch_size_sweep_p50_ms": {str(k): statistics.median(v) * 1000 for k, v in sweep.items()},
        "batched_p50_ms": p50 * 1000,
        "naive_p50_ms": p50_naive * 1000,
        "speedup_vs_naive": p50_naive / p50,
    }
    for key, value in result.items():
        print(f"{key:<24} {value}")
    out = args.out or Path(__file__).parent / "results" / f"gpu_late_interaction_{mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
