"""The xfig manuals as a task: figure captions as queries, each figure's picture and passage as answers.

Read from the Debian package ``xfig-doc`` (1:3.2.8b-2, a 3.7 MB download, fetched once into the cache
like the other packages; see :func:`mm_rerank_components.eval.datasets.fetch_deb`) with the project's own
document readers (:mod:`mm_rerank_components.ingest.documents`): the English HTML user manual
(``html/*.html``, its pictures under ``html/images``), the manual page ``xfig_man.html`` and the how-to
``xfig-howto.pdf``. Left out: ``html/japanese`` (the same pictures under the same alt texts, with
Japanese text) and ``xfig_ref_en.pdf`` (a print of the HTML manual: the same text and screenshots, so
every answer would have an unlabelled twin, and its pictures carry no caption). The package's copyright
file puts the manuals under the permissive "xfig" licence (use, copy, modify and distribute with the
notice kept). Nothing of it is committed here.

Rules (:func:`build_caption_task`):

* **Queries** are the figures' captions: a PDF figure's ``Figure N: ...`` caption line (not the nearby
  text the reader falls back on), an HTML picture's ``figcaption`` or ``alt`` text. Cleaned by
  :func:`caption_query`: ``Figure N`` prefix and ``[...]`` brackets dropped, whitespace and ligatures
  normalised. Dropped, and counted in the log: pictures without a caption, captions without two
  words of letters (``-``, ``[Top]``), a file name as caption (``[transit.png]``), pictures shown on
  :data:`BANNER_DOCUMENTS` or more documents (the title banner), and captions that several different
  pictures share (``[Help Menu Button]`` on four buttons: a query with several right pictures, one of
  them an authors' copy slip). A picture with several captions takes its first usable one.
* **Relevant** per query: the picture alone (an image document, no text, as in ``tuxpaint-mixed``) and
  every passage it is shown in (a PDF figure's page, an HTML picture's ``h1``-``h3`` section).
* **Passages** are all pages and sections of the documents (the distractors included), cut into
  chunks of at most :data:`CHUNK_CHARS` characters as folder ingest cuts them; a picture's passage is
  the chunk it is drawn in (an HTML picture's place; a PDF figure's caption line). Every caption text
  of the pictures a passage shows is removed from it (the how-to's ``Figure N: ...`` lines, HTML
  ``figcaption`` text; ``alt`` text is not part of the page text), so neither route matches a query
  by copying it. Identical passages (the frame pages' "no frame version" line) are kept once.
* **Pictures**: every distinct picture the documents show (by content), captioned or not.
* **Split**: by the picture's id (its path under the manual's folder, or ``<pdf>#figure<N>``), the
  fixed seeded hash every task uses.

Measured on xfig-doc 1:3.2.8b-2 (``mm-rerank eval --task xfig-doc``, 2026-12-07): 552 documents (345
passages, 207 pictures), 91 queries (41 dev, 50 test; 2 of them from the PDF how-to). Left out: 69
pictures without a caption, 25 captions under two words, 18 captions shared by several pictures, 2 file
names, 2 banners; 19 repeated passages. Building it takes about 3 s once the package is unpacked.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mm_rerank_components.eval.datasets import DatasetUnavailableError, _resolve_cache, fetch_deb
from mm_rerank_components.eval.tasks import EvalTask
from mm_rerank_components.ingest.documents import Passage
from mm_rerank_components.types import Candidate

__all__ = [
    "BANNER_DOCUMENTS",
    "CHUNK_CHARS",
    "XFIG_PACKAGE",
    "build_caption_task",
    "caption_query",
    "strip_captions",
    "xfig_doc_task",
    "xfig_documents",
]

logger = logging.getLogger(__name__)

XFIG_PACKAGE = "xfig-doc"
_DOC_ROOT = Path("usr/share/doc/xfig")
_FIGURES = "xfig-doc-figures"
#: A picture shown on this many documents or more is a banner or a navigation button, not a figure.
BANNER_DOCUMENTS = 3
_MIN_WORDS = 2
#: Passages are cut into chunks of at most this many characters, as ``scan_folder`` cuts them by default.
CHUNK_CHARS = 2000
_FIGURE_PREFIX = re.compile(r"^\s*fig(?:ure)?\.?\s*\d+[a-z]?\s*[:.\-\u2013\u2014]?\s*", re.I)
_FILE_NAME = re.compile(r"^\S+\.(?:png|gif|jpe?g|svg|bmp|tiff?)$", re.I)
_WORD = re.compile(r"[^\W\d_]{2,}")


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def caption_query(caption: str | None) -> tuple[str | None, str]:
    """The query a caption makes, or ``None`` and why not.

    Example:
        >>> caption_query("Figure 1: XFig Drawing Tools (see section 10.)")
        ('XFig Drawing Tools (see section 10.)', '')
        >>> caption_query("[Edit Panel - Polyline]")
        ('Edit Panel - Polyline', '')
        >>> caption_query("[Top]")[1], caption_query("[transit.png]")[1], caption_query("-")[1]
        ('fewer than 2 words', 'a file name as caption', 'fewer than 2 words')
    """
    if caption is None or not caption.strip():
        return None, "no caption"
    text = _norm(_FIGURE_PREFIX.sub("", _norm(caption)))
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1].strip()
    if _FILE_NAME.match(text):
        return None, "a file name as caption"
    if len(_WORD.findall(text)) < _MIN_WORDS:
        return None, f"fewer than {_MIN_WORDS} words"
    return text, ""


def strip_captions(text: str, captions: Sequence[str]) -> str:
    """``text`` with whitespace and ligatures normalised and every caption in ``captions`` removed.

    Example:
        >>> strip_captions("Tools.\\nFigure 1: The\\n  tools\\nMore text.", ["Figure 1: The tools"])
        'Tools. More text.'
    """
    out = _norm(text)
    for caption in sorted({_norm(c) for c in captions if c and c.strip()}, key=len, reverse=True):
        out = out.replace(caption, " ")
    return " ".join(out.split())


@dataclass
class _Picture:
    """One distinct picture (by content) and where the documents show it."""

    id: str
    path: str
    captions: list[str] = field(default_factory=list)
    passages: list[str] = field(default_factory=list)  # passage ids, in order, no repeats
    documents: set[str] = field(default_factory=set)


@dataclass
class _Corpus:
    passages: dict[str, str] = field(default_factory=dict)  # id -> raw text
    captions_in: dict[str, list[str]] = field(default_factory=dict)  # passage id -> raw captions shown
    pictures: dict[str, _Picture] = field(default_factory=dict)  # content hash -> picture
    skipped: Counter[str] = field(default_factory=Counter)


def _read(root: Path, documents: Sequence[Path], figures_dir: Path) -> _Corpus:
    """Every document through the project's readers; passages (chunked as ingest chunks them) and
    pictures collected by id."""
    from mm_rerank_components.ingest.documents import DocumentError, DocumentOptions, read_document

    options = DocumentOptions(figures_dir=figures_dir)
    corpus = _Corpus()
    root = root.resolve()
    for path in documents:
        rel = path.resolve().relative_to(root).as_posix()
        try:
            extracted = read_document(path, path.read_bytes(), options, root=root)
        except DocumentError as exc:
            logger.warning("xfig task: %s cannot be read (%s); left out", rel, exc)
            corpus.skipped["unreadable document"] += 1
            continue
        chunks = [_chunks(corpus, rel, i, p) for i, p in enumerate(extracted.passages)]
        pdf = path.suffix.lower() == ".pdf"
        for figure in extracted.figures:
            picture = _picture(corpus, root, rel, figure.path, figure.number, figure.local)
            picture.documents.add(rel)
            # a PDF figure without a "Figure N" line has only its nearby text: no caption of its own
            caption = figure.caption if (figure.label or not pdf) else None
            if caption:
                picture.captions.append(caption)
            if figure.passage is None:
                continue
            spans = chunks[figure.passage]
            for chunk_id, _ in spans:
                corpus.captions_in[chunk_id].extend([caption] if caption else [])
            text = extracted.passages[figure.passage].text
            offset = figure.offset if figure.offset is not None else _caption_offset(text, caption)
            shown = [c for c, start in spans if offset is None or start <= offset] or [spans[0][0]]
            for chunk_id in shown[-1:] if offset is not None else shown:
                if chunk_id not in picture.passages:
                    picture.passages.append(chunk_id)
    return corpus


def _chunks(corpus: _Corpus, rel: str, index: int, passage: Passage) -> list[tuple[str, int]]:
    """Add a passage's chunks (ingest's own :func:`chunk_text` at its default size) to the corpus;
    their ids and start offsets in the passage's text."""
    from mm_rerank_components.ingest.records import chunk_text

    base = f"txt:{rel}#p{passage.page}" if passage.page is not None else f"txt:{rel}#s{index + 1}"
    pieces = chunk_text(passage.text, CHUNK_CHARS)
    spans: list[tuple[str, int]] = []
    position = 0
    for n, piece in enumerate(pieces, start=1):
        found = passage.text.find(piece[:60], position)
        position = found if found >= 0 else position
        chunk_id = base if len(pieces) == 1 else f"{base}.{n}"
        corpus.passages[chunk_id] = piece
        corpus.captions_in[chunk_id] = []
        spans.append((chunk_id, position))
    return spans


