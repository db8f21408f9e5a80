"""FreeOrion's species, buildings, techs, ship hulls and parts, specials, fields and monsters as a task.

Read from the Debian package ``freeorion-data`` (0.4.10.2-1, about 120 MB, fetched once into the cache
like the other packages; see :func:`mm_rerank_components.eval.datasets.fetch_deb`). Each content script
under ``default/scripting`` (FOCS) names an item's stringtable keys and its picture; the English
stringtable ``default/stringtables/en.txt`` holds the item's name and the description its authors wrote.

Each kept item has its own name, its own description and its own picture (a painted portrait, a 3D
render or a drawn icon, at least 64 px on the short side, under ``default/data/art``). Debian's
copyright file puts the artwork and the game text under CC-BY-SA-3.0 and the content scripts under
GPL-2 as well. Nothing of it is committed to this repository.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mm_rerank_components.eval.datasets import DatasetUnavailableError, fetch_deb

if TYPE_CHECKING:
    from mm_rerank_components.eval.tasks import EvalTask

__all__ = [
    "FREEORION_PACKAGE",
    "FreeOrionItem",
    "clean_passage",
    "fetch_freeorion_items",
    "freeorion_items_task",
    "parse_focs_items",
    "parse_stringtable",
    "select_items",
]

logger = logging.getLogger(__name__)

FREEORION_PACKAGE = "freeorion-data"
_FREEORION_ROOT = Path("usr/share/games/freeorion/default")
# the content folders that hold items with a picture; ship_designs (premade designs) have none
_CONTENT_FOLDERS = (
    "species",
    "buildings",
    "techs",
    "ship_hulls",
    "ship_parts",
    "specials",
    "fields",
    "monster_designs",
)
_KINDS = {
    "Species": "species",
    "BuildingType": "building",
    "Tech": "tech",
    "Hull": "hull",
    "Part": "part",
    "Special": "special",
    "FieldType": "field",
    "ShipDesign": "monster",
}
_BLOCK_START = re.compile(rf"^({'|'.join(_KINDS)})\b")
_HEADER_KEYS = ("name", "description", "icon", "graphic")
_HEADER_LINE = re.compile(rf'^\s*({"|".join(_HEADER_KEYS)})\s*=\s*"([^"]*)"')
_COMMENT = re.compile(r'"[^"\n]*"|//[^\n]*|/\*.*?\*/', re.S)
_REFERENCE = re.compile(r"\[\[(?:([A-Za-z_]+)\s+)?([A-Za-z0-9_]+)\]\]")
_TAG = re.compile(r"</?[A-Za-z]+(?:\s[^<>]*)?/?>")
_IMG_SRC = re.compile(r'<img\s+src\s*=\s*"([^"]+)"')
MIN_SIDE = 64
BLANK_RANGE = 8  # grey levels: a picture whose pixels all lie closer than this shows nothing
# colony buildings are generated from one template per species (their text is that template), and
# the "super test" species and its building are the developers' test content
_PLACEHOLDER = re.compile(r"^BLD_COL_|TEST")


@dataclass(frozen=True)
class FreeOrionItem:
    """One FreeOrion content item: its name, its description and its own picture.

    Attributes:
        id: ``"<kind>/<script name>"`` (``"species/SP_ABADDONI"``).
        name: the English name (``"Abaddoni"``).
        description: the English description written by the game's authors, references expanded
            as the game shows them and markup removed.
        image_path: the picture (PNG): the portrait the description embeds if any, else the script's
            ``icon``, else its ``graphic``.
        kind: ``species``, ``building``, ``tech``, ``hull``, ``part``, ``special``, ``field`` or
            ``monster``.
    """

    id: str
    name: str
    description: str
    image_path: Path
    kind: str


def parse_stringtable(text: str) -> dict[str, str]:
    """A FreeOrion stringtable: ``KEY`` on one line, its value on the next or in ``'''`` quotes.

    The first line is the language's name; ``#`` lines are comments (``#include`` lines too: the
    caller reads included files itself). References (``[[KEY]]``) are left as they are.

    Example:
        >>> table = "English\\n# note\\nSP_X\\nXo\\n\\nSP_X_DESC\\n'''Xo live\\n\\nunderground.'''\\n"
        >>> parse_stringtable(table)
        {'SP_X': 'Xo', 'SP_X_DESC': 'Xo live\\n\\nunderground.'}
    """
    lines = text.lstrip("\ufeff").split("\n")[1:]
    table: dict[str, str] = {}
    i = 0
    while i < len(lines):
        key = lines[i].strip()
        i += 1
        if not key or key.startswith("#") or i >= len(lines):
            continue
        value = lines[i]
        i += 1
        if value.startswith("'''"):
            body = value[3:]
            while "'''" not in body and i < len(lines):
                body += "\n" + lines[i]
                i += 1
            value = body.split("'''", 1)[0]
        table[key] = value
    return table


