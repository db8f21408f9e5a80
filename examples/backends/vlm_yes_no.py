"""VLMYesNoScorer: one vision-language model reads passages and pictures as they are (P(yes), a probability).

    python examples/backends/vlm_yes_no.py            # Qwen2-VL, the zero-shot "yes-no" prompt
    python examples/backends/vlm_yes_no.py --qwen3    # Qwen3-VL with the Qwen3-VL-Reranker prompt

With real weights, pass the checkpoint instead, e.g. ``VLMYesNoScorer("Qwen/Qwen2-VL-2B-Instruct")``.
"""

from __future__ import annotations

import argparse

from _tiny import WORDS, candidates, show, tiny_folder

from mm_rerank_components import MultimodalReranker, Query
from mm_rerank_components.scorers import VLMYesNoScorer
from mm_rerank_components.testing import build_tiny_qwen_vl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--qwen3", action="store_true", help="a tiny Qwen3-VL and the qwen3-vl-reranker prompt"
    )
    args = parser.parse_args()
    kind, prompt = ("qwen3_vl", "qwen3-vl-reranker") if args.qwen3 else ("qwen2_vl", "yes-no")
    folder = build_tiny_qwen_vl(tiny_folder(kind), WORDS, kind=kind)
    scorer = VLMYesNoScorer(folder, prompt=prompt, local_files_only=True, device="cpu", dtype="float32")
    ranked = MultimodalReranker(scorer).rerank(Query("a red fox"), candidates())
    show(f"{scorer.name}", ranked)


if __name__ == "__main__":
    main()
