"""The hostile-input matrix of issues 11 and 22: files, URLs, scorers, adapters, the web app, the rerank
service, RemoteScorer, saved reranker folders and adapt labels (group ``issue22``: one case or more per row
of issue 22's table, numbered by row).

Every case runs against the public API with FakeScorer (no model), local files and HTTP servers on
127.0.0.1 only, under a time limit, and reports what happened and whether anything was lost: a candidate
missing from a result that came back, a hang, a crash without a clear error, or a server path in a web
response.

    python benchmarks/hostile_inputs.py [--out benchmarks/results/hostile_inputs.json]

Exit status 1 when a case hangs, loses something, or gives an unexpected outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import http.server
import io
import json
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mm_rerank_components import (
    Candidate,
    ImageOptions,
    MultimodalReranker,
    Query,
    RankedCandidate,
)
from mm_rerank_components.scorers import FakeScorer
from mm_rerank_components.types import Modality

LIMIT_S = 15.0


@dataclass
class Result:
    group: str
    case: str
    outcome: str
    lost: str  # "no", or what was lost
    ok: bool
    seconds: float


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def short(text: str, n: int = 96) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def within(seconds: float, work: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", value), ("error", exception) or ("hung", None) after ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - every outcome is reported in the table
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        return "hung", None
    if "error" in box:
        return "error", box["error"]
    return "ok", box.get("value")


def ranked_outcome(ranked: Sequence[RankedCandidate], n_in: int) -> tuple[str, str]:
    kept = [r for r in ranked if r.error is not None]
    lost = "no" if len(ranked) == n_in else f"{n_in - len(ranked)} of {n_in} candidates missing"
    if kept:
        return f"kept {len(kept)} unscored: {kept[0].error}", lost
    return f"ranked {len(ranked)}", lost


class Matrix:
    def __init__(self) -> None:
        self.results: list[Result] = []

    def case(
        self,
        group: str,
        name: str,
        work: Callable[[], Any],
        *,
        expect: str,
        n_in: int | None = None,
        limit: float = LIMIT_S,
    ) -> None:
        """Run ``work``; ``expect`` is a regex the outcome must match."""
        start = time.monotonic()
        status, value = within(limit, work)
        seconds = time.monotonic() - start
        lost = "no"
        if status == "hung":
            outcome, lost = f"HUNG (still running after {limit:g} s)", "the call"
        elif status == "error":
            outcome = f"{type(value).__name__}: {value}"
            if not isinstance(value, (ValueError, TypeError, RuntimeError)):
                lost = "crashed without a clear error"
        elif isinstance(value, tuple):
            outcome, lost = value
        elif (
            isinstance(value, list)
            and n_in is not None
            and all(isinstance(v, RankedCandidate) for v in value)
        ):
            outcome, lost = ranked_outcome(value, n_in)
        else:
            outcome = str(value)
        outcome = " ".join(outcome.split())
        ok = lost == "no" and re.search(expect, outcome) is not None
        self.results.append(Result(group, name, outcome, lost, ok, round(seconds, 3)))


# -- servers on 127.0.0.1 ---------------------------------------------------------------------------------


class RawServer:
    """``trickle``: a valid header, then 1 byte per 0.2 s; ``hang``: accepts and never answers."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str = "/img.png") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.recv(4096)
            if self.mode == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            while not self.stop.is_set():
                if self.mode == "trickle":
                    conn.sendall(b"x")
                    time.sleep(0.2)
                elif conn.recv(1) == b"":
                    return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/ok.png":
            body = png()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/huge.png":
            self.send_response(200)
            self.send_header("Content-Length", str(10**10))
            self.end_headers()
        elif self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        else:
            self.send_error(404)


@contextlib.contextmanager
def servers() -> Iterator[tuple[RawServer, RawServer, str]]:
    trickle, hang = RawServer("trickle"), RawServer("hang")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield trickle, hang, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        trickle.close()
        hang.close()


# -- scorers that misbehave ---------------------------------------------------------------------------------


class Misbehaving:
    outputs_probabilities = True
    modalities: frozenset[Modality] = frozenset(("text", "image", "text+image"))

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.name = f"misbehaving-{mode}"

    def score(self, query: Query, candidates: Sequence[Candidate]) -> Any:
        if self.mode == "raise" and any(c.id == "bad" for c in candidates):
            raise RuntimeError("CUDA out of memory")
        if self.mode == "short":
            return [0.5]
        if self.mode == "none-list":
            return None
        values: list[Any] = [0.5] * len(candidates)
        if self.mode in ("none", "nan", "text", "range"):
            odd = {"none": None, "nan": float("nan"), "text": "high", "range": 7.0}[self.mode]
            values = [odd if c.id == "bad" else 0.5 for c in candidates]
        return values


# -- the matrix ---------------------------------------------------------------------------------------------------


