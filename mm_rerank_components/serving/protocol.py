"""The wire formats: parse Jina/vLLM and Cohere rerank requests, build their responses.

Pure Python (no web framework), so the HTTP app, the Ray Serve deployment and the tests share it.

Accepted shapes (a superset of what the clients send):

* query: a string, ``{"text": ...}``, ``{"image": ...}``, ``{"text": ..., "image": ...}`` or
  ``{"content": [parts]}`` with OpenAI chat parts (``{"type": "text", "text": ...}``,
  ``{"type": "image_url", "image_url": {"url": ...}}``);
* each document: the same shapes (Cohere v1's ``{"text": ...}`` included);
* an image: a ``data:image/...;base64,`` URI, bare base64, or an ``http(s)://`` URL when the server allows
  URLs. Server-side file paths are never accepted: a client must not make the server read its own files.
* our own addition, optional on any document object: ``"signals"``, what the first stage knew about it
  (:data:`SIGNAL_FIELDS`: ``source``, ``retrieval_score``, ``retrieval_rank``, ``metadata``,
  ``precomputed``), so the default reranker fuses them exactly as it does in process. Clients that do not
  send it are served as before.

Every problem raises :class:`RequestError` with the HTTP status, a short kind for metrics, a message that
says what was wrong and what to send instead, and the index of the document concerned.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mm_rerank_components.integrations._common import (
    PRECOMPUTED_KEY,
    precomputed_from_data,
    precomputed_to_data,
)
from mm_rerank_components.media import ImageLoadError, ImageOptions, image_key, is_url, load_image, text_key
from mm_rerank_components.types import Candidate, ImageRef, Precomputed, Query, RankedCandidate

Api = Literal["jina", "cohere"]
_B64 = re.compile(r"^[A-Za-z0-9+/_\-]+={0,2}$")
_WS = re.compile(r"\s+")

#: The fields of a document's optional ``"signals"`` object: the route that found it (``source``, e.g. the
#: collection name, or ``"text"``/``"image"``), that route's similarity and 0-based rank, numeric or short
#: metadata a saved reranker may read, and the first stage's precomputed signals
#: (:func:`~mm_rerank_components.integrations._common.precomputed_to_data`).
SIGNAL_FIELDS = ("source", "retrieval_score", "retrieval_rank", "metadata", "precomputed")
_MAX_SIGNAL_METADATA = 64
_MAX_SIGNAL_STRING = 4096
_MAX_SIGNAL_VECTOR = 8192


class RequestError(ValueError):
    """A request the server refuses: ``status`` (4xx), ``kind`` (for metrics), ``index`` (a document).

    Example:
        >>> RequestError("documents must be a list", kind="invalid_type").status
        400
    """

    def __init__(self, message: str, *, kind: str, status: int = 400, index: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.index = index

    def payload(self) -> dict[str, Any]:
        """The JSON error body: ``detail`` (FastAPI/Jina clients) and ``message`` (Cohere clients)."""
        message = str(self)
        error: dict[str, Any] = {"type": self.kind, "message": message}
        if self.index is not None:
            error["index"] = self.index
        return {"detail": message, "message": message, "error": error}


@dataclass(frozen=True)
class Limits:
    """What one request may hold; see :class:`~mm_rerank_components.serving.ServeConfig`."""

    max_documents: int = 1000
    image_options: ImageOptions = field(default_factory=ImageOptions)


@dataclass(frozen=True)
class RerankRequest:
    """A parsed request: valid candidates with their input positions, and per-document errors."""

    query: Query
    candidates: list[Candidate]
    positions: list[int]
    failed: dict[int, str]
    documents: list[dict[str, Any]]
    top_n: int | None
    threshold: float | None
    return_documents: bool
    on_error: Literal["raise", "keep"]
    #: echo inline pictures (data URIs, base64) with ``return_documents``; URLs are always echoed
    return_images: bool = False

    @property
    def n_documents(self) -> int:
        return len(self.documents)


def parse_body(body: bytes) -> dict[str, Any]:
    """JSON object from the raw body, or :class:`RequestError`."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(
            f"the body is not valid JSON ({exc}); send a JSON object like "
            '{"query": "...", "documents": ["..."]}',
            kind="malformed_json",
        ) from None
    if not isinstance(data, dict):
        raise RequestError(
            f"the body must be a JSON object, got {type(data).__name__}; send "
            '{"query": "...", "documents": ["..."]}',
            kind="invalid_type",
        )
    return data


