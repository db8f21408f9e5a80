"""What every document reader shares: options and caps, the error, extracted passages and figures.

A reader (:mod:`.pdf`, :mod:`.html`, :mod:`.docx`) turns one file's bytes into an :class:`Extracted`:
passages (with their page, when the format has pages) and figures (decoded pictures, with their page,
number and caption). Problems that concern the whole file raise :class:`DocumentError`; problems with one
page or one figure are listed in :attr:`Extracted.failed` and the rest of the file is kept.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_rerank_components.media import DEFAULT_IMAGE_OPTIONS, ImageOptions

#: Environment variable naming the folder extracted figures are written to.
FIGURES_ENV = "MM_RERANK_FIGURES"
_CAPTION = re.compile(r"^\s*(fig(?:ure)?\.?)\s*(\d+[a-z]?)\s*[:.\-\u2013\u2014]?\s*(.*)$", re.IGNORECASE)
_MAX_CAPTION = 300


class DocumentError(ValueError):
    """A document that cannot be read at all (encrypted, malformed, over a cap); the message says why and
    what to do."""


def default_figures_dir(db: str | os.PathLike[str] | None = None) -> Path:
    """Where figures extracted from documents are written: ``$MM_RERANK_FIGURES``, else ``DB/figures``
    next to an embedded database ``db`` (what ``mm-rerank ingest --db DB`` and ``add_documents`` on an
    embedded retriever use), else ``$XDG_CACHE_HOME/mm-rerank/figures`` (``~/.cache/mm-rerank/figures``).

    Example:
        >>> default_figures_dir("my_db").name
        'figures'
    """
    explicit = os.environ.get(FIGURES_ENV)
    if explicit:
        return Path(explicit).expanduser()
    if db is not None:
        return Path(db).expanduser() / "figures"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "mm-rerank" / "figures"


@dataclass(frozen=True)
class DocumentOptions:
    """Caps and places for reading PDF, HTML and DOCX files.

    Attributes:
        max_pages: a PDF with more pages fails as a whole (raise it for long manuals).
        max_figures: figures kept per document; more fail the document's extra figures, named.
        min_figure_side: pictures narrower or lower than this (pixels) are decorations (rules, bullets,
            masks) and left out, counted in the report's ``skipped``.
        max_chars: text kept per document (characters); more fails the rest of the document, named.
        max_unzipped_bytes: largest total uncompressed size of a DOCX (a zip bomb fails before reading).
        max_seconds: longest time reading one document may take (a hostile or pathological file is
            stopped and fails alone, naming the file and the cap); ``None``: no cap.
        figures_dir: where extracted figures are written as PNG files named by their content (default:
            :func:`default_figures_dir`); picture records point to them.
        image_options: size limits for every figure (``max_pixels`` is checked from the declared size,
            before anything is decoded) and whether HTML may fetch ``http(s)`` pictures.
        render_pages: also draw each PDF page as a picture record (for page-level scorers such as
            ColPali; needs pypdfium2, in the ``documents`` extra). Off by default.
        render_dpi: resolution of rendered pages; a page is drawn smaller when it would exceed
            ``image_options.max_pixels``.

    Example:
        >>> DocumentOptions(max_pages=50).max_pages
        50
    """

    max_pages: int = 2000
    max_figures: int = 1000
    min_figure_side: int = 32
    max_chars: int = 5_000_000
    max_unzipped_bytes: int = 200 * 1024 * 1024
    max_seconds: float | None = 300.0
    figures_dir: str | os.PathLike[str] | None = None
    image_options: ImageOptions = DEFAULT_IMAGE_OPTIONS
    render_pages: bool = False
    render_dpi: int = 100

    def __post_init__(self) -> None:
        if not isinstance(self.render_pages, bool):
            raise ValueError(f"DocumentOptions.render_pages must be True or False, got {self.render_pages!r}")
        counts = ("max_pages", "max_figures", "min_figure_side", "max_chars", "max_unzipped_bytes")
        for name in (*counts, "render_dpi"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DocumentOptions.{name} must be an int >= 1, got {value!r}")
        seconds = self.max_seconds
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < 1e9
        ):
            raise ValueError(f"DocumentOptions.max_seconds must be a number > 0 or None, got {seconds!r}")

    def figures_path(self) -> Path:
        """The figures folder, created when missing."""
        path = Path(self.figures_dir).expanduser() if self.figures_dir is not None else default_figures_dir()
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class Passage:
    """Text of one page (PDF) or section (HTML, DOCX)."""

    text: str
    page: int | None = None


@dataclass
class Figure:
    """A picture of a document: its file (written to the figures folder, or the local file an HTML page
    names), where it was (page, its number in the document) and its caption."""

    path: str
    number: int
    page: int | None = None
    caption: str | None = None
    label: str | None = None
    #: the file is the document folder's own (an HTML page's local picture), not an extracted copy
    local: bool = False
    #: index in :attr:`Extracted.passages` of the passage the figure sits in (a PDF figure's page, an
    #: HTML picture's section); None when that text was not kept (over ``max_chars``), is empty, or the
    #: format does not say (DOCX)
    passage: int | None = None
    #: character offset in that passage's text where the figure is drawn (HTML); None when unknown
    offset: int | None = None


@dataclass
class Extracted:
    """What a reader got from one document, and what it could not take (each with the reason)."""

    title: str | None = None
    passages: list[Passage] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    #: whole pages drawn as pictures (``DocumentOptions(render_pages=True)``, PDF only), ``number`` = page
    rendered: list[Figure] = field(default_factory=list)
    #: parts of the document that failed (a page, a figure), each ``(where, reason)``
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: parts left out on purpose, each ``(where, reason)``
    skipped: list[tuple[str, str]] = field(default_factory=list)
    chars: int = 0

    def add_text(self, text: str, page: int | None, options: DocumentOptions) -> bool:
        """Keep a passage unless the document's text cap is reached (then record why; returns False)."""
        text = text.strip()
        if not text:
            return True
        if self.chars + len(text) > options.max_chars:
            where = f"p. {page}" if page is not None else "text"
            self.failed.append(
                (
                    where,
                    f"text over max_chars={options.max_chars}; the rest of the document is not ingested "
                    "(raise DocumentOptions(max_chars=...), mm-rerank ingest --max-document-chars)",
                )
            )
            return False
        self.chars += len(text)
        self.passages.append(Passage(text, page))
        return True


