"""VLMYesNoScorer on a tiny random Qwen2-VL built from a config, saved and loaded back offline.

Random weights prove the plumbing (prompts, label tokens, padding, batching), never the quality.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from mm_rerank_components import Candidate, MultimodalReranker, Query  # noqa: E402
from mm_rerank_components.scorers.vlm import (  # noqa: E402
    VLMPrompt,
    VLMYesNoScorer,
    label_token_id,
)
from mm_rerank_components.testing import QWEN_CHAT_TEMPLATE  # noqa: E402

WORDS = [f"w{i}" for i in range(60)] + ["fox", "red", "snow", "owl", "den", "a", "the", "caption"]


def build_tiny_qwen2vl(folder: Path) -> Path:
    """A ~0.1M-parameter Qwen2-VL with a word-level tokenizer and the Qwen chat special tokens."""
    from mm_rerank_components.testing import build_tiny_qwen_vl

    return build_tiny_qwen_vl(folder, ["True", "False", *WORDS], label_scale=0.3)


def _image(width: int, height: int, seed: int) -> Image.Image:
    gen = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(height, width, 3, generator=gen) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels, mode="RGB")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


@pytest.fixture(scope="module")
def scorer(tiny_path: Path) -> VLMYesNoScorer:
    return VLMYesNoScorer(str(tiny_path), local_files_only=True, device="cpu", dtype="float32", batch_size=8)


def mixed_candidates() -> list[Candidate]:
    texts = [
        "fox",
        "a red fox in the snow w1 w2 w3 w4 w5",
        "owl " * 30,
        "the den w7",
        "w10 w11 w12 w13 w14 w15 w16 w17 w18 w19 w20 w21",
    ]
    out = [Candidate(f"t{i}", text=t) for i, t in enumerate(texts)]
    sizes = [(56, 56), (100, 60), (30, 90), (140, 140), (28, 28)]
    out += [Candidate(f"i{i}", image=_image(w, h, i)) for i, (w, h) in enumerate(sizes)]
    out += [Candidate("ti0", text="caption red fox", image=_image(70, 50, 11))]
    out += [Candidate("ti1", text="caption owl w3 w4 w5 w6", image=_image(40, 80, 12))]
    return out


def test_loads_from_local_folder_by_str_and_path(tiny_path: Path, scorer: VLMYesNoScorer) -> None:
    assert type(scorer.model).__name__ == "Qwen2VLForConditionalGeneration"
    again = VLMYesNoScorer(tiny_path, local_files_only=True, device="cpu", dtype="float32")
    assert again.name == scorer.name
    assert scorer.name.startswith("vlm-yesno:tiny-qwen2vl")
    assert scorer.outputs_probabilities is True


def test_prompt_for_text_candidate_has_no_image(scorer: VLMYesNoScorer) -> None:
    text, images = scorer.build_prompt(Query("red fox"), Candidate("t", text="a fox den"))
    assert images == []
    assert "<|image_pad|>" not in text
    assert text.startswith("<|im_start|>user\nJudge whether")
    assert "Query: red fox\nDocument: a fox den\nIs the document relevant" in text
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_prompt_for_image_and_captioned_image(scorer: VLMYesNoScorer) -> None:
    image = _image(60, 60, 1)
    text, images = scorer.build_prompt(Query("red fox"), Candidate("i", image=image))
    assert images == [image]
    assert "Document: <|vision_start|><|image_pad|><|vision_end|>\nIs the document" in text
    text, images = scorer.build_prompt(Query("red fox"), Candidate("ti", image=image, text="a caption"))
    assert len(images) == 1
    assert "Document: <|vision_start|><|image_pad|><|vision_end|>\na caption\nIs" in text


def test_prompt_with_image_query_keeps_image_order(scorer: VLMYesNoScorer) -> None:
    q_image, c_image = _image(56, 56, 1), _image(84, 56, 2)
    text, images = scorer.build_prompt(Query(text="fox", image=q_image), Candidate("i", image=c_image))
    assert images == [q_image, c_image]
    assert text.count("<|image_pad|>") == 2
    assert "Query: <|vision_start|><|image_pad|><|vision_end|>fox\n" in text


def test_monoqwen_preset_puts_document_first(tiny_path: Path) -> None:
    mono = VLMYesNoScorer(tiny_path, prompt="monoqwen", local_files_only=True, device="cpu", dtype="float32")
    text, _ = mono.build_prompt(Query("red fox"), Candidate("i", image=_image(56, 56, 3)))
    assert "user\n<|vision_start|><|image_pad|><|vision_end|>Assert the relevance" in text
    assert text.rstrip("\n").endswith("The query is: red fox<|im_end|>\n<|im_start|>assistant")
    tok = mono._inputs.tokenizer
    assert mono.positive_ids == [tok.convert_tokens_to_ids("True")]
    assert mono.negative_ids == [tok.convert_tokens_to_ids("False")]


def test_label_token_lookup(scorer: VLMYesNoScorer) -> None:
    tok = scorer._inputs.tokenizer
    assert label_token_id(tok, "yes") == tok.convert_tokens_to_ids("yes")
    assert scorer.positive_ids == [tok.convert_tokens_to_ids("yes")]
    assert scorer.negative_ids == [tok.convert_tokens_to_ids("no")]
    with pytest.raises(ValueError, match=r"label 'yes no' is 2 tokens \['yes', 'no'\]"):
        label_token_id(tok, "yes no")
    with pytest.raises(ValueError, match="not in this tokenizer's vocabulary"):
        label_token_id(tok, "maybe")


def test_multi_token_label_fails_at_construction(tiny_path: Path) -> None:
    prompt = VLMPrompt(template="{query} {document}", positive_label="very yes", negative_label="no")
    with pytest.raises(ValueError, match="pick a label that is a single token"):
        VLMYesNoScorer(tiny_path, prompt=prompt, local_files_only=True, device="cpu", dtype="float32")


def test_prompt_validation() -> None:
    with pytest.raises(ValueError, match=r"must contain \{document\} exactly once"):
        VLMPrompt(template="Query: {query}")
    with pytest.raises(ValueError, match="both positive and negative"):
        VLMPrompt(template="{query}{document}", positive_label="yes", negative_label=("no", "yes"))


def test_bad_settings_fail_clearly(tiny_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown prompt preset 'nope'"):
        VLMYesNoScorer(tiny_path, prompt="nope", local_files_only=True)
    with pytest.raises(ValueError, match="max_pixels must be at least 784"):
        VLMYesNoScorer(tiny_path, max_pixels=10, local_files_only=True)
    with pytest.raises(ValueError, match="could not load the vision-language model"):
        VLMYesNoScorer(tiny_path / "missing", local_files_only=True, device="cpu")


def test_scores_are_probabilities_of_yes_against_no(scorer: VLMYesNoScorer) -> None:
    query = Query("red fox")
    candidates = mixed_candidates()
    scores = scorer.score(query, candidates)
    assert len(scores) == len(candidates)
    assert all(0.0 < s < 1.0 and math.isfinite(s) for s in scores)
    assert max(scores) - min(scores) > 0.05  # the scores depend on the candidate
    # The same number straight from the model, one unpadded pair at a time.
    for i in (0, 6, 11):
        text, images = scorer.build_prompt(query, candidates[i])
        batch = scorer._inputs.encode([text], images)
        with torch.inference_mode():
            logits = scorer.model(**batch).logits[0, -1]
        pair = torch.softmax(logits[[scorer.positive_ids[0], scorer.negative_ids[0]]].float(), dim=-1)
        assert scores[i] == pytest.approx(float(pair[0]), abs=1e-5)


@pytest.mark.slow
def test_batch_invariance_and_order(scorer: VLMYesNoScorer, tiny_path: Path) -> None:
    query = Query("red fox in the snow")
    candidates = mixed_candidates()
    batched = scorer.score(query, candidates)
    one_by_one = VLMYesNoScorer(tiny_path, local_files_only=True, device="cpu", dtype="float32", batch_size=1)
    single = one_by_one.score(query, candidates)
    for a, b in zip(batched, single, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    reversed_scores = scorer.score(query, candidates[::-1])[::-1]
    for a, b in zip(batched, reversed_scores, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_image_query_batch_invariance(scorer: VLMYesNoScorer, tiny_path: Path) -> None:
    query = Query(text="fox", image=_image(56, 84, 99))
    candidates = mixed_candidates()[3:9]
    batched = scorer.score(query, candidates)
    scorer_b1 = VLMYesNoScorer(tiny_path, local_files_only=True, device="cpu", dtype="float32", batch_size=1)
    for a, b in zip(batched, scorer_b1.score(query, candidates), strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_pixel_budget_downscales_large_images(tiny_path: Path) -> None:
    small = VLMYesNoScorer(
        tiny_path, max_pixels=56 * 56, local_files_only=True, device="cpu", dtype="float32"
    )
    _, images = small.build_prompt(Query("fox"), Candidate("i", image=_image(400, 200, 5)))
    assert images[0].size == (400, 200)  # not resized here: the Qwen preprocessing resizes once
    grid = small._encode(small.prepare(Query("fox"), [Candidate("i", image=images[0])]), [0])[
        "image_grid_thw"
    ]
    _, rows, cols = grid[0].tolist()
    assert rows * cols * 14 * 14 <= 56 * 56
    assert cols / rows == pytest.approx(2.0, rel=0.1)
    assert small.name != VLMYesNoScorer(tiny_path, local_files_only=True, device="cpu", dtype="float32").name


def test_long_text_is_cut_to_max_text_tokens(tiny_path: Path) -> None:
    short = VLMYesNoScorer(tiny_path, max_text_tokens=5, local_files_only=True, device="cpu", dtype="float32")
    text, _ = short.build_prompt(Query("fox"), Candidate("t", text=" ".join(WORDS[:40])))
    assert "Document: w0 w1 w2 w3 w4\nIs" in text


def test_rejects_undecoded_images(scorer: VLMYesNoScorer) -> None:
    with pytest.raises(TypeError, match="expects decoded PIL images"):
        scorer.score(Query("fox"), [Candidate("i", image="photo.jpg")])


def test_reranker_uses_scores_as_probabilities(scorer: VLMYesNoScorer) -> None:
    candidates = mixed_candidates()
    ranked = MultimodalReranker(scorer).rerank(Query("red fox"), candidates)
    assert len(ranked) == len(candidates)
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    for r in ranked:
        assert r.score == pytest.approx(r.raw_score)  # no calibration applied to probabilities


def test_empty_candidates(scorer: VLMYesNoScorer) -> None:
    assert scorer.score(Query("fox"), []) == []


class _WrappedProcessor:
    """An AutoProcessor-shaped object (``tokenizer`` + ``__call__(text=, images=)``) for the generic path."""

    def __init__(self, scorer: VLMYesNoScorer) -> None:
        self.tokenizer = scorer._inputs.tokenizer
        self._inner = scorer._inputs
        self.calls = 0

    def __call__(self, text: list[str], images: list[Image.Image] | None = None, **kwargs: object) -> dict:
        assert kwargs == {"padding": True, "return_tensors": "pt"}
        self.calls += 1
        return self._inner.encode(text, images or [])


def test_ready_model_and_processor_path(scorer: VLMYesNoScorer) -> None:
    processor = _WrappedProcessor(scorer)
    generic = VLMYesNoScorer(model=scorer.model, processor=processor, device="cpu", name="generic")
    assert generic.name == "generic"
    query, candidates = Query("red fox"), mixed_candidates()
    for a, b in zip(generic.score(query, candidates), scorer.score(query, candidates), strict=True):
        assert a == pytest.approx(b, abs=1e-5)
    assert processor.calls == 2  # 12 candidates in micro-batches of 8
    with pytest.raises(ValueError, match="also pass processor="):
        VLMYesNoScorer(model=scorer.model, device="cpu")


def test_chat_template_kept_beside_the_processor(tiny_path: Path, tmp_path: Path) -> None:
    import json
    import shutil

    folder = tmp_path / "processor-template"
    shutil.copytree(tiny_path, folder)
    (folder / "chat_template.jinja").unlink()
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": QWEN_CHAT_TEMPLATE}))
    scorer = VLMYesNoScorer(folder, local_files_only=True, device="cpu", dtype="float32")
    text, _ = scorer.build_prompt(Query("fox"), Candidate("t", text="den"))
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    (folder / "chat_template.json").unlink()
    with pytest.raises(ValueError, match="has no chat template"):
        VLMYesNoScorer(folder, local_files_only=True, device="cpu", dtype="float32")


@pytest.mark.parametrize("bounds", [(28 * 28, 112 * 112), (56 * 56, 28 * 28 * 1280)])
def test_qwen_pixels_match_the_image_processor(bounds: tuple[int, int]) -> None:
    from mm_rerank_components.scorers._qwen_vision import QwenPixels

    processor = transformers.Qwen2VLImageProcessor(min_pixels=bounds[0], max_pixels=bounds[1])
    assert QwenPixels.supports(processor)
    pixels = QwenPixels(processor)
    assert (pixels.min_pixels, pixels.max_pixels) == bounds
    sizes = [(56, 56), (100, 60), (30, 90), (140, 140), (28, 28), (448, 448), (333, 211), (20, 500)]
    images = [_image(w, h, i) for i, (w, h) in enumerate(sizes)]
    ours, grid = pixels(images, torch.device("cpu"))
    theirs = processor(images=images, return_tensors="pt")
    assert grid.tolist() == theirs["image_grid_thw"].tolist()
    assert ours.shape == theirs["pixel_values"].shape
    assert torch.allclose(ours, theirs["pixel_values"].float(), atol=1e-5)


def test_batches_keep_kinds_apart_and_even(scorer: VLMYesNoScorer) -> None:
    prompts = [scorer.build_prompt(Query("fox"), c) for c in mixed_candidates()]  # 5 text, 7 with an image
    prepared = scorer.prepare(Query("fox"), mixed_candidates())
    plan = scorer._plan(prepared)
    assert sorted(i for chunk in plan for i in chunk) == list(range(len(prompts)))
    assert [len(chunk) for chunk in plan] == [5, 7]  # batch_size 8: 5 texts, then 7 with an image
    for chunk in plan:
        assert len({len(prompts[i][1]) for i in chunk}) == 1
    many = prepared[:1] * 50
    assert [len(c) for c in VLMYesNoScorer._plan(scorer, many)] == [8, 7, 7, 7, 7, 7, 7]


@pytest.fixture(scope="module")
def qwen3_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mm_rerank_components.testing import build_tiny_qwen_vl

    return build_tiny_qwen_vl(
        tmp_path_factory.mktemp("tiny-qwen3-vl"), WORDS, kind="qwen3_vl", label_scale=0.05
    )


def test_qwen3_vl_reranker_prompt_labels_and_batching(qwen3_path: Path) -> None:
    kw = {"prompt": "qwen3-vl-reranker", "local_files_only": True, "device": "cpu", "dtype": "float32"}
    scorer = VLMYesNoScorer(qwen3_path, batch_size=8, **kw)
    assert type(scorer.model).__name__ == "Qwen3VLForConditionalGeneration"
    text, images = scorer.build_prompt(
        Query("red fox"), Candidate("c", text="a den", image=_image(40, 60, 1))
    )
    assert text.startswith("<|im_start|>system\nJudge whether the Document meets the requirements")
    assert "<Query>: red fox\n<Document>: <|vision_start|><|image_pad|><|vision_end|>\na den" in text
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") and len(images) == 1
    vocab = scorer._inputs.tokenizer.get_vocab()
    assert scorer.positive_ids == [vocab["yes"]] and scorer.negative_ids == [vocab["no"]]
    query, candidates = Query("red fox"), mixed_candidates()
    batched = scorer.score(query, candidates)
    assert all(0.0 < s < 1.0 for s in batched)
    single = VLMYesNoScorer(qwen3_path, batch_size=1, **kw).score(query, candidates)
    for a, b in zip(batched, single, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    # image query too: the query's picture comes first in the user turn
    image_query = Query(text="fox", image=_image(48, 48, 7))
    one = VLMYesNoScorer(qwen3_path, batch_size=1, **kw).score(image_query, candidates[3:8])
    for a, b in zip(scorer.score(image_query, candidates[3:8]), one, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_score_many_equals_single_calls(scorer: VLMYesNoScorer) -> None:
    mixed = mixed_candidates()
    calls = [
        (Query("red fox"), mixed[:6]),
        (Query("owl"), []),
        (Query("snow w3", image=_image(60, 40, 21)), mixed[4:]),
    ]
    together = scorer.score_many(calls)
    alone = [scorer.score(q, c) for q, c in calls]
    assert [len(s) for s in together] == [6, 0, len(mixed) - 4]
    for a, b in zip(together, alone, strict=True):
        assert a == pytest.approx(b, abs=1e-6)


@pytest.mark.parametrize("budget", [56 * 56, 112 * 112, 448 * 448])
def test_one_resize_gives_the_processors_own_pixels(
    tiny_path: Path, budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24 item 3: each picture is resized once, and the pixels the model reads equal those of
    Qwen2VLImageProcessor with its max_pixels set to the scorer's budget, from the original picture."""
    scorer = VLMYesNoScorer(
        tiny_path, max_pixels=budget, local_files_only=True, device="cpu", dtype="float32"
    )
    photos = [_image(640, 480, 1), _image(480, 640, 2), _image(300, 200, 3)]
    resizes: list[tuple[int, int]] = []
    original = Image.Image.resize

    def counting(self: Image.Image, size: tuple[int, int], *args: object, **kwargs: object) -> Image.Image:
        resizes.append(tuple(size))  # type: ignore[arg-type]
        return original(self, size, *args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "resize", counting)
        prepared = scorer.prepare(Query("fox"), [Candidate(f"p{i}", image=p) for i, p in enumerate(photos)])
        ours = scorer._encode(prepared, range(len(photos)))
    ip = scorer._inputs.image_processor  # type: ignore[union-attr]
    from mm_rerank_components.scorers._qwen_vision import _pixel_bounds

    min_pixels, max_pixels = _pixel_bounds(ip)
    processor = transformers.Qwen2VLImageProcessor(
        min_pixels=min_pixels,
        max_pixels=min(max_pixels, budget),  # the stricter of the two budgets
        patch_size=ip.patch_size,
        merge_size=ip.merge_size,
    )
    theirs = processor(images=photos, return_tensors="pt")
    assert len(resizes) <= len(photos)  # at most one resize per picture
    assert ours["image_grid_thw"].tolist() == theirs["image_grid_thw"].tolist()
    assert torch.allclose(ours["pixel_values"].float(), theirs["pixel_values"].float(), atol=1e-5)
