"""Hostile and careless inputs to the core and the adapters (issue 11): each test failed before its fix."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, TextNode
from PIL import Image

from conftest import b64, png_bytes
from mm_rerank_components import (
    Candidate,
    CandidateError,
    ImageLoadError,
    ImageOptions,
    MultimodalReranker,
    Query,
    ScoreCache,
    ScorerError,
)
from mm_rerank_components.integrations.langchain import MultimodalRerankCompressor
from mm_rerank_components.integrations.llama_index import MultimodalRerankPostprocessor
from mm_rerank_components.media import load_image
from mm_rerank_components.scorers import FakeScorer
from mm_rerank_components.types import Modality


def finishes_within(seconds: float, work: Callable[[], Any]) -> Any:
    """Run ``work`` in a daemon thread; fail (instead of hanging the suite) when it blocks."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


# -- 1. only regular files, never more than max_bytes + 1 ------------------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_devices_and_fifos_fail_fast_even_with_keep(special: str, fifo: Path) -> None:
    path = str(fifo) if special == "fifo" else special
    reranker = MultimodalReranker(FakeScorer(), on_error="keep", image_options=ImageOptions(max_bytes=1000))
    ranked = finishes_within(
        5, lambda: reranker.rerank("q", [Candidate("dev", image=path), Candidate("ok", text="q")])
    )
    assert [r.id for r in ranked] == ["ok", "dev"]
    assert (
        ranked[1].error is not None and "is not a regular file (a device, FIFO or socket)" in ranked[1].error
    )
    with pytest.raises(CandidateError, match=r"candidate 'dev' \(index 0\).*not a regular file"):
        finishes_within(
            5, lambda: MultimodalReranker(FakeScorer()).rerank("q", [Candidate("dev", image=path)])
        )
    with pytest.raises(ImageLoadError, match="query image: .*not a regular file"):
        finishes_within(5, lambda: reranker.rerank(Query(image=path), [Candidate("ok", text="q")]))


def test_a_file_is_never_read_past_max_bytes_plus_one() -> None:
    # /proc files report size 0, so only the read itself can enforce the cap
    assert os.stat("/proc/self/maps").st_size == 0
    with pytest.raises(ImageLoadError, match="is 11 bytes, over the limit of 10"):
        load_image("/proc/self/maps", ImageOptions(max_bytes=10))


# -- 3. deep greyscale is scaled, not clipped ------------------------------------------------------------------


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_16_bit_png_is_scaled_to_8_bits() -> None:
    gradient = np.linspace(0, 65535, 64 * 16).astype(np.uint16).reshape(16, 64)
    encoded = _encoded(Image.fromarray(gradient), "PNG")
    image = load_image(encoded)
    assert image.mode == "RGB"
    grey = np.asarray(image)[..., 0]
    assert grey.min() == 0 and grey.max() == 255
    assert abs(int(grey[8, 32]) - round(int(gradient[8, 32]) / 257)) <= 1  # mid-grey stays mid-grey
    assert abs(int(load_image(Image.new("I;16", (2, 2), 30000)).getpixel((0, 0))[0]) - 117) <= 1


def test_float_and_32_bit_images_are_scaled() -> None:
    unit = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32))
    assert load_image(_encoded(unit, "TIFF")).getpixel((0, 0)) == (128, 128, 128)
    wide = Image.fromarray(np.array([[0, 2_000_000_000]], dtype=np.int32))
    assert [load_image(wide).getpixel((x, 0))[0] for x in (0, 1)] == [0, 255]


# -- 4. URL deadlines and cancellation ---------------------------------------------------------------------------