def caption_label(line: str) -> tuple[str, str] | None:
    """``("Figure 2", text)`` when ``line`` starts a figure caption (``Figure 2:``, ``Fig. 2.``), else None.

    Example:
        >>> caption_label("Fig. 3: The pipeline")
        ('Figure 3', 'Fig. 3: The pipeline')
    """
    match = _CAPTION.match(line)
    if not match:
        return None
    return f"Figure {match.group(2)}", line.strip()[:_MAX_CAPTION]


def captions_in(text: str) -> list[tuple[str, str]]:
    """Every figure caption in ``text``, in order: the label line, and the next line when the caption
    goes on (the label line does not end a sentence and the next line is not another caption and has
    letters: a page number under the caption is not part of it).

    Example:
        >>> captions_in("Figure 2: Editing Tools\\n6\\nFig. 3: A long\\ncaption.")
        [('Figure 2', 'Figure 2: Editing Tools'), ('Figure 3', 'Fig. 3: A long caption.')]
    """
    lines = [line.strip() for line in text.splitlines()]
    found: list[tuple[str, str]] = []
    for i, line in enumerate(lines):
        hit = caption_label(line)
        if hit is None:
            continue
        label, caption = hit
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        # a next line without letters is a page number or a rule, not the caption going on
        if nxt and not caption.endswith(".") and caption_label(nxt) is None and _has_letters(nxt):
            caption = f"{caption} {nxt}"[:_MAX_CAPTION]
        found.append((label, caption))
    return found


def _has_letters(line: str) -> bool:
    return any(c.isalpha() for c in line)


def check_size(width: Any, height: Any, options: ImageOptions) -> str | None:
    """Why a picture of the declared size is refused (before decoding), or None."""
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError):
        return f"declares no usable size ({width!r} x {height!r})"
    if w < 1 or h < 1:
        return f"declares an empty size ({w} x {h})"
    if w * h > options.max_pixels:
        return (
            f"is {w} x {h} = {w * h} pixels, over max_pixels={options.max_pixels} (a decompression bomb or a "
            "huge scan); raise ImageOptions(max_pixels=...) to take it"
        )
    return None


def save_figure(image: Any, options: DocumentOptions) -> str:
    """Write a PIL image as PNG into the figures folder, named by its content; its path.

    The same figure is written once whatever document holds it; re-ingesting rewrites nothing.
    """
    if image.mode not in ("RGB", "L"):
        if image.mode in ("RGBA", "LA", "P", "PA"):
            image = image.convert("RGBA")
            background = _pil().new("RGB", image.size, (255, 255, 255))
            background.paste(image, mask=image.getchannel("A"))
            image = background
        else:
            image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    folder = options.figures_path()
    path = folder / f"{hashlib.blake2b(data, digest_size=16).hexdigest()}.png"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return str(path)


def _pil() -> Any:
    from PIL import Image

    return Image