def file_cases(m: Matrix, tmp: Path) -> None:
    keep = MultimodalReranker(FakeScorer(), on_error="keep")
    small = MultimodalReranker(FakeScorer(), on_error="keep", image_options=ImageOptions(max_bytes=1000))
    fifo = tmp / "pipe.png"
    os.mkfifo(fifo)
    link = tmp / "passwd.png"
    link.symlink_to("/etc/passwd")
    bomb = tmp / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(bomb)  # tiny file, 400 megapixels
    big = tmp / "big.png"
    big.write_bytes(png(size=(400, 400)))
    deep = tmp / "deep.png"
    Image.fromarray(np.full((16, 16), 30000, dtype=np.uint16)).save(deep)
    truncated = tmp / "truncated.png"
    truncated.write_bytes(png(size=(64, 64))[:80])
    cases: list[tuple[str, object, str]] = [
        ("/dev/zero as a candidate image", "/dev/zero", "not a regular file"),
        ("a FIFO as a candidate image", str(fifo), "not a regular file"),
        (
            "/proc/self/maps (size 0), max_bytes=1000",
            "/proc/self/maps",
            "is 1001 bytes, over the limit of 1000",
        ),
        ("NUL byte in a path", "photos/a\x00b.png", "NUL byte"),
        ("NUL byte in a file:// URI", "file:///tmp/a%00b.png", "NUL byte"),
        ("a symlink to /etc/passwd", str(link), "cannot decode image"),
        ("a directory", str(tmp), "is a directory"),
        ("a 400-megapixel PNG", str(bomb), "over the pixel limit"),
        ("a file over max_bytes=1000", str(big), "over the limit of 1000"),
        ("a truncated PNG", str(truncated), "cannot decode|truncated"),
        ("a long missing path without a dot", "/srv/photos/" + "x" * 80, "image file not found"),
        ("a 600 KB string of 'A'", "A" * 600_000, "cannot decode|invalid base64"),
    ]
    for name, ref, expect in cases:
        cands = [Candidate("img", image=ref), Candidate("txt", text="fox")]  # type: ignore[arg-type]
        reranker = small if "max_bytes=1000" in name else keep
        m.case(
            "files", name + " (keep)", functools.partial(reranker.rerank, "fox", cands), expect=expect, n_in=2
        )
    m.case(
        "files",
        "a FIFO as the query image",
        lambda: keep.rerank(Query(image=str(fifo)), [Candidate("t", text="x")]),
        expect="query image: .*not a regular file",
    )
    m.case(
        "files",
        "/dev/zero with on_error='raise'",
        lambda: MultimodalReranker(FakeScorer()).rerank("q", [Candidate("dev", image="/dev/zero")]),
        expect=r"CandidateError: candidate 'dev' \(index 0\)",
    )

    def deep_grey() -> tuple[str, str]:
        ranked = keep.rerank(Query(image=png((117, 117, 117))), [Candidate("deep", image=str(deep))])
        return f"16-bit grey 30000 scores {ranked[0].score:.3f} against 8-bit grey 117", "no"

    m.case("files", "a 16-bit greyscale PNG", deep_grey, expect=r"scores (0\.9[5-9]|1\.000)")
    gif = base64.b64encode(_gif()).decode()
    m.case(
        "files",
        f"a {len(gif)}-character base64 GIF",
        lambda: keep.rerank("q", [Candidate("g", image=gif)]),
        expect="ranked 1",
        n_in=1,
    )


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (1, 2, 3)).save(buffer, format="GIF")
    return buffer.getvalue()


def url_cases(m: Matrix, trickle: RawServer, hang: RawServer, base: str) -> None:
    allow = ImageOptions(allow_urls=True, url_timeout=1.0)
    keep = MultimodalReranker(FakeScorer(), on_error="keep", image_options=allow)
    for name, url, expect in (
        ("a URL while URLs are off", f"{base}/ok.png", "fetching URLs is off"),
        ("a good URL", f"{base}/ok.png", "ranked 2"),
        ("1 byte per 0.2 s, url_timeout=1", trickle.url(), "timed out after 1 s"),
        ("a server that never answers, url_timeout=1", hang.url(), "timed out after 1 s"),
        ("Content-Length of 10 GB", f"{base}/huge.png", "over the limit"),
        ("a redirect to file:///etc/passwd", f"{base}/to-file", "not allowed|only http\\(s\\) is followed"),
        ("a 404", f"{base}/missing.png", "HTTP Error 404"),
    ):
        reranker = keep if "off" not in name else MultimodalReranker(FakeScorer(), on_error="keep")
        cands = [Candidate("u", image=url), Candidate("t", text="fox")]
        m.case("urls", name, functools.partial(reranker.rerank, "fox", cands), expect=expect, n_in=2)

    def cancelled_then_text() -> tuple[str, str]:
        from mm_rerank_components.reranker import ASYNC_WORKERS

        slow = MultimodalReranker(
            FakeScorer(), on_error="keep", image_options=ImageOptions(allow_urls=True, url_timeout=60)
        )

        async def main() -> float:
            hung = [
                asyncio.create_task(slow.arerank("q", [Candidate(f"u{i}", image=hang.url())]))
                for i in range(ASYNC_WORKERS + 2)
            ]
            await asyncio.sleep(0.5)
            for task in hung:
                task.cancel()
            await asyncio.gather(*hung, return_exceptions=True)
            start = time.monotonic()
            await MultimodalReranker(FakeScorer()).arerank("fox", [Candidate("t", text="fox")])
            return time.monotonic() - start

        waited = asyncio.run(main())
        return f"next text-only arerank took {waited:.3f} s", "no" if waited < 2 else "the next call waited"

    m.case(
        "urls", "arerank cancelled on hung URLs, then a text call", cancelled_then_text, expect=r"took 0\."
    )


