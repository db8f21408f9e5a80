"""The Widelands evaluation source: its Lua reader and item rules on literal snippets; the real task if cached."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mm_rerank_components.eval.datasets import default_cache_dir
from mm_rerank_components.eval.sources.widelands import (
    MIN_PICTURE_PX,
    OPAQUE,
    WIDELANDS_PACKAGE,
    fetch_widelands_items,
    parse_helptexts,
    parse_item_init,
    parse_lua_table,
    widelands_items_task,
)

# the shape of data/tribes/initialization/barbarians/units.lua (Widelands 1.1), shortened
UNITS_LUA = """descriptions = wl.Descriptions() -- TODO(matthiakl): only for savegame compatibility
image_dirname = path.dirname(__file__) .. "images/"
push_textdomain("tribes_encyclopedia")
include "tribes/scripting/help/time_strings.lua"

-- .. function:: new_tribe{table}
--    wl.Descriptions():new_tribe { name = "commented_out" }
wl.Descriptions():new_tribe {
   name = "barbarians",
   roads = { busy = { image_dirname .. "roadt_busy.png", }, },
   resource_indicators = { [""] = { [0] = "barbarians_resi_none", }, },
   wares_order = {
      {
         {
            name = "log",
            preciousness = 14,
            helptexts = {
               purpose = {
                  -- TRANSLATORS: Helptext for a barbarian ware: Log, part 1
                  pgettext("ware", "Logs are an important basic building material."),
                  -- TRANSLATORS: Helptext for a barbarian ware: Log, part 2
                  pgettext("barbarians_ware", "Barbarian lumberjacks fell the trees.")
               }
            }
         },
      },
   },
   buildings = {
      {
         name = "barbarians_lumberjacks_hut",
         helptexts = {
            -- TRANSLATORS: Lore helptext for a barbarian production site: Lumberjack_s Hut
            lore = pgettext("barbarians_building", "‘Take 200 hits to fell a tree and you’re a baby.\\n Take 20 and soon you will be a <b>honorable</b> lumberjack.’"),
            lore_author = pgettext("barbarians_building", "Krumta, carpenter of Chat’Karuth"),
            purpose = pgettext("building", "Fells trees in the surrounding area and processes them into logs."),
            performance = pgettext("barbarians_building", "The lumberjack needs %s to fell a tree."):bformat(ngettext("%d second", "%d seconds", 12):bformat(12))
         }
      },
      {
         name = "barbarians_headquarters",
      },
   },
   carriers = {"barbarians_carrier", "barbarians_ox"},
}
pop_textdomain()
"""

# the shape of data/tribes/workers/barbarians/lumberjack/init.lua, shortened
WORKER_INIT = """push_textdomain("tribes")

dirname = path.dirname(__file__)

wl.Descriptions():new_worker_type {
   name = "barbarians_lumberjack",
   -- TRANSLATORS: This is a worker name used in lists of workers
   descname = pgettext("barbarians_worker", "Lumberjack"),
   animation_directory = dirname,
   icon = dirname .. "menu.png",
   buildcost = { barbarians_carrier = 1, felling_ax = 1 },
   programs = {
      harvest = {
         descname = _("felling trees"),
         "findobject=attrib:tree radius:10",
         "animate=hack duration:15s",
      }
   },
   spritesheets = {
      idle = { fps = 10, frames = 10, rows = 4, columns = 3, hotspot = { 5, 21 } },
      walk = { fps = 10, frames = 10, rows = 4, columns = 3, directional = true, hotspot = { 10, 20 } },
   },
}

