"""The rcc reader, the GCompris/Tux Paint loaders and the apt-get errors, all offline.

Every archive here is written by the test itself, from the format, so nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from mm_rerank_components.eval import datasets
from mm_rerank_components.eval.datasets import (
    DatasetUnavailableError,
    export_gcompris_explore,
    fetch_deb,
    fetch_gcompris_explore,
    fetch_tuxpaint_stamps,
    parse_explore_board,
    parse_stamp_text,
    parse_unit_cfg,
)
from mm_rerank_components.eval.rcc import read_rcc


def build_rcc(files: dict[str, tuple[bytes, str]], version: int = 3) -> bytes:
    """Write a Qt rcc archive. ``files``: ``{"a/b.txt": (payload, "none" | "zlib" | "zstd")}``."""
    tree: dict = {}
    for path, spec in files.items():
        node = tree
        parts = path.strip("/").split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = spec

    names = bytearray()
    name_offsets: dict[str, int] = {}

    def name_offset(name: str) -> int:
        if name not in name_offsets:
            name_offsets[name] = len(names)
            encoded = name.encode("utf-16-be")
            names.extend(struct.pack(">HI", len(name), 0) + encoded)
        return name_offsets[name]

    data = bytearray()
    # breadth-first layout: each directory's children are contiguous, as rcc writes them
    nodes: list[tuple[str, object]] = [("", tree)]
    records: list[bytes] = []
    index = 0
    while index < len(nodes):
        name, value = nodes[index]
        offset = name_offset(name) if index else 0
        if isinstance(value, dict):
            first = len(nodes)
            children = sorted(value.items())
            nodes.extend(children)
            record = struct.pack(">IHII", offset, 0x02, len(children), first)
        else:
            payload, how = value
            flags = 0
            if how == "zlib":
                payload = struct.pack(">I", len(payload)) + zlib.compress(payload)
                flags = 0x01
            elif how == "zstd":
                import zstandard

                payload = zstandard.ZstdCompressor().compress(payload)
                flags = 0x04
            record = struct.pack(">IHHHI", offset, flags, 0, 0, len(data))
            data.extend(struct.pack(">I", len(payload)) + payload)
        if version >= 2:
            record += struct.pack(">Q", 0)
        records.append(record)
        index += 1
    header_size = 24 if version >= 3 else 20
    tree_bytes = b"".join(records)
    data_offset = header_size
    names_offset = data_offset + len(data)
    tree_offset = names_offset + len(names)
    header = b"qres" + struct.pack(">IIII", version, tree_offset, data_offset, names_offset)
    if version >= 3:
        header += struct.pack(">I", 0)
    return header + bytes(data) + bytes(names) + tree_bytes


@pytest.mark.parametrize("version", [1, 2, 3])
def test_read_rcc_stored_and_zlib_entries(version: int) -> None:
    blob = build_rcc(
        {
            "gcompris/a.txt": (b"plain text", "none"),
            "gcompris/sub/b.qml": (b"compressed " * 50, "zlib"),
            "top.bin": (bytes(range(256)), "none"),
        },
        version=version,
    )
    files = read_rcc(blob)
    assert files == {
        "/gcompris/a.txt": b"plain text",
        "/gcompris/sub/b.qml": b"compressed " * 50,
        "/top.bin": bytes(range(256)),
    }


def test_read_rcc_zstd_entry() -> None:
    pytest.importorskip("zstandard")
    files = read_rcc(build_rcc({"z/c.txt": (b"zstd payload " * 20, "zstd")}))
    assert files["/z/c.txt"] == b"zstd payload " * 20


def test_read_rcc_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not start with b'qres'"):
        read_rcc(b"PK\x03\x04" + bytes(40))
    blob = build_rcc({"a.txt": (b"x" * 100, "none")})
    with pytest.raises(ValueError, match="unsupported rcc format version 9"):
        read_rcc(blob[:4] + struct.pack(">I", 9) + blob[8:])
    with pytest.raises(ValueError, match="truncated"):
        read_rcc(blob[:60])
    path = tmp_path / "x.rcc"
    path.write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"x\.rcc is not a Qt resource archive"):
        read_rcc(path)


BOARD = r"""
QtObject {
    property string backgroundImage: "qrc:/gcompris/src/activities/explore_monuments/resource/map.svg"
    property var tab: [
        {
            "image": "qrc:/gcompris/src/activities/explore_monuments/resource/key.svg",
            "title": qsTr("Golden Temple"),
            "text": qsTr("A \"revered\" site {with braces} and [brackets]."),
            "image2": "qrc:/gcompris/src/activities/explore_monuments/resource/india/goldenTemple.webp",
            "text2": qsTr("Golden Temple"),
            "x": "0.255",
            "width": 0.05
        },
        {
            "title": qsTr("Hawa Mahal"),
            "text": qsTr("A palace in Jaipur."),
            "audio": GCompris.ApplicationInfo.getAudioFilePath("qrc:/x.$CA"),
            "image2": "qrc:/gcompris/src/activities/explore_monuments/resource/india/hawaMahal.webp"
        }
    ]
    property var instructions: [ { "text": qsTr("Not an item") } ]
}
"""


def test_parse_explore_board_reads_items_only() -> None:
    items = parse_explore_board(BOARD)
    assert [i["title"] for i in items] == ["Golden Temple", "Hawa Mahal"]
    assert items[0]["text"] == 'A "revered" site {with braces} and [brackets].'
    assert items[0]["x"] == "0.255"
    assert "width" not in items[0]  # numbers are not strings
    assert "audio" not in items[1]  # function calls are skipped


def test_parse_stamp_text() -> None:
    captions = parse_stamp_text(
        "A frog.\nfr.utf8=Une grenouille.\npt_BR.utf8=Um sapo.\nsr@latin.utf8=Žaba.\nxx.utf8=\n"
    )
    assert captions == {"en": "A frog.", "fr": "Une grenouille.", "pt_BR": "Um sapo.", "sr@latin": "Žaba."}


def _fake_gcompris(cache: Path) -> None:
    root = cache / "gcompris-qt-data"
    rcc_dir = root / "usr/share/gcompris-qt/rcc"
    rcc_dir.mkdir(parents=True)
    base = "gcompris/src/activities/explore_monuments"
    files = {
        f"{base}/resource/board/board1.qml": (BOARD.encode(), "zlib"),
        f"{base}/resource/india/goldenTemple.webp": (b"RIFF-golden", "none"),
        f"{base}/resource/india/hawaMahal.webp": (b"RIFF-hawa", "none"),
    }
    (rcc_dir / "explore_monuments.rcc").write_bytes(build_rcc(files))
    for other in ("explore_farm_animals", "explore_world_animals", "explore_world_music"):
        board = f'property var tab: [{{"title": qsTr("{other}"), "text": qsTr("About {other}."), '
        board += f'"image2": "qrc:/gcompris/src/activities/{other}/p.webp"}}]'
        rcc = build_rcc(
            {
                f"gcompris/src/activities/{other}/resource/board/board1.qml": (board.encode(), "none"),
                f"gcompris/src/activities/{other}/p.webp": (other.encode(), "none"),
            }
        )
        (rcc_dir / f"{other}.rcc").write_bytes(rcc)
    (root / ".unpacked").write_text("fake\n")


def test_fetch_and_export_gcompris_explore_from_cache(tmp_path: Path) -> None:
    _fake_gcompris(tmp_path / "cache")
    items = fetch_gcompris_explore(tmp_path / "cache")
    assert len(items) == 5
    temple = next(i for i in items if i.title == "Golden Temple")
    assert temple.id == "monuments-golden-temple"
    assert temple.image_path.read_bytes() == b"RIFF-golden"
    assert temple.board == "board1.qml"
    out = export_gcompris_explore(tmp_path / "export", cache_dir=tmp_path / "cache")
    assert (out / "monuments-golden-temple.webp").read_bytes() == b"RIFF-golden"
    assert (out / "monuments-golden-temple.txt").read_text().startswith('Golden Temple\n\nA "revered"')
    records = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(records) == 5
    first = next(r for r in records if r["id"] == "monuments-hawa-mahal")
    assert first["file_name"] == "monuments-hawa-mahal.webp"
    assert first["caption"] == first["title"] == "Hawa Mahal"


def test_fetch_gcompris_explore_reports_missing_image(tmp_path: Path) -> None:
    _fake_gcompris(tmp_path)
    rcc = tmp_path / "gcompris-qt-data/usr/share/gcompris-qt/rcc/explore_world_music.rcc"
    board = 'property var tab: [{"title": qsTr("X"), "text": qsTr("Y."), "image2": "qrc:/missing.webp"}]'
    rcc.write_bytes(build_rcc({"g/resource/board/board1.qml": (board.encode(), "none")}))
    with pytest.raises(ValueError, match=r"points at qrc:/missing\.webp, which is not in the archive"):
        fetch_gcompris_explore(tmp_path)


def test_fetch_tuxpaint_stamps_from_cache(tmp_path: Path) -> None:
    from PIL import Image

    stamps = tmp_path / "tuxpaint-stamps-default/usr/share/tuxpaint/stamps"
    for rel, caption in [
        ("animals/frog", "A frog.\nfr.utf8=Une grenouille."),
        ("animals/cartoon/frog", "A cartoon frog."),
        ("symbols/star", "A star.\nfr.utf8=Une étoile."),
    ]:
        path = stamps / f"{rel}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", (4, 4)).save(path)
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    Image.new("RGBA", (4, 4)).save(stamps / "animals/frog_mirror.png")
    (stamps / "food").mkdir()
    (stamps / "food/apple.txt").write_text("An apple.")  # caption without an image
    (tmp_path / "tuxpaint-stamps-default/.unpacked").write_text("fake\n")
    found = {s.id: s for s in fetch_tuxpaint_stamps(tmp_path)}
    assert set(found) == {"animals/frog", "animals/cartoon/frog", "symbols/star"}
    frog = found["animals/frog"]
    assert (frog.caption, frog.caption_fr, frog.category, frog.folder, frog.is_photo) == (
        "A frog.",
        "Une grenouille.",
        "animals",
        "animals",
        True,
    )
    assert not found["animals/cartoon/frog"].is_photo
    assert found["animals/cartoon/frog"].caption_fr is None
    assert not found["symbols/star"].is_photo


def test_fetch_deb_without_apt_names_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.shutil, "which", lambda name: None)
    with pytest.raises(DatasetUnavailableError, match=r"apt-get download tuxpaint-stamps-default"):
        fetch_deb("tuxpaint-stamps-default", tmp_path)


def test_fetch_deb_reports_apt_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Result:
        returncode = 100
        stdout = ""
        stderr = "E: Failed to fetch http://deb.debian.org/...: Temporary failure resolving"

    calls: list[list[str]] = []
    monkeypatch.setattr(datasets.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(datasets.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or Result())
    with pytest.raises(
        DatasetUnavailableError, match=r"'apt-get download gcompris-qt-data' failed \(exit 100\)"
    ):
        fetch_deb("gcompris-qt-data", tmp_path)
    assert calls == [["apt-get", "download", "gcompris-qt-data"]]


def test_fetch_deb_uses_a_deb_placed_in_the_cache(tmp_path: Path) -> None:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    import subprocess

    pkg = tmp_path / "build"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        "Package: mm-test-pkg\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n"
    )
    (pkg / "usr/share/mm").mkdir(parents=True)
    (pkg / "usr/share/mm/hello.txt").write_text("hello")
    debs = tmp_path / "cache/debs"
    debs.mkdir(parents=True)
    subprocess.run(
        ["dpkg-deb", "--build", str(pkg), str(debs / "mm-test-pkg_1.0_all.deb")],
        check=True,
        capture_output=True,
    )
    root = fetch_deb("mm-test-pkg", tmp_path / "cache")
    assert (root / "usr/share/mm/hello.txt").read_text() == "hello"
    assert fetch_deb("mm-test-pkg", tmp_path / "cache") == root  # cached


ARCHER_CFG = """#textdomain wesnoth-units
[unit_type]
    id=Elvish Archer
    name= _ "Elvish Archer"
    image="units/elves-wood/archer.png"
    small_profile="portraits/elves/archer.png~CROP(0,40,360,360)"
    profile="portraits/elves/archer.png"
    description= _ "As primarily foragers and hunters, most elves learn to become
