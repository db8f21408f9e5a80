"""Real evaluation data from Debian packages: Tux Paint stamps and GCompris "explore" activities.

Nothing here is committed to the repository. Each package is fetched with ``apt-get download`` into a
cache folder (``$MM_RERANK_CACHE``, else ``./.cache/data`` under the current directory), unpacked with
``dpkg-deb -x`` and read from there; later calls reuse the cache and need no network. A ``.deb`` you
placed yourself in ``<cache>/debs/`` is used as is, which is how an offline machine gets the data.

* ``tuxpaint-stamps-default`` (Debian 2022.06.04-1): about 950 stamps. Each stamp is an image with a
  ``.txt`` file: an English caption on the first line, then ``<lang>.utf8=<translation>`` lines.
  The 430 PNG stamps outside the ``symbols`` and ``cartoon`` folders are photo cut-outs.
* ``gcompris-qt-data`` (Debian 3.1-2): the four "explore" activities (farm animals, world animals,
  world music, monuments) hold 82 real photos, each with a title and an expert-written paragraph,
  inside Qt ``.rcc`` resource archives (read by :mod:`mm_rerank_components.eval.rcc`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mm_rerank_components.eval.rcc import read_rcc

__all__ = [
    "DatasetUnavailableError",
    "ExploreItem",
    "Stamp",
    "WesnothUnit",
    "default_cache_dir",
    "export_gcompris_explore",
    "fetch_deb",
    "fetch_gcompris_explore",
    "fetch_tuxpaint_stamps",
    "fetch_wesnoth_units",
    "parse_explore_board",
    "parse_stamp_text",
    "parse_unit_cfg",
]

logger = logging.getLogger(__name__)

TUXPAINT_PACKAGE = "tuxpaint-stamps-default"
GCOMPRIS_PACKAGE = "gcompris-qt-data"
EXPLORE_ACTIVITIES = (
    "explore_farm_animals",
    "explore_world_animals",
    "explore_world_music",
    "explore_monuments",
)
_STAMP_ROOT = Path("usr/share/tuxpaint/stamps")
_RCC_ROOT = Path("usr/share/gcompris-qt/rcc")
_NON_PHOTO_FOLDERS = frozenset({"symbols", "cartoon"})


class DatasetUnavailableError(RuntimeError):
    """A Debian package could not be fetched or unpacked; the message names the command to run."""


def default_cache_dir() -> Path:
    """``$MM_RERANK_CACHE`` if set, else ``./.cache/data`` (relative to the current directory).

    Example:
        >>> default_cache_dir().name  # doctest: +SKIP
        'data'
    """
    env = os.environ.get("MM_RERANK_CACHE")
    return Path(env).expanduser() if env else Path.cwd() / ".cache" / "data"


def _resolve_cache(cache_dir: str | os.PathLike[str] | None) -> Path:
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_deb(package: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Download (once) and unpack a Debian package; return the folder it was unpacked into.

    Runs ``apt-get download <package>`` in ``<cache>/debs`` (and, if apt does not know the package,
    ``apt-get update`` once, which needs root), then ``dpkg-deb -x`` into ``<cache>/<package>``.

    Example:
        >>> root = fetch_deb("tuxpaint-stamps-default")  # doctest: +SKIP
        >>> (root / "usr/share/tuxpaint/stamps").is_dir()  # doctest: +SKIP
        True
    """
    cache = _resolve_cache(cache_dir)
    target = cache / package
    marker = target / ".unpacked"
    if marker.exists():
        return target
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = _find_deb(debs, package) or _download_deb(package, debs)
    if shutil.which("dpkg-deb") is None:
        raise DatasetUnavailableError(
            f"dpkg-deb is not installed, so {deb} cannot be unpacked. Install dpkg "
            f"(sudo apt-get install dpkg) or unpack it yourself: dpkg-deb -x {deb} {target}"
        )
    if target.exists():
        shutil.rmtree(target)
    tmp = cache / f".{package}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    _run(["dpkg-deb", "-x", str(deb), str(tmp)], package, f"dpkg-deb -x {deb} {target}")
    tmp.rename(target)
    marker.write_text(deb.name + "\n", encoding="utf-8")
    logger.info("unpacked %s into %s", deb.name, target)
    return target


