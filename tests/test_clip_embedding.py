"""CLIPEmbeddingFunction: tiny random CLIP, SigLIP and SigLIP2 folders, Chroma round trips, mismatch refusal.

Random weights prove the plumbing (one space for texts and pictures, the recorded config), never quality.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
chromadb = pytest.importorskip("chromadb")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from mm_rerank_components import Candidate, Query  # noqa: E402
from mm_rerank_components.retrievers.clip import (  # noqa: E402
    CLIPEmbeddingFunction,
    clip_embedding_functions,
)
from mm_rerank_components.scorers.clip import CLIPEncoder, CLIPScorer  # noqa: E402
from mm_rerank_components.testing import build_tiny_dual_encoder  # noqa: E402

WORDS = ["red", "fox", "snow", "owl", "den", "a", "photo", "of", "the"] + [f"w{i}" for i in range(30)]


def _array(seed: int, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    gen = np.random.default_rng(seed)
    return gen.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)


@pytest.fixture(scope="module", params=["clip", "siglip", "siglip2"])
def model_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_dual_encoder(
        tmp_path_factory.mktemp(f"tiny-{request.param}"), WORDS, kind=request.param
    )


def test_texts_and_pictures_in_one_space(model_path: Path) -> None:
    ef = CLIPEmbeddingFunction(model_path)
    inputs = ["red fox", _array(1), "owl in the snow", _array(2, (25, 60))]
    vectors = ef(inputs)  # type: ignore[arg-type]
    assert len(vectors) == 4 and len({len(v) for v in vectors}) == 1
    for v in vectors:
        assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    encoder = ef.encoder
    expected_text = encoder.embed_texts(["red fox", "owl in the snow"]).numpy()
    expected_image = encoder.embed_images(
        [Image.fromarray(_array(1)), Image.fromarray(_array(2, (25, 60)))]
    ).numpy()
    assert np.allclose(vectors[0], expected_text[0], atol=1e-5)
    assert np.allclose(vectors[3], expected_image[1], atol=1e-5)


def test_batch_size_1_and_8_agree(model_path: Path) -> None:
    texts = ["red fox", "owl", "the snow den w1 w2 w3", "a photo of a fox"] * 2
    images = [Image.fromarray(_array(i, (20 + 5 * i, 30))) for i in range(6)]
    one = CLIPEncoder(model_path, batch_size=1, local_files_only=True, device="cpu")
    eight = CLIPEncoder(model_path, batch_size=8, local_files_only=True, device="cpu")
    assert torch.allclose(one.embed_texts(texts), eight.embed_texts(texts), atol=1e-4)
    assert torch.allclose(one.embed_images(images), eight.embed_images(images), atol=1e-4)


def test_scorer_reads_siglip2_and_mixed_candidates(model_path: Path) -> None:
    scorer = CLIPScorer(model_path, local_files_only=True, device="cpu")
    candidates = [
        Candidate("t", text="red fox"),
        Candidate("i", image=Image.fromarray(_array(3))),
        Candidate("ti", text="a photo of a fox", image=Image.fromarray(_array(4))),
    ]
    scores = scorer.score(Query("fox"), candidates)
    assert len(scores) == 3 and all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for s in scores)


def test_config_round_trip_and_shared_encoder(model_path: Path) -> None:
    text_ef, image_ef = clip_embedding_functions(model_path, batch_size=4)
    assert text_ef.encoder is image_ef.encoder  # one model in memory for both collections
    config = text_ef.get_config()
    assert config["model"] == str(model_path.resolve()) and config["batch_size"] == 4
    rebuilt = CLIPEmbeddingFunction.build_from_config(config)
    assert np.allclose(rebuilt(["red fox"])[0], text_ef(["red fox"])[0])
    assert CLIPEmbeddingFunction.name() == "mm_rerank_clip"


def test_changed_weights_or_settings_are_refused(model_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(model_path, copy)
    config = CLIPEmbeddingFunction(copy).get_config()
    model_config = json.loads((copy / "config.json").read_text())
    model_config["initializer_factor"] = 0.5
    (copy / "config.json").write_text(json.dumps(model_config))
    with pytest.raises(ValueError, match="the weights changed, so stored vectors live in another space"):
        CLIPEmbeddingFunction.build_from_config(config)
    ef = CLIPEmbeddingFunction(model_path)
    with pytest.raises(ValueError, match="dtype changes the stored embeddings"):
        ef.validate_config_update(ef.get_config(), {**ef.get_config(), "dtype": "bfloat16"})
    ef.validate_config_update(ef.get_config(), {**ef.get_config(), "device": "cuda"})  # device may change
    with pytest.raises(ValueError, match="unknown CLIPEmbeddingFunction config keys"):
        CLIPEmbeddingFunction.validate_config({"model": "x", "top_k": 3})
    with pytest.raises(ValueError, match="does not exist; pass a local folder"):
        CLIPEmbeddingFunction(tmp_path / "missing")


def test_chroma_records_the_function_and_reopens_with_it(model_path: Path, tmp_path: Path) -> None:
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    ef = CLIPEmbeddingFunction(model_path)
    texts = client.create_collection("texts", embedding_function=ef)
    texts.add(ids=["a", "b"], documents=["red fox", "owl in the snow"])
    images = client.create_collection("images", embedding_function=ef)
    images.add(ids=["p"], embeddings=[ef([_array(5)])[0]])
    del client
    reopened = chromadb.PersistentClient(path=str(tmp_path / "db"))
    again = reopened.get_collection("texts")  # rebuilt from the recorded config, no function given
    stored = again.configuration_json["embedding_function"]
    assert stored["name"] == "mm_rerank_clip" and stored["config"]["fingerprint"] == ef.fingerprint
    hits = again.query(query_texts=["red fox"], n_results=1)
    assert hits["ids"] == [["a"]]
    picture_hits = reopened.get_collection("images").query(query_texts=["red fox"], n_results=1)
    assert picture_hits["ids"] == [["p"]]  # a text query searches the picture collection in one space


REMOTE_CODE = textwrap.dedent(
    """
    import torch
    from transformers import PretrainedConfig, PreTrainedModel


    class TinyDualConfig(PretrainedConfig):
        model_type = "tiny_dual"

        def __init__(self, vocab_size=64, dim=8, **kwargs):
            self.vocab_size, self.dim = vocab_size, dim
            super().__init__(**kwargs)


    class TinyDual(PreTrainedModel):
        config_class = TinyDualConfig

        def __init__(self, config):
            super().__init__(config)
            self.embed = torch.nn.Embedding(config.vocab_size, config.dim)
            self.pixels = torch.nn.Linear(3, config.dim)
            self.post_init()

        def _init_weights(self, module):
            pass

        def get_text_features(self, input_ids, attention_mask=None):
            return self.embed(input_ids).mean(dim=1)

        def get_image_features(self, pixel_values):
            return self.pixels(pixel_values.mean(dim=(2, 3)))
    """
)


def test_remote_code_dual_encoders_need_consent(tmp_path: Path) -> None:
    """A jina-clip-style folder (its own model code, ``auto_map``) loads only with trust_remote_code=True."""
    folder = build_tiny_dual_encoder(tmp_path / "base", WORDS, kind="clip")
    (folder / "modeling_tiny_dual.py").write_text(REMOTE_CODE)
    config = {
        "model_type": "tiny_dual",
        "architectures": ["TinyDual"],
        "auto_map": {
            "AutoConfig": "modeling_tiny_dual.TinyDualConfig",
            "AutoModel": "modeling_tiny_dual.TinyDual",
        },
        "vocab_size": 64,
        "dim": 8,
    }
    (folder / "config.json").write_text(json.dumps(config))
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    weights = {
        "embed.weight": torch.randn(64, 8, generator=gen),
        "pixels.weight": torch.randn(8, 3, generator=gen),
        "pixels.bias": torch.zeros(8),
    }
    (folder / "model.safetensors").unlink()
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="pass trust_remote_code=True if you trust that code"):
        CLIPEncoder(folder, local_files_only=True, device="cpu")
    ef = CLIPEmbeddingFunction(folder, trust_remote_code=True)
    vectors = ef(["red fox", _array(7)])  # type: ignore[arg-type]
    assert len(vectors) == 2 and len(vectors[0]) == 8
    assert ef.get_config()["trust_remote_code"] is True
