"""LLMYesNoScorer: a text LLM reranker (Qwen3-Reranker prompt) beside a VLM-free image route.

    python examples/backends/llm_yes_no.py

Text candidates go to the LLM (P(yes), a probability); pictures are routed elsewhere with
ModalityRouter (here a FakeScorer stands in). With real weights:
``LLMYesNoScorer("Qwen/Qwen3-Reranker-0.6B")``.
"""

from __future__ import annotations

import re

from _tiny import WORDS, candidates, show, tiny_folder

from mm_rerank_components import MultimodalReranker, Query
from mm_rerank_components.scorers import FakeScorer, LLMYesNoScorer, ModalityRouter
from mm_rerank_components.scorers.llm import LLM_PROMPT_PRESETS
from mm_rerank_components.testing import build_tiny_qwen3_lm


def main() -> None:
    prompt_words = re.findall(r"\w+|[^\w\s]+", LLM_PROMPT_PRESETS["qwen3-reranker"].template)
    folder = build_tiny_qwen3_lm(tiny_folder("qwen3"), [*WORDS, *prompt_words])
    llm = LLMYesNoScorer(
        folder, prompt="qwen3-reranker", local_files_only=True, device="cpu", dtype="float32"
    )
    print(llm.build_prompt(Query("a red fox"), candidates()[0]))
    pictures = FakeScorer(name="stand-in-for-pictures")
    router = ModalityRouter({"text": llm, "image": pictures, "text+image": pictures})
    show(llm.name, MultimodalReranker(router).rerank(Query("a red fox"), candidates()))


if __name__ == "__main__":
    main()
