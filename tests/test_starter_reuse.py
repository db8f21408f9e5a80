"""StarterScorer reuses the first stage's work: stored passage embeddings, compact class lists (no weights).

The fake models below count what they compute, so each test can tell reuse from recomputation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mm_rerank_components import Candidate, MultimodalReranker, Precomputed, Query
from mm_rerank_components.reranker import ScoreCache
from mm_rerank_components.scorers.base import BaseScorer
from mm_rerank_components.scorers.starter import StarterScorer
from mm_rerank_components.starter.precomputed import (
    DEFAULT_COMPACT_K,
    IMAGE_CLASSES,
    TEXT_EMBEDDING,
    compact_classes,
    expand_classes,
    image_producer,
    image_signal,
    parse_classes,
    text_producer,
    text_signal,
)


def _seed(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=4).digest(), "big")


class FakeModels:
    """Stands in for StarterModels: deterministic vectors, and a record of what it computed."""

    dim = 384
    device = "cpu"
    n_views = 1
    image_model = "efficientnet-lite0"
    text_label = "fake-text"
    image_label = "fake-image"
    max_text_chars = 4096
    text_batch_size = 64
    image_batch_size = 32

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.images = 0
        rng = np.random.default_rng(0)
        self._classes = rng.normal(size=(1000, 384)).astype(np.float32)

    def class_embeddings(self, style: str | None = None) -> np.ndarray:
        return self._classes

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        out = []
        for t in texts:
            v = np.random.default_rng(_seed(t.encode())).normal(size=384).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)

    def image_probabilities(self, images: Sequence[Any], n_views: int | None = None) -> np.ndarray:
        self.images += len(images)
        out = []
        for im in images:
            logits = np.random.default_rng(_seed(im.tobytes())).normal(scale=4.0, size=1000)
            p = np.exp(logits - logits.max())
            out.append(p / p.sum())
        return np.asarray(out, dtype=np.float32)


def _fake() -> Any:
    """A FakeModels typed as Any: it stands in for StarterModels."""
    return FakeModels()


def _picture(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (16, 12), colour)


def test_compact_classes_round_trip_and_errors() -> None:
    probs = np.random.default_rng(1).dirichlet(np.full(1000, 0.05))
    text = compact_classes(probs)
    pairs = parse_classes(text)
    assert len(pairs) == DEFAULT_COMPACT_K == 50
    assert [i for i, _ in pairs] == list(np.argsort(-probs)[:50])
    back = expand_classes(text)
    top = np.argsort(-probs)[:50]
    assert np.allclose(back[top], probs[top], rtol=1e-5) and np.count_nonzero(back) <= 50
    assert len(text) < 50 * 16  # fits Chroma metadata comfortably
    # the other accepted shapes
    assert np.array_equal(expand_classes({3: 0.5}), expand_classes([(3, 0.5)]))
    with pytest.raises(
        ValueError, match=r"takes one picture's 1000 class probabilities, got shape \(2, 1000\)"
    ):
        compact_classes(np.zeros((2, 1000)))
    with pytest.raises(ValueError, match="k must be an int between 1 and 1000, got 0"):
        compact_classes(probs, k=0)
    with pytest.raises(ValueError, match="bad class entry"):
        parse_classes("3:0.5,x")
    with pytest.raises(ValueError, match="index must be 0..999"):
        parse_classes("1000:0.5")
    with pytest.raises(ValueError, match="listed twice"):
        parse_classes("3:0.5,3:0.1")


def test_producers_name_the_model_files_and_settings() -> None:
    from mm_rerank_components.starter import StarterModels

    lite0, lite2 = StarterModels(), StarterModels(image_model="efficientnet-lite2")
    assert text_producer(lite0) == text_producer(lite2) == "starter-text:minilm-l6-v2:b1"
    assert image_producer(lite0) != image_producer(lite2)
    assert image_producer(lite0, n_views=3) != image_producer(lite0)
    assert image_producer(lite0).startswith("starter-image:efficientnet-lite0")
    scorer = StarterScorer(models=lite0)
    assert scorer.text_producer == text_producer(lite0) and scorer.image_producer == image_producer(lite0)
    assert isinstance(scorer, BaseScorer) and scorer.reuses == {TEXT_EMBEDDING, IMAGE_CLASSES}


def test_stored_passage_embeddings_are_used_only_from_the_same_producer() -> None:
    models = _fake()
    scorer = StarterScorer(models=models)
    passages = ["Foxes live in dens.", "Owls hunt at night."]
    stored = models.embed_texts(passages)
    models.texts.clear()
    reused = [
        Candidate(f"p{i}", text=t, precomputed={TEXT_EMBEDDING: text_signal(models, t, stored[i])})
        for i, t in enumerate(passages)
    ]
    got = scorer.score(Query("where do foxes live"), reused)
    assert models.texts == ["where do foxes live"]  # only the query was embedded
    fresh = StarterScorer(models=_fake()).score(
        Query("where do foxes live"), [Candidate("p", text=t) for t in passages]
    )
    assert got == pytest.approx(fresh, abs=1e-6)

    # the stored vector really is what counts: a different one under the right producer changes the score
    other = [Candidate("x", text=passages[0], precomputed={"e": text_signal(models, passages[0], stored[1])})]
    assert scorer.score(Query("where do foxes live"), other)[0] == pytest.approx(fresh[1], abs=1e-6)

    # another model's vector is never used
    models.texts.clear()
    foreign = Precomputed(TEXT_EMBEDDING, "clip:ViT-B-32", "text:whatever", tuple(stored[1]))
    scorer2 = StarterScorer(models=models)
    out = scorer2.score(Query("q2"), [Candidate("y", text=passages[0], precomputed={"e": foreign})])
    assert passages[0] in models.texts and out[0] != pytest.approx(fresh[1], abs=1e-6)
    # a malformed vector is ignored, not trusted
    bad = Precomputed(TEXT_EMBEDDING, scorer.text_producer, "text:x", (0.0, 1.0))
    assert np.isfinite(scorer.score(Query("q3"), [Candidate("z", text="Bees.", precomputed={"e": bad})])[0])


def test_compact_classes_give_the_scores_of_a_fresh_classification() -> None:
    models = _fake()
    pictures = [_picture((200, 10, 10)), _picture((10, 200, 10)), _picture((10, 10, 200))]
    fresh = StarterScorer(models=_fake(), image_cache_size=0).score(
        Query("a red apple"), [Candidate(f"i{i}", image=p) for i, p in enumerate(pictures)]
    )
    probs = models.image_probabilities(pictures)
    models.images = 0
    scorer = StarterScorer(models=models, image_cache_size=0)
    reused = [
        Candidate(
            f"i{i}", image=p, precomputed={IMAGE_CLASSES: image_signal(models, p, compact_classes(probs[i]))}
        )
        for i, p in enumerate(pictures)
    ]
    assert scorer.score(Query("a red apple"), reused) == pytest.approx(fresh, abs=1e-5)
    assert models.images == 0  # no picture went through the classifier
    # a list shorter than the scorer reads (class_k=50) is not enough: classify again
    short = [
        Candidate(
            "s",
            image=pictures[0],
            precomputed={"c": image_signal(models, pictures[0], compact_classes(probs[0], 10))},
        )
    ]
    assert scorer.score(Query("a red apple"), short) == pytest.approx(fresh[:1], abs=1e-5)
    assert models.images == 1
    # other settings (3 views) made it: classify again
    other = Precomputed(IMAGE_CLASSES, image_producer(models, n_views=3), "x", compact_classes(probs[0]))
    scorer.score(Query("a red apple"), [Candidate("o", image=pictures[0], precomputed={"c": other})])
    assert models.images == 2


def test_through_the_reranker_the_content_key_guards_reuse_and_the_query_is_embedded_once() -> None:
    models = _fake()
    scorer = StarterScorer(models=models)
    picture, other_picture = _picture((1, 2, 3)), _picture((250, 250, 0))
    probs = models.image_probabilities([picture, other_picture])
    passage = "Foxes live in dens."
    stored = models.embed_texts([passage])[0]
    models.texts.clear()
    models.images = 0
    candidates = [
        Candidate("t", text=passage, precomputed={"e": text_signal(models, passage, stored)}),
        Candidate(
            "i", image=picture, precomputed={"c": image_signal(models, picture, compact_classes(probs[0]))}
        ),
        # the classes of another picture, attached to this one: the core drops them (content key)
        Candidate(
            "wrong",
            image=other_picture,
            text="A yellow square.",
            precomputed={"c": image_signal(models, picture, compact_classes(probs[0]))},
        ),
    ]
    query_picture = _picture((9, 9, 9))
    MultimodalReranker(scorer).rerank(Query("a fox", image=query_picture), candidates)
    # three modality groups, one query: its text embedded once, its picture classified once
    assert models.texts.count("a fox") == 1
    assert models.images == 2  # the query picture and the picture whose stored classes were not its own
    assert passage not in models.texts


def test_different_settings_never_share_a_cache_entry() -> None:
    cache = ScoreCache(max_entries=100)
    query, candidates = Query("a fox"), [Candidate("p", image=_picture((120, 60, 0)))]
    without = StarterScorer(models=_fake(), class_match_weight=0.0)
    with_match = StarterScorer(models=_fake(), class_match_weight=0.5)
    a = MultimodalReranker(without, cache=cache).rerank(query, candidates)[0].raw_score
    b = MultimodalReranker(with_match, cache=cache).rerank(query, candidates)[0].raw_score
    assert a != b and len(cache) == 2
    names = {
        StarterScorer(models=_fake(), **kw).name
        for kw in (
            {},
            {"top_k": 10},
            {"class_k": 100},
            {"n_views": 2},
            {"prompt_styles": ("name",)},
            {"class_match_weight": 0.2},
            {"class_match_temperature": 0.1},
            {"caption_weight": 0.3},
            {"window_weight": 0.2},
            {"window_chars": 1000},
        )
    }
    assert len(names) == 10
    with pytest.raises(ValueError, match=r"class_k must be an int between top_k \(20\) and 1000, got 5"):
        StarterScorer(models=_fake(), class_k=5)
    with pytest.raises(ValueError, match="window_chars must be a positive int"):
        StarterScorer(models=_fake(), window_chars=0)


def test_long_passages_are_bounded_before_windowing_and_embedding() -> None:
    models = _fake()
    scorer = StarterScorer(models=models, text_cache_size=0)
    sentence = "The quick brown fox jumps over the lazy dog. "
    short_text = sentence * 500  # 22 KB
    huge = sentence * 25_000  # 1.1 MB
    scorer.score(Query("q1"), [Candidate("s", text=short_text)])
    short_chars = sum(len(t) for t in models.texts)
    models.texts.clear()
    scorer.score(Query("q2"), [Candidate("h", text=huge)])
    assert sum(len(t) for t in models.texts) == short_chars  # a 1 MB passage costs what a 22 KB one does
    assert max(len(t) for t in models.texts) <= models.max_text_chars
    assert short_chars < 17 * models.max_text_chars + 10  # whole passage + at most 16 windows + query


def test_query_features_are_remembered_per_query_picture_object() -> None:
    models = _fake()
    scorer = StarterScorer(models=models, image_cache_size=0)
    candidates = [Candidate("c", image=_picture((10, 10, 10)))]
    red, blue = _picture((255, 0, 0)), _picture((0, 0, 255))
    a = scorer.score(Query("a", image=red), candidates)
    classified = models.images
    assert scorer.score(Query("a", image=red), candidates) == a  # same picture object: not classified again
    assert models.images == classified + 1  # only the candidate (its cache is off)
    b = scorer.score(Query("a", image=blue), candidates)  # same text, another picture: computed afresh
    assert b != a and models.images == classified + 3