def _find_deb(debs: Path, package: str) -> Path | None:
    found = sorted(debs.glob(f"{package}_*.deb"))
    return found[-1] if found else None


def _download_deb(package: str, debs: Path) -> Path:
    manual = f"cd {debs} && apt-get download {package}"
    if shutil.which("apt-get") is None:
        raise DatasetUnavailableError(
            f"apt-get is not available, so the Debian package {package!r} cannot be fetched. On a "
            f"Debian/Ubuntu machine run: {manual} (or copy a {package}_*.deb into {debs})"
        )
    logger.info("downloading %s with apt-get download into %s", package, debs)
    result = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
    if result.returncode != 0 and "Unable to locate package" in (result.stderr + result.stdout):
        logger.info("apt does not know %s yet; running apt-get update", package)
        update = subprocess.run(["apt-get", "update"], capture_output=True, text=True)
        if update.returncode != 0:
            raise DatasetUnavailableError(
                f"apt-get does not know {package!r} and 'apt-get update' failed "
                f"(exit {update.returncode}: {update.stderr.strip()[-400:]}). "
                f"Run as root: apt-get update && {manual}"
            )
        result = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
    if result.returncode != 0:
        raise DatasetUnavailableError(
            f"'apt-get download {package}' failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-400:]}. Run it yourself: {manual}"
        )
    deb = _find_deb(debs, package)
    if deb is None:
        raise DatasetUnavailableError(
            f"'apt-get download {package}' succeeded but no {package}_*.deb appeared in {debs}"
        )
    return deb


def _run(cmd: list[str], package: str, manual: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise DatasetUnavailableError(
            f"{' '.join(cmd)} failed for {package!r} (exit {result.returncode}): "
            f"{result.stderr.strip()[-400:]}. Try: {manual}"
        )


# --------------------------------------------------------------------------------------------------
# Tux Paint stamps


@dataclass(frozen=True)
class Stamp:
    """One Tux Paint stamp.

    Attributes:
        id: the stamp's path under the stamps folder, without extension (``"animals/birds/owl"``).
        image_path: the PNG (or, for vector-only stamps, the SVG) image.
        caption: the English caption.
        caption_fr: the French caption, when the stamp has one.
        category: the top-level folder (``"animals"``, ``"food"``, ...).
        folder: the folder under the stamps root (``"animals/birds"``).
        is_photo: a PNG outside the ``symbols`` and ``cartoon`` folders: a photo cut-out.
        captions: every caption by language code (``"en"``, ``"fr"``, ``"pt_BR"``, ...).
    """

    id: str
    image_path: Path
    caption: str
    caption_fr: str | None
    category: str
    folder: str
    is_photo: bool
    captions: Mapping[str, str] = field(default_factory=dict, hash=False, repr=False)


def parse_stamp_text(text: str) -> dict[str, str]:
    """Parse a Tux Paint stamp ``.txt``: the English line plus ``<lang>.utf8=<caption>`` lines.

    Example:
        >>> parse_stamp_text("An owl.\\nfr.utf8=Un hibou.\\n")
        {'en': 'An owl.', 'fr': 'Un hibou.'}
    """
    captions: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z_@]+)\.utf8=(.*)$", line)
        if match:
            value = match.group(2).strip()
            if value:
                captions[match.group(1)] = value
        elif line.strip() and "en" not in captions:
            captions["en"] = line.strip()
    return captions