def parse_request(data: Mapping[str, Any], limits: Limits, api: Api = "jina") -> RerankRequest:
    """Validate a rerank request body (already JSON-decoded) against ``limits``.

    Example:
        >>> req = parse_request({"query": "fox", "documents": ["a red fox", {"text": "owl"}]}, Limits())
        >>> [c.text for c in req.candidates], req.positions
        (['a red fox', 'owl'], [0, 1])
    """
    if "query" not in data:
        raise RequestError(
            'the request has no "query"; send {"query": "...", "documents": [...]}', kind="missing"
        )
    query = _parse_query(data["query"], limits)
    documents = data.get("documents")
    if not isinstance(documents, list):
        raise RequestError(
            f'"documents" must be a list, got {_type(documents)}; send "documents": ["...", ...]',
            kind="invalid_type",
        )
    if not documents:
        raise RequestError('"documents" is empty; send at least one document', kind="empty_documents")
    if len(documents) > limits.max_documents:
        raise RequestError(
            f"{len(documents)} documents in one request, over this server's limit of {limits.max_documents}; "
            "split them over several requests (or start the server with a larger --max-documents)",
            kind="too_many_documents",
            status=413,
        )
    on_error = data.get("on_error", "raise")
    if on_error not in ("raise", "keep"):
        raise RequestError(f'"on_error" must be "raise" or "keep", got {on_error!r}', kind="invalid_value")
    candidates, positions, failed, echoes = _parse_documents(documents, limits, on_error)
    return RerankRequest(
        query=query,
        candidates=candidates,
        positions=positions,
        failed=failed,
        documents=echoes,
        top_n=_top_n(data.get("top_n")),
        threshold=_threshold(data.get("threshold")),
        return_documents=_flag(data.get("return_documents"), "return_documents", default=api == "jina"),
        on_error=on_error,
        return_images=_flag(data.get("return_images"), "return_images", default=False),
    )


def _parse_documents(
    documents: list[Any], limits: Limits, on_error: str
) -> tuple[list[Candidate], list[int], dict[int, str], list[dict[str, Any]]]:
    """``(candidates, their positions, {position: error} kept under on_error="keep", echoes)``."""
    candidates: list[Candidate] = []
    positions: list[int] = []
    failed: dict[int, str] = {}
    echoes: list[dict[str, Any]] = []
    for index, document in enumerate(documents):
        try:
            text, image, echo = _parse_content(document, f"documents[{index}]", limits)
        except RequestError as exc:
            if on_error == "raise":
                exc.index = index
                raise
            failed[index] = str(exc)
            echoes.append({})
            continue
        try:
            signals = _parse_signals(document, text, echo.get("image"), f"documents[{index}]")
        except RequestError as exc:
            exc.index = index
            raise
        echoes.append(echo)
        candidates.append(Candidate(id=str(index), text=text, image=image, **signals))
        positions.append(index)
    return candidates, positions, failed, echoes


