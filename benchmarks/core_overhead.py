"""The core's own cost per candidate, beyond scoring, with FakeScorer.

Times ``MultimodalReranker.rerank`` end to end and subtracts the time spent inside the scorer's ``score``;
what remains is validation, image checks, grouping, batching, calibration, sorting and result building.

    python benchmarks/core_overhead.py [--repeats 5] [--out benchmarks/results/core_overhead.json]

Target (issue 2): under 20 microseconds per candidate.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from mm_rerank_components import Candidate, MultimodalReranker, Query
from mm_rerank_components.scorers import FakeScorer

TARGET_US = 20.0


class TimedScorer:
    """Wraps a scorer and accumulates the seconds spent inside ``score``."""

    def __init__(self, inner: FakeScorer) -> None:
        self.inner = inner
        self.name = inner.name
        self.outputs_probabilities = inner.outputs_probabilities
        self.modalities = inner.modalities
        self.seconds = 0.0

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        start = time.perf_counter()
        try:
            return self.inner.score(query, candidates)
        finally:
            self.seconds += time.perf_counter() - start


def make_candidates(n: int, mix: str) -> list[Candidate]:
    images = [Image.new("RGB", (32, 32), (i * 40 % 256, 90, 160)) for i in range(8)]
    out = []
    for i in range(n):
        text = f"passage {i} about foxes, owls and {i % 17} other animals"
        if mix == "text" or i % 2 == 0:
            out.append(Candidate(f"t{i}", text=text, source="text"))
        elif i % 4 == 1:
            out.append(Candidate(f"i{i}", image=images[i % 8], source="image"))
        else:
            out.append(Candidate(f"ti{i}", text="a caption", image=images[i % 8], source="image"))
    return out


def measure(n: int, mix: str, cache: bool, repeats: int) -> dict[str, float | int | str | bool]:
    candidates = make_candidates(n, mix)
    overheads, totals = [], []
    for _ in range(repeats):
        scorer = TimedScorer(FakeScorer())
        reranker = MultimodalReranker(scorer, batch_size=64, cache=cache)
        if cache:
            reranker.rerank(Query("foxes and owls"), candidates)  # warm the cache: the timed run hits it
            scorer.seconds = 0.0
        start = time.perf_counter()
        ranked = reranker.rerank(Query("foxes and owls"), candidates, top_n=10)
        total = time.perf_counter() - start
        assert len(ranked) == 10
        totals.append(total)
        overheads.append(total - scorer.seconds)
    overhead = statistics.median(overheads)
    return {
        "candidates": n,
        "mix": mix,
        "cache": cache,
        "total_ms": round(statistics.median(totals) * 1e3, 3),
        "overhead_ms": round(overhead * 1e3, 3),
        "overhead_us_per_candidate": round(overhead / n * 1e6, 3),
        "meets_target": overhead / n * 1e6 < TARGET_US,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/core_overhead.json"))
    args = parser.parse_args()
    rows = [
        measure(n, mix, cache, args.repeats)
        for mix in ("text", "mixed")
        for cache in (False, True)
        for n in (100, 1_000, 10_000)
    ]
    header = f"{'candidates':>10} {'mix':>6} {'cache':>6} {'total ms':>10} {'core ms':>10} {'core us/cand':>13} {'< 20 us':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['candidates']:>10} {r['mix']:>6} {r['cache']!s:>6} {r['total_ms']:>10} {r['overhead_ms']:>10} "
            f"{r['overhead_us_per_candidate']:>13} {'yes' if r['meets_target'] else 'NO':>8}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"target_us": TARGET_US, "python": platform.python_version(), "rows": rows}, indent=2)
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
