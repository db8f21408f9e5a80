"""The shared reranking core: ordering, validation, batching, cache, calibration, errors, async, cascade."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import http.server
import logging
import math
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from PIL import Image

from conftest import b64, png_bytes
from mm_rerank_components import (
    Candidate,
    CandidateError,
    CascadeReranker,
    ImageLoadError,
    ImageOptions,
    MultimodalReranker,
    Query,
    ScoreCache,
    ScorerError,
)
from mm_rerank_components.calibration import SigmoidCalibrator
from mm_rerank_components.media import image_key, text_key
from mm_rerank_components.scorers import BaseScorer, FakeScorer, ModalityRouter
from mm_rerank_components.types import Modality, Precomputed


class RecordingScorer:
    """Scores by a fixed table and records every call, to check batching and image decoding."""

    outputs_probabilities = True
    modalities: frozenset[Modality] = frozenset(("text", "image", "text+image"))

    def __init__(self, table: dict[str, float] | None = None, name: str = "recording") -> None:
        self.table = table or {}
        self.name = name
        self.calls: list[list[Candidate]] = []
        self.queries: list[Query] = []

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        self.calls.append(list(candidates))
        self.queries.append(query)
        return [self.table.get(c.id, 0.5) for c in candidates]


def texts(*pairs: tuple[str, str]) -> list[Candidate]:
    return [Candidate(id=i, text=t) for i, t in pairs]


# -- import hygiene ----------------------------------------------------------------------------------


def test_import_is_light() -> None:
    code = (
        "import sys, mm_rerank_components, mm_rerank_components.scorers, mm_rerank_components.integrations;"
        "heavy = {'torch', 'transformers', 'chromadb', 'llama_index', 'langchain_core', 'langchain'};"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- types ---------------------------------------------------------------------------------------------


def test_modality_is_derived(red_png: Path) -> None:
    assert Candidate("a", text="x").modality == "text"
    assert Candidate("b", image=str(red_png)).modality == "image"
    assert Candidate("c", text="cap", image=str(red_png)).modality == "text+image"
    assert Candidate("d", text="   ", image=str(red_png)).modality == "image"
    assert Query("q").modality == "text"
    assert Query(image=str(red_png)).modality == "image"
    # the derived modality survives copies and is no field (equality and repr are unchanged)
    c = Candidate("c", text="cap", image=str(red_png), metadata={"k": 1})
    for other in (pickle.loads(pickle.dumps(c)), copy.deepcopy(c), dataclasses.replace(c, text=None)):
        assert other.modality == ("image" if other.text is None else "text+image")
    assert pickle.loads(pickle.dumps(c)) == c
    assert "_modality" not in {f.name for f in dataclasses.fields(c)}
    assert repr(Candidate("r", text="x")) == (
        "Candidate(id='r', text='x', image=None, metadata={}, source=None, retrieval_score=None)"
    )


def test_empty_query_and_candidate_raise() -> None:
    with pytest.raises(ValueError, match="Query has neither text nor image"):
        Query()
    with pytest.raises(ValueError, match="Query has neither text nor image"):
        Query(text="  ")
    with pytest.raises(ValueError, match="Candidate 'x' has neither text nor image"):
        Candidate("x")
    with pytest.raises(ValueError, match="Candidate.id must be a non-empty str"):
        Candidate("", text="t")
    with pytest.raises(TypeError, match="text must be a str"):
        Candidate("x", text=3)  # type: ignore[arg-type]


# -- ordering ----------------------------------------------------------------------------------------


def test_sorts_descending_and_maps_index() -> None:
    scorer = RecordingScorer({"a": 0.1, "b": 0.9, "c": 0.5})
    ranked = MultimodalReranker(scorer).rerank("q", texts(("a", "x"), ("b", "y"), ("c", "z")))
    assert [r.id for r in ranked] == ["b", "c", "a"]
    assert [r.index for r in ranked] == [1, 2, 0]
    assert [r.rank for r in ranked] == [0, 1, 2]
    assert [r.score for r in ranked] == [0.9, 0.5, 0.1]
    assert all(r.raw_score == r.score for r in ranked)


def test_ties_keep_input_order() -> None:
    scorer = RecordingScorer({"a": 0.5, "b": 0.7, "c": 0.5, "d": 0.5})
    ranked = MultimodalReranker(scorer).rerank("q", texts(("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")))
    assert [r.id for r in ranked] == ["b", "a", "c", "d"]


def test_duplicate_ids_are_kept_apart_by_index() -> None:
    scorer = FakeScorer()
    cands = [Candidate("same", text="red fox"), Candidate("same", text="owl")]
    ranked = MultimodalReranker(scorer).rerank("red fox", cands)
    assert [r.index for r in ranked] == [0, 1]


def test_empty_list_returns_empty() -> None:
    scorer = RecordingScorer()
    assert MultimodalReranker(scorer).rerank("q", []) == []
    assert scorer.calls == []


def test_top_n_and_threshold() -> None:
    scorer = RecordingScorer({"a": 0.2, "b": 0.9, "c": 0.6})
    reranker = MultimodalReranker(scorer)
    cands = texts(("a", "x"), ("b", "y"), ("c", "z"))
    assert [r.id for r in reranker.rerank("q", cands, top_n=2)] == ["b", "c"]
    assert [r.id for r in reranker.rerank("q", cands, threshold=0.5)] == ["b", "c"]
    assert [r.id for r in reranker.rerank("q", cands, top_n=1, threshold=0.1)] == ["b"]
    assert reranker.rerank("q", cands, threshold=0.95) == []


@pytest.mark.parametrize("top_n", [0, -1, 1.5, True])
def test_bad_top_n(top_n: object) -> None:
    with pytest.raises(ValueError, match="top_n must be a positive int"):
        MultimodalReranker(FakeScorer()).rerank("q", texts(("a", "x")), top_n=top_n)  # type: ignore[arg-type]


@pytest.mark.parametrize("threshold", [-0.1, 1.5, "high", True, False])
def test_bad_threshold(threshold: object) -> None:
    with pytest.raises(ValueError, match="threshold must be a unified score between 0 and 1"):
        MultimodalReranker(FakeScorer()).rerank("q", texts(("a", "x")), threshold=threshold)  # type: ignore[arg-type]


def test_bad_inputs_are_named() -> None:
    reranker = MultimodalReranker(FakeScorer())
    with pytest.raises(TypeError, match=r"candidates\[1\] is a str, not a Candidate"):
        reranker.rerank("q", [Candidate("a", text="x"), "oops"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="wrap a single candidate in a list"):
        reranker.rerank("q", Candidate("a", text="x"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="query must be a Query or a str"):
        reranker.rerank(42, texts(("a", "x")))  # type: ignore[arg-type]


def test_constructor_validation() -> None:
    with pytest.raises(TypeError, match="lacks 'name'"):
        MultimodalReranker(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        MultimodalReranker(FakeScorer(), batch_size=0)
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'keep'"):
        MultimodalReranker(FakeScorer(), on_error="skip")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cache must be a bool"):
        MultimodalReranker(FakeScorer(), cache="yes")  # type: ignore[arg-type]


# -- batching ------------------------------------------------------------------------------------------


def test_batches_group_one_modality_sorted_by_size(red_png: Path) -> None:
    scorer = RecordingScorer()
    cands = [
        Candidate("t-long", text="x" * 50),
        Candidate("img1", image=str(red_png)),
        Candidate("t-short", text="x"),
        Candidate("t-mid", text="x" * 10),
        Candidate("img2", image=str(red_png), text="caption"),
        Candidate("img3", image=str(red_png)),
    ]
    ranked = MultimodalReranker(scorer, batch_size=2).rerank("q", cands)
    for call in scorer.calls:
        assert len(call) <= 2
        assert len({c.modality for c in call}) == 1
    text_calls = [c for c in scorer.calls if c[0].modality == "text"]
    assert [c.id for call in text_calls for c in call] == ["t-short", "t-mid", "t-long"]
    assert len(scorer.calls) == 4  # text: 2 batches, image: 1, text+image: 1
    assert sorted(r.index for r in ranked) == list(range(6))


def test_each_modality_group_is_handed_over_whole_by_default(red_png: Path) -> None:
    scorer = RecordingScorer()
    cands = [Candidate(f"t{i}", text="x" * (50 - i)) for i in range(40)]
    cands.insert(3, Candidate("img", image=str(red_png)))
    reranker = MultimodalReranker(scorer)
    assert reranker.batch_size is None
    reranker.rerank("q", cands)
    # one call per modality, in input order: the scorer sorts and batches by its own cost
    assert [[c.id for c in call] for call in scorer.calls] == [
        [f"t{i}" for i in range(40)],
        ["img"],
    ]


def test_batch_size_is_a_balanced_memory_cap() -> None:
    scorer = RecordingScorer()
    MultimodalReranker(scorer, batch_size=4).rerank("q", [Candidate(f"t{i}", text="x") for i in range(9)])
    assert [len(call) for call in scorer.calls] == [3, 3, 3]  # not 4, 4, 1
    with pytest.raises(ValueError, match=r"batch_size must be a positive int or None \(no cap"):
        MultimodalReranker(FakeScorer(), batch_size=True)  # type: ignore[arg-type]


def test_scorer_gets_decoded_rgb_images_for_every_reference_kind(tmp_path: Path) -> None:
    rgba = png_bytes((0, 0, 0, 0), mode="RGBA")  # fully transparent: must land on white
    path = tmp_path / "t.png"
    path.write_bytes(rgba)
    refs: list[object] = [
        str(path),
        path,
        path.as_uri(),
        rgba,
        b64(rgba),
        b64(png_bytes((0, 0, 0, 0), size=(400, 400), mode="RGBA")),  # longer than a file name may be
        "data:image/png;base64," + b64(rgba),
        Image.open(path),
    ]
    scorer = RecordingScorer()
    cands = [Candidate(f"c{i}", image=ref) for i, ref in enumerate(refs)]  # type: ignore[arg-type]
    MultimodalReranker(scorer).rerank(Query(text="q", image=str(path)), cands)
    seen = [c for call in scorer.calls for c in call]
    assert len(seen) == len(refs)
    for c in seen:
        assert isinstance(c.image, Image.Image) and c.image.mode == "RGB"
        assert c.image.getpixel((0, 0)) == (255, 255, 255)
    assert isinstance(scorer.queries[0].image, Image.Image)


# -- cache ---------------------------------------------------------------------------------------------


def test_cache_skips_repeated_work(red_png: Path) -> None:
    scorer = RecordingScorer({"a": 0.3, "b": 0.8})
    reranker = MultimodalReranker(scorer, cache=True)
    cands = [Candidate("a", text="x"), Candidate("b", image=str(red_png))]
    first = reranker.rerank("q", cands)
    calls = len(scorer.calls)
    second = reranker.rerank("q", cands)
    assert len(scorer.calls) == calls
    assert [(r.id, r.score) for r in first] == [(r.id, r.score) for r in second]
    reranker.rerank("another query", cands)
    assert len(scorer.calls) > calls
    assert isinstance(reranker.cache, ScoreCache) and reranker.cache.hits == 2


def test_cache_is_keyed_by_content_not_id() -> None:
    scorer = FakeScorer()
    reranker = MultimodalReranker(scorer, cache=ScoreCache(max_entries=10))
    a = reranker.rerank("red fox", [Candidate("x", text="a red fox")])
    b = reranker.rerank("red fox", [Candidate("x", text="an owl")])
    assert a[0].score == 1.0 and b[0].score == 0.0


def test_cache_evicts_least_recent() -> None:
    cache = ScoreCache(max_entries=2)
    cache.put("a", 1.0)
    cache.put("b", 2.0)
    assert cache.get("a") == 1.0
    cache.put("c", 3.0)
    assert cache.get("b") is None and cache.get("a") == 1.0 and len(cache) == 2


# -- images and errors ---------------------------------------------------------------------------------


def test_unreadable_image_raises_naming_candidate(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    reranker = MultimodalReranker(FakeScorer())
    with pytest.raises(
        CandidateError, match=r"candidate 'broken' \(index 1\): unreadable image: cannot decode"
    ) as info:
        reranker.rerank("q", [Candidate("ok", text="x"), Candidate("broken", image=str(bad))])
    assert info.value.candidate_id == "broken" and info.value.index == 1
    with pytest.raises(CandidateError, match="image file not found"):
        reranker.rerank("q", [Candidate("gone", image=str(tmp_path / "missing.png"))])


def test_on_error_keep_ranks_failures_last_and_never_drops_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    scorer = RecordingScorer({"a": 0.9, "b": 0.4})
    reranker = MultimodalReranker(scorer, on_error="keep")
    cands = [
        Candidate("broken", image=str(bad), text="cap"),
        Candidate("a", text="x"),
        Candidate("b", text="y"),
    ]
    with caplog.at_level(logging.WARNING):
        ranked = reranker.rerank("q", cands, top_n=1, threshold=0.5)
    assert [r.id for r in ranked] == ["a", "broken"]
    failed = ranked[-1]
    assert failed.index == 0 and failed.score == 0.0 and math.isnan(failed.raw_score)
    assert failed.error is not None and "cannot decode" in failed.error
    assert failed.candidate.metadata["rerank_error"] == failed.error
    assert "broken" in caplog.text
    assert "rerank_error" not in cands[0].metadata  # input not mutated


def test_url_needs_permission_and_is_size_capped() -> None:
    payload = png_bytes((10, 200, 10))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/x.png"
        cands = [Candidate("web", image=url)]
        with pytest.raises(CandidateError, match=r"'web'.*fetching URLs is off.*allow_urls=True"):
            MultimodalReranker(FakeScorer()).rerank("q", cands)
        scorer = RecordingScorer()
        MultimodalReranker(scorer, image_options=ImageOptions(allow_urls=True)).rerank("q", cands)
        assert scorer.calls[0][0].image.getpixel((0, 0)) == (10, 200, 10)  # type: ignore[union-attr]
        tiny = ImageOptions(allow_urls=True, max_bytes=10)
        with pytest.raises(CandidateError, match="over the limit of 10"):
            MultimodalReranker(FakeScorer(), image_options=tiny).rerank("q", cands)
    finally:
        server.shutdown()


def test_size_limits(red_png: Path) -> None:
    with pytest.raises(
        CandidateError, match=r"is 16x16 pixels, over the limit of 100; raise ImageOptions\(max_pixels"
    ):
        MultimodalReranker(FakeScorer(), image_options=ImageOptions(max_pixels=100)).rerank(
            "q", [Candidate("big", image=str(red_png))]
        )
    with pytest.raises(CandidateError, match="over the limit of 5; raise ImageOptions"):
        MultimodalReranker(FakeScorer(), image_options=ImageOptions(max_bytes=5)).rerank(
            "q", [Candidate("big", image=red_png.read_bytes())]
        )
    with pytest.raises(ValueError, match="max_bytes must be > 0"):
        ImageOptions(max_bytes=0)


def test_query_image_error_always_raises(tmp_path: Path) -> None:
    reranker = MultimodalReranker(FakeScorer(), on_error="keep")
    with pytest.raises(ImageLoadError, match="query image: image file not found"):
        reranker.rerank(Query(image=str(tmp_path / "nope.png")), [Candidate("a", text="x")])


def test_not_a_path_nor_base64() -> None:
    with pytest.raises(CandidateError, match="image file not found: 'photos/missing.jpg'"):
        MultimodalReranker(FakeScorer()).rerank("q", [Candidate("a", image="photos/missing.jpg")])
    with pytest.raises(CandidateError, match="is not an existing file, a URL, a data URI or base64 data"):
        MultimodalReranker(FakeScorer()).rerank("q", [Candidate("a", image="fox")])
    # base64 of no known image format is not decoded, and it is not a file either
    with pytest.raises(
        CandidateError, match="is not an existing file, a URL, a data URI or base64 data of a PNG"
    ):
        MultimodalReranker(FakeScorer()).rerank("q", [Candidate("a", image="A" * 65)])
    with pytest.raises(CandidateError, match="invalid base64 image data"):
        MultimodalReranker(FakeScorer()).rerank("q", [Candidate("a", image="A" * 4097 + "!")])


def test_unsupported_modality_is_an_error_not_a_misscore(red_png: Path) -> None:
    class TextOnly(RecordingScorer):
        modalities: frozenset[Modality] = frozenset(("text",))

    with pytest.raises(CandidateError, match=r"'pic'.*cannot read image candidates.*ModalityRouter"):
        MultimodalReranker(TextOnly()).rerank(
            "q", [Candidate("t", text="x"), Candidate("pic", image=str(red_png))]
        )


def test_scorer_contract_violations() -> None:
    class Short(RecordingScorer):
        def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
            return [0.5]

    class Nan(RecordingScorer):
        def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
            return [float("nan")] * len(candidates)

    class OutOfRange(RecordingScorer):
        def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
            return [3.0] * len(candidates)

    two = texts(("a", "x"), ("b", "y"))
    with pytest.raises(ScorerError, match="returned 1 scores for 2 candidates"):
        MultimodalReranker(Short()).rerank("q", two)
    with pytest.raises(CandidateError, match=r"'a' \(index 0\): scorer 'recording' returned nan"):
        MultimodalReranker(Nan()).rerank("q", two)
    with pytest.raises(ScorerError, match="produced 3.0, outside"):
        MultimodalReranker(OutOfRange()).rerank("q", two)


# -- calibration ----------------------------------------------------------------------------------------


class RawScorer(RecordingScorer):
    outputs_probabilities = False


def test_custom_calibrator_is_applied_per_modality(red_png: Path) -> None:
    class Halve:
        def calibrate(self, raw: Sequence[float], modalities: Sequence[Modality]) -> list[float]:
            return [r / 2 if m == "image" else r for r, m in zip(raw, modalities, strict=True)]

    scorer = RawScorer({"t": 0.6, "i": 0.9})
    ranked = MultimodalReranker(scorer, calibrator=Halve()).rerank(
        "q", [Candidate("t", text="x"), Candidate("i", image=str(red_png))]
    )
    assert [(r.id, r.score, r.raw_score) for r in ranked] == [("t", 0.6, 0.6), ("i", 0.45, 0.9)]


def test_uncalibrated_scorer_warns_and_uses_sigmoid(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        reranker = MultimodalReranker(RawScorer({"a": 0.0}))
    assert "NOT on one scale" in caplog.text
    assert reranker.rerank("q", texts(("a", "x")))[0].score == 0.5


def test_scorer_default_calibrator_is_used() -> None:
    class Shipped(RawScorer, BaseScorer):
        def default_calibrator(self) -> SigmoidCalibrator:
            return SigmoidCalibrator(temperature=0.5, shift=1.0)

    ranked = MultimodalReranker(Shipped({"a": 1.0})).rerank("q", texts(("a", "x")))
    assert ranked[0].score == 0.5


def test_hooks_are_declared_not_guessed() -> None:
    class Plain(RawScorer):  # not a BaseScorer: a look-alike method is not a hook
        def default_calibrator(self) -> SigmoidCalibrator:
            raise AssertionError("called an undeclared hook")

    reranker = MultimodalReranker(Plain({"a": 0.0}))
    assert isinstance(reranker.calibrator, SigmoidCalibrator)


def test_sigmoid_calibrator_validates() -> None:
    with pytest.raises(ValueError, match="temperature must be > 0"):
        SigmoidCalibrator(temperature=0)


# -- routing ---------------------------------------------------------------------------------------------


def test_modality_router_sends_each_modality_to_its_scorer(red_png: Path) -> None:
    text_scorer = RecordingScorer({"t": 0.2}, name="text")
    image_scorer = RecordingScorer({"i": 0.7}, name="image")
    router = ModalityRouter({"text": text_scorer, "image": image_scorer})
    ranked = MultimodalReranker(router).rerank(
        "q", [Candidate("t", text="x"), Candidate("i", image=str(red_png))]
    )
    assert [r.id for r in ranked] == ["i", "t"]
    assert [c.id for call in text_scorer.calls for c in call] == ["t"]
    assert [c.id for call in image_scorer.calls for c in call] == ["i"]
    assert router.name == "router(image=image,text=text)"
    with pytest.raises(ValueError, match="unknown modalities"):
        ModalityRouter({"video": text_scorer})  # type: ignore[dict-item]


def test_router_combines_shipped_calibrators(red_png: Path) -> None:
    class Shipped(RawScorer, BaseScorer):
        def default_calibrator(self) -> SigmoidCalibrator:
            return SigmoidCalibrator()

    router = ModalityRouter({"text": Shipped({"t": 0.0}), "image": RecordingScorer({"i": 0.7})})
    ranked = MultimodalReranker(router).rerank(
        "q", [Candidate("t", text="x"), Candidate("i", image=str(red_png))]
    )
    assert [(r.id, r.score) for r in ranked] == [("i", 0.7), ("t", 0.5)]
    assert ModalityRouter({"text": RawScorer()}).default_calibrator() is None


# -- precomputed signals -------------------------------------------------------------------------------


class ReusingScorer(BaseScorer):
    name = "reusing"
    outputs_probabilities = True
    reuses = frozenset({"text_embedding", "image_classes", "other"})

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, object]] = {}

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        for c in candidates:
            self.seen[c.id] = {kind: p.value for kind, p in c.precomputed.items()}
        return [0.5] * len(candidates)


def _signal(kind: str, content: str, value: object = 1) -> Precomputed:
    return Precomputed(kind, producer="first-stage", content=content, value=value)


@pytest.mark.parametrize("cache", [False, True])
def test_only_reused_and_matching_precomputed_signals_reach_the_scorer(
    red_png: Path, blue_png: Path, cache: bool, caplog: pytest.LogCaptureFixture
) -> None:
    text = "a red fox"
    good = {
        "text_embedding": _signal("text_embedding", text_key(text), "t"),
        "image_classes": _signal("image_classes", image_key(str(red_png)), "i"),
        "text_tokens": _signal("text_tokens", text_key(text)),  # a kind the scorer does not reuse
        "other": _signal("other", "whatever"),  # reused, but no content to check it against
    }
    stale = {
        "text_embedding": _signal("text_embedding", text_key("another text")),
        "image_classes": _signal("image_classes", image_key(str(blue_png))),
    }
    cands = [
        Candidate("good", text=text, image=str(red_png), precomputed=good),
        Candidate("stale", text=text, image=str(red_png), precomputed=stale),
    ]
    scorer = ReusingScorer()
    with caplog.at_level(logging.DEBUG, logger="mm_rerank_components.reranker"):
        MultimodalReranker(scorer, cache=cache).rerank("fox", cands)
    assert scorer.seen == {"good": {"text_embedding": "t", "image_classes": "i"}, "stale": {}}
    assert "precomputed 'image_classes' dropped" in caplog.text


def test_plain_scorers_get_no_precomputed_signals() -> None:
    scorer = RecordingScorer()
    signal = _signal("text_embedding", text_key("x"))
    MultimodalReranker(scorer).rerank("q", [Candidate("a", text="x", precomputed={"text_embedding": signal})])
    assert scorer.calls[0][0].precomputed == {}


def test_router_passes_each_route_only_its_own_kinds() -> None:
    class TextReuser(ReusingScorer):
        reuses = frozenset({"text_embedding"})
        modalities = frozenset({"text"})

    class ImageReuser(ReusingScorer):
        reuses = frozenset({"image_classes"})
        modalities = frozenset({"image"})

    text_scorer = TextReuser()
    router = ModalityRouter({"text": text_scorer, "image": ImageReuser()})
    assert router.reuses == {"text_embedding", "image_classes"}
    signal = _signal("text_embedding", text_key("x"), "t")
    MultimodalReranker(router).rerank("q", [Candidate("a", text="x", precomputed={"text_embedding": signal})])
    assert text_scorer.seen == {"a": {"text_embedding": "t"}}


# -- async --------------------------------------------------------------------------------------------------


def test_arerank_does_not_block_the_event_loop() -> None:
    class Slow(RecordingScorer):
        def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
            time.sleep(0.3)
            return super().score(query, candidates)

    async def main() -> tuple[int, list[str]]:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        ranked = await MultimodalReranker(Slow({"a": 0.1, "b": 0.9})).arerank(
            "q", texts(("a", "x"), ("b", "y"))
        )
        done = True
        await task
        return ticks, [r.id for r in ranked]

    ticks, ids = asyncio.run(main())
    assert ids == ["b", "a"]
    assert ticks >= 10  # the loop kept running while the scorer slept


# -- cascade ----------------------------------------------------------------------------------------------


def test_cascade_keeps_n_then_reorders_with_original_indexes() -> None:
    cheap = RecordingScorer({"a": 0.9, "b": 0.8, "c": 0.1, "d": 0.7}, name="cheap")
    expensive = RecordingScorer({"a": 0.2, "b": 0.6, "c": 0.99, "d": 0.9}, name="expensive")
    cascade = MultimodalReranker(cheap).then(MultimodalReranker(expensive), keep=3)
    assert isinstance(cascade, CascadeReranker)
    ranked = cascade.rerank("q", texts(("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")))
    assert [(r.id, r.index, r.score) for r in ranked] == [("d", 3, 0.9), ("b", 1, 0.6), ("a", 0, 0.2)]
    assert [c.id for call in expensive.calls for c in call] == ["a", "b", "d"]
    assert [
        r.id for r in cascade.rerank("q", texts(("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")), top_n=1)
    ] == ["d"]
    with pytest.raises(ValueError, match="keep must be a positive int"):
        CascadeReranker(MultimodalReranker(cheap), MultimodalReranker(expensive), keep=0)


def test_cascade_passes_kept_failures_through(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    cascade = MultimodalReranker(RecordingScorer(), on_error="keep").then(
        MultimodalReranker(FakeScorer()), keep=5
    )
    ranked = cascade.rerank("x", [Candidate("bad", image=str(bad)), Candidate("ok", text="x")])
    assert [(r.id, r.index, r.rank) for r in ranked] == [("ok", 1, 0), ("bad", 0, 1)]
    assert ranked[-1].error is not None


# -- fake scorer ------------------------------------------------------------------------------------------


def test_fake_scorer_is_deterministic_for_all_modalities(red_png: Path, blue_png: Path) -> None:
    cands = [
        Candidate("t", text="a red square"),
        Candidate("i", image=str(red_png)),
        Candidate("ti", image=str(blue_png), text="blue square"),
    ]
    runs = [
        [(r.id, r.score) for r in MultimodalReranker(FakeScorer()).rerank("red square", cands)]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert runs[0][0] == ("t", 1.0)
    by_image = MultimodalReranker(FakeScorer()).rerank(Query(image=str(red_png)), cands[1:])
    assert by_image[0].id == "i" and by_image[0].score == 1.0
    assert FakeScorer(overrides={"i": 0.42}).score(Query("x"), [Candidate("i", text="y")]) == [0.42]


@pytest.fixture
def many_candidates() -> Iterator[list[Candidate]]:
    yield [Candidate(f"c{i}", text=f"doc {i} red" if i % 3 else f"doc {i}") for i in range(200)]


def test_large_list_with_batching_matches_unbatched(many_candidates: list[Candidate]) -> None:
    a = MultimodalReranker(FakeScorer(), batch_size=7).rerank("red doc", many_candidates)
    b = MultimodalReranker(FakeScorer(), batch_size=1000).rerank("red doc", many_candidates)
    assert [(r.index, r.score) for r in a] == [(r.index, r.score) for r in b]
