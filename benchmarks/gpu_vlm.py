"""Speed of VLMYesNoScorer: 100 mixed candidates batched vs the naive one-pair-at-a-time loop.

Builds a Qwen2-VL model with random weights from a config (no download) and times reranking 100 mixed
candidates (50 passages of about 200 tokens, 50 images of 448x448) against one query:

* ``batched``: one ``scorer.score`` call over all 100 (grouped by kind and size, padded micro-batches);
* ``naive``: the same scorer with ``batch_size=1``, one forward pass per pair.

It reports p50 latency, LM tokens per second, and achieved TFLOP/s (an analytic count of the useful
matrix-multiply work, padding excluded) against a measured dense matrix-multiply peak on the same device.

Modes:
* ``--mode gpu-2b`` (default when CUDA is available): Qwen2-VL-2B shapes, bf16, CUDA. Targets: at
  least 5x the naive loop, and 100 candidates in under 300 ms on an H100.
* ``--mode cpu-tiny`` (``--cpu-tiny``; default without CUDA): a tiny model in fp32 on the CPU, the same
  workload shape. It checks the plumbing and the batching gain only; its figures say nothing about a GPU.

    python benchmarks/gpu_vlm.py [--cpu-tiny] [--repeats 5] [--batch-sizes 8,16,32,50] [--out FILE]
        [--against-rev REV]

``--against-rev REV`` also times the scorer as it was at git revision REV, at the same batch size, in
rounds interleaved with the current one (before/after comparisons).

Random weights: the scores are meaningless; only the time is measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from PIL import Image

from mm_rerank_components import Candidate, Query
from mm_rerank_components.scorers.vlm import VLMYesNoScorer
from mm_rerank_components.testing import QWEN_SPECIAL_TOKENS, build_qwen_word_tokenizer

N_WORDS = 5000

# Qwen2-VL-2B-Instruct's published shapes.
SHAPE_2B: dict[str, dict[str, Any]] = {
    "text": {
        "vocab_size": 151936,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    },
    "vision": {
        "depth": 32,
        "embed_dim": 1280,
        "hidden_size": 1536,
        "num_heads": 16,
        "mlp_ratio": 4,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
}
SHAPE_TINY: dict[str, dict[str, Any]] = {
    "text": {
        "vocab_size": 8192,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rope_scaling": {"type": "mrope", "mrope_section": [4, 2, 2]},
    },
    "vision": {
        "depth": 2,
        "embed_dim": 64,
        "hidden_size": 64,
        "num_heads": 4,
        "mlp_ratio": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
}


def build_tokenizer() -> Any:
    """A word-level tokenizer with the Qwen chat special tokens: one token per word, no download."""
    return build_qwen_word_tokenizer([f"w{i}" for i in range(N_WORDS)])


def build_config(shape: dict[str, dict[str, Any]], tokenizer: Any) -> Any:
    """The Qwen2-VL config of ``shape`` with the tokenizer's special-token ids."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    text = dict(shape["text"])
    text.update(
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]
    )
    config = transformers.Qwen2VLConfig(
        text_config=text,
        vision_config=dict(shape["vision"]),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=shape is SHAPE_2B,  # Qwen2-VL-2B ties its LM head to the embeddings
    )
    return config


def build_model(
    shape: dict[str, dict[str, Any]], tokenizer: Any, device: torch.device, dtype: torch.dtype
) -> Any:
    return instantiate(
        transformers.Qwen2VLForConditionalGeneration, build_config(shape, tokenizer), device, dtype
    )


def instantiate(model_class: Any, config: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """``model_class(config)`` with seeded random weights, created directly on ``device`` in ``dtype``."""
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_class(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def image_processor() -> Any:
    # Fast (torchvision) processor where available, else the PIL one; the pixel budget is the scorer's.
    return transformers.Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 16384)


def workload(seed: int = 0) -> tuple[Query, list[Candidate]]:
    gen = torch.Generator().manual_seed(seed)
    candidates = []
    for i in range(50):
        words = torch.randint(0, N_WORDS, (200,), generator=gen).tolist()
        candidates.append(Candidate(f"p{i}", text=" ".join(f"w{w}" for w in words)))
    for i in range(50):
        pixels = (torch.rand(448, 448, 3, generator=gen) * 255).to(torch.uint8).numpy()
        candidates.append(Candidate(f"i{i}", image=Image.fromarray(pixels, mode="RGB")))
    return Query("w1 w2 w3 w4 w5 w6"), candidates


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Any, repeats: int, device: torch.device) -> list[float]:
    out = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - start)
    return out


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Measured dense matrix-multiply throughput in TFLOP/s (the best of a few runs)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 20 if device.type == "cuda" else 5
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - start) / reps)
    return 2 * n**3 / best / 1e12


