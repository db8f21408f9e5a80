"""LoRA fine-tuning of a model scorer: BCE on its logit, then a pairwise loss on hard negatives.

    python examples/backends/lora.py

Trains a LoRA adapter on a tiny random cross-encoder with three labelled queries, saves it
(safetensors) and loads it onto a fresh scorer. On a CUDA machine the scorer, and so the training,
runs on the GPU. Random weights and a toy set: this shows the mechanics, not a quality gain.
"""

from __future__ import annotations

from _tiny import WORDS, tiny_folder

from mm_rerank_components import Candidate, Query
from mm_rerank_components.adapt.lora import LoraExample, load_lora, lora_finetune
from mm_rerank_components.scorers import CrossEncoderScorer
from mm_rerank_components.testing import build_bert_cross_encoder


def main() -> None:
    folder = build_bert_cross_encoder(tiny_folder("bert"), WORDS)
    examples = [
        LoraExample(
            Query("red fox"),
            [Candidate("a", text="the red fox lives in a den")],
            [Candidate("b", text="a river")],
        ),
        LoraExample(
            Query("owl"), [Candidate("c", text="the owl in the snow")], [Candidate("d", text="a red den")]
        ),
        LoraExample(
            Query("river"), [Candidate("e", text="a river in the snow")], [Candidate("f", text="the fox")]
        ),
    ]
    scorer = CrossEncoderScorer(folder, local_files_only=True)
    out = tiny_folder("adapter")
    result = lora_finetune(
        scorer, examples, out=out, bce_epochs=3, pairwise_epochs=2, learning_rate=1e-2, seed=0
    )
    print("losses per epoch:", {k: [round(v, 4) for v in vs] for k, vs in result.losses.items()})
    print("saved:", sorted(p.name for p in out.iterdir()), "device:", result.device)
    fresh = load_lora(CrossEncoderScorer(folder, local_files_only=True), out)
    query, pool = examples[0].query, [*examples[0].positives, *examples[0].negatives]
    print("same scores after reload:", fresh.score(query, pool) == scorer.score(query, pool), fresh.name)


if __name__ == "__main__":
    main()