def parse_focs_items(text: str) -> list[dict[str, str]]:
    """Each item a FOCS content script defines: its ``kind`` and header ``name``, ``description``,
    ``icon`` and ``graphic`` where given.

    A block starts at a line beginning with ``Species``, ``BuildingType``, ``Tech``, ``Hull``,
    ``Part``, ``Special``, ``FieldType`` or ``ShipDesign`` and runs while lines are indented (a
    macro or ``#include`` at the left edge ends it). Only keys outside any ``[...]`` or ``(...)``
    count, so the icon of a message an effect sends is never taken for the item's. Comments are
    ignored.

    Example:
        >>> focs = '''Species
        ...     name = "SP_X"   // the Xo
        ...     description = "SP_X_DESC"
        ...     effectsgroups = [
        ...         GenerateSitRepMessage
        ...             icon = "icons/sitrep/x.png"
        ...     ]
        ...     graphic = "icons/species/x.png"
        ... #include "x.macros"
        ... '''
        >>> parse_focs_items(focs)
        [{'kind': 'species', 'name': 'SP_X', 'description': 'SP_X_DESC', 'graphic': 'icons/species/x.png'}]
    """
    code = _COMMENT.sub(lambda m: m.group(0) if m.group(0).startswith('"') else "", text)
    items: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    depth = 0
    for line in code.split("\n"):
        start = _BLOCK_START.match(line)
        if start:
            current = {"kind": _KINDS[start.group(1)]}
            items.append(current)
            depth = 0
            continue
        if current is None or not line.strip():
            continue
        if not line[0].isspace():
            current = None
            continue
        header = _HEADER_LINE.match(line)
        if header and depth == 0:
            current.setdefault(header.group(1), header.group(2))
        unquoted = re.sub(r'"[^"]*"', "", line)
        depth += sum(unquoted.count(c) for c in "[(") - sum(unquoted.count(c) for c in "])")
    return items


def clean_passage(text: str, table: Mapping[str, str], depth: int = 6) -> str:
    """What the game shows for a stringtable value: references expanded, markup removed, whitespace
    normalised.

    ``[[KEY]]`` becomes that key's value and ``[[tag KEY]]`` (a link such as ``[[species SP_X]]``)
    the value of ``KEY``, expanded again up to ``depth`` levels; an unknown key is dropped. Tags
    such as ``<i>``, ``<img ...>`` and ``<rgba ...>`` are removed, their text kept.

    Example:
        >>> table = {"SP_X": "Xo", "METER_STEALTH": "Stealth", "NO_STACK": "Does <i>not</i> stack."}
        >>> clean_passage('<img src="a.png"></img>A [[species SP_X]]\\n\\nhas [[metertype METER_STEALTH]].'
        ...               ' [[NO_STACK]] [[GONE]]', table)
        'A Xo has Stealth. Does not stack.'
    """
    expanded = text
    for _ in range(depth):
        if not _REFERENCE.search(expanded):
            break
        expanded = _REFERENCE.sub(lambda m: table.get(m.group(2), ""), expanded)
    expanded = _REFERENCE.sub("", expanded)
    return " ".join(_TAG.sub("", expanded).split())


