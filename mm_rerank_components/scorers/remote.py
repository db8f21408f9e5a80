"""``RemoteScorer``: score with a rerank service over HTTP (ours, Jina, vLLM, Cohere or TEI).

An app server without a GPU hands reranking to a GPU service and keeps everything else local: the
:class:`~mm_rerank_components.MultimodalReranker` around this scorer still validates, decodes images,
calibrates per modality and sorts, and the framework adapters and the Chroma pipeline work unchanged.

What each ``api`` is sent (images as ``data:image/png;base64,`` URIs, lossless, so the service sees the
very pixels the reranker decoded):

=============  =================  =====================================================  ===============
api            path               documents                                              modalities
=============  =================  =====================================================  ===============
``mm-rerank``  ``/v1/rerank``     ``{"text"}``, ``{"image"}``, ``{"text", "image"}``      all three
``vllm``       ``/v1/rerank``     strings, or ``{"content": [text / image_url parts]}``  all three
``jina``       ``/rerank``        ``{"text"}`` or ``{"image"}`` (jina-reranker-m0)        text, image
``cohere``     ``/v2/rerank``     strings                                                text
``tei``        ``/rerank``        ``"texts": [strings]``                                 text
=============  =================  =====================================================  ===============

``jina``'s path is relative to its API base (``base_url="https://api.jina.ai/v1"``); the others to the
server root. A text-only API given an image candidate raises a clear error; route images to another
scorer with :class:`~mm_rerank_components.scorers.ModalityRouter` instead.

Only our own service returns calibrated probabilities (``outputs_probabilities=True`` for
``"mm-rerank"``); the others return model scores whose scale differs between modalities, so the reranker
calibrates them (pass a per-modality calibrator fitted with ``fit_calibrator``).
"""

from __future__ import annotations

import base64
import io
import logging
import math
import threading
import time
import zlib
from collections.abc import Sequence
from typing import Any, Literal

from mm_rerank_components._checks import check_int
from mm_rerank_components._deps import require
from mm_rerank_components._json import JSONLimitError, loads_strict
from mm_rerank_components.scorers.base import ALL_MODALITIES, BaseScorer
from mm_rerank_components.types import Candidate, Modality, Query

logger = logging.getLogger(__name__)

RemoteApi = Literal["mm-rerank", "jina", "vllm", "cohere", "tei"]