def scorer_cases(m: Matrix) -> None:
    cands = [Candidate("a", text="x"), Candidate("bad", text="y"), Candidate("c", text="z")]
    for mode, expect_keep, expect_raise in (
        ("raise", "kept 1 unscored: scorer 'misbehaving-raise' failed: RuntimeError", "ScorerError: scorer"),
        ("none", "kept 1 unscored: scorer 'misbehaving-none' returned None", r"CandidateError: .*'bad'"),
        ("nan", "kept 1 unscored: .*returned nan", r"CandidateError: .*'bad'"),
        ("text", "kept 1 unscored: .*returned 'high'", r"CandidateError: .*'bad'"),
        ("range", "ScorerError: scorer 'misbehaving-range' produced 7.0", "ScorerError"),
        ("short", "ScorerError: .*returned 1 scores for 3", "ScorerError"),
        ("none-list", "ScorerError: .*returned None, not a list", "ScorerError"),
    ):
        scorer = Misbehaving(mode)
        keep = MultimodalReranker(scorer, on_error="keep")
        m.case(
            "scorers",
            f"scorer {mode} (keep)",
            functools.partial(keep.rerank, "q", cands),
            expect=expect_keep,
            n_in=3,
        )
        raising = MultimodalReranker(scorer)
        m.case(
            "scorers",
            f"scorer {mode} (raise)",
            functools.partial(raising.rerank, "q", cands),
            expect=expect_raise,
            n_in=3,
        )


def adapter_cases(m: Matrix, tmp: Path) -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import ImageNode, NodeWithScore, TextNode

    from mm_rerank_components.integrations.langchain import MultimodalRerankCompressor
    from mm_rerank_components.integrations.llama_index import MultimodalRerankPostprocessor

    keep = MultimodalReranker(FakeScorer(), on_error="keep")
    post = MultimodalRerankPostprocessor(reranker=keep)
    comp = MultimodalRerankCompressor(reranker=keep)

    def nodes() -> list[Any]:  # Any: the matrix also hands the adapter a None
        return [
            NodeWithScore(node=ImageNode(id_="dev", image_path="/dev/zero")),
            NodeWithScore(node=TextNode(id_="t", text="fox")),
        ]

    def nodes_and_none() -> list[Any]:
        return [*nodes(), None]

    def docs() -> list[Any]:
        return [Document("", id="dev", metadata={"image_path": "/dev/zero"}), Document("fox", id="t")]

    def count(out: Sequence[Any], n_in: int, errors: Callable[[Any], Any]) -> tuple[str, str]:
        bad = [o for o in out if errors(o)]
        lost = "no" if len(out) == n_in else f"{n_in - len(out)} of {n_in} missing"
        return (f"returned {len(out)}, kept {len(bad)} with rerank_error", lost)

    def li_error(n: Any) -> Any:
        return n.node.metadata.get("rerank_error")

    def lc_error(d: Any) -> Any:
        return d.metadata.get("rerank_error")

    for mode in ("sync", "async"):
        if mode == "sync":
            m.case(
                "adapters",
                "LlamaIndex: /dev/zero ImageNode (keep, sync)",
                lambda: count(post.postprocess_nodes(nodes(), query_str="fox"), 2, li_error),
                expect="kept 1",
            )
            m.case(
                "adapters",
                "LangChain: /dev/zero Document (keep, sync)",
                lambda: count(comp.compress_documents(docs(), "fox"), 2, lc_error),
                expect="kept 1",
            )
            m.case(
                "adapters",
                "LlamaIndex: None in the node list (sync)",
                lambda: post.postprocess_nodes(nodes_and_none(), query_str="fox"),
                expect=r"TypeError: nodes\[2\] is a NoneType",
            )
            m.case(
                "adapters",
                "LangChain: empty list, empty query (sync)",
                lambda: comp.compress_documents([], ""),
                expect="ValueError: Query has neither",
            )
        else:
            m.case(
                "adapters",
                "LlamaIndex: /dev/zero ImageNode (keep, async)",
                lambda: count(asyncio.run(post.apostprocess_nodes(nodes(), query_str="fox")), 2, li_error),
                expect="kept 1",
            )
            m.case(
                "adapters",
                "LangChain: /dev/zero Document (keep, async)",
                lambda: count(asyncio.run(comp.acompress_documents(docs(), "fox")), 2, lc_error),
                expect="kept 1",
            )
            m.case(
                "adapters",
                "LlamaIndex: None in the node list (async)",
                lambda: asyncio.run(post.apostprocess_nodes(nodes_and_none(), query_str="fox")),
                expect=r"TypeError: nodes\[2\] is a NoneType",
            )
            m.case(
                "adapters",
                "LangChain: empty list, empty query (async)",
                lambda: asyncio.run(comp.acompress_documents([], "")),
                expect="ValueError: Query has neither",
            )
    m.case(
        "adapters",
        "LlamaIndex: top_n=True",
        lambda: MultimodalRerankPostprocessor(reranker=keep, top_n=True),
        expect="top_n must be a positive int",
    )
    m.case(
        "adapters",
        "LangChain: top_n=True",
        lambda: MultimodalRerankCompressor(reranker=keep, top_n=True),
        expect="top_n must be a positive int",
    )
    m.case(
        "adapters",
        "core: threshold=True",
        lambda: keep.rerank("q", [Candidate("a", text="x")], threshold=True),
        expect="threshold must be a unified score",
    )

    def concurrent() -> tuple[str, str]:
        reranker = MultimodalReranker(FakeScorer())
        words = [f"word{i}" for i in range(100)]
        cands = [Candidate(w, text=f"about {w}") for w in words]

        async def main() -> list[list[RankedCandidate]]:
            return await asyncio.gather(*(reranker.arerank(w, cands, top_n=1) for w in words))

        results = asyncio.run(main())
        wrong = sum(r[0].id != w for r, w in zip(results, words, strict=True))
        return (
            f"100 concurrent arerank calls, {wrong} answered for another query",
            "no" if wrong == 0 else f"{wrong} mixed up",
        )

    m.case("adapters", "100 concurrent arerank calls", concurrent, expect="0 answered for another")


