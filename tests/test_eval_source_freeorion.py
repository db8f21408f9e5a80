"""The FreeOrion reader: stringtable, FOCS scripts, passages, skip rules; all offline.

Every snippet is written in the package's own format (``freeorion-data`` 0.4.10); the one test that
reads the real package runs only when it is already unpacked in the cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mm_rerank_components.eval.datasets import DatasetUnavailableError, default_cache_dir
from mm_rerank_components.eval.sources.freeorion import (
    FREEORION_PACKAGE,
    FreeOrionItem,
    clean_passage,
    fetch_freeorion_items,
    freeorion_items_task,
    parse_focs_items,
    parse_stringtable,
    select_items,
)

STRINGTABLE = """\ufeffEnglish

# This is the English String Table file for FreeOrion
#
##
## Species
##

SP_ABADDONI
Abaddoni

SP_ABADDONI_DESC
'''Description:

Abaddoni are shaped like a chicken egg on its side, roughly 0,8 meters tall.
<img src="species/abaddoni.png"></img>
'''

SH_SOLAR
Solar Hull

SH_SOLAR_DESC
'''This mighty flagship is essentially a miniature sun, and as such is a great source of both [[metertype METER_FUEL]] and visibility.'''

METER_FUEL
Fuel

SP_GRV
Graviton Pulse

SP_GRV_DESC
A weapon [[SHIP_WEAPON_QUICKLY_REDUCE]] [[ENEMY_PLANET_LITHIC_POP]].

SHIP_WEAPON_QUICKLY_REDUCE
that quickly kills

SHP_GRV
Graviton Pulse

SHP_GRV_DESC
Unlocks the [[shippart SP_GRV]] ship part.

#include "../content_specific_parameters.txt"
"""

SPECIES_FOCS = """Species
    name = "SP_ABADDONI"
    description = "SP_ABADDONI_DESC"
    gameplay_description = "SP_ABADDONI_GAMEPLAY_DESC"
    Playable

    tags = [ "LITHIC" "BAD_RESEARCH" ]

    effectsgroups = [
        [[AVERAGE_INDUSTRY]]
        EffectsGroup
            scope = Source
            effects = [
                GenerateSitRepMessage
                    message = "EFFECT_X"
                    icon = "icons/sitrep/not_this.png"
            ]
/*
        name = "SP_COMMENTED_OUT"
*/
        // icon = "icons/also_not_this.png"
    ]

    [[INFERNO_BROAD_EP]]

    graphic = "icons/species/abaddonnian.png"

#include "common/*.macros"

CONST_SOMETHING
'''    icon = "icons/macro.png"'''
"""

TWO_TECHS_FOCS = """Tech
    name = "DEF_ROOT_DEFENSE"
    description = "DEF_ROOT_DEFENSE_DESC"
    short_description = "TROOPS_SHORT_DESC"
    category = "DEFENSE_CATEGORY"
    unlock = Item type = Building name = "BLD_NOT_THIS"
    icon = "icons/tech/root_defense.png"

Tech
    name = "DEF_DEFENSE_NET_1"
    description = "DEF_DEFENSE_NET_1_DESC"
    prerequisites = [
        "DEF_ROOT_DEFENSE"
    ]