def _type(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _top_n(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(f'"top_n" must be a positive integer or null, got {value!r}', kind="invalid_value")
    return value


def _threshold(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise RequestError(
            f'"threshold" must be a relevance score between 0 and 1 or null, got {value!r}',
            kind="invalid_value",
        )
    return float(value)


def _flag(value: object, name: str, *, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f'"{name}" must be true or false, got {value!r}', kind="invalid_value")
    return value


def _parse_signals(document: object, text: str | None, image: object, where: str) -> dict[str, Any]:
    """The Candidate fields a document's ``"signals"`` object sets (none when it has none).

    Example:
        >>> doc = {"text": "a", "signals": {"source": "text", "retrieval_score": 0.5}}
        >>> _parse_signals(doc, "a", None, "doc")
        {'source': 'text', 'retrieval_score': 0.5, 'metadata': {}, 'precomputed': {}}
    """
    if not isinstance(document, dict) or "signals" not in document:
        return {}
    signals = document["signals"]
    where = f"{where}.signals"
    if not isinstance(signals, dict):
        raise RequestError(
            f'{where} must be an object like {{"source": "text", "retrieval_score": 0.62}}, got '
            f"{_type(signals)}",
            kind="invalid_signals",
        )
    unknown = sorted(set(signals) - set(SIGNAL_FIELDS))
    if unknown:
        raise RequestError(
            f"{where} has unknown field(s) {unknown}; the fields are {list(SIGNAL_FIELDS)}",
            kind="invalid_signals",
        )
    source = signals.get("source")
    if source is not None and (not isinstance(source, str) or not source or len(source) > 200):
        raise RequestError(
            f"{where}.source must be a route name (a non-empty string of at most 200 characters, e.g. "
            f'"text", "image" or a collection name), got {str(source)[:80]!r}',
            kind="invalid_signals",
        )
    score = signals.get("retrieval_score")
    if score is not None and (
        isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score)
    ):
        raise RequestError(
            f"{where}.retrieval_score must be a finite number (the route's similarity) or null, "
            f"got {score!r}",
            kind="invalid_signals",
        )
    metadata = _signal_metadata(signals.get("metadata"), where)
    rank = signals.get("retrieval_rank")
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise RequestError(
                f"{where}.retrieval_rank must be the 0-based rank in its route (an int >= 0), got {rank!r}",
                kind="invalid_signals",
            )
        metadata["retrieval_rank"] = rank
    precomputed = _signal_precomputed(signals.get("precomputed"), text, image, where)
    return {
        "source": source,
        "retrieval_score": None if score is None else float(score),
        "metadata": metadata,
        "precomputed": precomputed,
    }


def _signal_metadata(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > _MAX_SIGNAL_METADATA:
        raise RequestError(
            f"{where}.metadata must be an object of at most {_MAX_SIGNAL_METADATA} fields, got "
            f"{_type(value) if not isinstance(value, dict) else f'{len(value)} fields'}",
            kind="invalid_signals",
        )
    for key, item in value.items():
        short = isinstance(item, str) and len(item) <= _MAX_SIGNAL_STRING
        number = isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item)
        if not (item is None or isinstance(item, bool) or short or number):
            raise RequestError(
                f"{where}.metadata[{key!r}] must be a finite number, a boolean, null or a string of at most "
                f"{_MAX_SIGNAL_STRING} characters, got {str(item)[:80]!r}",
                kind="invalid_signals",
            )
    return dict(value)


def _signal_precomputed(value: object, text: str | None, image: object, where: str) -> dict[str, Precomputed]:
    """Precomputed signals, each checked against the content this document sends (text or image string)."""
    if value is None:
        return {}
    try:
        signals = precomputed_from_data(value, where)
    except ValueError as exc:
        raise RequestError(
            str(exc).replace(f"[{PRECOMPUTED_KEY!r}]", ".precomputed"), kind="invalid_signals"
        ) from None
    for name, signal in signals.items():
        value_ok = (isinstance(signal.value, str) and len(signal.value) <= 16 * _MAX_SIGNAL_STRING) or (
            isinstance(signal.value, tuple)
            and len(signal.value) <= _MAX_SIGNAL_VECTOR
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in signal.value)
        )
        if not value_ok:
            raise RequestError(
                f"{where}.precomputed[{name!r}].value must be a list of at most {_MAX_SIGNAL_VECTOR} numbers "
                f"or a string of at most {16 * _MAX_SIGNAL_STRING} characters",
                kind="invalid_signals",
            )
        if signal.kind.startswith("text"):
            expected = text_key(text) if text is not None else None
            sent = "the document's text"
        elif signal.kind.startswith("image"):
            expected = image_key(image.strip()) if isinstance(image, str) and image.strip() else None
            sent = "the document's image string exactly as sent"
        else:
            expected, sent = None, "a text or image (its kind must start with 'text' or 'image')"
        if expected is None or signal.content != expected:
            raise RequestError(
                f"{where}.precomputed[{name!r}] was computed from other content ({signal.content!r}); its "
                f"content must be the key of {sent} ({expected!r}, mm_rerank_components.media.text_key or "
                "image_key), or leave the signal out",
                kind="invalid_signals",
            )
    return signals


def document_with_signals(candidate: Candidate) -> dict[str, Any]:
    """A Candidate as a request document in our shape: its text, its image and its first-stage
    ``"signals"`` (what a client sends so the served reranker scores it as the same reranker in process).

    The image must be a string the server reads (a data URI or base64; a URL only when the server allows
    URLs): a retriever built with ``candidate_image="preview"`` gives data URIs.

    Example:
        >>> c = Candidate("a", text="red fox", source="mm_text", retrieval_score=0.5)
        >>> document_with_signals(c)
        {'text': 'red fox', 'signals': {'source': 'mm_text', 'retrieval_score': 0.5}}
    """
    document: dict[str, Any] = {}
    if candidate.text is not None:
        document["text"] = candidate.text
    if candidate.image is not None:
        if not isinstance(candidate.image, str):
            raise TypeError(
                f"candidate {candidate.id!r}: its image is a {type(candidate.image).__name__}; send a data "
                "URI or base64 string (retrieve with candidate_image='preview', or encode the picture)"
            )
        document["image"] = candidate.image
    signals: dict[str, Any] = {}
    if candidate.source is not None:
        signals["source"] = candidate.source
    if candidate.retrieval_score is not None:
        signals["retrieval_score"] = float(candidate.retrieval_score)
    metadata = {k: v for k, v in candidate.metadata.items() if _plain_metadata(v)}
    rank = metadata.pop("retrieval_rank", None)
    if isinstance(rank, int) and not isinstance(rank, bool) and rank >= 0:
        signals["retrieval_rank"] = rank
    if metadata:
        signals["metadata"] = dict(list(metadata.items())[:_MAX_SIGNAL_METADATA])
    if candidate.precomputed:
        signals["precomputed"] = precomputed_to_data(candidate.precomputed)
    if signals:
        document["signals"] = signals
    return document


def _plain_metadata(value: object) -> bool:
    if isinstance(value, str):
        return len(value) <= _MAX_SIGNAL_STRING
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (bool, int))


