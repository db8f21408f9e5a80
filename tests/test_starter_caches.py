"""The starter stack's caches: class-prompt embeddings on disk, text embeddings in the scorer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from mm_rerank_components.scorers.starter import StarterScorer
from mm_rerank_components.starter import models as models_mod
from mm_rerank_components.types import Candidate, Query


class CountingEncoder:
    def __init__(self) -> None:
        self.encoded: list[str] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded.extend(texts)
        rng = np.random.default_rng(len(self.encoded))
        emb = rng.normal(size=(len(texts), 384)).astype(np.float32)
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def _backend(model_dir: Path, encoder: CountingEncoder) -> models_mod._Backend:
    backend = models_mod._Backend("cpu", model_dir, None)
    backend._text = encoder  # type: ignore[assignment]
    return backend


def test_class_embeddings_are_cached_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MM_RERANK_MODEL_CACHE", str(tmp_path / "cache"))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    first = CountingEncoder()
    a = _backend(model_dir, first).class_embeddings("name")
    assert len(first.encoded) == 1000 and a.shape == (1000, 384)
    assert len(list((tmp_path / "cache").glob("class_embeddings-*.npy"))) == 1

    second = CountingEncoder()
    b = _backend(model_dir, second).class_embeddings("name")
    assert second.encoded == [] and np.array_equal(a, b)

    # a changed model file means different embeddings: the old cache entry must not be reused
    os.utime(model_dir / "config.json", ns=(1, 1))
    third = CountingEncoder()
    _backend(model_dir, third).class_embeddings("name")
    assert len(third.encoded) == 1000


def test_class_cache_can_be_turned_off_and_ignores_corrupt_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    monkeypatch.setenv("MM_RERANK_MODEL_CACHE", "off")
    _backend(model_dir, CountingEncoder()).class_embeddings("name")
    assert models_mod.class_cache_dir() is None
    monkeypatch.setenv("MM_RERANK_MODEL_CACHE", str(tmp_path / "cache"))
    _backend(model_dir, CountingEncoder()).class_embeddings("name")
    (cached,) = (tmp_path / "cache").glob("*.npy")
    cached.write_bytes(b"not numpy")
    enc = CountingEncoder()
    _backend(model_dir, enc).class_embeddings("name")
    assert len(enc.encoded) == 1000


class FakeModels:
    """Stands in for StarterModels: counts the texts it embeds."""

    dim = 384
    device = "cpu"
    n_views = 1
    text_label = "fake-text"
    image_label = "fake-image"
    image_model = "efficientnet-lite0"
    max_text_chars = 4096
    text_batch_size = 64

    def __init__(self) -> None:
        self.encoder = CountingEncoder()
        self._classes = CountingEncoder().encode([f"class {i}" for i in range(1000)])

    def class_embeddings(self, style: str | None = None) -> np.ndarray:
        return self._classes

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        vectors = []
        for t in texts:  # deterministic per text, so cached and fresh embeddings agree
            rng = np.random.default_rng(abs(hash(t)) % 2**32)
            v = rng.normal(size=384).astype(np.float32)
            vectors.append(v / np.linalg.norm(v))
        self.encoder.encoded.extend(texts)
        return np.stack(vectors)


def test_scorer_embeds_each_text_once_across_queries() -> None:
    models = FakeModels()
    scorer = StarterScorer(models=models)  # type: ignore[arg-type]
    passages = [Candidate(f"p{i}", text=f"Passage {i}. It has two sentences.") for i in range(5)]
    first = scorer.score(Query("first question"), passages)
    embedded = len(models.encoder.encoded)
    again = scorer.score(Query("first question"), passages)
    assert again == first and len(models.encoder.encoded) == embedded
    scorer.score(Query("second question"), passages)
    assert models.encoder.encoded[embedded:] == ["second question"]

    uncached = StarterScorer(models=FakeModels(), text_cache_size=0)  # type: ignore[arg-type]
    assert uncached.score(Query("first question"), passages) == first
    with pytest.raises(ValueError, match="text_cache_size must be an int >= 0"):
        StarterScorer(models=models, text_cache_size=-1)  # type: ignore[arg-type]