def fetch_tuxpaint_stamps(cache_dir: str | os.PathLike[str] | None = None) -> list[Stamp]:
    """All Tux Paint stamps with a caption, sorted by id (``apt-get download`` on first use).

    Mirror and flip variants (``*_mirror.png``, ``*_flip.png``) are drawings of a stamp already listed,
    not stamps of their own, so they are not returned. Use ``[s for s in stamps if s.is_photo]`` for
    the 430 photo cut-outs.

    Example:
        >>> photos = [s for s in fetch_tuxpaint_stamps() if s.is_photo]  # doctest: +SKIP
        >>> len(photos)  # doctest: +SKIP
        430
    """
    root = fetch_deb(TUXPAINT_PACKAGE, cache_dir) / _STAMP_ROOT
    if not root.is_dir():
        raise DatasetUnavailableError(f"{root} is missing: the {TUXPAINT_PACKAGE} package looks different")
    stamps: list[Stamp] = []
    missing_image: list[str] = []
    for txt in sorted(root.rglob("*.txt")):
        stem = txt.with_suffix("")
        png, svg = stem.with_suffix(".png"), stem.with_suffix(".svg")
        image = png if png.exists() else svg if svg.exists() else None
        rel = stem.relative_to(root).as_posix()
        if image is None:
            missing_image.append(rel)
            continue
        captions = parse_stamp_text(txt.read_text(encoding="utf-8", errors="replace"))
        if "en" not in captions:
            raise ValueError(f"{txt} has no English caption line")
        parts = rel.split("/")
        folder = "/".join(parts[:-1])
        is_photo = image.suffix == ".png" and not (_NON_PHOTO_FOLDERS & set(parts[:-1]))
        stamps.append(
            Stamp(
                id=rel,
                image_path=image,
                caption=captions["en"],
                caption_fr=captions.get("fr"),
                category=parts[0],
                folder=folder,
                is_photo=is_photo,
                captions=captions,
            )
        )
    if missing_image:
        logger.warning(
            "%d Tux Paint caption files have no .png/.svg image and were not returned: %s",
            len(missing_image),
            ", ".join(missing_image[:10]),
        )
    return stamps


# --------------------------------------------------------------------------------------------------
# GCompris "explore" activities


@dataclass(frozen=True)
class ExploreItem:
    """One photo of a GCompris "explore" activity, with its title and paragraph.

    Attributes:
        id: a stable slug, ``"<activity>-<title>"`` (``"monuments-golden-temple"``).
        activity: ``"explore_monuments"``, ``"explore_farm_animals"``, ...
        title: the item's title (``"Golden Temple"``).
        paragraph: the expert-written paragraph shown with the photo.
        hint: the game's question text for the item (often the title again, or a clue).
        image_path: the photo, extracted into the cache (WebP).
        board: the level file that defines the item (``"board2.qml"``).
    """

    id: str
    activity: str
    title: str
    paragraph: str
    hint: str
    image_path: Path
    board: str


_QML_STRING = r'"((?:[^"\\]|\\.)*)"'
_QML_FIELD = re.compile(r'"(\w+)"\s*:\s*(?:qsTr\(\s*' + _QML_STRING + r"\s*\)|" + _QML_STRING + ")")


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), value)


def _string_end(qml: str, i: int) -> int:
    """The index just past the string literal whose opening quote is at ``i`` (escapes honoured)."""
    j = i + 1
    while j < len(qml):
        if qml[j] == "\\":
            j += 2
            continue
        if qml[j] == '"':
            return j + 1
        j += 1
    return j


def _tab_objects(qml: str) -> list[str]:
    """The ``{...}`` objects of the ``property var tab: [...]`` list, found with a string-aware scan."""
    start = re.search(r"property\s+var\s+tab\s*:\s*\[", qml)
    if start is None:
        return []
    objects: list[str] = []
    depth, obj_start = 0, -1
    i = start.end()
    while i < len(qml):
        ch = qml[i]
        if ch == '"':
            i = _string_end(qml, i)
            continue
        if ch == "{":
            if depth == 0:
                obj_start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                objects.append(qml[obj_start : i + 1])
        elif ch == "]" and depth == 0:
            break
        i += 1
    return objects


