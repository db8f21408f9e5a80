"""CLIPScorer on tiny random CLIP and SigLIP models built from configs, saved and loaded offline."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from mm_rerank_components import Candidate, MultimodalReranker, Query  # noqa: E402
from mm_rerank_components.calibration import PerModalityCalibrator, PlattCalibrator  # noqa: E402
from mm_rerank_components.scorers.clip import CLIPScorer  # noqa: E402

WORDS = ["red", "fox", "snow", "owl", "den", "a", "photo", "of", "the"] + [f"w{i}" for i in range(30)]


def build_tiny_dual_encoder(folder: Path, kind: str) -> Path:
    from mm_rerank_components.testing import build_tiny_dual_encoder as build

    return build(folder, WORDS, kind=kind)


def _image(seed: int, size: tuple[int, int] = (40, 30)) -> Image.Image:
    gen = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size[1], size[0], 3, generator=gen) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels, mode="RGB")


def mixed() -> list[Candidate]:
    out = [
        Candidate(f"t{i}", text=t) for i, t in enumerate(["red fox", "owl in the snow", "w1 " * 12, "den"])
    ]
    out += [Candidate(f"i{i}", image=_image(i, (30 + 7 * i, 40))) for i in range(4)]
    out += [Candidate("ti", text="a photo of a fox", image=_image(9))]
    return out


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_dual_encoder(tmp_path_factory.mktemp("tiny-clip"), "clip")


@pytest.fixture(scope="module")
def siglip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_dual_encoder(tmp_path_factory.mktemp("tiny-siglip"), "siglip")


@pytest.fixture(scope="module")
def clip(clip_path: Path) -> CLIPScorer:
    return CLIPScorer(clip_path, local_files_only=True, device="cpu", batch_size=8)


def test_loads_clip_offline_and_warns_without_calibrator(
    clip_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mm_rerank_components.scorers.clip"):
        scorer = CLIPScorer(clip_path, local_files_only=True, device="cpu")
    assert type(scorer.model).__name__ == "CLIPModel"
    assert "has no calibrator" in caplog.text
    assert scorer.outputs_probabilities is False
    assert scorer.default_calibrator() is None


def test_scores_are_cosines_of_the_right_embeddings(clip: CLIPScorer) -> None:
    query, candidates = Query("red fox"), mixed()
    scores = clip.score(query, candidates)
    assert all(-1.0 - 1e-6 <= s <= 1.0 + 1e-6 for s in scores)
    q = clip.embed_texts(["red fox"])[0]
    assert scores[1] == pytest.approx(float(clip.embed_texts(["owl in the snow"])[0] @ q), abs=1e-5)
    image_cos = float(clip.embed_images([candidates[5].image])[0] @ q)
    assert scores[5] == pytest.approx(image_cos, abs=1e-5)
    # A captioned image takes the larger of its two cosines by default.
    both = [
        float(clip.embed_texts(["a photo of a fox"])[0] @ q),
        float(clip.embed_images([candidates[8].image])[0] @ q),
    ]
    assert scores[8] == pytest.approx(max(both), abs=1e-5)


def test_batch_invariance(clip: CLIPScorer, clip_path: Path) -> None:
    single = CLIPScorer(clip_path, local_files_only=True, device="cpu", batch_size=1)
    query = Query(text="a fox", image=_image(42))
    for a, b in zip(clip.score(query, mixed()), single.score(query, mixed()), strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_siglip_loads_and_is_batch_invariant(siglip_path: Path) -> None:
    scorer = CLIPScorer(siglip_path, local_files_only=True, device="cpu", batch_size=8)
    assert type(scorer.model).__name__ == "SiglipModel"
    single = CLIPScorer(siglip_path, local_files_only=True, device="cpu", batch_size=1)
    query = Query("owl")
    scores = scorer.score(query, mixed())
    assert all(math.isfinite(s) for s in scores)
    for a, b in zip(scores, single.score(query, mixed()), strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_calibrator_reaches_the_reranker(clip_path: Path, tmp_path: Path) -> None:
    calibrator = PerModalityCalibrator(
        {
            "text": PlattCalibrator(10, -2),
            "image": PlattCalibrator(30, -1),
            "text+image": PlattCalibrator(20, 0),
        }
    )
    path = calibrator.save(tmp_path / "cal.json")
    for given in (calibrator, path):
        scorer = CLIPScorer(clip_path, calibrator=given, local_files_only=True, device="cpu")
        assert scorer.default_calibrator() is not None
        ranked = MultimodalReranker(scorer).rerank(Query("red fox"), mixed())
        for r in ranked:
            a, b = {"text": (10, -2), "image": (30, -1), "text+image": (20, 0)}[r.modality]
            assert r.score == pytest.approx(1 / (1 + math.exp(-(a * r.raw_score + b))), abs=1e-6)


def test_bad_arguments(clip_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fusion must be 'max' or 'mean'"):
        CLIPScorer(clip_path, fusion="min", local_files_only=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="calibrator file .* does not exist"):
        CLIPScorer(clip_path, calibrator=tmp_path / "none.json", local_files_only=True, device="cpu")
    with pytest.raises(ValueError, match="could not load the CLIP/SigLIP model"):
        CLIPScorer(tmp_path / "missing", local_files_only=True, device="cpu")
