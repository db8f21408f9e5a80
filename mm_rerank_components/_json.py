"""Strict JSON decoding with limits, for bytes that come from outside (HTTP bodies, remote answers, files).

The standard ``json`` module accepts what a hostile sender can turn into a crash or a wrong result:
``NaN``/``Infinity``, ``1e999`` (read as ``inf``), integers of thousands of digits (Python refuses to
convert past 4300 digits with a bare ``ValueError``), lone UTF-16 surrogates (``"\\ud800"``, which later
fail to encode), and nesting deep enough to raise ``RecursionError``. :func:`loads_strict` turns each of
these into one :class:`JSONLimitError` that says what was wrong, so every caller maps one exception.

Example:
    >>> loads_strict(b'{"top_n": 3}')
    {'top_n': 3}
    >>> loads_strict(b'[[[1]]]', max_depth=2)
    Traceback (most recent call last):
    ...
    mm_rerank_components._json.JSONLimitError: JSON nested deeper than 2 levels
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "JSONLimitError", "loads_strict"]

MAX_DEPTH = 64
MAX_INT_DIGITS = 100
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class JSONLimitError(ValueError):
    """The text is not JSON, or breaks one of :func:`loads_strict`'s limits; the message says which."""


def _int(text: str, limit: int) -> int:
    digits = len(text.lstrip("-"))
    if digits > limit:
        raise JSONLimitError(f"an integer of {digits} digits (the limit is {limit})")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONLimitError(f"the number {text[:40]} is out of range (not a finite float)")
    return value


def _constant(name: str) -> Any:
    raise JSONLimitError(f"{name} is not JSON (non-finite numbers are refused)")


def _check(value: Any, max_depth: int, surrogates: bool) -> None:
    """Depth and (when the text has ``\\uD8xx``-style escapes) lone surrogates, without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if surrogates and _SURROGATE.search(item):
                raise JSONLimitError("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), not text")
        elif isinstance(item, (dict, list)):
            if depth > max_depth:
                raise JSONLimitError(f"JSON nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, inner in item.items():
                    stack.append((key, depth))
                    stack.append((inner, depth + 1))
            else:
                stack.extend((inner, depth + 1) for inner in item)


_PIECES_FROM = 256 * 1024
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _decode_in_pieces(decoder: json.JSONDecoder, text: str) -> Any:  # noqa: C901 - one JSON walk
    """The same value as ``decoder.decode(text)``, for a large text: the top-level container and the arrays
    directly inside it are walked here, one element per decoder call. A single call holds the interpreter
    lock for the whole text (tens of milliseconds for a few megabytes), and a server's event loop waits
    that long; between elements the lock is handed over.
    """

    def skip(i: int) -> int:
        return _WHITESPACE.match(text, i).end()  # type: ignore[union-attr]

    def expect(i: int, char: str) -> int:
        if text[i : i + 1] != char:
            raise json.JSONDecodeError(f"Expecting {char!r} delimiter", text, i)
        return i + 1

    def array(i: int) -> tuple[list[Any], int]:
        items: list[Any] = []
        i = skip(expect(i, "["))
        if text[i : i + 1] == "]":
            return items, i + 1
        while True:
            item, i = decoder.raw_decode(text, i)
            items.append(item)
            i = skip(i)
            if text[i : i + 1] == "]":
                return items, i + 1
            i = skip(expect(i, ","))

    value: Any
    i = skip(0)
    if text[i : i + 1] == "[":
        value, i = array(i)
    elif text[i : i + 1] == "{":
        value = {}
        i = skip(i + 1)
        if text[i : i + 1] == "}":
            i += 1
        else:
            while True:
                if text[i : i + 1] != '"':
                    raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
                key, i = decoder.raw_decode(text, i)
                i = skip(expect(skip(i), ":"))
                if text[i : i + 1] == "[":
                    value[key], i = array(i)
                else:
                    value[key], i = decoder.raw_decode(text, i)
                i = skip(i)
                if text[i : i + 1] == "}":
                    i += 1
                    break
                i = skip(expect(i, ","))
    else:
        value, i = decoder.raw_decode(text, i)
    i = skip(i)
    if i != len(text):
        raise json.JSONDecodeError("Extra data", text, i)
    return value


def loads_strict(
    data: bytes | bytearray | str,
    *,
    max_depth: int = MAX_DEPTH,
    max_int_digits: int = MAX_INT_DIGITS,
    max_bytes: int | None = None,
    allow_nan: bool = False,
) -> Any:
    """``json.loads`` that refuses what a hostile sender could use (see the module notes).

    Args:
        data: UTF-8 bytes (a BOM is refused like any non-JSON) or text.
        max_depth: most levels of nested arrays and objects.
        max_int_digits: most digits of an integer.
        max_bytes: largest input, when the caller has not capped it already.
        allow_nan: read ``NaN``, ``Infinity`` and out-of-range floats as floats, for a caller whose own
            schema check then names the field that holds one (saved model files).

    Raises:
        JSONLimitError: not UTF-8, not JSON, or over a limit; the message names the problem.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise JSONLimitError(f"{len(data)} bytes of JSON, over the limit of {max_bytes}")
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONLimitError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    else:
        text = data
    decoder = json.JSONDecoder(
        parse_int=lambda s: _int(s, max_int_digits),
        parse_float=float if allow_nan else _float,
        parse_constant=float if allow_nan else _constant,
    )
    try:
        value = decoder.decode(text) if len(text) < _PIECES_FROM else _decode_in_pieces(decoder, text)
    except JSONLimitError:
        raise
    except json.JSONDecodeError as exc:
        raise JSONLimitError(f"not valid JSON (line {exc.lineno}: {exc.msg}, column {exc.colno})") from None
    except RecursionError:
        raise JSONLimitError(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # anything else the decoder refuses
        raise JSONLimitError(f"not valid JSON ({exc})") from None
    # a lone surrogate can only come from an escape (UTF-8 refuses encoded ones): scan strings only then
    _check(value, max_depth, _ESCAPED_SURROGATE.search(text) is not None)
    return value