"""


def test_parse_stringtable_reads_single_and_multi_line_values() -> None:
    table = parse_stringtable(STRINGTABLE)
    assert table["SP_ABADDONI"] == "Abaddoni"
    assert table["SP_ABADDONI_DESC"].startswith("Description:\n\nAbaddoni are shaped")
    assert table["SP_ABADDONI_DESC"].endswith('<img src="species/abaddoni.png"></img>\n')
    # a quoted value that opens and closes on one line
    assert table["SH_SOLAR_DESC"].endswith("and visibility.")
    assert table["SP_GRV_DESC"] == "A weapon [[SHIP_WEAPON_QUICKLY_REDUCE]] [[ENEMY_PLANET_LITHIC_POP]]."
    # the language line, comments and the include are not keys
    assert "English" not in table and not any(k.startswith("#") for k in table)
    assert set(table) == {
        "SP_ABADDONI",
        "SP_ABADDONI_DESC",
        "SH_SOLAR",
        "SH_SOLAR_DESC",
        "METER_FUEL",
        "SP_GRV",
        "SP_GRV_DESC",
        "SHIP_WEAPON_QUICKLY_REDUCE",
        "SHP_GRV",
        "SHP_GRV_DESC",
    }


def test_parse_focs_items_takes_only_the_items_own_header_keys() -> None:
    assert parse_focs_items(SPECIES_FOCS) == [
        {
            "kind": "species",
            "name": "SP_ABADDONI",
            "description": "SP_ABADDONI_DESC",
            "graphic": "icons/species/abaddonnian.png",
        }
    ]


def test_parse_focs_items_reads_every_block_of_a_file() -> None:
    items = parse_focs_items(TWO_TECHS_FOCS)
    assert items == [
        {
            "kind": "tech",
            "name": "DEF_ROOT_DEFENSE",
            "description": "DEF_ROOT_DEFENSE_DESC",
            "icon": "icons/tech/root_defense.png",
        },
        {"kind": "tech", "name": "DEF_DEFENSE_NET_1", "description": "DEF_DEFENSE_NET_1_DESC"},
    ]
    hull = 'Hull\n    name = "SH_SOLAR"\n    icon = "icons/ship_hulls/solar_small.png"\n    graphic = "hulls_design/solar.png"\n'
    assert parse_focs_items(hull)[0]["kind"] == "hull"
    assert parse_focs_items(hull)[0]["graphic"] == "hulls_design/solar.png"
    assert parse_focs_items('Statistic name = "X" value = 1\n') == []


def test_clean_passage_expands_references_and_removes_markup() -> None:
    table = parse_stringtable(STRINGTABLE)
    assert clean_passage(table["SP_ABADDONI_DESC"], table) == (
        "Description: Abaddoni are shaped like a chicken egg on its side, roughly 0,8 meters tall."
    )
    assert clean_passage(table["SH_SOLAR_DESC"], table).endswith("great source of both Fuel and visibility.")
    # a nested reference is expanded; an unknown key is dropped, never shown as [[KEY]]
    assert clean_passage(table["SP_GRV_DESC"], table) == "A weapon that quickly kills ."
    assert clean_passage(table["SHP_GRV_DESC"], table) == "Unlocks the Graviton Pulse ship part."
    assert clean_passage("<i>Very</i> <rgba 255 0 0 255>red</rgba>.", {}) == "Very red."
    # a reference cycle stops after the depth limit
    assert clean_passage("[[A]]", {"A": "a [[A]]"}, depth=3) == "a a a"


def _item(id_: str, name: str, picture: str, kind: str) -> FreeOrionItem:
    return FreeOrionItem(id_, name, f"About {name}.", Path(picture), kind)


def test_select_items_applies_the_skip_rules() -> None:
    items = [
        _item("part/SP_GRV", "Graviton Pulse", "grv.png", "part"),
        # the tech that unlocks it borrows its picture: the tech goes, the part stays
        _item("tech/SHP_GRV", "Graviton Research", "grv.png", "tech"),
        # a tech with the same name as a building: the tech goes
        _item("building/BLD_GATEWAY_VOID", "Gateway to the Void", "gateway.png", "building"),
        _item("tech/LRN_GATEWAY_VOID", "gateway to  the void", "tech_gateway.png", "tech"),
        # two non-tech items sharing a picture: both go
        _item("part/SP_DARK_RAY", "Dark Ray", "bio_weapon_1.png", "part"),
        _item("part/SP_EMP", "EMP", "bio_weapon_1.png", "part"),
        # two techs sharing a picture: both go
        _item("tech/SHP_ZORTRIUM_PLATE", "Zortrium Armor", "armor.png", "tech"),
        _item("tech/SHP_DIAMOND_PLATE", "Diamond Armor", "armor.png", "tech"),
        # placeholders
        _item("building/BLD_COL_ABADDONI", "Abaddoni Colony", "abaddoni.png", "building"),
        _item("species/SP_SUPER_TEST", "Super Tester", "other-04.png", "species"),
        _item("species/SP_ABADDONI", "Abaddoni", "abaddoni_portrait.png", "species"),
    ]
    scripts = [i.id.split("/", 1)[1] for i in items]
    kept, skipped = select_items(items, scripts)
    assert [i.id for i in kept] == ["part/SP_GRV", "building/BLD_GATEWAY_VOID", "species/SP_ABADDONI"]
    assert skipped == {"placeholder": 2, "tech borrowing": 2, "shared picture or name": 4}


def _png(path: Path, size: tuple[int, int], color: tuple[int, int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGBA", size, color)
    if color[3]:
        image.putpixel((0, 0), (0, 0, 0, 255))  # some content, so the picture is not blank
    image.save(path)


def test_fetch_freeorion_items_from_cache(tmp_path: Path) -> None:
    package = tmp_path / FREEORION_PACKAGE
    root = package / "usr/share/games/freeorion/default"
    (root / "stringtables").mkdir(parents=True)
    extra = "\nBLD_X\nBlank Building\n\nBLD_X_DESC\nShows nothing.\n\nBLD_S\nSmall Building\n\nBLD_S_DESC\nTiny.\n"
    (root / "stringtables/en.txt").write_text(STRINGTABLE + extra, encoding="utf-8")
    (root / "content_specific_parameters.txt").write_text(
        "\nENEMY_PLANET_LITHIC_POP\non lithic planets\n", encoding="utf-8"
    )
    scripts = {
        "species/SP_ABADDONI.focs.txt": SPECIES_FOCS,
        "ship_hulls/SH_SOLAR.focs.txt": 'Hull\n    name = "SH_SOLAR"\n    description = "SH_SOLAR_DESC"\n'
        '    icon = "icons/ship_hulls/solar_small.png"\n    graphic = "hulls_design/solar.png"\n',
        "ship_parts/SP_GRV.focs.txt": 'Part\n    name = "SP_GRV"\n    description = "SP_GRV_DESC"\n'
        '    icon = "icons/ship_parts/grv.png"\n',
        "techs/SHP_GRV.focs.txt": 'Tech\n    name = "SHP_GRV"\n    description = "SHP_GRV_DESC"\n'
        '    icon = "icons/ship_parts/grv.png"\n',
        "techs/DEF.focs.txt": TWO_TECHS_FOCS,  # no stringtable entries: left out
        "buildings/BLD_X.focs.txt": 'BuildingType\n    name = "BLD_X"\n    description = "BLD_X_DESC"\n'
        '    icon = "icons/building/blank.png"\n',
        "buildings/BLD_S.focs.txt": 'BuildingType\n    name = "BLD_S"\n    description = "BLD_S_DESC"\n'
        '    icon = "icons/building/small.png"\n',
        "buildings/BLD_M.focs.txt": 'BuildingType\n    name = "BLD_M"\n    description = "BLD_X_DESC"\n'
        '    icon = "icons/building/missing.png"\n',
    }
    for rel, text in scripts.items():
        (root / "scripting" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "scripting" / rel).write_text(text, encoding="utf-8")
    art = root / "data/art"
    _png(art / "species/abaddoni.png", (128, 100), (200, 40, 40, 255))
    _png(art / "icons/species/abaddonnian.png", (64, 64), (200, 200, 200, 255))
    _png(art / "icons/ship_hulls/solar_small.png", (256, 256), (250, 200, 0, 255))
    _png(art / "hulls_design/solar.png", (200, 100), (250, 200, 0, 255))
    _png(art / "icons/ship_parts/grv.png", (64, 64), (20, 20, 200, 255))
    _png(art / "icons/building/blank.png", (64, 64), (255, 255, 255, 0))  # white, transparent
    _png(art / "icons/building/small.png", (16, 16), (20, 200, 20, 255))
    (package / ".unpacked").write_text("fake\n")

    items = {i.id: i for i in fetch_freeorion_items(tmp_path)}
    assert set(items) == {"species/SP_ABADDONI", "hull/SH_SOLAR", "part/SP_GRV"}
    # the portrait the description embeds wins over the script's 64 px mark
    assert items["species/SP_ABADDONI"].image_path == art / "species/abaddoni.png"
    # the icon wins over the graphic
    assert items["hull/SH_SOLAR"].image_path == art / "icons/ship_hulls/solar_small.png"
    # a reference into the included file is expanded
    assert items["part/SP_GRV"].description == "A weapon that quickly kills on lithic planets."
    assert items["species/SP_ABADDONI"].name == "Abaddoni"

    task = freeorion_items_task(tmp_path)
    assert task.name == "freeorion-items"
    assert "CC-BY-SA-3.0" in task.description
    assert task.summary()["queries"] == 3
    assert task.queries["q:hull/SH_SOLAR"] == "Solar Hull"
    assert task.qrels["q:hull/SH_SOLAR"] == {"img:hull/SH_SOLAR": 1, "txt:hull/SH_SOLAR": 1}
    assert task.docs["img:hull/SH_SOLAR"].text is None
    assert task.docs["txt:hull/SH_SOLAR"].image is None
    assert task.docs["txt:hull/SH_SOLAR"].text == items["hull/SH_SOLAR"].description


def test_fetch_freeorion_items_names_a_changed_package(tmp_path: Path) -> None:
    (tmp_path / FREEORION_PACKAGE).mkdir()
    (tmp_path / FREEORION_PACKAGE / ".unpacked").write_text("fake\n")
    with pytest.raises(DatasetUnavailableError, match="looks different"):
        fetch_freeorion_items(tmp_path)


@pytest.mark.slow
def test_real_freeorion_task_from_cache() -> None:
    cache = default_cache_dir()
    if not (cache / FREEORION_PACKAGE / ".unpacked").exists():
        pytest.skip(
            f"package not in cache: {FREEORION_PACKAGE} is not unpacked under {cache} (fetch it once with "
            f"mm_rerank_components.eval.datasets.fetch_deb('{FREEORION_PACKAGE}'), or set MM_RERANK_CACHE)"
        )
    task = freeorion_items_task(cache)
    summary = task.summary()
    assert summary["queries"] >= 200
    assert summary["documents"] == 2 * summary["queries"]
    assert 0 < len(task.query_ids("test")) < summary["queries"]
    kinds = {c.metadata["kind"] for c in task.docs.values()}
    assert {"species", "building", "tech", "hull", "part", "special"} <= kinds
    for doc in task.docs.values():
        if doc.image is not None:
            assert isinstance(doc.image, str)
            with Image.open(doc.image) as image:
                image.load()
                assert min(image.size) >= 64
        else:
            assert doc.text and "[[" not in doc.text and "<img" not in doc.text
