"""CrossEncoderScorer: a text cross-encoder (logits, calibrated per modality) beside an image route.

    python examples/backends/cross_encoder.py

The scorer tokenises each pair once and runs balanced batches under a padded-token budget. Its raw
logits need a calibrator to join the unified scale; here a Platt calibrator stands in for one fitted on
labelled pairs (``fit_calibrator``). With real weights:
``CrossEncoderScorer("cross-encoder/ms-marco-MiniLM-L-6-v2", calibrator="ce_calibration.json")``.
"""

from __future__ import annotations

from _tiny import WORDS, candidates, show, tiny_folder

from mm_rerank_components import MultimodalReranker, Query
from mm_rerank_components.calibration import PerModalityCalibrator, PlattCalibrator
from mm_rerank_components.scorers import CrossEncoderScorer, FakeScorer, ModalityRouter
from mm_rerank_components.testing import build_bert_cross_encoder


def main() -> None:
    folder = build_bert_cross_encoder(tiny_folder("bert"), WORDS)
    calibrator = PerModalityCalibrator({"text": PlattCalibrator(0.05, 0.0)})
    text = CrossEncoderScorer(folder, calibrator=calibrator, local_files_only=True, device="cpu")
    print(f"batching: batch_size={text.batch_size}, max_batch_tokens={text.max_batch_tokens}")
    pictures = FakeScorer(name="stand-in-for-pictures")
    router = ModalityRouter({"text": text, "image": pictures, "text+image": pictures})
    show(text.name, MultimodalReranker(router).rerank(Query("a red fox"), candidates()))


if __name__ == "__main__":
    main()