proficient ""archers"" from a young age."
    [attack]
        name=bow
        description=_"bow"
    [/attack]
[/unit_type]
"""


def test_parse_unit_cfg_reads_the_header_only() -> None:
    fields = parse_unit_cfg(ARCHER_CFG)
    assert fields == {
        "name": "Elvish Archer",
        "profile": "portraits/elves/archer.png",
        "description": 'As primarily foragers and hunters, most elves learn to become proficient "archers" '
        "from a young age.",
    }
    # an attack's description is never taken for the unit's
    assert parse_unit_cfg('[unit_type]\n  name= _ "X"\n  [attack]\n  description=_"bow"\n') == {"name": "X"}


def test_fetch_wesnoth_units_from_cache(tmp_path: Path) -> None:
    from PIL import Image

    from mm_rerank_components.eval.datasets import fetch_wesnoth_units
    from mm_rerank_components.eval.tasks import wesnoth_units_task

    core = tmp_path / "wesnoth-1.16-data/usr/share/games/wesnoth/1.16/data/core"
    cfgs = {
        "elves/Archer.cfg": ARCHER_CFG,
        "elves/Shaman.cfg": ARCHER_CFG.replace("Elvish Archer", "Elvish Shaman").replace(
            "archer.png", "shaman.png"
        ),
        # two units sharing one portrait: both left out
        "orcs/Grunt.cfg": '[unit_type]\n name= _ "Orcish Grunt"\n profile="portraits/orcs/grunt.png"\n'
        ' description= _ "Grunts."\n',
        "orcs/Grunt2.cfg": '[unit_type]\n name= _ "Orcish Grunt 2"\n profile="portraits/orcs/grunt.png"\n'
        ' description= _ "Grunts too."\n',
        "orcs/NoPortrait.cfg": '[unit_type]\n name= _ "Orcish Ghost"\n profile="portraits/orcs/none.png"\n'
        ' description= _ "Nothing to see."\n',
        "fake/Fog.cfg": '[unit_type]\n name= _ "Fog"\n profile="portraits/elves/archer.png"\n description= _ "x"\n',
    }
    for rel, text in cfgs.items():
        (core / "units" / rel).parent.mkdir(parents=True, exist_ok=True)
        (core / "units" / rel).write_text(text, encoding="utf-8")
    for rel in ("elves/archer.png", "elves/shaman.png", "orcs/grunt.png"):
        (core / "images/portraits" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(core / "images/portraits" / rel)
    (tmp_path / "wesnoth-1.16-data/.unpacked").write_text("fake\n")
    units = {u.id: u for u in fetch_wesnoth_units(tmp_path)}
    assert set(units) == {"elves/Archer", "elves/Shaman"}
    assert units["elves/Shaman"].name == "Elvish Shaman" and units["elves/Archer"].race == "elves"
    task = wesnoth_units_task(tmp_path)
    assert task.name == "wesnoth-units"
    assert task.queries["q:elves/Archer"] == "Elvish Archer"
    assert task.qrels["q:elves/Archer"] == {"img:elves/Archer": 1, "txt:elves/Archer": 1}
    assert task.docs["txt:elves/Archer"].text is not None and "archers" in task.docs["txt:elves/Archer"].text