def _parse_query(value: object, limits: Limits) -> Query:
    try:
        text, image, _ = _parse_content(value, "query", limits)
    except RequestError as exc:
        exc.kind = "invalid_query" if exc.kind == "invalid_document" else exc.kind
        raise
    return Query(text=text, image=image)


def _parse_content(
    value: object, where: str, limits: Limits
) -> tuple[str | None, ImageRef | None, dict[str, Any]]:
    """``(text, image, echo)`` of a query or document; echo is what ``return_documents`` sends back."""
    text: str | None
    image_value: object | None = None
    if isinstance(value, str):
        text = value
    elif isinstance(value, dict):
        if "content" in value:
            text, image_value = _parse_parts(value["content"], where)
        else:
            text = value.get("text")
            image_value = value.get("image", value.get("image_url"))
            if isinstance(image_value, dict):
                image_value = image_value.get("url")
        if text is not None and not isinstance(text, str):
            raise RequestError(f"{where}: text must be a string, got {_type(text)}", kind="invalid_document")
    else:
        raise RequestError(
            f'{where} must be a string or an object with "text" and/or "image" (or "content" parts), '
            f"got {_type(value)}",
            kind="invalid_document",
        )
    image = _image_ref(image_value, where, limits.image_options) if image_value is not None else None
    if (text is None or not text.strip()) and image is None:
        raise RequestError(f"{where} is empty: give it text, an image, or both", kind="invalid_document")
    echo: dict[str, Any] = {}
    if text is not None and text.strip():
        echo["text"] = text
    if image_value is not None:
        echo["image"] = image_value
    return (text if text is not None and text.strip() else None), image, echo


