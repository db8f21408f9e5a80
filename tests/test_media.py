"""Image references: cheap recognition, base64 decoding, content and cache keys (issue 15)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import mm_rerank_components.media as media
import mm_rerank_components.media.keys as media_keys
import mm_rerank_components.media.refs as media_refs
from conftest import b64, png_bytes
from mm_rerank_components import Candidate, MultimodalReranker, ScoreCache
from mm_rerank_components.media import cache_key, classify, image_key, load_image, read_image_bytes
from mm_rerank_components.scorers import FakeScorer

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