def preprocess(scorer: VLMYesNoScorer, query: Query, candidates: list[Candidate]) -> None:
    """Everything ``score`` does before the forward passes: prompts, tokens, pixels, copy to device."""
    prepared = scorer.prepare(query, candidates)
    for chunk in scorer._plan(prepared):
        scorer._encode(prepared, chunk)


def work_count(scorer: VLMYesNoScorer, query: Query, candidates: list[Candidate]) -> dict[str, float]:
    """Useful tokens and an analytic FLOP count (padding excluded) for scoring every pair once."""
    model = scorer.model
    config = model.config
    text_cfg = getattr(config, "text_config", config)
    vision_cfg = config.vision_config
    inner = model.model
    lm = inner.language_model if hasattr(inner, "language_model") else inner
    lm_params = sum(p.numel() for n, p in lm.named_parameters() if "embed_tokens" not in n)
    visual = inner.visual if hasattr(inner, "visual") else model.visual
    merger_params = sum(p.numel() for p in visual.merger.parameters())
    tower_params = sum(p.numel() for p in visual.parameters()) - merger_params
    merge = vision_cfg.spatial_merge_size
    lm_tokens = 0
    patches = 0
    flops = 0.0
    for candidate in candidates:
        text, images = scorer.build_prompt(query, candidate)
        batch = scorer._inputs.encode([text], images)
        seq = int(batch["attention_mask"].sum())
        lm_tokens += seq
        # Linear layers, attention (QK^T and AV over the sequence), and the answer position's LM head.
        flops += 2 * lm_params * seq + 4 * text_cfg.num_hidden_layers * text_cfg.hidden_size * seq * seq
        flops += 2 * text_cfg.hidden_size * text_cfg.vocab_size
        for grid in batch.get("image_grid_thw", []):
            n = int(grid.prod())
            patches += n
            flops += 2 * tower_params * n + 4 * vision_cfg.depth * vision_cfg.embed_dim * n * n
            flops += 2 * merger_params * (n // merge**2)
    return {"lm_tokens": lm_tokens, "vision_patches": patches, "flop": flops}


def against_revision(
    revision: str | None,
    batch_size: int,
    common: dict[str, Any],
    query: Query,
    candidates: list[Candidate],
    repeats: int,
    device: torch.device,
) -> dict[str, Any]:
    """p50 of the current scorer and of the scorer at ``revision``, timed in interleaved rounds."""
    if not revision:
        return {}
    from mm_rerank_components.testing import scorer_module_at_revision

    then = scorer_module_at_revision(revision, "vlm").VLMYesNoScorer(batch_size=batch_size, **common)
    now = VLMYesNoScorer(batch_size=batch_size, **common)
    then.score(query, candidates), now.score(query, candidates)  # warm-up
    now_times: list[float] = []
    then_times: list[float] = []
    for r in range(repeats):
        pair = [(now, now_times), (then, then_times)]
        for scorer, times in pair if r % 2 == 0 else pair[::-1]:
            times += time_calls(lambda s=scorer: s.score(query, candidates), 1, device)
    now_p50, then_p50 = statistics.median(now_times), statistics.median(then_times)
    return {
        "revision": revision,
        "now_p50_ms": now_p50 * 1000,
        "then_p50_ms": then_p50 * 1000,
        "ratio_now_over_then": now_p50 / then_p50,
    }


def pick_device(args: argparse.Namespace) -> tuple[str, torch.device, torch.dtype]:
    """The run's mode (``gpu-2b`` or ``cpu-tiny``), device and dtype from ``--mode``/``--cpu-tiny``, and
    ``--threads`` applied; shared with ``benchmarks/gpu_late_interaction.py``."""
    mode = "cpu-tiny" if args.cpu_tiny else args.mode
    if mode == "auto":
        mode = "gpu-2b" if torch.cuda.is_available() else "cpu-tiny"
    if mode == "gpu-2b" and not torch.cuda.is_available():
        raise SystemExit("--mode gpu-2b needs CUDA; use --cpu-tiny here")
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # a shared CPU is steadier with fewer OpenMP threads
    device = torch.device("cuda" if mode == "gpu-2b" else "cpu")
    return mode, device, torch.bfloat16 if mode == "gpu-2b" else torch.float32


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["auto", "gpu-2b", "cpu-tiny"], default="auto")
    parser.add_argument("--cpu-tiny", action="store_true", help="same as --mode cpu-tiny")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--naive-repeats", type=int, default=3)
    parser.add_argument(
        "--batch-sizes",
        type=lambda text: [int(x) for x in text.split(",")],
        default=None,
        help="comma-separated micro-batch sizes to try (default: 8,16,32,50 on GPU, 16 on CPU)",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--against-rev", default=None, help="also time VLMYesNoScorer at this git rev")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    mode, device, dtype = pick_device(args)

    tokenizer = build_tokenizer()
    model = build_model(SHAPE_2B if mode == "gpu-2b" else SHAPE_TINY, tokenizer, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    common: dict[str, Any] = {
        "model": model,
        "tokenizer": tokenizer,
        "image_processor": image_processor(),
        "device": device,
        "dtype": dtype,
        "max_pixels": 448 * 448,
        "max_text_tokens": 1024,
    }
    sizes = args.batch_sizes or ([8, 16, 32, 50] if mode == "gpu-2b" else [16])
    naive = VLMYesNoScorer(batch_size=1, **common)
    query, candidates = workload()

    sweep: dict[int, list[float]] = {}
    for size in sizes:
        scorer = VLMYesNoScorer(batch_size=size, **common)
        # Warm-up: every shape this batch size will see (kernel selection, allocator, oneDNN primitives).
        scorer.score(query, candidates)
        sweep[size] = time_calls(lambda s=scorer: s.score(query, candidates), args.repeats, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    best = min(sweep, key=lambda k: statistics.median(sweep[k]))
    batched = VLMYesNoScorer(batch_size=best, **common)
    batched_times = sweep[best]
    naive.score(query, candidates[:2] + candidates[-2:])
    naive_times = time_calls(lambda: naive.score(query, candidates), args.naive_repeats, device)
    preprocess_times = time_calls(lambda: preprocess(batched, query, candidates), args.repeats, device)
    work = work_count(batched, query, candidates)
    peak = matmul_peak(device, dtype)

    before_after = against_revision(args.against_rev, best, common, query, candidates, args.repeats, device)
    p50 = statistics.median(batched_times)
    p50_naive = statistics.median(naive_times)
    achieved = work["flop"] / p50 / 1e12
    result = {
        "mode": mode,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "params": params,
        "candidates": len(candidates),
        "batch_size": best,
        "batch_size_sweep_p50_ms": {str(k): statistics.median(v) * 1000 for k, v in sweep.items()},
        "batched_p50_ms": p50 * 1000,
        "batched_runs_ms": [t * 1000 for t in batched_times],
        "naive_p50_ms": p50_naive * 1000,
        "naive_runs_ms": [t * 1000 for t in naive_times],
        "speedup_vs_naive": p50_naive / p50,
        "preprocess_p50_ms": statistics.median(preprocess_times) * 1000,
        "lm_tokens": work["lm_tokens"],
        "vision_patches": work["vision_patches"],
        "lm_tokens_per_s": work["lm_tokens"] / p50,
        "useful_tflop": work["flop"] / 1e12,
        "achieved_tflop_s": achieved,
        "matmul_peak_tflop_s": peak,
        "fraction_of_peak": achieved / peak,
    }
    if mode == "gpu-2b":
        result["target_speedup_met"] = result["speedup_vs_naive"] >= 5
        result["target_300ms_met"] = p50 < 0.3

    rows = [
        ("mode / device", f"{mode} / {result['device']} ({result['dtype']}, {params / 1e6:.1f}M params)"),
        ("candidates", "100 (50 passages ~200 tokens, 50 images 448x448)"),
        ("batched p50", f"{p50 * 1000:.1f} ms (best batch_size={best})"),
        (
            "batch size sweep",
            ", ".join(f"{k}: {statistics.median(v) * 1000:.0f} ms" for k, v in sweep.items()),
        ),
        ("naive loop p50", f"{p50_naive * 1000:.1f} ms (one pair per forward)"),
        ("speed-up", f"{result['speedup_vs_naive']:.2f}x"),
        ("preprocessing share", f"{result['preprocess_p50_ms']:.1f} ms (prompts, tokens, image processor)"),
        (
            "LM tokens / s",
            f"{result['lm_tokens_per_s']:.0f} ({work['lm_tokens']} tokens, "
            f"{work['vision_patches']} vision patches)",
        ),
        (
            "achieved",
            f"{achieved:.3f} TFLOP/s of {peak:.3f} measured matmul peak "
            f"({100 * result['fraction_of_peak']:.1f}%)",
        ),
    ]
    if before_after:
        result["against_revision"] = before_after
        rows.append(
            (
                f"vs {args.against_rev}",
                f"now {before_after['now_p50_ms']:.1f} ms, then {before_after['then_p50_ms']:.1f} ms "
                f"(ratio {before_after['ratio_now_over_then']:.2f}, interleaved)",
            )
        )
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")

    out = args.out or Path(__file__).parent / "results" / f"gpu_vlm_{mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