class LoopbackServer:
    """A raw HTTP server on 127.0.0.1: ``mode="trickle"`` sends a valid header then 1 byte per 0.2 s,
    ``mode="hang"`` accepts and never answers."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.open_connections = 0
        self._count = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/img.png"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with self._count:
            self.open_connections += 1
        try:
            conn.recv(4096)
            if self.mode == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n")
            while not self._stop.is_set():
                if self.mode == "trickle":
                    conn.sendall(b"x")
                    time.sleep(0.2)
                elif conn.recv(1) == b"":  # hang until the client goes away
                    break
        except OSError:
            pass
        finally:
            with self._count:
                self.open_connections -= 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def trickle() -> Iterator[LoopbackServer]:
    server = LoopbackServer("trickle")
    yield server
    server.close()


@pytest.fixture
def hang() -> Iterator[LoopbackServer]:
    server = LoopbackServer("hang")
    yield server
    server.close()


def test_a_slow_url_times_out_in_total(trickle: LoopbackServer) -> None:
    options = ImageOptions(allow_urls=True, url_timeout=1.0)
    start = time.monotonic()
    with pytest.raises(ImageLoadError, match=r"image URL 'http://127.0.0.1:\d+/img.png' timed out after 1 s"):
        finishes_within(10, lambda: load_image(trickle.url, options))
    assert time.monotonic() - start < 3


def test_cancelled_arerank_stops_and_frees_its_thread(hang: LoopbackServer) -> None:
    from mm_rerank_components.reranker import ASYNC_WORKERS

    slow_urls = MultimodalReranker(
        FakeScorer(), image_options=ImageOptions(allow_urls=True, url_timeout=30), on_error="keep"
    )
    text_only = MultimodalReranker(FakeScorer())

    async def main() -> float:
        hung = [
            asyncio.create_task(slow_urls.arerank("q", [Candidate(f"u{i}", image=hang.url)]))
            for i in range(ASYNC_WORKERS + 2)
        ]
        await asyncio.sleep(0.5)
        for task in hung:
            task.cancel()
        await asyncio.gather(*hung, return_exceptions=True)
        start = time.monotonic()
        ranked = await text_only.arerank("fox", [Candidate("t", text="a fox")])
        assert [r.id for r in ranked] == ["t"]
        return time.monotonic() - start

    waited = finishes_within(20, lambda: asyncio.run(main()))
    assert waited < 2.0
    deadline = time.monotonic() + 5
    while hang.open_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hang.open_connections == 0  # the cancelled fetches closed their sockets


# -- 5. NUL bytes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["photos/a\x00b.png", Path("photos/a\x00b.png"), "file:///tmp/a%00b.png"])
def test_nul_byte_in_a_path_names_the_candidate(ref: object) -> None:
    with pytest.raises(CandidateError, match=r"candidate 'nul' \(index 0\): .*contains a NUL byte"):
        MultimodalReranker(FakeScorer(), cache=True).rerank("q", [Candidate("nul", image=ref)])  # type: ignore[arg-type]
    ranked = MultimodalReranker(FakeScorer(), on_error="keep").rerank("q", [Candidate("nul", image=ref)])  # type: ignore[arg-type]
    assert ranked[0].error is not None and "NUL byte" in ranked[0].error


# -- 6. scorer failures ------------------------------------------------------------------------------------------------


class Flaky:
    """Fails any batch holding a candidate whose id starts with "bad"; returns odd values for "odd"."""

    name = "flaky"
    outputs_probabilities = True
    modalities: frozenset[Modality] = frozenset(("text",))

    def __init__(self, odd: object = None) -> None:
        self.odd = odd
        self.batches: list[list[str]] = []

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[Any]:
        self.batches.append([c.id for c in candidates])
        if any(c.id.startswith("bad") for c in candidates):
            raise RuntimeError("CUDA out of memory")
        return [self.odd if c.id.startswith("odd") else 0.5 for c in candidates]


def test_scorer_exception_is_a_scorer_error_naming_the_batch() -> None:
    cands = [Candidate("a", text="x"), Candidate("bad", text="y")]
    with pytest.raises(
        ScorerError,
        match=r"scorer 'flaky' failed on a batch of 2 text candidates \('a', 'bad'\): RuntimeError: CUDA out of memory",
    ):
        MultimodalReranker(Flaky()).rerank("q", cands)


def test_keep_retries_one_at_a_time_and_keeps_the_failures() -> None:
    scorer = Flaky()
    cands = [Candidate("a", text="x"), Candidate("bad", text="y"), Candidate("c", text="z")]
    ranked = MultimodalReranker(scorer, on_error="keep").rerank("q", cands)
    assert [(r.id, r.error is None) for r in ranked] == [("a", True), ("c", True), ("bad", False)]
    assert "scorer 'flaky' failed: RuntimeError: CUDA out of memory" in (ranked[2].error or "")
    assert scorer.batches == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]


@pytest.mark.parametrize("odd", [None, "high", object(), True])
def test_non_numeric_scores_are_like_nan(odd: object) -> None:
    cands = [Candidate("odd", text="x"), Candidate("b", text="y")]
    ranked = MultimodalReranker(Flaky(odd), on_error="keep").rerank("q", cands)
    assert [(r.id, r.error is None) for r in ranked] == [("b", True), ("odd", False)]
    assert "scorer 'flaky' returned" in (ranked[1].error or "")
    with pytest.raises(CandidateError, match=r"'odd' \(index 0\): scorer 'flaky' returned"):
        MultimodalReranker(Flaky(odd)).rerank("q", cands)


def test_a_scorer_returning_no_list_is_named() -> None:
    class NoneScorer(Flaky):
        def score(self, query: Query, candidates: Sequence[Candidate]) -> Any:
            return None

    with pytest.raises(ScorerError, match="scorer 'flaky' returned None, not a list of scores"):
        MultimodalReranker(NoneScorer()).rerank("q", [Candidate("a", text="x")])


# -- 10. one validation for the core and both adapters ----------------------------------------------------------------


def test_none_in_the_node_list_names_its_position() -> None:
    post = MultimodalRerankPostprocessor(reranker=MultimodalReranker(FakeScorer()))
    nodes = [NodeWithScore(node=TextNode(text="fox")), None]
    with pytest.raises(TypeError, match=r"nodes\[1\] is a NoneType, not a NodeWithScore"):
        post.postprocess_nodes(nodes, query_str="fox")  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["top_n", "threshold"])
def test_booleans_are_rejected_everywhere(field: str) -> None:
    reranker = MultimodalReranker(FakeScorer())
    message = "top_n must be a positive int" if field == "top_n" else "threshold must be a unified score"
    with pytest.raises(ValueError, match=message):
        reranker.rerank("q", [Candidate("a", text="x")], **{field: True})
    with pytest.raises(ValueError, match=message):
        MultimodalRerankPostprocessor(reranker=reranker, **{field: True})
    with pytest.raises(ValueError, match=message):
        MultimodalRerankCompressor(reranker=reranker, **{field: True})


def test_langchain_checks_the_query_even_for_no_documents() -> None:
    compressor = MultimodalRerankCompressor(reranker=MultimodalReranker(FakeScorer()))
    with pytest.raises(ValueError, match="Query has neither text nor image"):
        compressor.compress_documents([], "")
    with pytest.raises(TypeError, match="query must be a Query or a str, got int"):
        compressor.compress_documents([], 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Query has neither text nor image"):
        asyncio.run(compressor.acompress_documents([], ""))
    with pytest.raises(TypeError, match=r"documents\[1\] is a NoneType, not a langchain Document"):
        compressor.compress_documents([Document("a"), None], "a")  # type: ignore[list-item]


# -- 11. image-reference guessing ---------------------------------------------------------------------------------------


def test_a_long_missing_path_without_a_dot_is_not_found_not_undecodable() -> None:
    path = "/srv/photos/" + "IMG_20240101_" + "a" * 60
    with pytest.raises(CandidateError, match=f"image file not found: '{path}'; check the path"):
        MultimodalReranker(FakeScorer()).rerank("q", [Candidate("m", image=path)])


def test_a_short_base64_image_is_decoded_not_looked_up() -> None:
    gif = b64(_encoded(Image.new("RGB", (1, 1), (200, 10, 10)), "GIF"))
    assert len(gif) < 64
    assert load_image(gif).getpixel((0, 0))[0] > 150
    png = b64(png_bytes(size=(1, 1)))
    assert load_image(png).size == (1, 1)


def test_error_messages_carry_no_object_reprs(tmp_path: Path) -> None:
    junk = b"\x00not an image at all" * 10
    for ref in (junk, b64(junk), "data:image/png;base64," + b64(junk)):
        with pytest.raises(ImageLoadError) as caught:
            load_image(ref)
        assert "object at 0x" not in str(caught.value)
        assert "cannot decode image" in str(caught.value) or "invalid base64" in str(caught.value)


# -- 13. a scorer's name identifies its settings -----------------------------------------------------------------------------


def test_different_settings_never_share_a_cache_entry() -> None:
    cache = ScoreCache()
    cands = [Candidate("a", text="fox")]
    high = MultimodalReranker(FakeScorer(overrides={"a": 0.9}), cache=cache).rerank("fox", cands)
    low = MultimodalReranker(FakeScorer(overrides={"a": 0.1}), cache=cache).rerank("fox", cands)
    plain = MultimodalReranker(FakeScorer(), cache=cache).rerank("fox", cands)
    assert [r.score for r in (*high, *low, *plain)] == [0.9, 0.1, 1.0]
    assert FakeScorer(overrides={"a": 0.9}).name == FakeScorer(overrides={"a": 0.9}).name != "fake"
    assert FakeScorer(overrides={"a": 0.9}).name != FakeScorer(overrides={"a": 0.1}).name