def web_cases(m: Matrix, tmp: Path) -> None:
    from fastapi.testclient import TestClient

    from mm_rerank_components.answer import ExtractiveAnswerer, RAGPipeline
    from mm_rerank_components.web import create_app

    gone = tmp / "web" / "gone.png"
    gone.parent.mkdir()
    gone.write_bytes(png())
    secret_dir = str(gone.parent)

    class Retriever:
        def retrieve(self, query: Query) -> list[Candidate]:
            return [
                Candidate("fox", text="The red fox hunts voles in the snow."),
                Candidate("pic", image=str(gone), text="a red fox picture"),
            ]

    pipeline = RAGPipeline(
        Retriever(), MultimodalReranker(FakeScorer(), on_error="keep"), answerer=ExtractiveAnswerer(), top_n=4
    )
    client = TestClient(create_app(pipeline))
    gone.unlink()

    def ask(body: Any, raw: bytes | None = None) -> tuple[str, str]:
        if raw is not None:
            response = client.post("/api/ask", content=raw, headers={"content-type": "application/json"})
        else:
            response = client.post("/api/ask", json=body)
        leaked = secret_dir in response.text
        return (
            f"HTTP {response.status_code}, {len(response.content)} bytes",
            "a server path" if leaked else "no",
        )

    m.case("web", "a hit whose picture was deleted", lambda: ask({"question": "red fox"}), expect="HTTP 200")
    m.case(
        "web",
        "a 2 MB body",
        lambda: ask(None, raw=b'{"question": "' + b"x" * 2_000_000 + b'"}'),
        expect=r"HTTP 413, \d{1,3} bytes",
    )
    m.case(
        "web",
        "a 3,000-character question",
        lambda: ask({"question": "x" * 3000}),
        expect=r"HTTP 4\d\d, \d{1,3} bytes",
    )
    m.case(
        "web", "a lone surrogate", lambda: ask(None, raw=b'{"question": "\\ud800 fox"}'), expect="HTTP 400"
    )
    m.case(
        "web",
        "path traversal in /api/image",
        lambda: (f"HTTP {client.get('/api/image/..%2F..%2Fetc%2Fpasswd').status_code}", "no"),
        expect="HTTP 404",
    )


# -- issue 22: hung scoring, remote answers, the HTTP layer, saved folders, labels ------------------------------