pop_textdomain()
"""

BUILDING_INIT = """push_textdomain("tribes")
dirname = path.dirname (__file__)
wl.Descriptions():new_militarysite_type {
   name = "amazons_fortification",
   descname = pgettext ("amazons_building", "Fortification"),
   icon = dirname .. "menu.png",
   animations = {
      idle = {hotspot = {109, 91}},
      unoccupied = {hotspot = {109, 91}},
   },
   max_soldiers = 12,
}
pop_textdomain()
"""


def test_parse_lua_table_evaluates_literals_and_translations_only() -> None:
    table = parse_lua_table(UNITS_LUA, "new_tribe")
    assert table["name"] == "barbarians"  # the call inside the comment is not the one read
    assert table["roads"]["busy"][1] is OPAQUE  # a variable .. "text" is not text
    assert table["resource_indicators"][""][0] == "barbarians_resi_none"
    assert table["carriers"] == {1: "barbarians_carrier", 2: "barbarians_ox"}
    lumberjack = table["buildings"][1]["helptexts"]
    assert lumberjack["purpose"] == "Fells trees in the surrounding area and processes them into logs."
    assert lumberjack["performance"] is OPAQUE  # :bformat(...) is a computed string
    assert "\n" in lumberjack["lore"]  # the Lua escape \\n is read as a newline


def test_parse_lua_table_reads_strings_numbers_and_long_strings() -> None:
    lua = "new_x_type { a = 'it\\'s', b = -2.5, c = [[long\n text]], d = true, e = nil, f = 0x10 }"
    assert parse_lua_table(lua, "new_*") == {
        "a": "it's",
        "b": -2.5,
        "c": "long\n text",
        "d": True,
        "e": None,
        "f": 16,
    }
    assert parse_lua_table('new_x_type({ s = "a" .. "b" })', "new_x_type") == {"s": "ab"}
    # a string that looks like syntax is still a string; hex numbers and escapes are Lua's
    assert parse_lua_table('new_x_type { "}", ",", 0x1e, "\\x41\\066" }', "new_x_type") == {
        1: "}",
        2: ",",
        3: 30,
        4: "AB",
    }


def test_parse_lua_table_names_what_it_did_not_find() -> None:
    with pytest.raises(ValueError, match=r"no call new_tribe\{\.\.\.\}"):
        parse_lua_table("-- wl.Descriptions():new_tribe { name = 'x' }\nx = 1\n", "new_tribe")
    with pytest.raises(ValueError, match="expected"):
        parse_lua_table("new_tribe { name = 'x' ", "new_tribe")


def test_parse_helptexts_keeps_the_authors_text_without_markup() -> None:
    texts = parse_helptexts(UNITS_LUA)
    assert set(texts) == {"log", "barbarians_lumberjacks_hut"}  # the headquarters has no helptexts
    assert texts["log"] == {
        "purpose": "Logs are an important basic building material. Barbarian lumberjacks fell the trees."
    }
    hut = texts["barbarians_lumberjacks_hut"]
    assert hut["lore"] == (
        "‘Take 200 hits to fell a tree and you’re a baby. Take 20 and soon you will be a honorable lumberjack.’"
    )
    assert hut["lore_author"] == "Krumta, carpenter of Chat’Karuth"
    assert "performance" not in hut


def test_parse_item_init_reads_the_item_not_its_programs() -> None:
    assert parse_item_init(WORKER_INIT) == {
        "name": "barbarians_lumberjack",
        "descname": "Lumberjack",
        "idle_sheet": (4, 3),
    }
    assert parse_item_init(BUILDING_INIT) == {
        "name": "amazons_fortification",
        "descname": "Fortification",
        "idle_sheet": None,
    }


# -- fetch: the skip rules, on a fake unpacked package -------------------------------------------------

_HELP = '{{ name = "{name}", helptexts = {{ purpose = pgettext("building", "{purpose}"){lore} }} }},'


def _units(entries: dict[str, tuple[str, str]]) -> str:
    rows = [
        _HELP.format(name=name, purpose=purpose, lore=f', lore = _("{lore}")' if lore else "")
        for name, (purpose, lore) in entries.items()
    ]
    return (
        "wl.Descriptions():new_tribe {\n name = 'barbarians',\n buildings = {\n"
        + "\n".join(rows)
        + "\n }\n}\n"
    )


def _init(name: str, descname: str, sheet: bool = False) -> str:
    idle = "spritesheets = { idle = { rows = 2, columns = 3 } }" if sheet else "animations = { idle = {} }"
    return f'new_productionsite_type {{ name = "{name}", descname = _("{descname}"), {idle} }}'


def _fake_package(cache: Path) -> Path:
    from PIL import Image

    root = cache / WIDELANDS_PACKAGE / "usr/share/games/widelands/data/tribes"
    helptexts = {
        "barbarians_farm": ("Sows and harvests barley.", "‘Barley is life.’"),
        "barbarians_ox": ("Oxen carry wares.", ""),
        "barbarians_tiny": ("Too small to see.", ""),
        "barbarians_blind": ("Has no picture.", ""),
        "barbarians_twin_a": ("Twin A.", ""),
        "barbarians_twin_b": ("Twin B.", ""),
        "barbarians_fort": ("Garrisons soldiers.", ""),
        "barbarians_tower": ("Garrisons soldiers.", ""),
        "barbarians_quarry": ("Cuts granite.", ""),
        "empire_quarry": ("Cuts marble and granite.", ""),
    }
    (root / "initialization/barbarians").mkdir(parents=True)
    (root / "initialization/barbarians/units.lua").write_text(_units(helptexts), encoding="utf-8")
    colours = iter(range(10, 250, 10))

    def item(kind: str, folder: str, name: str, descname: str, picture: str | None, size: int = 80) -> Path:
        where = root / kind / folder
        where.mkdir(parents=True)
        (where / "init.lua").write_text(_init(name, descname, sheet=kind == "workers"), encoding="utf-8")
        if picture:
            Image.new("RGB", (size, size), (next(colours), 0, 0)).save(where / picture)
        return where

    item("buildings", "productionsites/barbarians/farm", "barbarians_farm", "Farm", "idle_1.png")
    farm = root / "buildings/productionsites/barbarians/farm"
    Image.new("RGB", (40, 40)).save(farm / "idle_0.5.png")  # a smaller scale is never taken
    Image.new("RGB", (20, 20)).save(farm / "menu.png")
    # a worker's sprite sheet: 3 columns x 2 rows of 70 x 66 px; frame 0 is the top-left cell
    ox = item("workers", "barbarians/ox", "barbarians_ox", "Ox", None)
    sheet = Image.new("RGB", (210, 132), (0, 0, 255))
    sheet.paste((0, 255, 0), (0, 0, 70, 66))
    sheet.save(ox / "idle_4.png")
    item("buildings", "productionsites/barbarians/tiny", "barbarians_tiny", "Tiny", "idle_00.png", size=30)
    item("buildings", "productionsites/barbarians/blind", "barbarians_blind", "Blind", None)
    item("buildings", "productionsites/barbarians/nohelp", "barbarians_nohelp", "No Help", "idle.png")
    twin_a = item(
        "buildings", "productionsites/barbarians/twin_a", "barbarians_twin_a", "Twin A", "idle_1.png"
    )
    twin_b = item("buildings", "productionsites/barbarians/twin_b", "barbarians_twin_b", "Twin B", None)
    (twin_b / "idle_1.png").write_bytes((twin_a / "idle_1.png").read_bytes())
    item("buildings", "militarysites/barbarians/fort", "barbarians_fort", "Fort", "idle_4.png")
    item("buildings", "militarysites/barbarians/tower", "barbarians_tower", "Tower", "idle_4.png")
    item("buildings", "productionsites/barbarians/quarry", "barbarians_quarry", "Quarry", "idle_2.png")
    item("buildings", "productionsites/empire/quarry", "empire_quarry", "Quarry", "idle_2.png")
    (cache / WIDELANDS_PACKAGE / ".unpacked").write_text("fake\n", encoding="utf-8")
    return root


def test_fetch_keeps_items_with_their_own_name_text_and_picture(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from PIL import Image

    root = _fake_package(tmp_path)
    with caplog.at_level(logging.INFO, logger="mm_rerank_components.eval.sources.widelands"):
        items = {i.id: i for i in fetch_widelands_items(tmp_path)}
    assert set(items) == {"barbarians_farm", "barbarians_ox"}
    farm, ox = items["barbarians_farm"], items["barbarians_ox"]
    assert (farm.name, farm.kind, farm.tribe) == ("Farm", "building", "barbarians")
    assert farm.passage == "Sows and harvests barley. ‘Barley is life.’"
    assert farm.image_path == root / "buildings/productionsites/barbarians/farm/idle_1.png"
    assert (ox.kind, ox.passage) == ("worker", "Oxen carry wares.")
    assert ox.image_path == tmp_path / "widelands-items/barbarians_ox.png"
    with Image.open(ox.image_path) as frame:
        assert frame.size == (70, 66) and frame.convert("RGB").getpixel((35, 33)) == (0, 255, 0)
    message = caplog.records[-1].getMessage()
    assert "2 items kept (1 buildings, 1 workers)" in message
    for counted in (
        "2 sharing a name",
        "2 sharing a passage",
        "2 sharing a picture",
        f"1 with a picture under {MIN_PICTURE_PX} px",
        "1 without an idle picture",
        "1 without a name or a purpose help text",
    ):
        assert counted in message


def test_task_pairs_each_picture_with_its_help_text(tmp_path: Path) -> None:
    _fake_package(tmp_path)
    task = widelands_items_task(tmp_path)
    assert task.name == "widelands-items" and "GPL-2+" in task.description
    assert task.queries == {"q:barbarians_farm": "Farm", "q:barbarians_ox": "Ox"}
    assert task.qrels["q:barbarians_ox"] == {"img:barbarians_ox": 1, "txt:barbarians_ox": 1}
    assert task.docs["img:barbarians_ox"].text is None
    assert task.docs["txt:barbarians_farm"].text == "Sows and harvests barley. ‘Barley is life.’"
    assert task.docs["txt:barbarians_farm"].image is None


def test_fetch_says_when_the_package_looks_different(tmp_path: Path) -> None:
    from mm_rerank_components.eval.datasets import DatasetUnavailableError

    root = tmp_path / WIDELANDS_PACKAGE / "usr/share/games/widelands/data/tribes"
    (root / "buildings").mkdir(parents=True)
    (tmp_path / WIDELANDS_PACKAGE / ".unpacked").write_text("fake\n", encoding="utf-8")
    with pytest.raises(
        DatasetUnavailableError, match=r"units\.lua: the widelands-data package looks different"
    ):
        fetch_widelands_items(tmp_path)


@pytest.mark.slow
def test_real_task_from_the_cached_package() -> None:
    from PIL import Image

    cache = default_cache_dir()
    if not (cache / WIDELANDS_PACKAGE / ".unpacked").is_file():
        pytest.skip(f"package not in cache: {WIDELANDS_PACKAGE} is not unpacked under {cache}")
    task = widelands_items_task(cache)
    summary = task.summary()
    assert summary["queries"] >= 80
    assert summary["documents"] == 2 * summary["queries"]
    assert 0 < len(task.query_ids("test")) < summary["queries"]
    for doc in task.docs.values():
        if doc.image is None:
            assert doc.text
            continue
        with Image.open(str(doc.image)) as image:
            image.load()
            assert min(image.size) >= MIN_PICTURE_PX