def select_items(
    candidates: Sequence[FreeOrionItem], script_names: Sequence[str]
) -> tuple[list[FreeOrionItem], dict[str, int]]:
    """Keep the items whose name and picture no other item has; return them and the skip counts.

    ``script_names`` are the items' script names (``"SP_X"``), in the same order. Placeholders go
    first (generated colony buildings ``BLD_COL_*``, test content). A tech that borrows the picture
    or the name of another (non-tech) item, usually the thing it unlocks, goes next, so it does not
    push that item out. Then every item whose picture or (case-folded) name another item also has is
    left out, all of them: a query would have two right pictures.

    Example:
        >>> p = Path("a.png")
        >>> part = FreeOrionItem("part/SP_GRV", "Graviton Pulse", "A weapon.", p, "part")
        >>> tech = FreeOrionItem("tech/SHP_GRV", "Graviton Pulse", "Unlocks it.", p, "tech")
        >>> kept, skipped = select_items([part, tech], ["SP_GRV", "SHP_GRV"])
        >>> [i.id for i in kept], skipped["tech borrowing"]
        (['part/SP_GRV'], 1)
    """
    skipped = Counter({"placeholder": 0, "tech borrowing": 0, "shared picture or name": 0})
    items = []
    for item, script in zip(candidates, script_names, strict=True):
        if _PLACEHOLDER.search(script):
            skipped["placeholder"] += 1
        else:
            items.append(item)
    others_pictures = {i.image_path for i in items if i.kind != "tech"}
    others_names = {_name_key(i.name) for i in items if i.kind != "tech"}
    borrowers = {
        i.id
        for i in items
        if i.kind == "tech" and (i.image_path in others_pictures or _name_key(i.name) in others_names)
    }
    skipped["tech borrowing"] = len(borrowers)
    items = [i for i in items if i.id not in borrowers]
    pictures = Counter(i.image_path for i in items)
    names = Counter(_name_key(i.name) for i in items)
    kept = [i for i in items if pictures[i.image_path] == 1 and names[_name_key(i.name)] == 1]
    skipped["shared picture or name"] = len(items) - len(kept)
    return kept, dict(skipped)


def _name_key(name: str) -> str:
    return " ".join(name.casefold().split())


def _load_stringtable(path: Path) -> dict[str, str]:
    text = path.read_text(encoding="utf-8")
    table: dict[str, str] = {}
    # included files hold shared phrases some descriptions refer to; the file's own keys win
    for include in re.findall(r'^#include\s+"([^"]+)"', text, re.M):
        extra = (path.parent / include).resolve()
        if extra.is_file():
            table.update(parse_stringtable("\n" + extra.read_text(encoding="utf-8")))
    table.update(parse_stringtable(text))
    return table


def _picture(fields: Mapping[str, str], raw_description: str, art: Path) -> Path | None:
    # the portrait a description embeds (species) is the large painting; the icon is a small mark
    for rel in [*_IMG_SRC.findall(raw_description), fields.get("icon", ""), fields.get("graphic", "")]:
        if rel and (art / rel).is_file():
            return art / rel
    return None


def _picture_problem(path: Path) -> str | None:
    """``"small picture"``, ``"blank picture"`` (one colour once put on white, as the first stage
    sees it: some species marks are white on transparent) or ``None``."""
    from mm_rerank_components.media import load_image

    image = load_image(str(path))
    if min(image.size) < MIN_SIDE:
        return "small picture"
    levels = [grey for grey, count in enumerate(image.convert("L").histogram()) if count]
    return "blank picture" if levels[-1] - levels[0] < BLANK_RANGE else None


