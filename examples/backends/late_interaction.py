"""LateInteractionScorer: MaxSim over token and patch vectors (ColBERT for text, ColQwen2/ColPali for pages).

    python examples/backends/late_interaction.py

MaxSim sums are unbounded, so each modality needs its own calibrator (here Platt stand-ins for ones
fitted on labelled pairs); without one the scorer warns. With real weights:
``LateInteractionScorer("vidore/colqwen2-v1.0-hf")`` or a ColBERT folder such as colbertv2.0.
"""

from __future__ import annotations

from _tiny import WORDS, candidates, show, tiny_folder

from mm_rerank_components import MultimodalReranker, Query
from mm_rerank_components.calibration import PerModalityCalibrator, PlattCalibrator
from mm_rerank_components.scorers import LateInteractionScorer
from mm_rerank_components.testing import build_tiny_colbert, build_tiny_colpali, build_tiny_qwen_vl


def main() -> None:
    calibrator = PerModalityCalibrator(
        {m: PlattCalibrator(0.2, -2.0) for m in ("text", "image", "text+image")}
    )
    colbert = LateInteractionScorer(
        build_tiny_colbert(tiny_folder("colbert"), WORDS),
        calibrator=calibrator,
        local_files_only=True,
        device="cpu",
    )
    show(colbert.name, MultimodalReranker(colbert).rerank(Query("a red fox"), candidates(with_images=False)))
    colqwen = LateInteractionScorer(
        build_tiny_qwen_vl(tiny_folder("colqwen2"), WORDS, kind="colqwen2"),
        calibrator=calibrator,
        local_files_only=True,
        device="cpu",
    )
    show(colqwen.name, MultimodalReranker(colqwen).rerank(Query("a red fox"), candidates()))
    colpali = LateInteractionScorer(
        build_tiny_colpali(tiny_folder("colpali"), WORDS),
        calibrator=calibrator,
        local_files_only=True,
        device="cpu",
    )
    show(colpali.name, MultimodalReranker(colpali).rerank(Query("a red fox"), candidates()))


if __name__ == "__main__":
    main()