def parse_explore_board(qml: str) -> list[dict[str, str]]:
    """The items of one explore level file: ``[{"title": ..., "text": ..., "image2": ..., ...}]``.

    String fields (plain or wrapped in ``qsTr(...)``) are kept; numbers and function calls are not.

    Example:
        >>> parse_explore_board('property var tab: [{"title": qsTr("Cow"), "text": qsTr("Moo.")}]')
        [{'title': 'Cow', 'text': 'Moo.'}]
    """
    items = []
    for obj in _tab_objects(qml):
        fields = {
            m.group(1): _unescape(m.group(2) if m.group(2) is not None else m.group(3))
            for m in _QML_FIELD.finditer(obj)
        }
        items.append(fields)
    return items


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def fetch_gcompris_explore(cache_dir: str | os.PathLike[str] | None = None) -> list[ExploreItem]:
    """The 82 photos of GCompris' four "explore" activities, with title and paragraph.

    Example:
        >>> items = fetch_gcompris_explore()  # doctest: +SKIP
        >>> items[0].title, items[0].image_path.suffix  # doctest: +SKIP
        ('Chicken', '.webp')
    """
    root = fetch_deb(GCOMPRIS_PACKAGE, cache_dir)
    out_dir = _resolve_cache(cache_dir) / "gcompris-explore"
    items: list[ExploreItem] = []
    seen: dict[str, str] = {}
    for activity in EXPLORE_ACTIVITIES:
        rcc = root / _RCC_ROOT / f"{activity}.rcc"
        if not rcc.exists():
            raise DatasetUnavailableError(f"{rcc} is missing: the {GCOMPRIS_PACKAGE} package looks different")
        files = read_rcc(rcc)
        boards = sorted(p for p in files if re.search(r"/resource/board/board\d+\.qml$", p))
        if not boards:
            raise ValueError(f"{rcc} holds no resource/board/board*.qml level files")
        short = activity.removeprefix("explore_").replace("_", "-")
        for board in boards:
            for fields in parse_explore_board(files[board].decode("utf-8")):
                image_ref = fields.get("image2", "")
                title, paragraph = fields.get("title", "").strip(), fields.get("text", "").strip()
                if not (image_ref and title and paragraph):
                    raise ValueError(
                        f"{rcc}:{board}: an item lacks a title, text or image2 field: {sorted(fields)}"
                    )
                image_key = image_ref.removeprefix("qrc:")
                if image_key not in files:
                    raise ValueError(
                        f"{rcc}:{board}: item {title!r} points at {image_ref}, which is not in the archive"
                    )
                slug = f"{short}-{_slug(title)}"
                if slug in seen:
                    if seen[slug] == image_key:
                        continue  # the same photo reused by another level
                    slug = f"{slug}-{_slug(Path(image_key).stem)}"
                seen[slug] = image_key
                image_path = out_dir / f"{slug}{Path(image_key).suffix}"
                if not image_path.exists() or image_path.stat().st_size != len(files[image_key]):
                    out_dir.mkdir(parents=True, exist_ok=True)
                    image_path.write_bytes(files[image_key])
                items.append(
                    ExploreItem(
                        id=slug,
                        activity=activity,
                        title=title,
                        paragraph=paragraph,
                        hint=fields.get("text2", "").strip(),
                        image_path=image_path,
                        board=Path(board).name,
                    )
                )
    return items