def _candidates(root: Path, table: Mapping[str, str]) -> tuple[list[FreeOrionItem], list[str], Counter[str]]:
    art = root / "data" / "art"
    found: list[FreeOrionItem] = []
    scripts: list[str] = []
    skipped: Counter[str] = Counter(
        {"no name or description": 0, "no picture file": 0, "small picture": 0, "blank picture": 0}
    )
    for folder in _CONTENT_FOLDERS:
        for script in sorted((root / "scripting" / folder).rglob("*.focs.txt")):
            for fields in parse_focs_items(script.read_text(encoding="utf-8", errors="replace")):
                key = fields.get("name", "")
                raw = table.get(fields.get("description", ""), "")
                name = clean_passage(table.get(key, ""), table)
                description = clean_passage(raw, table)
                if not (name and description):
                    skipped["no name or description"] += 1
                    continue
                picture = _picture(fields, raw, art)
                if picture is None:
                    skipped["no picture file"] += 1
                    continue
                problem = _picture_problem(picture)
                if problem:
                    skipped[problem] += 1
                    continue
                kind = fields["kind"]
                found.append(FreeOrionItem(f"{kind}/{key}", name, description, picture, kind))
                scripts.append(key)
    return found, scripts, skipped


def fetch_freeorion_items(cache_dir: str | os.PathLike[str] | None = None) -> list[FreeOrionItem]:
    """FreeOrion's content items that have a name, a description and a picture of their own.

    From the Debian package ``freeorion-data`` (artwork and text CC-BY-SA-3.0; about 120 MB, fetched
    once like the others). Left out, and counted in the log: items without an English name or
    description, without a picture file, with one under 64 px or one that is blank on white;
    placeholders; techs that borrow the picture or name of what they unlock; and items sharing a
    picture or a name.

    Example:
        >>> items = fetch_freeorion_items()  # doctest: +SKIP
        >>> items[0].kind, items[0].image_path.suffix  # doctest: +SKIP
        ('species', '.png')
    """
    root = fetch_deb(FREEORION_PACKAGE, cache_dir) / _FREEORION_ROOT
    strings = root / "stringtables" / "en.txt"
    if not strings.is_file() or not (root / "scripting" / "species").is_dir():
        raise DatasetUnavailableError(
            f"{strings} or {root / 'scripting/species'} is missing: the {FREEORION_PACKAGE} package "
            "looks different (this reader knows the 0.4.10 layout); delete its folder in the cache "
            "to fetch it again"
        )
    found, scripts, skipped = _candidates(root, _load_stringtable(strings))
    items, dropped = select_items(found, scripts)
    skipped.update(dropped)
    logger.info(
        "freeorion: %d items kept (%s); left out: %s",
        len(items),
        _counts(i.kind for i in items),
        ", ".join(f"{n} {why}" for why, n in skipped.items()),
    )
    return items


def _counts(values: Iterable[str]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(Counter(values).items()))


def freeorion_items_task(cache_dir: str | os.PathLike[str] | None = None) -> EvalTask:
    """FreeOrion: each item's picture and its description; item names as queries.

    Example:
        >>> task = freeorion_items_task()  # doctest: +SKIP
        >>> task.name  # doctest: +SKIP
        'freeorion-items'
    """
    from mm_rerank_components.eval.tasks import _paired_task

    pairs = [
        (
            item.id,
            str(item.image_path),
            item.description,
            item.name,
            {"item": item.id, "kind": item.kind, "dataset": "freeorion"},
        )
        for item in fetch_freeorion_items(cache_dir)
    ]
    description = (
        "Documents: each FreeOrion content item (species, buildings, techs, ship hulls and parts, "
        "specials, fields, monsters) twice, as its picture (no text; a painted species portrait, a 3D "
        "render or a drawn icon) and as its English description (written by the game's authors). "
        "Queries: the item names ('Abaddoni', 'Solar Hull'). Relevant: that item's picture and "
        "description. Science-fiction art an ImageNet classifier was never trained on; items sharing "
        "a picture or a name are left out. Data: Debian freeorion-data, artwork and text CC-BY-SA-3.0."
    )
    return _paired_task("freeorion-items", description, pairs)