def _raw_server(handler: Callable[[socket.socket], None]) -> tuple[str, Callable[[], None]]:
    sock = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def run(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.recv(65536)
            handler(conn)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=run, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()

    def close() -> None:
        stop.set()
        sock.close()

    return f"http://127.0.0.1:{sock.getsockname()[1]}", close


def _trickle_body(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(40):
        conn.sendall(b" ")
        time.sleep(0.5)


def _trickle_headers(conn: socket.socket) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 80:
        conn.sendall(bytes([byte]))
        time.sleep(0.5)


def _mock(reply: Callable[[], Any]) -> Any:
    import httpx

    return httpx.Client(transport=httpx.MockTransport(lambda request: reply()))


def _remote_outcome(work: Callable[[], Any]) -> tuple[str, str]:
    from mm_rerank_components.scorers.remote import RemoteScorerError

    start = time.monotonic()
    try:
        value = work()
    except RemoteScorerError as exc:
        return f"{type(exc).__name__} after {time.monotonic() - start:.1f} s: {exc}", "no"
    return f"answered {value!r} after {time.monotonic() - start:.1f} s", "no"


def remote_cases(m: Matrix) -> None:
    import gzip

    import httpx

    from mm_rerank_components.scorers.remote import RemoteScorer

    one = [Candidate("a", text="x")]
    for name, handler in (
        ("body 1 byte per 0.5 s", _trickle_body),
        ("headers 1 byte per 0.5 s", _trickle_headers),
    ):
        url, close = _raw_server(handler)

        def call(url: str = url) -> tuple[str, str]:
            return _remote_outcome(lambda: RemoteScorer(url, timeout=2).score(Query("q"), one))

        m.case(
            "issue22", f"2 RemoteScorer(timeout=2): {name}", call, expect=r"RemoteScorerTimeout after 2\.\d s"
        )
        close()
    bomb = gzip.compress(b'{"results": [' + b" " * (200 * 1024 * 1024) + b"]}")
    m.case(
        "issue22",
        f"3 RemoteScorer: gzip bomb ({len(bomb) // 1024} KB -> 200 MB)",
        lambda: _remote_outcome(
            lambda: RemoteScorer(
                "http://x",
                client=_mock(
                    lambda: httpx.Response(
                        200, stream=httpx.ByteStream(bomb), headers={"content-encoding": "gzip"}
                    )
                ),
            ).score(Query("q"), one)
        ),
        expect="more than max_response_bytes=8388608 bytes after decompression",
    )
    big = b'{"results": [' + b'{"index": 0, "relevance_score": 0.5},' * 400_000 + b"{}]}"
    m.case(
        "issue22",
        f"3 RemoteScorer: a {len(big) // 2**20} MB JSON answer",
        lambda: _remote_outcome(
            lambda: RemoteScorer(
                "http://x", client=_mock(lambda: httpx.Response(200, stream=httpx.ByteStream(big)))
            ).score(Query("q"), one)
        ),
        expect="more than max_response_bytes",
    )
    url, close = _raw_server(_trickle_body)

    def keep() -> tuple[str, str]:
        start = time.monotonic()
        ranked = MultimodalReranker(RemoteScorer(url, timeout=2), on_error="keep").rerank(
            "q", [Candidate(str(i), text=f"t{i}") for i in range(6)]
        )
        outcome, lost = ranked_outcome(ranked, 6)
        return f"{time.monotonic() - start:.1f} s, {outcome}", lost

    m.case(
        "issue22",
        "4 on_error=keep, 6 candidates, slow RemoteScorer(timeout=2)",
        keep,
        expect=r"^2\.\d s, kept 6 unscored",
    )
    close()
    for name, answer, expect in (
        (
            "a repeated index",
            {"results": [{"index": 0, "relevance_score": 0.1}, {"index": 0, "relevance_score": 0.9}]},
            "twice",
        ),
        (
            "true as a score",
            {"results": [{"index": 0, "relevance_score": True}]},
            "answered True as the relevance_score",
        ),
    ):
        m.case(
            "issue22",
            f"12 remote answer: {name}",
            functools.partial(_remote_answer_outcome, answer, one),
            expect=f"RemoteScorerError .*{expect}",
        )
    for name, raw in (("invalid JSON", b"{nope"), ("100k-deep JSON", b"[" * 100_000)):
        m.case(
            "issue22",
            f"12 remote answer: {name} (retried)",
            functools.partial(_remote_raw_outcome, raw, one),
            expect="failed after 3 attempts; last: the answer is not usable JSON",
        )


def _remote_answer_outcome(answer: Any, one: Any) -> tuple[str, str]:
    import httpx

    from mm_rerank_components.scorers.remote import RemoteScorer

    client = _mock(lambda: httpx.Response(200, json=answer))
    return _remote_outcome(lambda: RemoteScorer("http://x", client=client).score(Query("q"), one))


def _remote_raw_outcome(raw: bytes, one: Any) -> tuple[str, str]:
    import httpx

    from mm_rerank_components.scorers.remote import RemoteScorer

    client = _mock(lambda: httpx.Response(200, stream=httpx.ByteStream(raw)))
    return _remote_outcome(
        lambda: RemoteScorer("http://x", client=client, backoff_s=0.01, max_retries=2).score(Query("q"), one)
    )


def _http(status: int, payload: dict[str, Any]) -> tuple[str, str]:
    return f"HTTP {status} {payload.get('error', {}).get('type', '')}: {payload.get('message', '')}", "no"


def serve_cases(m: Matrix) -> None:
    from mm_rerank_components.serving import RerankEngine, ServeConfig

    release = threading.Event()

    class Hanging(FakeScorer):
        def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
            if query.text == "hang":
                release.wait(30)
            return super().score(query, candidates)

    def hung() -> tuple[str, str]:
        engine = RerankEngine(ServeConfig(request_timeout_s=3.0), scorer=Hanging())

        async def main() -> str:
            first = asyncio.create_task(engine.handle("jina", b'{"query": "hang", "documents": ["a"]}'))
            await asyncio.sleep(0.1)
            start = time.monotonic()
            statuses = []
            for _ in range(20):
                status, _ = await engine.handle("jina", b'{"query": "fox", "documents": ["a fox", "owl"]}')
                statuses.append(status)
            others = time.monotonic() - start
            health = engine.health()
            status, _ = await first
            return (
                f"hung call {status}; 20 others {sorted(set(statuses))} in {others:.1f} s; /health "
                f"stuck_passes={health['stuck_passes']}"
            )

        try:
            return asyncio.run(main()), "no"
        finally:
            release.set()
            engine.close()

    m.case(
        "issue22",
        "1 serve --timeout 3, one scoring call hangs",
        hung,
        expect=r"hung call 504; 20 others \[200\] in 1\.\d s; /health stuck_passes=1",
    )
    engine = RerankEngine(ServeConfig(scorer="fake"))

    def post(body: bytes, api: Any = "jina") -> tuple[str, str]:
        status, payload = asyncio.run(engine.handle(api, body))
        return _http(status, payload)

    surrogate = b'{"query": "fox", "documents": ["\\ud800 fox"]}'
    m.case(
        "issue22",
        "5 lone surrogate on /v1/rerank",
        lambda: post(surrogate),
        expect="HTTP 400 malformed_json: .*lone UTF-16 surrogate",
    )
    m.case(
        "issue22",
        "5 lone surrogate on /v2/rerank",
        lambda: post(surrogate, "cohere"),
        expect="HTTP 400 malformed_json: .*lone UTF-16 surrogate",
    )
    deep = b'{"query": "q", "documents": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    m.case(
        "issue22",
        "6 JSON nested 50k deep",
        lambda: post(deep),
        expect="HTTP 400 malformed_json: .*nested deeper than 16",
    )
    digits = b'{"query": "q", "documents": ["a"], "top_n": ' + b"7" * 5000 + b"}"
    m.case(
        "issue22",
        "6 a 5000-digit top_n",
        lambda: post(digits),
        expect="HTTP 400 malformed_json: .*integer of 5000 digits",
    )
    buffer = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buffer, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    pngs = json.dumps({"query": "q", "documents": [{"image": uri}] * 8}).encode()
    m.case(
        "issue22",
        "13 eight 36-megapixel PNGs in one request",
        lambda: post(pngs),
        expect="HTTP 413 too_many_pixels",
    )

    def openapi() -> tuple[str, str]:
        from pydantic import ValidationError

        from mm_rerank_components.serving.app import _JinaRequest, create_app

        responses = create_app(engine).openapi()["paths"]["/v1/rerank"]["post"]["responses"]
        try:
            _JinaRequest.model_validate({"query": "", "documents": ["a"]})
            empty = "accepted"
        except ValidationError:
            empty = "rejected"
        return f"documented statuses {sorted(responses)}; an empty query is {empty} by the schema", "no"

    m.case("issue22", "16 the OpenAPI schema", openapi, expect=r"'400'.*empty query is rejected")
    slow_clients(m)
    engine.close()


def slow_clients(m: Matrix) -> None:
    import subprocess
    import sys

    import httpx
    import uvicorn

    from mm_rerank_components.serving import RerankEngine, ServeConfig
    from mm_rerank_components.serving.app import create_app, uvicorn_options

    engine = RerankEngine(ServeConfig(scorer="fake", header_timeout_s=2.0, body_timeout_s=2.0))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(engine),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            **uvicorn_options(engine.config),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)

    def held(send: bytes) -> tuple[str, str]:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(send)
            start = time.monotonic()
            answer = conn.recv(64)
            return f"closed after {time.monotonic() - start:.1f} s with {answer[:12]!r}", "no"

    m.case(
        "issue22",
        "14 an idle socket (header_timeout_s=2)",
        lambda: held(b""),
        expect=r"closed after 2\.\d s with b''",
    )
    m.case(
        "issue22",
        "14 headers never finished",
        lambda: held(b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\n"),
        expect=r"closed after 2\.\d s",
    )
    m.case(
        "issue22",
        "14 a body that never arrives (body_timeout_s=2)",
        lambda: held(b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n{"),
        expect=r"after 2\.\d s with b'HTTP/1.1 408",
    )

    def health_under_load() -> tuple[str, str]:
        """``mm-rerank serve --scorer fake`` in its own process (its GIL settings), probed from a third."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            serve_port = sock.getsockname()[1]
        serve = [sys.executable, "-m", "mm_rerank_components.cli", "serve", "--scorer", "fake"]
        server = subprocess.Popen(
            [*serve, "--host", "127.0.0.1", "--port", str(serve_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        documents = [f"passage {i} about a red fox " + "words and more words " * 500 for i in range(800)]
        body = json.dumps({"query": "red fox", "documents": documents}).encode()
        probe = (
            "import httpx, sys, time\n"
            f"c = httpx.Client(base_url='http://127.0.0.1:{serve_port}')\n"
            "c.get('/health'); out = []\n"
            "end = time.monotonic() + float(sys.argv[1])\n"
            "while time.monotonic() < end:\n"
            "    s = time.monotonic(); c.get('/health'); out.append(time.monotonic() - s); time.sleep(0.01)\n"
            "out.sort(); print(len(out), out[len(out) // 2] * 1000, out[int(len(out) * 0.95)] * 1000, out[-1] * 1000)\n"
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{serve_port}", timeout=120) as client:
                deadline = time.monotonic() + 60
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if client.get("/livez").status_code == 200:
                            break
                    if time.monotonic() > deadline or server.poll() is not None:
                        return "mm-rerank serve did not start", "the server"
                    time.sleep(0.1)
                start = time.monotonic()
                client.post("/v1/rerank", content=body)
                alone = time.monotonic() - start
                idle = subprocess.run(
                    [sys.executable, "-c", probe, f"{alone:.2f}"], capture_output=True, text=True, timeout=120
                ).stdout.split()
                prober = subprocess.Popen(
                    [sys.executable, "-c", probe, f"{alone:.2f}"], stdout=subprocess.PIPE, text=True
                )
                time.sleep(0.3)
                response = client.post("/v1/rerank", content=body)
                out, _ = prober.communicate(timeout=120)
        finally:
            server.terminate()
            server.wait(20)
        n, p50, p95, worst = out.split()
        # the machine's own scheduling delay (the idle server's p95) is not the server's doing
        verdict = "within 50 ms" if float(p95) < 50 else f"{float(p95) - float(idle[2]):.0f} ms over idle"
        return (
            f"HTTP {response.status_code}, /health p95 {verdict}: {n} probes from another process, p50 "
            f"{float(p50):.0f} ms, p95 {float(p95):.0f} ms, max {float(worst):.0f} ms while 800 x 10 KB "
            f"documents were scored ({alone:.1f} s); idle server at the same load: p50 {float(idle[1]):.0f}, "
            f"p95 {float(idle[2]):.0f}, max {float(idle[3]):.0f} ms"
        ), "no"

    m.case(
        "issue22",
        "14 /health (mm-rerank serve) while 800 x 10 KB docs are scored",
        health_under_load,
        expect=r"HTTP 200, /health p95 (within 50 ms|([0-9]|1[0-9]|2[0-5]) ms over idle)",
        limit=150,
    )
    huge = json.dumps({"query": "fox", "documents": ["fox " * 7_000_000]}).encode()

    def one_huge() -> tuple[str, str]:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            start = time.monotonic()
            response = client.post("/v1/rerank", content=huge)
            return (
                f"HTTP {response.status_code} {response.json()['error']['type']} in {time.monotonic() - start:.1f} s",
                "no",
            )

    m.case("issue22", "14 one 28 MB document", one_huge, expect="HTTP 413 document_too_long")
    server.should_exit = True
    thread.join(10)
    engine.close()


def folder_cases(m: Matrix, tmp: Path) -> None:
    import shutil

    from mm_rerank_components.adapt.folder import load_reranker, save_reranker
    from mm_rerank_components.adapt.fusion import LabelledList, fit_fusion

    scorer = FakeScorer()
    lists = []
    for k in range(8):
        query = Query(f"fox {k}")
        cands = [
            Candidate(f"p{k}", text=f"fox {k} den", source="text", retrieval_score=0.8),
            Candidate(f"n{k}", text="an owl at night", source="text", retrieval_score=0.3),
            Candidate(f"m{k}", text=f"fox {k}", source="text", retrieval_score=0.6),
            Candidate(f"o{k}", text="a heron", source="text", retrieval_score=0.5),
        ]
        lists.append(LabelledList(query, cands, scorer.score(query, cands), [1, 0, 1, 0]))
    saved = save_reranker(tmp / "saved", fit_fusion(lists, seed=0, bm25=False), scorer=scorer)

    def platt(**params: Any) -> Callable[[Any], None]:
        def change(d: Any) -> None:
            for entry in d["modalities"].values():
                entry["params"].update(params)

        return change

    def isotonic(y: list[float]) -> Callable[[Any], None]:
        def change(d: Any) -> None:
            for modality in d["modalities"]:
                d["modalities"][modality] = {
                    "type": "IsotonicCalibrator",
                    "params": {"x": [0.0, 1.0], "y": y},
                }

        return change

    cases: list[tuple[str, str, Callable[[Any], Any] | str, str]] = [
        (
            "7 calibration.json a = NaN",
            "calibration.json",
            platt(a=float("nan")),
            r"calibration\.json: modalities\.\S+\.params\.a must be a finite number, got nan",
        ),
        (
            "8 fusion.json a NaN weight",
            "fusion.json",
            lambda d: d["weights"].__setitem__(0, float("nan")),
            r"fusion\.json: weights\[0\]",
        ),
        (
            "8 fusion.json an inf mean",
            "fusion.json",
            lambda d: d["mean"].__setitem__(0, float("inf")),
            r"fusion\.json: mean\[0\]",
        ),
        (
            "8 fusion.json bias NaN",
            "fusion.json",
            lambda d: d.__setitem__("bias", float("nan")),
            r"fusion\.json: bias must be a finite",
        ),
        (
            "8 fusion.json scale = 0",
            "fusion.json",
            lambda d: d["scale"].__setitem__(1, 0.0),
            r"fusion\.json: scale\[1\] .* must be > 0",
        ),
        (
            "9 fusion.json weights is a string",
            "fusion.json",
            lambda d: d.__setitem__("weights", "heavy"),
            r"fusion\.json: mean/scale/weights",
        ),
        (
            "9 calibration.json modalities is a number",
            "calibration.json",
            lambda d: d.__setitem__("modalities", 3),
            r"calibration\.json: modalities must be",
        ),
        (
            "9 fusion.json a 200k-deep JSON bomb",
            "fusion.json",
            "[" * 200_000 + "]" * 200_000,
            r"fusion\.json is not valid JSON \(JSON nested deeper",
        ),
        (
            "10 files.fusion = ../../../../etc/passwd",
            "config.json",
            lambda d: d["files"].__setitem__("fusion", "../../../../etc/passwd"),
            r"files\.fusion must be a file name inside the folder",
        ),
        (
            "10 files.calibration = /etc/passwd",
            "config.json",
            lambda d: d["files"].__setitem__("calibration", "/etc/passwd"),
            r"files\.calibration must be a file name inside the folder",
        ),
        (
            "11 calibration.json a = inf",
            "calibration.json",
            platt(a=float("inf")),
            r"params\.a must be a finite number, got inf",
        ),
        (
            "11 isotonic y with NaN",
            "calibration.json",
            isotonic([0.1, float("nan")]),
            r"y\[1\] must be a finite number, got nan",
        ),
        (
            "11 isotonic y out of [0, 1]",
            "calibration.json",
            isotonic([0.2, 1.7]),
            r"y must be non-decreasing probabilities in \[0, 1\]",
        ),
        (
            "11 fusion.json a negative scale",
            "fusion.json",
            lambda d: d["scale"].__setitem__(0, -1.0),
            r"scale\[0\] .* must be > 0, got -1",
        ),
    ]
    for k, (name, file, change, expect) in enumerate(cases):
        folder = tmp / f"folder{k}"
        shutil.copytree(saved, folder)
        if isinstance(change, str):
            (folder / file).write_text(change)
        else:
            data = json.loads((folder / file).read_text())
            change(data)
            (folder / file).write_text(json.dumps(data))
        m.case(
            "issue22",
            f"{name}",
            functools.partial(load_reranker, folder),
            expect=f"RerankerFolderError: .*{expect}",
        )


def label_cases(m: Matrix, tmp: Path) -> None:
    from mm_rerank_components.adapt.labels import load_labels

    good = '{"query": "fine", "pos": ["x"], "neg": ["y"]}\n'
    for name, text, expect in (
        (
            "100k-deep nesting",
            good + '{"query": "q", "pos": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
            r"labels\d\.jsonl:2: ",
        ),
        (
            "a 5000-digit number",
            good + '{"query": "q", "pos": ["a"], "n": ' + "9" * 5000 + "}\n",
            r"labels\d\.jsonl:2: ",
        ),
        ("a lone surrogate", good + '{"query": "\\ud800", "pos": ["a"]}\n', r"labels\d\.jsonl:2: "),
        (
            "a duplicate query id",
            '{"type": "doc", "id": "d1", "text": "Foxes live in dens."}\n'
            '{"type": "query", "id": "q1", "text": "where do foxes live", "relevant": ["d1"]}\n'
            '{"type": "query", "id": "q1", "text": "fox dens", "relevant": ["d1"]}\n',
            r"labels\d\.jsonl:3: duplicate query id",
        ),
    ):
        path = tmp / f"labels{len(m.results) % 10}.jsonl"
        path.write_text(text)
        m.case(
            "issue22",
            f"15 adapt labels: {name}",
            functools.partial(load_labels, path),
            expect=f"LabelError: .*{expect}",
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/hostile_inputs.json"))
    args = parser.parse_args()
    matrix = Matrix()
    with tempfile.TemporaryDirectory() as folder, servers() as (trickle, hang, base):
        tmp = Path(folder)
        file_cases(matrix, tmp)
        url_cases(matrix, trickle, hang, base)
        scorer_cases(matrix)
        adapter_cases(matrix, tmp)
        web_cases(matrix, tmp)
        serve_cases(matrix)
        remote_cases(matrix)
        folder_cases(matrix, tmp)
        label_cases(matrix, tmp)
    width = max(len(r.case) for r in matrix.results)
    print(f"{'group':<9} {'case':<{width}}  {'ok':<3} {'s':>6}  {'lost':<12} outcome")
    for r in matrix.results:
        print(
            f"{r.group:<9} {r.case:<{width}}  {'yes' if r.ok else 'NO':<3} {r.seconds:>6.2f}  {r.lost:<12} {short(r.outcome, 110)}"
        )
    bad = [r for r in matrix.results if not r.ok]
    print(f"\n{len(matrix.results)} cases, {len(bad)} not as expected")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([r.__dict__ for r in matrix.results], indent=2))
    print(f"wrote {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