def _parse_parts(parts: object, where: str) -> tuple[str | None, object | None]:
    if not isinstance(parts, list):
        raise RequestError(
            f'{where}: "content" must be a list of parts, got {_type(parts)}', kind="invalid_document"
        )
    texts: list[str] = []
    images: list[object] = []
    for k, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if isinstance(part, dict) and kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part, dict) and kind in ("image_url", "image"):
            ref = part.get(kind)
            images.append(ref.get("url") if isinstance(ref, dict) else ref)
        else:
            raise RequestError(
                f'{where}.content[{k}] must be {{"type": "text", "text": ...}} or '
                f'{{"type": "image_url", "image_url": {{"url": ...}}}}, got {str(part)[:80]!r}',
                kind="invalid_document",
            )
    if len(images) > 1:
        raise RequestError(
            f"{where} has {len(images)} images; send one image per document", kind="invalid_document"
        )
    return ("\n".join(texts) if texts else None), (images[0] if images else None)


def _image_ref(value: object, where: str, options: ImageOptions) -> ImageRef:
    """What the core's image loader may read: a data URI, decoded bytes, or an allowed URL; never a path."""
    if not isinstance(value, str) or not value.strip():
        raise RequestError(
            f"{where}: image must be a data URI, base64 or an http(s) URL string, got {_type(value)}",
            kind="invalid_image",
        )
    ref = value.strip()
    if ref[:5].lower() == "data:":
        return ref  # the loader decodes it with the byte cap
    if is_url(ref):
        if not options.allow_urls:
            raise RequestError(
                f"{where}: image is a URL and this server does not fetch URLs; send it as a data URI or "
                "base64 (or start the server with --allow-urls)",
                kind="url_not_allowed",
            )
        return ref
    compact = _WS.sub("", ref)
    if not _B64.match(compact):
        raise RequestError(
            f"{where}: image is not a data URI, base64 or an http(s) URL (file paths are not accepted by "
            "the server); send the image bytes as base64",
            kind="invalid_image",
        )
    if len(compact) * 3 // 4 > options.max_bytes:
        raise RequestError(
            f"{where}: image is about {len(compact) * 3 // 4} bytes, over this server's limit of "
            f"{options.max_bytes}; downscale it",
            kind="image_too_large",
            status=413,
        )
    try:
        if "-" in compact or "_" in compact:
            return base64.urlsafe_b64decode(compact + "=" * (-len(compact) % 4))
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"{where}: image is not valid base64 ({exc})", kind="invalid_image") from None


def decode_images(request: RerankRequest, options: ImageOptions) -> RerankRequest:
    """``request`` with its inline images decoded into checked RGB images (URLs are left to the reranker).

    A document whose image cannot be decoded is an error naming its index (``on_error="raise"``) or a
    failed document that comes back last (``"keep"``), with the same message the reranker would give.

    Example:
        >>> req = parse_request({"query": "q", "documents": ["a"]}, Limits())
        >>> decode_images(req, ImageOptions()).candidates[0].text
        'a'
    """
    query = request.query
    if query.image is not None and not is_url(query.image):
        try:
            query = dataclasses.replace(query, image=load_image(query.image, options))
        except ImageLoadError as exc:
            raise RequestError(f"query: unreadable image: {exc}", kind="invalid_image") from None
    candidates: list[Candidate] = []
    positions: list[int] = []
    failed = dict(request.failed)
    for candidate, index in zip(request.candidates, request.positions, strict=True):
        if candidate.image is not None and not is_url(candidate.image):
            try:
                candidate = _with_image(candidate, load_image(candidate.image, options))
            except ImageLoadError as exc:
                if request.on_error == "raise":
                    raise RequestError(
                        f"documents[{index}]: unreadable image: {exc}",
                        kind="unreadable_document",
                        index=index,
                    ) from None
                failed[index] = f"unreadable image: {exc}"
                continue
        candidates.append(candidate)
        positions.append(index)
    return dataclasses.replace(
        request, query=query, candidates=candidates, positions=positions, failed=failed
    )