def _caption_offset(text: str, caption: str | None) -> int | None:
    """Where a caption's first line is in the page text (PDF figures are placed by their caption)."""
    if not caption:
        return None
    found = text.find(caption.split("\n")[0][:40])
    return found if found >= 0 else None


def _picture(corpus: _Corpus, root: Path, rel: str, file: str, number: int, local: bool) -> _Picture:
    key = hashlib.sha256(Path(file).read_bytes()).hexdigest()
    if key not in corpus.pictures:
        pid = Path(file).relative_to(root).as_posix() if local else f"{rel}#figure{number}"
        corpus.pictures[key] = _Picture(id=pid, path=file)
    return corpus.pictures[key]


def _queries(corpus: _Corpus) -> dict[str, tuple[str, _Picture]]:
    """Picture id -> (query, picture) for the pictures whose caption makes a query of its own."""
    candidates: dict[str, tuple[str, _Picture]] = {}
    for picture in corpus.pictures.values():
        if len(picture.documents) >= BANNER_DOCUMENTS:
            corpus.skipped[f"on {BANNER_DOCUMENTS}+ documents (banner)"] += 1
            continue
        made = [caption_query(c) for c in picture.captions] or [(None, "no caption")]
        query = next((q for q, _ in made if q is not None), None)
        if query is None:
            corpus.skipped[made[0][1]] += 1
        elif not picture.passages:
            corpus.skipped["no passage"] += 1
        else:
            candidates[picture.id] = (query, picture)
    shared = Counter(q.casefold() for q, _ in candidates.values())
    kept = {pid: qp for pid, qp in candidates.items() if shared[qp[0].casefold()] == 1}
    corpus.skipped["caption shared by several pictures"] += len(candidates) - len(kept)
    return kept


