"""Request and response bodies of the HTTP service: one set of decoding rules for every route.

A body is UTF-8 JSON holding an object, with no ``NaN``/``Infinity``, no lone UTF-16 surrogates, at most
:data:`MAX_DEPTH` levels of nesting and integers of at most :data:`MAX_INT_DIGITS` digits. Anything else
is a 400 with a message saying what was wrong (never a 500 from the decoder, the int converter or the
response encoder). Responses are encoded here too, off the event loop.

Example:
    >>> decode_body(b'{"query": "fox", "documents": ["a fox"]}')["query"]
    'fox'
    >>> try:
    ...     decode_body(b'{"query": "\\ud800 fox"}')
    ... except RequestError as exc:
    ...     print(exc.status, exc.kind)
    400 malformed_json
"""

from __future__ import annotations

import json
from typing import Any

from mm_rerank_components._json import JSONLimitError, loads_strict
from mm_rerank_components.serving.protocol import RequestError

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "decode_body", "encode_body"]

#: Levels of nesting a request needs: the body, documents, a document, content parts, an image_url.
MAX_DEPTH = 16
MAX_INT_DIGITS = 20
_EXAMPLE = '{"query": "...", "documents": ["..."]}'


def decode_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body, or a 400 :class:`RequestError` naming the problem."""
    try:
        data = loads_strict(body, max_depth=MAX_DEPTH, max_int_digits=MAX_INT_DIGITS)
    except JSONLimitError as exc:
        raise RequestError(
            f"the body is not acceptable JSON: {exc}; send a JSON object like {_EXAMPLE}",
            kind="malformed_json",
        ) from None
    if not isinstance(data, dict):
        raise RequestError(
            f"the body must be a JSON object, got {type(data).__name__}; send {_EXAMPLE}",
            kind="invalid_type",
        )
    return data


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def encode_body(payload: Any) -> bytes:
    """UTF-8 JSON of a response (no NaN: a non-finite number is a bug, raised as ``ValueError``).

    The lists of an object (the results) are encoded one element per call, so a response that echoes
    megabytes of documents never holds the interpreter lock in one long call.

    Example:
        >>> encode_body({"results": [{"index": 0, "relevance_score": 0.5}]})
        b'{"results":[{"index":0,"relevance_score":0.5}]}'
    """
    if not isinstance(payload, dict):
        return _dumps(payload).encode("utf-8")
    parts = []
    for key, value in payload.items():
        encoded = "[" + ",".join(map(_dumps, value)) + "]" if isinstance(value, list) else _dumps(value)
        parts.append(_dumps(str(key)) + ":" + encoded)
    return ("{" + ",".join(parts) + "}").encode("utf-8")