def _with_image(candidate: Candidate, image: Any) -> Candidate:
    """``candidate`` with its decoded image; its image signals (checked against the string sent by
    :func:`parse_request`) are re-keyed to the decoded picture, which is what the reranker checks them on."""
    precomputed = candidate.precomputed
    if any(signal.kind.startswith("image") for signal in precomputed.values()):
        key = image_key(image)
        precomputed = {
            name: dataclasses.replace(signal, content=key) if signal.kind.startswith("image") else signal
            for name, signal in precomputed.items()
        }
    return dataclasses.replace(candidate, image=image, precomputed=precomputed)


def build_response(
    request: RerankRequest,
    ranked: Sequence[RankedCandidate],
    *,
    model: str,
    api: Api,
    calibrated: bool = True,
) -> dict[str, Any]:
    """The response body: results sorted by unified score, each with the request's document ``index``.

    ``ranked`` indexes point into ``request.candidates``; documents that failed parsing under
    ``on_error="keep"`` follow the ranked ones, like candidates the core kept unscored. The Jina/vLLM
    shape also says ``scores_calibrated`` (``calibrated``, as the engine's ``scores_calibrated`` decides:
    false for a scorer served uncalibrated, a query that holds a picture, or results holding a captioned
    picture the reranker was not calibrated on); the Cohere shape stays Cohere's.
    """
    results: list[dict[str, Any]] = []
    kept: list[tuple[int, str]] = []
    for item in ranked:
        index = request.positions[item.index]
        if item.error is not None:
            kept.append((index, item.error))
            continue
        results.append(_result(request, index, item.score, item.raw_score, None))
    kept.extend(request.failed.items())
    for index, error in sorted(kept):
        results.append(_result(request, index, 0.0, None, error))
    images = sum(1 for c in request.candidates if c.image is not None)
    if api == "cohere":
        return {
            "id": str(uuid.uuid4()),
            "results": results,
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
        }
    return {
        "id": f"rerank-{uuid.uuid4().hex}",
        "model": model,
        "results": results,
        "usage": {"documents": request.n_documents, "images": images},
        "scores_calibrated": calibrated,  # RerankEngine.scores_calibrated (defaults.scores_note)
    }


def _result(
    request: RerankRequest, index: int, score: float, raw: float | None, error: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "relevance_score": score}
    if raw is not None and math.isfinite(raw):
        out["raw_score"] = raw
    if error is not None:
        out["error"] = error
    if request.return_documents:
        out["document"] = _echo(request.documents[index], request.return_images)
    return out


def _echo(document: dict[str, Any], with_images: bool) -> dict[str, Any]:
    """What ``return_documents`` sends back: the text, a picture's URL, but a picture's bytes (a data URI
    or base64, often hundreds of kilobytes the client already has) only when ``return_images`` asks.

    Example:
        >>> _echo({"text": "a fox", "image": "data:image/png;base64,iVBO"}, False)
        {'text': 'a fox'}
        >>> _echo({"image": "https://example.org/fox.jpg"}, False)
        {'image': 'https://example.org/fox.jpg'}
    """
    image = document.get("image")
    if with_images or image is None or (isinstance(image, str) and image.startswith(("http://", "https://"))):
        return document
    return {key: value for key, value in document.items() if key != "image"}
