"""HTML: the page's main text without boilerplate, and its ``<img>`` pictures with their captions.

Parsed with the standard library's :class:`html.parser.HTMLParser` (nothing to install, tolerant of
broken markup). Boilerplate is left out by element: ``script``, ``style``, ``nav``, ``header``,
``footer``, ``aside``, ``form`` and elements whose ``role``, ``id`` or ``class`` says navigation, menu,
sidebar, cookie banner or footer. When the page has a ``<main>``, an ``<article>`` or ``role="main"``, only
its content is kept. Text is split into sections at ``h1``-``h3`` headings.

Pictures: an ``<img>`` inside a ``<figure>`` takes the ``<figcaption>`` as its caption, else its ``alt``
(or ``title``). Sources: a file of the folder (relative to the page; never outside the folder), a
``data:`` URI, or an ``http(s)`` URL only when :class:`~mm_rerank_components.media.ImageOptions` allows
URLs (with its size and time limits, as everywhere else).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mm_rerank_components.ingest.documents.base import (
    DocumentOptions,
    Extracted,
    Figure,
    caption_label,
    check_size,
    save_figure,
)
from mm_rerank_components.ingest.files import FileRejected, read_regular_file
from mm_rerank_components.media import ImageLoadError, load_image

_SKIP = frozenset(
    {
        "script",
        "style",
        "noscript",
        "template",
        "svg",
        "nav",
        "header",
        "footer",
        "aside",
        "form",
        "button",
        "select",
        "iframe",
        "head",
        "canvas",
        "dialog",
    }
)
_BOILERPLATE = re.compile(
    r"\b(nav|navbar|menu|sidebar|cookie|banner|footer|breadcrumbs?|share|social)\b", re.I
)
_MAIN = frozenset({"main", "article"})
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)
_BLOCK = frozenset(
    {
        "p",
        "div",
        "section",
        "li",
        "ul",
        "ol",
        "pre",
        "blockquote",
        "table",
        "tr",
        "td",
        "th",
        "br",
        "hr",
        "dd",
        "dt",
        "dl",
        "figure",
        "figcaption",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "main",
        "article",
        "body",
        "caption",
    }
)
_SECTION = frozenset({"h1", "h2", "h3"})
_CHARSET = re.compile(rb"<meta[^>]+charset=[\"']?([\w-]+)", re.I)


@dataclass
class _Image:
    src: str
    alt: str
    in_main: bool
    block: int  # index of the next text block flushed: the one it is drawn in, or the one after it
    #: characters of that block drawn before it when it is inside the block (in a heading, or after some
    #: of its text); None when it is drawn before the block
    lead: int | None
    caption: list[str] = field(default_factory=list)


@dataclass
class _Block:
    text: str
    in_main: bool
    heading: bool


class _Parser(HTMLParser):
    """Collects text blocks and pictures, tracking open elements to know what is boilerplate."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, boilerplate, main)
        self.blocks: list[_Block] = []
        self.images: list[_Image] = []
        self.figures: list[list[_Image]] = []  # open <figure>s and the pictures inside
        self.caption: list[str] | None = None
        self.buffer: list[str] = []
        self.title: list[str] = []
        self.in_title = False
        self.has_main = False

    def _state(self) -> tuple[bool, bool]:
        return any(s for _, s, _ in self.stack), any(m for _, _, m in self.stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag in _BLOCK:
            self._flush()
        if tag == "title":
            self.in_title = True
        if tag == "img":
            self._image(attr)
        if tag in _VOID:
            return
        marks = " ".join((attr.get("role", ""), attr.get("id", ""), attr.get("class", "")))
        boiler = tag in _SKIP or bool(_BOILERPLATE.search(marks))
        main = tag in _MAIN or attr.get("role") == "main"
        self.has_main = self.has_main or (main and not self._state()[0])
        self.stack.append((tag, boiler, main))
        if tag == "figure":
            self.figures.append([])
        elif tag == "figcaption":
            self.caption = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if tag in _BLOCK:
            self._flush(heading=tag in _SECTION)
        if tag == "figcaption" and self.caption is not None and self.figures:
            for image in self.figures[-1]:
                image.caption.append(" ".join(" ".join(self.caption).split()))
            self.caption = None
        if tag == "figure" and self.figures:
            self.figures.pop()
        for i in range(len(self.stack) - 1, -1, -1):  # close up to the matching element (broken markup)
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
            return
        if self._state()[0]:
            return
        self.buffer.append(data)
        if self.caption is not None:
            self.caption.append(data)

    def _image(self, attr: dict[str, str]) -> None:
        boiler, main = self._state()
        if boiler or not attr.get("src"):
            return
        alt = (attr.get("alt") or attr.get("title") or "").strip()
        so_far = " ".join(" ".join(self.buffer).split())
        inside = bool(so_far) or any(t in _SECTION for t, _, _ in self.stack)
        image = _Image(attr["src"].strip(), alt, main, len(self.blocks), len(so_far) if inside else None)
        self.images.append(image)
        if self.figures:
            self.figures[-1].append(image)

    def _flush(self, heading: bool = False) -> None:
        text = " ".join(" ".join(self.buffer).split())
        self.buffer = []
        if text:
            self.blocks.append(_Block(text, self._state()[1], heading))


def _decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    declared = _CHARSET.search(data[:4096])
    if declared:
        try:
            return data.decode(declared.group(1).decode("ascii"), errors="replace")
        except LookupError:
            pass
    return data.decode("cp1252", errors="replace")


def read_html(path: Path, data: bytes, options: DocumentOptions, root: Path | None = None) -> Extracted:
    """Main text in sections, and captioned pictures, of an HTML page at ``path`` (pictures may only come
    from inside ``root``, default: the page's folder).

    Example:
        >>> html = b"<nav>Home</nav><main><h1>Foxes</h1><p>Foxes dig dens.</p></main><footer>(c)</footer>"
        >>> [p.text for p in read_html(Path("a.html"), html, DocumentOptions()).passages]
        ['Foxes\\n\\nFoxes dig dens.']
    """
    parser = _Parser()
    parser.feed(_decode_text(data))
    parser.close()
    parser._flush()
    out = Extracted(title=" ".join(" ".join(parser.title).split()) or None)
    section_of = _add_sections(parser, out, options)
    images = [i for i in parser.images if i.in_main or not parser.has_main]
    folder = (root or path.parent).resolve()
    for image in images:
        if len(out.figures) >= options.max_figures:
            out.failed.append(
                ("pictures", f"more than max_figures={options.max_figures}; the rest are not ingested")
            )
            break
        _add_image(image, path, folder, out, options, *section_of(image))
    return out


def _add_sections(
    parser: _Parser, out: Extracted, options: DocumentOptions
) -> Callable[[_Image], tuple[int | None, int | None]]:
    """Add the kept text, in sections split at ``h1``-``h3``, as passages; return the map from a picture
    to the index of the passage it is drawn in and its character offset there (None, None: its text was
    left out, or over the text cap).

    A picture drawn between blocks belongs to the section of the block after it (at that block's start),
    unless that block starts a new section (a heading): then to the end of the section before it.
    """
    kept = [(i, b) for i, b in enumerate(parser.blocks) if b.in_main or not parser.has_main]
    sections: list[list[str]] = []
    where: dict[int, tuple[int, int]] = {}  # block index -> (section, offset of its text in the section)
    for index, block in kept:
        if block.heading or not sections:
            sections.append([])
        start = sum(len(t) + 2 for t in sections[-1])
        sections[-1].append(block.text)
        where[index] = (len(sections) - 1, start)
    added = 0
    for section in sections:
        if not out.add_text("\n\n".join(section), None, options):
            break
        added += 1
    first = len(out.passages) - added

    def passage(image: _Image) -> tuple[int | None, int | None]:
        k = image.block
        starts_section = k >= len(parser.blocks) or parser.blocks[k].heading
        before = where.get(k - 1)
        place: tuple[int, int] | None
        if k in where and (image.lead is not None or not starts_section or before is None):
            place = (where[k][0], where[k][1] + (image.lead or 0))
        elif before is not None:  # drawn after the text of block k - 1: at that block's end
            place = (before[0], before[1] + len(parser.blocks[k - 1].text))
        else:
            place = None
        if place is None or place[0] >= added:
            return None, None
        return first + place[0], place[1]

    return passage


def _add_image(
    image: _Image,
    page: Path,
    root: Path,
    out: Extracted,
    options: DocumentOptions,
    passage: int | None,
    offset: int | None,
) -> None:
    caption = " ".join(image.caption).strip() or image.alt or None
    where = f"picture {image.src[:80]!r}"
    scheme = urlsplit(image.src).scheme.lower()
    try:
        if scheme in ("http", "https", "data"):
            if scheme != "data" and not options.image_options.allow_urls:
                out.skipped.append((where, "a URL, not fetched (ImageOptions(allow_urls=True) fetches it)"))
                return
            loaded = load_image(image.src, options.image_options)  # its size and URL policy
            if min(loaded.size) < options.min_figure_side:
                out.skipped.append((where, f"under {options.min_figure_side} px (an icon)"))
                return
            file, local = save_figure(loaded, options), False
        elif scheme:
            out.skipped.append((where, f"{scheme}: pictures are not read"))
            return
        else:
            found = _local(image.src, page, root, where, out, options)
            if found is None:
                return
            file, local = found, True
    except ImageLoadError as exc:
        out.failed.append((where, str(exc)))
        return
    labelled = caption_label(caption) if caption else None
    label = labelled[0] if labelled else None
    out.figures.append(
        Figure(
            path=file,
            number=len(out.figures) + 1,
            caption=caption,
            label=label,
            local=local,
            passage=passage,
            offset=offset,
        )
    )


def _local(
    src: str, page: Path, root: Path, where: str, out: Extracted, options: DocumentOptions
) -> str | None:
    """The resolved path of a local picture inside ``root``, checked without decoding, or None."""
    from PIL import Image

    relative = unquote(urlsplit(src).path)
    target = (
        (page.parent / relative).resolve() if not relative.startswith("/") else (root / relative.lstrip("/"))
    )
    target = target.resolve()
    if target != root and root not in target.parents:
        out.failed.append((where, "points outside the folder; copy the picture into the folder"))
        return None
    try:
        data = read_regular_file(target, options.image_options.max_bytes)
        with Image.open(io.BytesIO(data)) as opened:
            size = opened.size
    except FileRejected as exc:
        out.failed.append((where, str(exc)))
        return None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a file that is no picture
        out.failed.append((where, f"not a picture Pillow can open ({type(exc).__name__}: {exc})"))
        return None
    refused = check_size(size[0], size[1], options.image_options)
    if refused is not None:
        out.failed.append((where, f"picture {refused}"))
        return None
    if min(size) < options.min_figure_side:
        out.skipped.append((where, f"under {options.min_figure_side} px (an icon)"))
        return None
    return str(target)
