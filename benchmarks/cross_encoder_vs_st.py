"""CrossEncoderScorer vs sentence-transformers' CrossEncoder on the same random-weight MiniLM-L6 model.

Both read the same saved folder (a BERT classifier with all-MiniLM-L6 shapes and random weights, a
word-level tokenizer) and score the same query against ``--n`` passages of 20 to 200 words. Each round
times both, in alternating order; the report gives medians, the ratio ours/ST measured in the same run,
and whether the two rankings are identical. Both run at their default settings unless told otherwise.

    OMP_NUM_THREADS=1 python benchmarks/cross_encoder_vs_st.py [--n 32] [--rounds 5] [--threads 1]
        [--batch-size N] [--max-batch-tokens N|none] [--against-rev REV] [--out FILE]

``--against-rev REV`` adds the package's own CrossEncoderScorer as it was at git revision REV (at its
defaults) as a third contender, for before/after comparisons. The JSON goes to
``benchmarks/results/cross_encoder_vs_st.json`` unless ``--out`` says otherwise.

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
from functools import partial
from pathlib import Path
from typing import Any

import torch

from mm_rerank_components import Candidate, Query
from mm_rerank_components.scorers.cross_encoder import CrossEncoderScorer
from mm_rerank_components.testing import (
    MINILM_L6_SHAPE,
    build_bert_cross_encoder,
    scorer_module_at_revision,
)

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
    parser.add_argument("--against-rev", default=None, help="also time CrossEncoderScorer at this git rev")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "cross_encoder_vs_st.json"
    )
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

    contenders: dict[str, Any] = {
        "ours": lambda: ours.score(Query(query), candidates),
        "st": lambda: [float(x) for x in st.predict([(query, p) for p in passages])],
    }
    if args.against_rev:
        old_module = scorer_module_at_revision(args.against_rev, "cross_encoder")
        old = old_module.CrossEncoderScorer(folder, local_files_only=True, device="cpu")
        contenders[f"ours@{args.against_rev}"] = partial(old.score, Query(query), candidates)
    for fn in contenders.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in contenders}
    scores: dict[str, list[float]] = {}
    names = list(contenders)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
            start = time.perf_counter()
            scores[name] = contenders[name]()
            times[name].append(time.perf_counter() - start)
    rank = {k: sorted(range(len(v)), key=v.__getitem__, reverse=True) for k, v in scores.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "n_passages": args.n,
        "rounds": args.rounds,
        "threads": args.threads,
        "ours_settings": {"batch_size": ours.batch_size, "max_batch_tokens": ours.max_batch_tokens},
        "median_s": med,
        "ratio_over_st": {k: v / med["st"] for k, v in med.items()},
        "identical_ranking_to_st": {k: rank[k] == rank["st"] for k in rank},
        "load_average": os.getloadavg(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{'contender':<24} {'median s':>9} {'x ST':>6}  same ranking as ST")
    for name in names:
        same = rank[name] == rank["st"]
        print(f"{name:<24} {med[name]:>9.3f} {med[name] / med['st']:>6.2f}  {same}")
    print(f"load average {os.getloadavg()[0]:.2f}; wrote {args.out}")


if __name__ == "__main__":
    main()
