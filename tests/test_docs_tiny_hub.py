"""The tiny stand-ins docs/scorers.md runs against (issue 23): the Hugging Face cache layout
``save_to_hub_cache`` writes resolves offline by hub id, and the tiny Qwen2.5-VL scores text and picture
candidates through the VLM scorer (random weights: plumbing, never quality)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mm_rerank_components import Candidate, Query
from mm_rerank_components.testing import (
    DOCS_WORDS,
    build_tiny_colbert,
    build_tiny_qwen_vl,
    save_to_hub_cache,
)

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow  # transformers and two tiny models: about 9 s


def test_hub_cache_layout_resolves_offline_by_id(tmp_path: Path) -> None:
    from huggingface_hub import snapshot_download
    from transformers import AutoTokenizer

    snapshot = save_to_hub_cache(tmp_path, "org/tiny-colbert", lambda f: build_tiny_colbert(f, ["fox"]))
    cache = tmp_path / "hub"
    assert (cache / "models--org--tiny-colbert" / "refs" / "main").read_text() == snapshot.name
    found = snapshot_download("org/tiny-colbert", cache_dir=cache, local_files_only=True)
    assert Path(found) == snapshot
    tokenizer = AutoTokenizer.from_pretrained("org/tiny-colbert", cache_dir=cache, local_files_only=True)
    assert tokenizer.convert_tokens_to_ids("fox") != tokenizer.unk_token_id


def test_tiny_qwen2_5_vl_scores_text_and_pictures(tmp_path: Path) -> None:
    from mm_rerank_components.scorers import VLMYesNoScorer

    folder = build_tiny_qwen_vl(tmp_path / "qwen2_5", list(DOCS_WORDS), kind="qwen2_5_vl")
    scorer = VLMYesNoScorer(str(folder), local_files_only=True, device="cpu")
    picture = Image.new("RGB", (64, 48), (220, 90, 20))
    candidates = [
        Candidate("p1", text="Red foxes pounce on rodents"),
        Candidate("img1", image=picture),
        Candidate("img2", image=picture, text="A snowy owl"),
    ]
    scores = scorer.score(Query("how do red foxes hunt in snow ?"), candidates)
    assert len(scores) == 3 and all(0.0 < s < 1.0 for s in scores)
    assert len({round(s, 6) for s in scores}) == 3  # three different pairs, three different scores