_PATHS: dict[str, str] = {
    "mm-rerank": "/v1/rerank",
    "vllm": "/v1/rerank",
    "jina": "/rerank",
    "cohere": "/v2/rerank",
    "tei": "/rerank",
}
_MODALITIES: dict[str, frozenset[Modality]] = {
    "mm-rerank": ALL_MODALITIES,
    "vllm": ALL_MODALITIES,
    "jina": frozenset(("text", "image")),
    "cohere": frozenset(("text",)),
    "tei": frozenset(("text",)),
}
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: Content encodings this client decompresses itself, with a cap on the output (no other is asked for).
_ENCODINGS = {"": None, "identity": None, "gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_CHUNK = 64 * 1024


class RemoteScorerError(RuntimeError):
    """The service refused the request, kept failing, or answered something unusable."""


class RemoteScorerTimeout(RemoteScorerError, TimeoutError):
    """The call's total deadline passed (connect, headers, body and retries together).

    A ``TimeoutError`` too, so the reranker's ``on_error="keep"`` does not retry the candidates one by
    one (each retry would wait out the deadline again).
    """


class _Retryable(Exception):
    """An attempt failed in a way another attempt may not (cut or garbled body)."""


# -- a total deadline on every socket operation ------------------------------------------------------------


class _Deadline(threading.local):
    at: float | None = None


def _deadline_backend() -> Any:  # noqa: C901 - one small class per httpcore interface
    """An httpcore network backend whose reads and writes stop at the calling thread's deadline.

    Size: two small classes defined in here so that httpcore (an optional extra) is imported only when used.

    httpx's timeouts are per socket operation, so a server sending one byte per half second keeps a
    request alive forever. Every read, write and connect here gets ``min(timeout, time left)`` and fails
    once the deadline has passed, headers included.
    """
    httpcore = require("httpcore", "remote", "RemoteScorer")

    class Stream(httpcore.NetworkStream):  # type: ignore[name-defined]
        def __init__(self, inner: Any, backend: Backend) -> None:
            self._inner, self._backend = inner, backend

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return bytes(self._inner.read(max_bytes, self._backend.left(timeout, httpcore.ReadTimeout)))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._inner.write(buffer, self._backend.left(timeout, httpcore.WriteTimeout))

        def close(self) -> None:
            self._inner.close()

        def start_tls(
            self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
        ) -> Any:
            left = self._backend.left(timeout, httpcore.ConnectTimeout)
            return Stream(self._inner.start_tls(ssl_context, server_hostname, left), self._backend)

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class Backend(httpcore.NetworkBackend):  # type: ignore[name-defined]
        def __init__(self) -> None:
            self._inner = httpcore.SyncBackend()
            self.deadline = _Deadline()

        def left(self, timeout: float | None, error: type[Exception]) -> float:
            at = self.deadline.at
            if at is None:
                return math.inf if timeout is None else timeout
            remaining = at - time.monotonic()
            if remaining <= 0:
                raise error("the total deadline of the call passed")
            return remaining if timeout is None else min(timeout, remaining)

        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> Any:
            left = self.left(timeout, httpcore.ConnectTimeout)
            return Stream(self._inner.connect_tcp(host, port, left, local_address, socket_options), self)

        def connect_unix_socket(
            self, path: str, timeout: float | None = None, socket_options: Any = None
        ) -> Any:
            left = self.left(timeout, httpcore.ConnectTimeout)
            return Stream(self._inner.connect_unix_socket(path, left, socket_options), self)

        def sleep(self, seconds: float) -> None:
            self._inner.sleep(seconds)

    return Backend()


def _make_client() -> tuple[Any, Any]:
    """``(httpx.Client, deadline backend or None)``: a client whose sockets honour a total deadline."""
    httpx = require("httpx", "remote", "RemoteScorer")
    transport = httpx.HTTPTransport()
    backend = None
    pool = getattr(transport, "_pool", None)
    if pool is not None and hasattr(pool, "_network_backend"):
        backend = _deadline_backend()
        pool._network_backend = backend
    else:  # a future httpx: the body is still bounded between chunks, headers only per read
        logger.warning(
            "RemoteScorer: this httpx version hides its network backend; headers are timed per read"
        )
    return httpx.Client(transport=transport), backend


def _data_uri(image: Any) -> str:
    """A lossless PNG data URI of a decoded image (or of raw bytes / an existing data URI)."""
    if isinstance(image, str) and image[:5].lower() == "data:":
        return image
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    else:
        from mm_rerank_components.media import load_image

        buffer = io.BytesIO()
        load_image(image).save(buffer, format="PNG")
        data = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


class RemoteScorer(BaseScorer):
    """Raw relevance from a remote rerank service; batches, retries and keeps a total deadline.

    Args:
        base_url: the service, e.g. ``"http://gpu-box:8080"`` (for ``api="jina"``: the API base,
            ``"https://api.jina.ai/v1"``).
        api: the request shape: ``"mm-rerank"`` (this package's ``mm-rerank serve``), ``"jina"``,
            ``"vllm"``, ``"cohere"`` or ``"tei"``.
        model: the model name sent with each request (required by Jina, Cohere and multi-model vLLM).
        api_key: sent as ``Authorization: Bearer <api_key>``.
        timeout: total seconds one :meth:`score` call may take: connecting, sending, the headers and the
            body of every batch and every retry together (a server that trickles its answer cannot hold
            a call past it). Passing it raises :class:`RemoteScorerTimeout`.
        batch_size: most documents per HTTP request.
        max_retries: retries of a request that got 408, 429, 5xx or a connection error, with exponential
            backoff from ``backoff_s`` (a ``Retry-After`` header is honoured), within ``timeout``.
        path: the endpoint path, when the service is mounted elsewhere.
        outputs_probabilities: override the default (True only for ``"mm-rerank"``, see module notes).
        max_response_bytes: largest answer accepted, counted after decompression (a gzip bomb stops
            there); only gzip and deflate are asked for and read.
        client: a ready ``httpx.Client`` (tests pass one with a mock transport). Its sockets keep httpx's
            per-read timeouts, so the deadline is checked between body chunks but not inside the
            headers; the default client checks it on every socket operation.

    Every failure is a :class:`RemoteScorerError`: an answer that is not strict JSON, repeats or misses
    an index, or sends a boolean or a non-finite score is refused, never repaired.

    Example:
        >>> from mm_rerank_components import MultimodalReranker
        >>> scorer = RemoteScorer("http://127.0.0.1:8080", api="mm-rerank")  # doctest: +SKIP
        >>> reranker = MultimodalReranker(scorer)  # doctest: +SKIP
    """

    def __init__(
        self,
        base_url: str,
        api: RemoteApi = "mm-rerank",
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        batch_size: int = 64,
        max_retries: int = 4,
        backoff_s: float = 0.25,
        path: str | None = None,
        outputs_probabilities: bool | None = None,
        max_response_bytes: int = 8 * 1024 * 1024,
        client: Any = None,
    ) -> None:
        if api not in _PATHS:
            raise ValueError(f"api must be one of {sorted(_PATHS)}, got {api!r}")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s):// URL, got {base_url!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        check_int("batch_size", batch_size)
        check_int("max_retries", max_retries, minimum=0)
        check_int("max_response_bytes", max_response_bytes)
        self.base_url = base_url.rstrip("/")
        self.api: RemoteApi = api
        self.url = self.base_url + (path if path is not None else _PATHS[api])
        self.model = model
        self.timeout = float(timeout)
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.backoff_s = float(backoff_s)
        self.modalities = _MODALITIES[api]
        self.outputs_probabilities = (
            api == "mm-rerank" if outputs_probabilities is None else outputs_probabilities
        )
        self.name = f"remote:{api}:{model or self.base_url}"
        self.max_response_bytes = max_response_bytes
        self._headers = {"Accept-Encoding": "gzip, deflate"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._backend: Any = None
        if client is None:
            client, self._backend = _make_client()
        self.client = client

    def __repr__(self) -> str:
        return f"RemoteScorer({self.url!r}, api={self.api!r}, model={self.model!r})"

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    def __enter__(self) -> RemoteScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- Scorer protocol ------------------------------------------------------------------------------
    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        """One score per candidate, in order, from as many requests as ``batch_size`` needs."""
        if not candidates:
            return []
        for candidate in candidates:
            if candidate.modality not in self.modalities:
                raise ValueError(
                    f"candidate {candidate.id!r} is {candidate.modality}, but api={self.api!r} reads only "
                    f"{', '.join(sorted(self.modalities))}; route such candidates to another scorer with "
                    "ModalityRouter, or use api='mm-rerank' or 'vllm'"
                )
        deadline = time.monotonic() + self.timeout
        encoded_query = self._query(query)
        scores: list[float] = []
        for start in range(0, len(candidates), self.batch_size):
            batch = candidates[start : start + self.batch_size]
            body = self._body(encoded_query, [self._document(c) for c in batch])
            scores.extend(self._parse(self._post(body, deadline), len(batch)))
        return scores

    # -- request shapes -------------------------------------------------------------------------------
    def _query(self, query: Query) -> Any:
        if query.image is None:
            return query.text
        if self.api in ("cohere", "tei", "jina"):
            raise ValueError(
                f"api={self.api!r} takes text queries only; this query has an image. Use api='mm-rerank' "
                "or 'vllm', or query with text"
            )
        uri = _data_uri(query.image)
        if self.api == "vllm":
            parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": uri}}]
            if query.text:
                parts.insert(0, {"type": "text", "text": query.text})
            return {"content": parts}
        return {"text": query.text, "image": uri} if query.text else {"image": uri}

    def _document(self, candidate: Candidate) -> Any:
        text = candidate.text if candidate.text and candidate.text.strip() else None
        if candidate.image is None:
            if self.api in ("mm-rerank", "jina"):
                return {"text": text}
            return text
        uri = _data_uri(candidate.image)
        if self.api == "vllm":
            parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": uri}}]
            if text:
                parts.insert(0, {"type": "text", "text": text})
            return {"content": parts}
        return {"text": text, "image": uri} if text else {"image": uri}

    def _body(self, query: Any, documents: list[Any]) -> dict[str, Any]:
        if self.api == "tei":
            return {"query": query, "texts": documents, "raw_scores": False, "return_text": False}
        body: dict[str, Any] = {"query": query, "documents": documents, "top_n": len(documents)}
        if self.api != "cohere":
            body["return_documents"] = False
        if self.model is not None:
            body["model"] = self.model
        return body

    def _parse(self, payload: Any, n: int) -> list[float]:
        """Exactly one finite score per document: each index once, in range; anything else is refused."""
        items = (
            payload if self.api == "tei" else (payload.get("results") if isinstance(payload, dict) else None)
        )
        key = "score" if self.api == "tei" else "relevance_score"
        if not isinstance(items, list):
            raise RemoteScorerError(f"{self.url} answered without a results list: {str(payload)[:200]!r}")
        scores: list[float | None] = [None] * n
        for item in items:
            index, value = (item.get("index"), item.get(key)) if isinstance(item, dict) else (None, None)
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
                raise RemoteScorerError(
                    f"{self.url} answered a result without a valid index (0 to {n - 1}): {str(item)[:200]!r}"
                )
            if isinstance(item, dict) and item.get("error"):
                raise RemoteScorerError(f"{self.url} could not score document {index}: {item['error']}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise RemoteScorerError(
                    f"{self.url} answered {value!r} as the {key} of document {index}; a score must be a "
                    "finite number"
                )
            if scores[index] is not None:
                raise RemoteScorerError(
                    f"{self.url} answered document {index} twice; a rerank service scores each document once"
                )
            scores[index] = float(value)
        missing = [i for i, s in enumerate(scores) if s is None]
        if missing:
            raise RemoteScorerError(
                f"{self.url} returned no usable score for documents {missing[:10]} of {n}; a rerank service "
                "must score every document (is top_n or a threshold cutting the list?)"
            )
        return [float(s) for s in scores if s is not None]

    # -- transport ------------------------------------------------------------------------------------
    def _timeout(self) -> RemoteScorerTimeout:
        return RemoteScorerTimeout(
            f"{self.url}: no complete answer within the total timeout of {self.timeout:g} s (connecting, "
            "headers, body and retries together)"
        )

    def _post(self, body: dict[str, Any], deadline: float) -> Any:
        httpx = require("httpx", "remote", "RemoteScorer")
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout()
            problem: str
            retry_after: float | None = None
            try:
                status, payload, retry_after = self._attempt(httpx, body, deadline)
            except httpx.TransportError as exc:  # refused, reset, cut, timed out
                if time.monotonic() >= deadline:
                    raise self._timeout() from None
                problem = f"{type(exc).__name__}: {exc}"
            except _Retryable as exc:
                problem = str(exc)
            else:
                if status < 300:
                    return payload
                problem = f"HTTP {status}: {_message(payload)}"
                if status not in _RETRY_STATUS:
                    raise RemoteScorerError(f"{self.url} refused the request ({problem})")
            if attempt >= self.max_retries:
                raise RemoteScorerError(f"{self.url} failed after {attempt + 1} attempts; last: {problem}")
            pause = retry_after if retry_after is not None else self.backoff_s * 2**attempt
            if time.monotonic() + pause >= deadline:
                raise RemoteScorerTimeout(
                    f"{self.url}: giving up, the next retry would pass the total timeout of "
                    f"{self.timeout:g} s; last: {problem}"
                )
            logger.info("%s: %s; retry %d in %.2f s", self.url, problem, attempt + 1, pause)
            time.sleep(pause)
            attempt += 1

    def _attempt(self, httpx: Any, body: dict[str, Any], deadline: float) -> tuple[int, Any, float | None]:
        """``(status, decoded JSON or text, Retry-After)`` of one request, all of it before ``deadline``."""
        remaining = deadline - time.monotonic()
        if self._backend is not None:
            self._backend.deadline.at = deadline
        try:
            with self.client.stream(
                "POST", self.url, json=body, headers=self._headers, timeout=remaining
            ) as response:
                raw = self._read_capped(response, deadline)
                status = response.status_code
                retry_after = _retry_after(response) if status in _RETRY_STATUS else None
        finally:
            if self._backend is not None:
                self._backend.deadline.at = None
        if status >= 300:
            try:
                return status, loads_strict(raw), retry_after
            except JSONLimitError:
                return status, raw[:300].decode("utf-8", "replace"), retry_after
        try:
            return status, loads_strict(raw, max_depth=32), None
        except JSONLimitError as exc:
            raise _Retryable(f"the answer is not usable JSON: {exc}") from None

    def _read_capped(self, response: Any, deadline: float) -> bytes:
        """The body, decompressed here with a cap on the output, read chunk by chunk before ``deadline``."""
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in _ENCODINGS:
            raise RemoteScorerError(
                f"{self.url} answered with content-encoding {encoding!r}; only gzip and deflate are read"
            )
        cap = self.max_response_bytes
        if response.is_stream_consumed:  # read into memory already (a mock transport): only the cap applies
            if len(response.content) > cap:
                raise RemoteScorerError(f"{self.url} answered more than max_response_bytes={cap} bytes")
            return bytes(response.content)
        wbits = _ENCODINGS[encoding]
        inflate = zlib.decompressobj(wbits) if wbits is not None else None
        out = bytearray()
        try:
            for chunk in response.iter_raw(_CHUNK):
                if time.monotonic() >= deadline:
                    raise self._timeout()
                if inflate is None:
                    out += chunk
                else:
                    data = chunk
                    while data and len(out) <= cap:
                        out += inflate.decompress(data, cap + 1 - len(out))
                        data = inflate.unconsumed_tail
                if len(out) > cap:
                    raise RemoteScorerError(
                        f"{self.url} answered more than max_response_bytes={cap} bytes"
                        f"{' after decompression' if inflate is not None else ''}; a rerank answer is small "
                        "(is return_documents on, or is this the right service?)"
                    )
        except zlib.error as exc:
            raise _Retryable(f"the {encoding} body does not decompress ({exc})") from None
        if inflate is not None:
            out += inflate.flush()  # what zlib still buffers: at most a window, never a bomb
            if len(out) > cap:
                raise RemoteScorerError(
                    f"{self.url} answered more than max_response_bytes={cap} bytes after decompression"
                )
        return bytes(out)


def _message(payload: Any) -> str:
    if isinstance(payload, dict):
        for key in ("message", "detail", "error"):
            if isinstance(payload.get(key), str):
                return str(payload[key])[:300]
    return str(payload)[:200]


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
