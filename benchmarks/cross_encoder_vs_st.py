"""CrossEncoderScorer vs sentence-transformers' CrossEncoder on the same random-weight MiniLM-L6 model.

Both read the same saved folder (a BERT classifier with all-MiniLM-L6 shapes and random weights, a
word-level tokenizer) and score the same query against ``--n`` passages of 20 to 200 words. Each round
times both, in alternating order; the report gives medians, the ratio ours/ST measured in the same run,
and whether the two rankings are identical. Both run at their default settings unless told otherwise.

    OMP_NUM_THREADS=1 python benchmarks/cross_encoder_vs_st.py [--n 32] [--rounds 5] [--threads 1]
        [--batch-size N] [--max-batch-tokens N|none] [--out FILE]

Random weights: the scores are meaningless; only time and ranking agreement are measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mm_rerank_components import Candidate, Query
from mm_rerank_components.scorers.cross_encoder import CrossEncoderScorer
from mm_rerank_components.testing import MINILM_L6_SHAPE, build_bert_cross_encoder

VOCAB = [f"w{i}" for i in range(30000)]


def workload(n: int, seed: int) -> tuple[str, list[str]]:
    rng = random.Random(seed)
    query = " ".join(rng.choices(VOCAB, k=8))
    passages = [" ".join(rng.choices(VOCAB, k=rng.randint(20, 200))) for _ in range(n)]
    return query, passages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None, help="our batch_size (default: ours)")
    parser.add_argument("--max-batch-tokens", default=None, help="our token budget: N, none (default: auto)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from sentence_transformers import CrossEncoder

    folder = Path(tempfile.mkdtemp(prefix="minilm-l6-random-"))
    build_bert_cross_encoder(folder, VOCAB, shape=MINILM_L6_SHAPE)
    kwargs: dict[str, Any] = {"local_files_only": True, "device": "cpu"}
    if args.batch_size is not None:
        kwargs["batch_size"] = args.batch_size
    if args.max_batch_tokens is not None:
        kwargs["max_batch_tokens"] = None if args.max_batch_tokens == "none" else int(args.max_batch_tokens)
    ours = CrossEncoderScorer(folder, **kwargs)
    st = CrossEncoder(str(folder), device="cpu", local_files_only=True)
    query, passages = workload(args.n, seed=0)
    candidates = [Candidate(f"p{i}", text=t) for i, t in enumerate(passages)]

    def run_ours() -> list[float]:
        return ours.score(Query(query), candidates)

    def run_st() -> list[float]:
        return [float(x) for x in st.predict([(query, p) for p in passages])]

    run_ours(), run_st()  # warm-up
    times: dict[str, list[float]] = {"ours": [], "st": []}
    scores: dict[str, list[float]] = {}
    for r in range(args.rounds):
        order = [("ours", run_ours), ("st", run_st)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            scores[name] = fn()
            times[name].append(time.perf_counter() - start)
    rank = {k: sorted(range(len(v)), key=lambda i, v=v: -v[i]) for k, v in scores.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "n_passages": args.n,
        "rounds": args.rounds,
        "threads": args.threads,
        "ours_settings": {"batch_size": ours.batch_size, "max_batch_tokens": ours.max_batch_tokens},
        "median_s": med,
        "ratio_ours_over_st": med["ours"] / med["st"],
        "identical_ranking": rank["ours"] == rank["st"],
        "load_average": os.getloadavg(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
