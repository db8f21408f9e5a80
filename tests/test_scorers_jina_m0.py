"""JinaRerankerM0Scorer: real remote-code loading on a tiny model folder, and the split-by-type merge.

The tiny model ships its own code (config ``auto_map``) exactly as jina-reranker-m0 does, so the test runs
the real ``AutoModel.from_pretrained(..., trust_remote_code=True, local_files_only=True)`` path. Its
``compute_score`` is a deterministic stand-in that records each call.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from mm_rerank_components import Candidate, MultimodalReranker, Query  # noqa: E402
from mm_rerank_components.scorers.jina_m0 import JinaRerankerM0Scorer  # noqa: E402

CONFIG_CODE = textwrap.dedent(
    """
    from transformers import PretrainedConfig


    class TinyRankerConfig(PretrainedConfig):
        model_type = "tiny_m0_ranker"

        def __init__(self, hidden=4, **kwargs):
            self.hidden = hidden
            super().__init__(**kwargs)
    """
)
MODEL_CODE = textwrap.dedent(
    """
    import torch
    from transformers import PreTrainedModel

    from .configuration_tiny import TinyRankerConfig


    class TinyRanker(PreTrainedModel):
        config_class = TinyRankerConfig
        calls = []

        def __init__(self, config):
            super().__init__(config)
            self.weight = torch.nn.Parameter(torch.ones(1))
            self.post_init()

        def _init_weights(self, module):
            pass

        def compute_score(self, pairs, batch_size=8, max_length=1024, query_type="text", doc_type="text"):
            type(self).calls.append((query_type, doc_type, len(pairs)))
            out = []
            for query, doc in pairs:
                if doc_type == "image":
                    value = sum(doc.convert("L").getdata()) / (255.0 * doc.size[0] * doc.size[1])
                else:
                    value = len(doc) / (len(doc) + 10.0)
                out.append(torch.sigmoid(self.weight * (4 * value - 2)).item())
            return out[0] if len(out) == 1 else out
    """
)


def build_tiny_remote_code_ranker(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "configuration_tiny.py").write_text(CONFIG_CODE)
    (folder / "modeling_tiny.py").write_text(MODEL_CODE)
    config = {
        "model_type": "tiny_m0_ranker",
        "architectures": ["TinyRanker"],
        "auto_map": {
            "AutoConfig": "configuration_tiny.TinyRankerConfig",
            "AutoModel": "modeling_tiny.TinyRanker",
        },
        "hidden": 4,
    }
    (folder / "config.json").write_text(json.dumps(config))
    from safetensors.torch import save_file

    save_file({"weight": torch.ones(1)}, str(folder / "model.safetensors"))
    return folder


def expected(doc_type: str, doc: object) -> float:
    if doc_type == "image":
        value = sum(doc.convert("L").getdata()) / (255.0 * doc.size[0] * doc.size[1])  # type: ignore[attr-defined]
    else:
        value = len(doc) / (len(doc) + 10.0)  # type: ignore[arg-type]
    return 1.0 / (1.0 + math.exp(-(4 * value - 2)))


def grey(level: int) -> Image.Image:
    return Image.new("RGB", (8, 8), (level, level, level))


def mixed() -> list[Candidate]:
    return [
        Candidate("t0", text="a red fox"),
        Candidate("i0", image=grey(30)),
        Candidate("t1", text="an owl in the snow at night"),
        Candidate("ti", text="fox", image=grey(220)),
        Candidate("i1", image=grey(200)),
    ]


@pytest.fixture(scope="module")
def ranker_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_remote_code_ranker(tmp_path_factory.mktemp("tiny-m0"))


@pytest.fixture(scope="module")
def scorer(ranker_path: Path) -> JinaRerankerM0Scorer:
    return JinaRerankerM0Scorer(ranker_path, trust_remote_code=True, local_files_only=True, device="cpu")


def test_remote_code_needs_explicit_consent(ranker_path: Path) -> None:
    with pytest.raises(ValueError, match="pass trust_remote_code=True if you trust that code"):
        JinaRerankerM0Scorer(ranker_path, local_files_only=True, device="cpu")


def test_loads_remote_code_offline(scorer: JinaRerankerM0Scorer) -> None:
    assert type(scorer.model).__name__ == "TinyRanker"
    assert scorer.outputs_probabilities is True
    assert scorer.name.startswith("jina-m0:tiny-m0")


def test_splits_by_type_and_merges_by_index(scorer: JinaRerankerM0Scorer) -> None:
    calls = type(scorer.model).calls
    calls.clear()
    candidates = mixed()
    scores = scorer.score(Query("fox"), candidates)
    # One call per document type; the captioned image goes to both ("max" mode).
    assert calls == [("text", "text", 3), ("text", "image", 3)]
    assert scores[0] == pytest.approx(expected("text", "a red fox"))
    assert scores[1] == pytest.approx(expected("image", grey(30)))
    assert scores[2] == pytest.approx(expected("text", "an owl in the snow at night"))
    assert scores[3] == pytest.approx(max(expected("text", "fox"), expected("image", grey(220))))
    assert scores[4] == pytest.approx(expected("image", grey(200)))


def test_text_image_modes(ranker_path: Path, scorer: JinaRerankerM0Scorer) -> None:
    candidate = [Candidate("ti", text="fox", image=grey(220))]
    t, i = expected("text", "fox"), expected("image", grey(220))
    for mode, want in (("mean", (t + i) / 2), ("image", i), ("text", t)):
        other = JinaRerankerM0Scorer(model=scorer.model, text_image_mode=mode)  # type: ignore[arg-type]
        assert other.score(Query("fox"), candidate) == [pytest.approx(want)]
    with pytest.raises(ValueError, match="text_image_mode must be"):
        JinaRerankerM0Scorer(model=scorer.model, text_image_mode="both")  # type: ignore[arg-type]


def test_image_query_uses_image_query_type(scorer: JinaRerankerM0Scorer) -> None:
    calls = type(scorer.model).calls
    calls.clear()
    scorer.score(Query(image=grey(10)), [Candidate("t", text="fox")])
    assert calls == [("image", "text", 1)]


def test_single_score_and_through_the_reranker(scorer: JinaRerankerM0Scorer) -> None:
    assert scorer.score(Query("fox"), [Candidate("t", text="fox")]) == [
        pytest.approx(expected("text", "fox"))
    ]
    ranked = MultimodalReranker(scorer).rerank(Query("fox"), mixed())
    assert ranked[0].id == "ti"
    assert all(r.score == pytest.approx(r.raw_score) for r in ranked)


def test_model_without_compute_score_is_rejected() -> None:
    with pytest.raises(ValueError, match="has no compute_score"):
        JinaRerankerM0Scorer(model=object())


class _WrongCount:
    def compute_score(self, pairs: list[list[object]], **kwargs: object) -> list[float]:
        return [0.5]


def test_wrong_number_of_scores_is_an_error() -> None:
    scorer = JinaRerankerM0Scorer(model=_WrongCount())
    with pytest.raises(ValueError, match="returned 1 scores for 2 text pairs"):
        scorer.score(Query("fox"), [Candidate("a", text="x"), Candidate("b", text="y")])


def test_raw_logits_are_not_called_probabilities(scorer: JinaRerankerM0Scorer) -> None:
    raw = JinaRerankerM0Scorer(model=_WrongCount(), compute_kwargs={"normalize_scores": False})
    assert raw.outputs_probabilities is False
    assert scorer.outputs_probabilities is True
