"""Widelands buildings and workers: each item's rendered picture and its help text, from ``widelands-data``.

Widelands (a free settlers-style strategy game) ships, per tribe (Amazons, Atlanteans, Barbarians,
Empire, Frisians), a ``units.lua`` whose entries carry ``helptexts`` written by the game's authors
(``purpose``, ``lore``, ``note``, ...), and one folder per building or worker whose ``init.lua``
names it (``descname``) and declares its ``idle`` animation: PNG files at several scales
(``idle_4.png`` is four times ``idle_1.png``), either single pictures or sprite sheets
(``spritesheets = {idle = {rows = .., columns = ..}}``).

An item here is a building or worker with a name, a ``purpose`` help text and an ``idle`` picture of
at least :data:`MIN_PICTURE_PX` pixels on the short side (the largest scale; frame 0 of a sheet,
cropped once into ``<cache>/widelands-items/``). Wares are not items: their pictures are 24 px icons.
The files are read with a small Lua reader (:func:`parse_lua_table`) that evaluates only literals,
tables, string concatenation and the translation calls ``_()`` / ``pgettext()``; anything else (a
``:bformat(...)`` call, a variable) reads as :data:`OPAQUE` and is never taken for text.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mm_rerank_components.eval.datasets import DatasetUnavailableError, _resolve_cache, fetch_deb
from mm_rerank_components.eval.tasks import EvalTask, _paired_task

__all__ = [
    "MIN_PICTURE_PX",
    "OPAQUE",
    "WIDELANDS_PACKAGE",
    "WidelandsItem",
    "fetch_widelands_items",
    "parse_helptexts",
    "parse_item_init",
    "parse_lua_table",
    "widelands_items_task",
]

logger = logging.getLogger(__name__)

WIDELANDS_PACKAGE = "widelands-data"
MIN_PICTURE_PX = 64
_TRIBES = Path("usr/share/games/widelands/data/tribes")
_CROPS = "widelands-items"
# largest scale first; idle_00.png / idle.png are scale-1 frame sequences or single pictures
_IDLE_FILES = ("idle_4.png", "idle_2.png", "idle_1.png", "idle_00.png", "idle.png", "idle_0.5.png")


class _Opaque:
    """A Lua value this reader does not evaluate (a variable, an arbitrary call, arithmetic)."""

    def __repr__(self) -> str:
        return "OPAQUE"


OPAQUE: Any = _Opaque()
"""What :func:`parse_lua_table` returns for expressions it does not evaluate."""


# --------------------------------------------------------------------------------------------------
# A minimal Lua table reader

_TOKEN = re.compile(
    r"""
    (?P<skip>\s+|--\[(?P<ceq>=*)\[.*?\](?P=ceq)\]|--[^\n]*)
    |(?P<long>\[(?P<leq>=*)\[.*?\](?P=leq)\])
    |(?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    |(?P<num>0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+)
    |(?P<name>[A-Za-z_]\w*)
    |(?P<op>\.\.\.|\.\.|==|~=|<=|>=|[-+*/%^\#<>=(){}\[\];:,.])
    """,
    re.X | re.S,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "\n": "\n", "a": "\a", "b": "\b"}
_BINARY = frozenset({"..", "+", "-", "*", "/", "%", "^", "==", "~=", "<", ">", "<=", ">=", "and", "or"})
_CONSTANTS = {"true": True, "false": False, "nil": None}


class _Name(str):
    """A bare Lua name (a variable or function), kept only to recognise translation calls."""


def _unescape(body: str) -> str:
    return re.sub(r"\\(x[0-9a-fA-F]{2}|\d{1,3}|.)", lambda m: _escape(m.group(1)), body, flags=re.S)


def _escape(code: str) -> str:
    if code.isdigit():
        return chr(int(code))
    return chr(int(code[1:], 16)) if len(code) == 3 else _ESCAPES.get(code, code)


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"cannot read Lua at offset {pos}: {text[pos : pos + 40]!r}")
        pos = m.end()
        kind = next(k for k in ("skip", "long", "str", "num", "name", "op") if m.group(k) is not None)
        if kind == "skip":
            continue
        raw = m.group(kind)
        if kind == "str":
            out.append(("value", _unescape(raw[1:-1])))
        elif kind == "long":
            body = raw[len(m.group("leq")) + 2 : -len(m.group("leq")) - 2]
            out.append(("value", body[1:] if body.startswith("\n") else body))
        elif kind == "num":
            is_hex = raw[:2].lower() == "0x"
            out.append(
                (
                    "value",
                    int(raw, 16) if is_hex else float(raw) if "." in raw or "e" in raw.lower() else int(raw),
                )
            )
        elif kind == "name" and raw in _CONSTANTS:
            out.append(("value", _CONSTANTS[raw]))
        else:
            out.append((kind, raw))
    return out


class _Reader:
    """Recursive descent over Lua expressions; evaluates only what help texts need."""

    def __init__(self, tokens: list[tuple[str, Any]], pos: int) -> None:
        self.tokens = tokens
        self.pos = pos

    def peek(self, offset: int = 0) -> tuple[str, Any]:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else ("end", None)

    def at(self, *symbols: str) -> bool:
        """Whether the next token is one of these operators or keywords (never a string value)."""
        kind, text = self.peek()
        return kind in ("op", "name") and text in symbols

    def take(self, expected: str | None = None) -> tuple[str, Any]:
        token = self.peek()
        if token[0] == "end" or (expected is not None and not self.at(expected)):
            raise ValueError(f"expected {expected or 'more Lua'} at token {self.pos}, found {token[1]!r}")
        self.pos += 1
        return token

    def expr(self) -> Any:
        value = self.unary()
        while self.at(*_BINARY):
            op = self.take()[1]
            right = self.unary()
            both_text = isinstance(value, str) and isinstance(right, str)
            both_plain = both_text and not isinstance(value, _Name) and not isinstance(right, _Name)
            value = value + right if op == ".." and both_plain else OPAQUE
        return value

    def unary(self) -> Any:
        if self.at("-", "not", "#"):
            op = self.take()[1]
            value = self.unary()
            return -value if op == "-" and isinstance(value, (int, float)) else OPAQUE
        return self.suffixed()

    def suffixed(self) -> Any:
        value = self.primary()
        while True:
            kind, text = self.peek()
            if text in (".", ":") and kind == "op":
                self.take()
                self.take()  # the field or method name
                value = OPAQUE if text == "." else self.call(OPAQUE)
            elif text == "[" and kind == "op":
                self.take()
                self.expr()
                self.take("]")
                value = OPAQUE
            elif (kind == "op" and text in ("(", "{")) or (kind == "value" and isinstance(text, str)):
                value = self.call(value)
            else:
                return value

    def call(self, callee: Any) -> Any:
        args = self.args()
        texts = [a for a in args if isinstance(a, str) and not isinstance(a, _Name)]
        if callee == "_" and isinstance(callee, _Name) and len(texts) == len(args) == 1:
            return texts[0]
        if callee == "pgettext" and isinstance(callee, _Name) and len(texts) == len(args) == 2:
            return texts[1]
        return OPAQUE

    def args(self) -> list[Any]:
        if self.peek()[0] == "value" or self.at("{"):
            return [self.primary()]
        self.take("(")
        values: list[Any] = []
        while not self.at(")"):
            values.append(self.expr())
            if self.at(","):
                self.take()
        self.take(")")
        return values

    def primary(self) -> Any:
        kind, text = self.take()
        if kind == "value":
            return text
        if kind == "name":
            return _Name(text)
        if text == "{":
            return self.table()
        if text == "(":
            value = self.expr()
            self.take(")")
            return value
        raise ValueError(f"unexpected {text!r} at token {self.pos - 1}")

    def table(self) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        index = 1
        while not self.at("}"):
            kind, text = self.peek()
            if self.at("["):
                self.take()
                key = self.expr()
                self.take("]")
                self.take("=")
                out[key] = self.expr()
            elif kind == "name" and self.peek(1) == ("op", "="):
                self.pos += 2
                out[str(text)] = self.expr()
            else:
                out[index] = self.expr()
                index += 1
            if self.at(",", ";"):
                self.take()
        self.take("}")
        return out


def parse_lua_table(text: str, constructor: str) -> dict[Any, Any]:
    """The table passed to the first call of ``constructor`` (``new_tribe``, ``new_..._type``) in Lua code.

    Keys are strings (``name = ...``), values of ``[key] = ...``, or 1, 2, ... for list items. Strings,
    numbers, booleans, nested tables, ``..`` of two strings, and ``_("text")`` / ``pgettext("ctx",
    "text")`` evaluate; anything else is :data:`OPAQUE`. ``constructor`` may end in ``*`` to match a
    prefix. Comments are skipped, so an example inside a comment is never read.

    Raises:
        ValueError: no such call, or Lua this reader cannot follow.

    Example:
        >>> lua = '-- new_tribe {name = "fake"}\\nwl.Descriptions():new_tribe {\\n  name = "barbarians",\\n'
        >>> lua += '  list = {pgettext("ware", "Log"), _ "Ax", x .. "y"},\\n  [0] = 2 * 3,\\n}'
        >>> parse_lua_table(lua, "new_tribe")
        {'name': 'barbarians', 'list': {1: 'Log', 2: 'Ax', 3: OPAQUE}, 0: OPAQUE}
    """
    tokens = _tokens(text)
    prefix = constructor.endswith("*")
    wanted = constructor.rstrip("*")
    for i, (kind, value) in enumerate(tokens):
        named = kind == "name" and (value.startswith(wanted) if prefix else value == wanted)
        if not named or i + 1 >= len(tokens) or tokens[i + 1] not in (("op", "{"), ("op", "(")):
            continue
        reader = _Reader(tokens, i + 1)
        args = reader.args()
        if args and isinstance(args[0], dict):
            return args[0]
    raise ValueError(f"no call {constructor}{{...}} with a table argument found in this Lua file")


def _list_of(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [value[k] for k in sorted(k for k in value if isinstance(k, int))]
    return [value]


def _text(value: Any) -> str:
    """One help text as written: a string, or a list of strings joined; '' when any part is OPAQUE."""
    parts = _list_of(value)
    if not parts or not all(isinstance(p, str) and not isinstance(p, _Name) for p in parts):
        return ""
    joined = " ".join(re.sub(r"<[^>]+>", " ", p) for p in parts)
    return " ".join(joined.split())


def _walk(value: Any) -> list[dict[Any, Any]]:
    if not isinstance(value, dict):
        return []
    found = [value]
    for child in value.values():
        found.extend(_walk(child))
    return found


def parse_helptexts(units_lua: str) -> dict[str, dict[str, str]]:
    """Every entry of a tribe's ``units.lua`` with a ``name`` and ``helptexts``: name -> {field: text}.

    Text fields (``purpose``, ``lore``, ``lore_author``, ``note``, ...) keep the authors' words with
    whitespace normalised and markup tags removed; a list of strings is joined with spaces; a field
    that is not plain text (``performance`` built with ``:bformat``) is left out.

    Example:
        >>> lua = 'new_tribe { buildings = { { name = "barbarians_quarry", helptexts = {\\n'
        >>> lua += '  purpose = pgettext("building", "Cuts raw   pieces of granite."),\\n'
        >>> lua += '  performance = _("%s"):bformat(3) } }, { name = "x" } } }'
        >>> parse_helptexts(lua)
        {'barbarians_quarry': {'purpose': 'Cuts raw pieces of granite.'}}
    """
    tribe = parse_lua_table(units_lua, "new_tribe")
    out: dict[str, dict[str, str]] = {}
    for entry in _walk(tribe):
        name, helptexts = entry.get("name"), entry.get("helptexts")
        if not isinstance(name, str) or not isinstance(helptexts, dict):
            continue
        fields = {str(k): _text(v) for k, v in helptexts.items() if isinstance(k, str)}
        out[name] = {k: v for k, v in fields.items() if v}
    return out


def parse_item_init(init_lua: str) -> dict[str, Any]:
    """A building's or worker's ``init.lua``: ``name``, ``descname``, and ``idle_sheet`` (rows, columns).

    ``idle_sheet`` is ``None`` when the idle animation is a plain picture (under ``animations``), and
    ``(rows, columns)`` when it is a sprite sheet (frame 0 is the top-left cell). A key is missing when
    the file does not state it as plain text.

    Example:
        >>> lua = 'wl.Descriptions():new_worker_type {\\n  name = "barbarians_lumberjack",\\n'
        >>> lua += '  descname = pgettext("barbarians_worker", "Lumberjack"),\\n  programs = {harvest = {'
        >>> lua += 'descname = _("felling")}},\\n  spritesheets = { idle = { rows = 4, columns = 3 } },\\n}'
        >>> parse_item_init(lua)
        {'name': 'barbarians_lumberjack', 'descname': 'Lumberjack', 'idle_sheet': (4, 3)}
    """
    table = parse_lua_table(init_lua, "new_*")
    out: dict[str, Any] = {}
    for key in ("name", "descname"):
        value = table.get(key)
        if isinstance(value, str) and not isinstance(value, _Name) and value.strip():
            out[key] = " ".join(value.split())
    sheets = table.get("spritesheets")
    idle = sheets.get("idle") if isinstance(sheets, dict) else None
    rows = idle.get("rows") if isinstance(idle, dict) else None
    columns = idle.get("columns") if isinstance(idle, dict) else None
    has_sheet = isinstance(rows, int) and isinstance(columns, int) and rows > 0 and columns > 0
    out["idle_sheet"] = (rows, columns) if has_sheet else None
    return out


# --------------------------------------------------------------------------------------------------
# Items


@dataclass(frozen=True)
class WidelandsItem:
    """One Widelands building or worker: its name, its help text and its rendered idle picture.

    Attributes:
        id: the game's internal name (``"barbarians_lumberjacks_hut"``), unique over all tribes.
        name: the name players see (``"Lumberjack’s Hut"``).
        passage: the ``purpose`` help text, then the ``lore`` text when there is one.
        image_path: the idle picture at its largest scale (a PNG in the package, or frame 0 of a sprite
            sheet cropped into the cache).
        tribe: ``"amazons"``, ``"atlanteans"``, ``"barbarians"``, ``"empire"`` or ``"frisians"``.
        kind: ``"building"`` or ``"worker"``.
    """

    id: str
    name: str
    passage: str
    image_path: Path
    tribe: str
    kind: str


def _passage(helptexts: Mapping[str, str]) -> str:
    return " ".join(t for t in (helptexts.get("purpose", ""), helptexts.get("lore", "")) if t)


def _idle_picture(folder: Path, sheet: tuple[int, int] | None, crops: Path, item_id: str) -> Path | None:
    """The largest idle picture of an item (frame 0 of a sheet, cropped once), or None if there is none."""
    from PIL import Image

    source = next((folder / n for n in _IDLE_FILES if (folder / n).is_file()), None)
    if source is None or sheet is None:
        return source
    target = crops / f"{item_id}.png"
    if not target.is_file() or target.stat().st_mtime < source.stat().st_mtime:
        rows, columns = sheet
        with Image.open(source) as image:
            frame = image.crop((0, 0, image.width // columns, image.height // rows))
            frame.save(target)
    return target


def _picture_key(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _short_side(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as image:
        return min(image.size)


def _read_units(root: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """Internal name -> (tribe, help texts) over every tribe's ``units.lua``."""
    texts: dict[str, tuple[str, dict[str, str]]] = {}
    units = sorted((root / "initialization").glob("*/units.lua"))
    if not units:
        raise DatasetUnavailableError(
            f"no {root}/initialization/*/units.lua: the {WIDELANDS_PACKAGE} package looks different "
            f"(this reader follows Widelands 1.1, Debian 2:1.1-3)"
        )
    for path in units:
        for name, fields in parse_helptexts(path.read_text(encoding="utf-8")).items():
            texts[name] = (path.parent.name, fields)
    return texts


def _candidates(root: Path, crops: Path, skips: Counter[str]) -> list[WidelandsItem]:
    texts = _read_units(root)
    found: list[WidelandsItem] = []
    inits = sorted((root / "buildings").glob("*/*/*/init.lua")) + sorted(
        (root / "workers").glob("*/*/init.lua")
    )
    for init in inits:
        fields = parse_item_init(init.read_text(encoding="utf-8"))
        item_id = fields.get("name", "")
        tribe, helptexts = texts.get(item_id, ("", {}))
        passage = _passage(helptexts)
        if not (item_id and fields.get("descname") and passage):
            skips["without a name or a purpose help text"] += 1
            continue
        picture = _idle_picture(init.parent, fields["idle_sheet"], crops, item_id)
        if picture is None:
            skips["without an idle picture"] += 1
            continue
        if _short_side(picture) < MIN_PICTURE_PX:
            skips[f"with a picture under {MIN_PICTURE_PX} px"] += 1
            continue
        kind = "building" if init.is_relative_to(root / "buildings") else "worker"
        found.append(WidelandsItem(item_id, fields["descname"], passage, picture, tribe, kind))
    return found


def _drop_shared(items: list[WidelandsItem], skips: Counter[str]) -> list[WidelandsItem]:
    """Leave out items that share a picture, a passage or a name with another (two right answers)."""
    keys = {
        "sharing a picture": [_picture_key(i.image_path) for i in items],
        "sharing a passage": [i.passage for i in items],
        "sharing a name": [i.name.casefold() for i in items],
    }
    kept: list[WidelandsItem] = []
    counts = {reason: Counter(values) for reason, values in keys.items()}
    for n, item in enumerate(items):
        reason = next((r for r, values in keys.items() if counts[r][values[n]] > 1), None)
        if reason is None:
            kept.append(item)
        else:
            skips[reason] += 1
    return kept


def fetch_widelands_items(cache_dir: str | os.PathLike[str] | None = None) -> list[WidelandsItem]:
    """Widelands buildings and workers with a name, a help text and their own picture of >= 64 px.

    From the Debian package ``widelands-data`` (Debian 2:1.1-3; its tribes' texts and pictures are
    GPL-2+, "the Widelands Development Team", per its copyright file; about 380 MB, fetched once).
    Left out, and counted in the log: items without a name or a ``purpose`` help text, without an
    idle picture, with a picture under :data:`MIN_PICTURE_PX` px on its short side (most workers),
    and items that share their picture, passage or name with another (several tribes have a
    "Quarry"; a query would have more than one right answer).

    Example:
        >>> items = fetch_widelands_items()  # doctest: +SKIP
        >>> items[0].kind, items[0].image_path.suffix  # doctest: +SKIP
        ('building', '.png')
    """
    root = fetch_deb(WIDELANDS_PACKAGE, cache_dir) / _TRIBES
    if not (root / "buildings").is_dir():
        raise DatasetUnavailableError(
            f"{root / 'buildings'} is missing: the {WIDELANDS_PACKAGE} package looks different"
        )
    crops = _resolve_cache(cache_dir) / _CROPS
    crops.mkdir(parents=True, exist_ok=True)
    skips: Counter[str] = Counter()
    items = _drop_shared(_candidates(root, crops, skips), skips)
    logger.info(
        "widelands: %d items kept (%d buildings, %d workers); left out: %s",
        len(items),
        sum(i.kind == "building" for i in items),
        sum(i.kind == "worker" for i in items),
        ", ".join(f"{n} {reason}" for reason, n in sorted(skips.items())) or "none",
    )
    return items


def widelands_items_task(cache_dir: str | os.PathLike[str] | None = None) -> EvalTask:
    """Widelands: each building's or worker's rendered picture and its help text; item names as queries.

    Example:
        >>> task = widelands_items_task()  # doctest: +SKIP
        >>> task.name  # doctest: +SKIP
        'widelands-items'
    """
    pairs = [
        (
            item.id,
            str(item.image_path),
            item.passage,
            item.name,
            {"item": item.id, "tribe": item.tribe, "kind": item.kind, "dataset": "widelands"},
        )
        for item in fetch_widelands_items(cache_dir)
    ]
    description = (
        "Documents: each Widelands building or worker twice, as its rendered idle picture (no text) and "
        "as its help text (purpose, then lore; written by the game's authors). Queries: the item names "
        "('Lumberjack’s Hut'). Relevant: that item's picture and help text. Game renderings an ImageNet "
        "classifier was never trained on; items sharing a picture, a help text or a name are left out. "
        "Data: Debian widelands-data (GPL-2+, the Widelands Development Team)."
    )
    return _paired_task("widelands-items", description, pairs)