def build_caption_task(
    name: str, description: str, root: Path, documents: Sequence[Path], figures_dir: Path
) -> EvalTask:
    """A task from documents under ``root`` by the rules of this module: caption queries, each answered
    by its picture (no text) and the passages showing it (captions removed).

    Raises:
        DatasetUnavailableError: no query could be made (the documents hold no captioned figure).
    """
    from mm_rerank_components.adapt.splits import assign_split

    corpus = _read(root, documents, figures_dir)
    queries = _queries(corpus)
    docs: dict[str, Candidate] = {}
    canonical: dict[str, str] = {}  # passage id -> id of the first passage with the same text
    first_of_text: dict[str, str] = {}
    for pid, raw in corpus.passages.items():
        text = strip_captions(raw, corpus.captions_in[pid])
        if not text:
            corpus.skipped["empty passage"] += 1
            continue
        canonical[pid] = first_of_text.setdefault(text, pid)
        if canonical[pid] != pid:
            corpus.skipped["repeated passage"] += 1
            continue
        document = pid[4:].rsplit("#", 1)[0]  # txt:<document>#<page or section>[.<chunk>]
        docs[pid] = Candidate(id=pid, text=text, metadata={"dataset": "xfig", "document": document})
    for picture in corpus.pictures.values():
        meta = {"dataset": "xfig", "picture": picture.id, "document": sorted(picture.documents)[0]}
        docs[f"img:{picture.id}"] = Candidate(id=f"img:{picture.id}", image=picture.path, metadata=meta)
    if not queries:
        raise DatasetUnavailableError(f"{root}: no captioned figure made a query ({dict(corpus.skipped)})")
    task_queries = {f"q:{pid}": query for pid, (query, _) in queries.items()}
    qrels = {
        f"q:{pid}": {f"img:{pid}": 1} | {canonical[p]: 1 for p in picture.passages if p in canonical}
        for pid, (_, picture) in queries.items()
    }
    splits = {f"q:{pid}": assign_split(pid) for pid in queries}
    task = EvalTask(name, description, docs, task_queries, qrels, splits)
    logger.info("%s: %s; left out: %s", name, task.summary(), dict(sorted(corpus.skipped.items())))
    return task


def xfig_documents(doc_root: Path) -> list[Path]:
    """The documents the task reads under the package's ``usr/share/doc/xfig`` (see the module's
    docstring for what is left out and why).

    Raises:
        DatasetUnavailableError: the folder does not hold the xfig manuals.
    """
    html = sorted((doc_root / "html").glob("*.html"))
    extra = [doc_root / "xfig_man.html", doc_root / "xfig-howto.pdf"]
    if not html or not all(p.is_file() for p in extra):
        raise DatasetUnavailableError(
            f"{doc_root} does not hold the xfig manuals (html/*.html, xfig_man.html, xfig-howto.pdf): the "
            f"{XFIG_PACKAGE} package looks different; delete its folder in the cache to fetch it again"
        )
    return html + extra


def xfig_doc_task(cache_dir: str | os.PathLike[str] | None = None) -> EvalTask:
    """The xfig manuals (Debian ``xfig-doc``): figure captions as queries; each figure's picture and the
    passages that show it as answers.

    Example:
        >>> task = xfig_doc_task()  # doctest: +SKIP
        >>> task.name, task.summary()["queries"]  # doctest: +SKIP
        ('xfig-doc', 91)
    """
    doc_root = fetch_deb(XFIG_PACKAGE, cache_dir) / _DOC_ROOT
    figures = _resolve_cache(cache_dir) / _FIGURES
    description = (
        "Documents: the xfig manuals (Debian xfig-doc: the English HTML user manual, the man page and the "
        "PDF how-to, read by the project's document readers) as passages (a PDF page, an HTML section; "
        "caption text removed) and pictures (screenshots of panels, buttons and examples; no text). "
        "Queries: the figures' captions (HTML alt/figcaption, PDF 'Figure N:' lines, prefix dropped; "
        "one-word, file-name, banner and shared captions left out). Relevant: the captioned picture and "
        "the passages it is shown in."
    )
    return build_caption_task("xfig-doc", description, doc_root, xfig_documents(doc_root), figures)