def export_gcompris_explore(
    out_dir: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Write the explore items as an ingestable folder and return it.

    For each item: ``<slug>.webp`` (the photo), ``<slug>.txt`` (title, blank line, paragraph), and one
    ``metadata.jsonl`` line ``{"file_name": "<slug>.webp", "caption": title, "title": title,
    "text": paragraph, "activity": ..., "id": slug}`` (the Hugging Face imagefolder convention).

    Example:
        >>> export_gcompris_explore("data/explore")  # doctest: +SKIP
        PosixPath('data/explore')
    """
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    lines = []
    for item in fetch_gcompris_explore(cache_dir):
        image_name = f"{item.id}{item.image_path.suffix}"
        shutil.copyfile(item.image_path, target / image_name)
        (target / f"{item.id}.txt").write_text(f"{item.title}\n\n{item.paragraph}\n", encoding="utf-8")
        record = {
            "file_name": image_name,
            "caption": item.title,
            "title": item.title,
            "text": item.paragraph,
            "activity": item.activity,
            "id": item.id,
        }
        lines.append(json.dumps(record, ensure_ascii=False))
    (target / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


# --------------------------------------------------------------------------------------------------
# Battle for Wesnoth unit portraits and descriptions

WESNOTH_PACKAGE = "wesnoth-1.16-data"
_WESNOTH_CORE = Path("usr/share/games/wesnoth/1.16/data/core")
_WML_STRING = r'_?\s*"((?:[^"]|"")*)"'
_WML_CHILD = re.compile(r"^\s*\[(?!unit_type\])[a-z_]+\]", re.M)


@dataclass(frozen=True)
class WesnothUnit:
    """One unit type of Battle for Wesnoth: its name, its description and its painted portrait.

    Attributes:
        id: ``"<race folder>/<file stem>"`` (``"elves/Archer"``).
        name: the unit's name (``"Elvish Archer"``).
        description: the help text written for it by the game's authors.
        image_path: the portrait (PNG, several hundred pixels, painted by the game's artists).
        race: the folder under ``data/core/units`` (``"elves"``).
    """

    id: str
    name: str
    description: str
    image_path: Path
    race: str


def parse_unit_cfg(text: str) -> dict[str, str]:
    """``name``, ``description`` and ``profile`` of a unit's ``[unit_type]`` header (WML), when present.

    Only the header counts (everything before the first child tag such as ``[attack]``), so attack
    names and descriptions are not mistaken for the unit's. Doubled quotes unescape to one.

    Example:
        >>> cfg = '[unit_type]\\n name= _ "Elvish Archer"\\n profile="portraits/a.png~CROP(0,0,9,9)"\\n'
        >>> parse_unit_cfg(cfg + ' description= _ "Elves ""shoot"" well."\\n [attack]\\n  name=bow\\n')
        {'name': 'Elvish Archer', 'profile': 'portraits/a.png', 'description': 'Elves "shoot" well.'}
    """
    child = _WML_CHILD.search(text)
    header = text[: child.start()] if child else text
    out: dict[str, str] = {}
    name = re.search(rf"^\s*name\s*=\s*{_WML_STRING}", header, re.M)
    if name:
        out["name"] = name.group(1).replace('""', '"').strip()
    profile = re.search(r'^\s*profile\s*=\s*"?([^"\n~]+)', header, re.M)
    if profile:
        out["profile"] = profile.group(1).strip()
    description = re.search(rf"^\s*description\s*=\s*{_WML_STRING}", header, re.M)
    if description:
        out["description"] = " ".join(description.group(1).replace('""', '"').split())
    return out


def fetch_wesnoth_units(cache_dir: str | os.PathLike[str] | None = None) -> list[WesnothUnit]:
    """The core unit types of Battle for Wesnoth that have a name, a description and their own portrait.

    From the Debian package ``wesnoth-1.16-data`` (GPL-2+; about 146 MB, fetched once like the
    others). Units whose portrait another unit also uses are left out (a query would have two
    equally right pictures), as are the ``fake`` helper units; the log says how many.

    Example:
        >>> units = fetch_wesnoth_units()  # doctest: +SKIP
        >>> units[0].name, units[0].image_path.suffix  # doctest: +SKIP
        ('Vampire Bat', '.png')
    """
    root = fetch_deb(WESNOTH_PACKAGE, cache_dir) / _WESNOTH_CORE
    units_dir = root / "units"
    if not units_dir.is_dir():
        raise DatasetUnavailableError(
            f"{units_dir} is missing: the {WESNOTH_PACKAGE} package looks different"
        )
    found: list[WesnothUnit] = []
    by_profile: dict[str, int] = {}
    skipped = 0
    for cfg in sorted(units_dir.glob("*/*.cfg")):
        race = cfg.parent.name
        if race == "fake":
            continue
        fields = parse_unit_cfg(cfg.read_text(encoding="utf-8", errors="replace"))
        image = root / "images" / fields.get("profile", "")
        if not (
            fields.get("name") and fields.get("description") and fields.get("profile") and image.is_file()
        ):
            skipped += 1
            continue
        by_profile[fields["profile"]] = by_profile.get(fields["profile"], 0) + 1
        found.append(WesnothUnit(f"{race}/{cfg.stem}", fields["name"], fields["description"], image, race))
    shared = [u for u in found if by_profile[str(u.image_path.relative_to(root / "images"))] > 1]
    units = [u for u in found if u not in shared]
    logger.info(
        "wesnoth: %d units kept; %d without a name, description or portrait file, %d sharing a portrait",
        len(units),
        skipped,
        len(shared),
    )
    return units
