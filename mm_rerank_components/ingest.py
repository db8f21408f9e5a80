"""Ingest a folder of passages and pictures into a :class:`ChromaMultiCollectionRetriever`.

What a folder may hold:

* passages: ``.txt`` and ``.md`` files (UTF-8), one record per file, or per chunk of at most
  ``max_chars`` characters (split at blank lines) for long files. The title is the first line when it is
  followed by a blank line (``.md``: a leading ``# Heading``), else the file name;
* pictures: ``.png``, ``.jpg``/``.jpeg``, ``.webp``, ``.gif`` (first frame) and ``.bmp``;
* captions for pictures, optional: a ``metadata.jsonl`` (or ``metadata.csv``) in the Hugging Face
  *imagefolder* style, one line per file with a ``file_name`` relative to that metadata file, its
  ``caption`` (or ``text``) field becoming the picture's caption and every other field its metadata; or a
  sidecar ``<stem>.caption.txt`` next to the picture, which wins over ``metadata.jsonl``.

Ids come from content: a hash of the file's absolute path, its bytes, its caption and metadata (and the
chunk number). Re-ingesting an unchanged folder adds nothing; a changed file gets a new id and its old
records are deleted (counted as ``updated``); two identical files at different paths are both kept.
Files that disappeared are not removed from the collections.

Nothing is skipped silently: files that cannot be read or decoded are listed in
:attr:`IngestReport.failed` (each naming the file and the reason) and files of other types in
:attr:`IngestReport.skipped`. With ``on_error="raise"`` the first failure raises :class:`IngestError`
instead; records written before it stay, and a re-run after the fix skips them as unchanged.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mm_rerank_components.media import ImageLoadError, load_image

if TYPE_CHECKING:
    from mm_rerank_components.retrievers.chroma import ChromaMultiCollectionRetriever

logger = logging.getLogger(__name__)

TEXT_EXTENSIONS = frozenset({".txt", ".md"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
CAPTION_SUFFIX = ".caption.txt"
_MAX_TITLE = 160
#: Longest side of the JPEG preview stored with each picture (see ``preview_data_uri``).
DEFAULT_PREVIEW_SIZE = 384
#: Metadata key of that preview.
PREVIEW_KEY = "preview"


class IngestError(ValueError):
    """A file could not be ingested (raised only with ``on_error="raise"``)."""


@dataclass(frozen=True)
class IngestFailure:
    """One file that was not ingested, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class IngestReport:
    """Counts of one ingest run, in records (a long passage may make several records).

    Attributes:
        added: new records written.
        updated: records written for a file whose earlier version was replaced.
        unchanged: records already stored with the same content (nothing written).
        failed: files not ingested, each with the reason; the rest were still ingested.
        skipped: files not ingested because of their type (anything but passages, pictures, captions).
        texts, images: records of each kind seen in the folder.
        seconds: wall time of the run.

    Example:
        >>> IngestReport(added=2, unchanged=1).ok
        True
    """

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: list[IngestFailure] = field(default_factory=list)
    skipped: list[IngestFailure] = field(default_factory=list)
    texts: int = 0
    images: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no file failed."""
        return not self.failed

    @property
    def written(self) -> int:
        return self.added + self.updated

    def summary(self) -> str:
        """One line, e.g. ``"82 text + 82 image records: 164 added, 0 updated, 0 unchanged, ..."``."""
        return (
            f"{self.texts} text + {self.images} image records: {self.added} added, {self.updated} updated, "
            f"{self.unchanged} unchanged, {len(self.failed)} failed, {len(self.skipped)} skipped"
        )


@dataclass(frozen=True)
class TextRecord:
    """A passage (or one chunk of a long passage file) ready to embed."""

    id: str
    path: str
    text: str
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class ImageRecord:
    """A picture file, its optional caption and metadata, ready to decode and embed."""

    id: str
    path: str
    caption: str | None
    metadata: Mapping[str, Any]


@dataclass
class FolderScan:
    """What :func:`scan_folder` found: records to ingest, files that failed, files of other types."""

    root: Path
    texts: list[TextRecord] = field(default_factory=list)
    images: list[ImageRecord] = field(default_factory=list)
    failed: list[IngestFailure] = field(default_factory=list)
    skipped: list[IngestFailure] = field(default_factory=list)


def content_id(kind: str, data: bytes, *parts: str) -> str:
    """A stable record id: ``"<kind>-"`` and 32 hex digits of a BLAKE2b hash of ``data`` and ``parts``.

    Example:
        >>> content_id("text", b"hello")[:5], len(content_id("text", b"hello"))
        ('text-', 37)
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(kind.encode())
    for part in parts:
        digest.update(b"\0" + part.encode())
    digest.update(b"\0" + data)
    return f"{kind}-{digest.hexdigest()}"


def scan_folder(
    folder: str | os.PathLike[str], *, recursive: bool = True, max_chars: int = 2000
) -> FolderScan:
    """Read a folder into records without touching any database.

    Text files are read and chunked, picture files are hashed (they are decoded later, only when they
    are new), captions and ``metadata.jsonl`` are attached. Problems are collected, never raised.

    Example:
        >>> scan = scan_folder("my_folder")  # doctest: +SKIP
        >>> len(scan.texts), len(scan.images), [str(f) for f in scan.failed]  # doctest: +SKIP
    """
    if max_chars < 100:
        raise ValueError(f"max_chars must be >= 100, got {max_chars!r}")
    root = Path(folder).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"folder not found: {str(root)!r}; check the path")
    if not root.is_dir():
        raise NotADirectoryError(f"{str(root)!r} is a file, not a folder; pass the folder that holds it")
    root = root.resolve()
    scan = FolderScan(root=root)
    files = _list_files(root, recursive, scan)
    file_set = set(files)
    extra = _read_metadata_files(files, file_set, scan)
    image_stems = {(p.parent, p.stem) for p in files if p.suffix.lower() in IMAGE_EXTENSIONS}

    for path in files:
        name = path.name.lower()
        ext = path.suffix.lower()
        if path.name in METADATA_FILES:
            continue
        if name.endswith(CAPTION_SUFFIX):
            image_stem = path.name[: -len(CAPTION_SUFFIX)]
            if (path.parent, image_stem) not in image_stems:
                scan.failed.append(IngestFailure(str(path), "caption file has no picture of the same name"))
            continue
        if ext in TEXT_EXTENSIONS:
            _scan_text(path, root, extra.get(path, {}), max_chars, scan)
        elif ext in IMAGE_EXTENSIONS:
            _scan_image(path, root, extra.get(path, {}), scan)
        else:
            scan.skipped.append(IngestFailure(str(path), f"unsupported file type {ext or '(none)'!r}"))
    return scan


def ingest_folder(
    folder: str | os.PathLike[str],
    retriever: ChromaMultiCollectionRetriever,
    *,
    batch_size: int = 32,
    recursive: bool = True,
    max_chars: int = 2000,
    on_error: Literal["collect", "raise"] = "collect",
    progress: Callable[[int], None] | None = None,
    scan: FolderScan | None = None,
    preview_size: int | None = DEFAULT_PREVIEW_SIZE,
) -> IngestReport:
    """Embed and upsert every passage and picture of ``folder`` into ``retriever``'s collections.

    Args:
        batch_size: records embedded per call of an embedding function.
        on_error: ``"collect"`` (default) ingests everything it can and lists failures in the report;
            ``"raise"`` raises :class:`IngestError` on the first bad file (records already written stay).
        progress: called with the number of records just processed (the CLI feeds a progress bar).
        scan: a ready :func:`scan_folder` result, so a caller can size a progress bar first.
        preview_size: also store a small JPEG preview of each picture (longest side in pixels) in its
            metadata (``preview``, a data URI), which a retriever built with
            ``candidate_image="preview"`` hands to the reranker instead of the full file; ``None``
            stores none.

    Example:
        >>> report = ingest_folder("my_folder", retriever)  # doctest: +SKIP
        >>> print(report.summary())  # doctest: +SKIP
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    check_preview_size(preview_size)
    if on_error not in ("collect", "raise"):
        raise ValueError(f"on_error must be 'collect' or 'raise', got {on_error!r}")
    start = time.perf_counter()
    if scan is None:
        scan = scan_folder(folder, recursive=recursive, max_chars=max_chars)
    if on_error == "raise" and scan.failed:
        raise IngestError(f"cannot ingest {scan.failed[0]}")
    report = IngestReport(
        failed=list(scan.failed),
        skipped=list(scan.skipped),
        texts=len(scan.texts),
        images=len(scan.images),
    )
    for failure in scan.failed:
        logger.warning("not ingested: %s", failure)
    retriever.create_collections()
    if scan.texts and retriever.text_collection_name is None:
        _fail_all(report, [r.path for r in scan.texts], "the text collection is switched off", on_error)
    elif scan.texts:
        _ingest_texts(retriever, scan.texts, batch_size, report, progress, on_error)
    if scan.images and retriever.image_collection_name is None:
        _fail_all(report, [r.path for r in scan.images], "the image collection is switched off", on_error)
    elif scan.images:
        _ingest_images(retriever, scan.images, batch_size, report, progress, on_error, preview_size)
    report.seconds = time.perf_counter() - start
    logger.info("ingested %s: %s in %.1f s", scan.root, report.summary(), report.seconds)
    return report


# -- scanning -----------------------------------------------------------------------------------------


def _list_files(root: Path, recursive: bool, scan: FolderScan) -> list[Path]:
    files: list[Path] = []
    walker = os.walk(root, onerror=lambda exc: scan.failed.append(IngestFailure(str(exc.filename), str(exc))))
    for dirpath, dirnames, filenames in walker:
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        hidden = sorted(f for f in filenames if f.startswith("."))
        for name in hidden:
            scan.skipped.append(IngestFailure(str(Path(dirpath) / name), "hidden file"))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
        if not recursive:
            for d in dirnames:
                scan.skipped.append(IngestFailure(str(Path(dirpath) / d), "sub-folder (recursive=False)"))
            break
    return files


def _read_metadata_files(
    files: list[Path], file_set: set[Path], scan: FolderScan
) -> dict[Path, dict[str, Any]]:
    """``metadata.jsonl`` / ``metadata.csv`` rows, keyed by the file they describe."""
    extra: dict[Path, dict[str, Any]] = {}
    for meta_path in files:
        if meta_path.name not in METADATA_FILES:
            continue
        try:
            rows = list(_metadata_rows(meta_path))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            scan.failed.append(IngestFailure(str(meta_path), f"cannot read: {exc}"))
            continue
        for line_no, row in rows:
            where = f"{meta_path}:{line_no}"
            if isinstance(row, str):
                scan.failed.append(IngestFailure(where, row))
                continue
            file_name = row.pop("file_name", None)
            if not isinstance(file_name, str) or not file_name:
                scan.failed.append(IngestFailure(where, "row has no 'file_name' field"))
                continue
            target = (meta_path.parent / file_name).resolve()
            if target not in file_set:
                scan.failed.append(
                    IngestFailure(where, f"file_name {file_name!r} names no file in the folder")
                )
                continue
            extra.setdefault(target, {}).update(row)
    return extra


def _metadata_rows(path: Path) -> Any:
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            for line_no, row in enumerate(csv.DictReader(handle), start=2):
                yield line_no, {k: v for k, v in row.items() if k is not None and v not in (None, "")}
        return
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield line_no, f"invalid JSON: {exc.msg}"
                continue
            yield line_no, row if isinstance(row, dict) else "line is not a JSON object"


def _scan_text(path: Path, root: Path, extra: Mapping[str, Any], max_chars: int, scan: FolderScan) -> None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        scan.failed.append(IngestFailure(str(path), f"cannot read: {exc.strerror or exc}"))
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        scan.failed.append(
            IngestFailure(str(path), f"not UTF-8 text (byte {exc.start}); convert it to UTF-8")
        )
        return
    text = text.replace("\r\n", "\n").strip()
    if not text:
        scan.failed.append(IngestFailure(str(path), "empty text file"))
        return
    title = str(extra.get("title") or _title(text, path))
    chunks = _chunks(text, max_chars)
    meta_json = json.dumps(dict(extra), sort_keys=True, default=str)
    for i, chunk in enumerate(chunks):
        metadata: dict[str, Any] = {
            **{k: v for k, v in extra.items() if k not in ("caption", "text")},
            "kind": "text",
            "path": str(path),
            "rel_path": path.relative_to(root).as_posix(),
            "title": title,
        }
        if len(chunks) > 1:
            metadata.update(chunk=i, n_chunks=len(chunks))
        record_id = content_id("text", data, str(path), str(i), meta_json)
        scan.texts.append(TextRecord(id=record_id, path=str(path), text=chunk, metadata=metadata))


def _scan_image(path: Path, root: Path, extra: Mapping[str, Any], scan: FolderScan) -> None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        scan.failed.append(IngestFailure(str(path), f"cannot read: {exc.strerror or exc}"))
        return
    caption_key = "caption" if "caption" in extra else "text" if "text" in extra else None
    caption = extra.get(caption_key) if caption_key else None
    sidecar = path.with_name(path.stem + CAPTION_SUFFIX)
    if sidecar.is_file():
        try:
            caption = sidecar.read_text(encoding="utf-8-sig").strip()
        except (OSError, UnicodeDecodeError) as exc:
            scan.failed.append(IngestFailure(str(sidecar), f"cannot read caption: {exc}"))
            return
    caption = str(caption).strip() if caption is not None and str(caption).strip() else None
    metadata: dict[str, Any] = {
        **{k: v for k, v in extra.items() if k not in ("caption", caption_key)},
        "kind": "image",
        "path": str(path),
        "rel_path": path.relative_to(root).as_posix(),
        "title": str(
            extra.get("title") or (caption if caption and len(caption) <= _MAX_TITLE else path.stem)
        ),
    }
    if caption is not None:
        metadata["caption"] = caption
    meta_json = json.dumps(dict(extra), sort_keys=True, default=str)
    record_id = content_id("image", data, str(path), caption or "", meta_json)
    scan.images.append(ImageRecord(id=record_id, path=str(path), caption=caption, metadata=metadata))


_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")


def _title(text: str, path: Path) -> str:
    first, _, rest = text.partition("\n")
    first = first.strip()
    heading = _HEADING.match(first)
    if heading:
        return heading.group(1)[:_MAX_TITLE]
    if rest.startswith("\n") and 0 < len(first) <= _MAX_TITLE:
        return first
    return path.stem


def _chunks(text: str, max_chars: int) -> list[str]:
    if len(text) <= max_chars:
        return [text]
    chunks: list[str] = []
    current = ""
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        while len(paragraph) > max_chars:  # a single huge paragraph: cut at the last space before the limit
            cut = paragraph.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 2 else max_chars
            if current:
                chunks.append(current)
                current = ""
            chunks.append(paragraph[:cut].strip())
            paragraph = paragraph[cut:].strip()
        if not paragraph:
            continue
        if current and len(current) + 2 + len(paragraph) > max_chars:
            chunks.append(current)
            current = paragraph
        else:
            current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        chunks.append(current)
    return chunks


# -- writing ------------------------------------------------------------------------------------------


def _fail_all(report: IngestReport, paths: list[str], reason: str, on_error: str) -> None:
    if on_error == "raise":
        raise IngestError(f"cannot ingest {paths[0]}: {reason}")
    for path in dict.fromkeys(paths):
        report.failed.append(IngestFailure(path, reason))


def _plan(
    retriever: ChromaMultiCollectionRetriever, kind: str, ids: list[str], paths: list[str]
) -> tuple[set[str], dict[str, set[str]]]:
    """Which ids are stored already, and the stale ids (same path, other content) per path."""
    existing = retriever.existing_ids(kind, ids)
    by_path = retriever.ids_for_paths(kind, paths)
    wanted: dict[str, set[str]] = {}
    for id_, path in zip(ids, paths, strict=True):
        wanted.setdefault(path, set()).add(id_)
    stale = {p: stored - wanted.get(p, set()) for p, stored in by_path.items()}
    return existing, {p: ids_ for p, ids_ in stale.items() if ids_}


def _ingest_texts(
    retriever: ChromaMultiCollectionRetriever,
    records: list[TextRecord],
    batch_size: int,
    report: IngestReport,
    progress: Callable[[int], None] | None,
    on_error: str,
) -> None:
    existing, stale = _plan(retriever, "text", [r.id for r in records], [r.path for r in records])
    todo = [r for r in records if r.id not in existing]
    report.unchanged += len(records) - len(todo)
    if progress is not None and len(records) > len(todo):
        progress(len(records) - len(todo))
    failed_paths: set[str] = set()
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        try:
            vectors = retriever.embed_texts([r.text for r in batch], kind="text")
        except Exception as exc:  # an embedding function may raise anything; name the files, keep going
            if on_error == "raise":
                raise IngestError(f"embedding passages failed ({batch[0].path}...): {exc}") from exc
            logger.warning("embedding a batch of %d passages failed: %s", len(batch), exc)
            for r in batch:
                if r.path not in failed_paths:
                    failed_paths.add(r.path)
                    report.failed.append(IngestFailure(r.path, f"embedding failed: {exc}"))
            if progress is not None:
                progress(len(batch))
            continue
        retriever.upsert(
            "text",
            ids=[r.id for r in batch],
            embeddings=vectors,
            documents=[r.text for r in batch],
            metadatas=[r.metadata for r in batch],
        )
        _count(report, [r.path for r in batch], stale)
        if progress is not None:
            progress(len(batch))
    _drop_stale(retriever, "text", stale, failed_paths)


def _ingest_images(
    retriever: ChromaMultiCollectionRetriever,
    records: list[ImageRecord],
    batch_size: int,
    report: IngestReport,
    progress: Callable[[int], None] | None,
    on_error: str,
    preview_size: int | None,
) -> None:
    existing, stale = _plan(retriever, "image", [r.id for r in records], [r.path for r in records])
    todo = [r for r in records if r.id not in existing]
    report.unchanged += len(records) - len(todo)
    if progress is not None and len(records) > len(todo):
        progress(len(records) - len(todo))
    failed_paths: set[str] = set()
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        decoded: list[tuple[ImageRecord, Any]] = []
        sizes: dict[str, tuple[int, int]] = {}
        previews: dict[str, str] = {}
        for record in batch:
            try:
                image = load_image(record.path, retriever.image_options)
            except ImageLoadError as exc:
                if on_error == "raise":
                    raise IngestError(f"cannot ingest {record.path}: {exc}") from exc
                failed_paths.add(record.path)
                report.failed.append(IngestFailure(record.path, str(exc)))
                logger.warning("not ingested: %s: %s", record.path, exc)
                continue
            sizes[record.id] = image.size
            if preview_size is not None:
                previews[record.id] = preview_data_uri(image, preview_size)
            decoded.append((record, _shrink(image)))
        vectors = _embed_images_isolating_failures(retriever, decoded, report, failed_paths, on_error)
        written = [
            (record, image, v) for (record, image), v in zip(decoded, vectors, strict=True) if v is not None
        ]
        if written:
            retriever.upsert(
                "image",
                ids=[r.id for r, _, _ in written],
                embeddings=[v for _, _, v in written],
                documents=[r.caption for r, _, _ in written],
                uris=[r.path for r, _, _ in written],
                metadatas=[
                    {
                        **r.metadata,
                        "width": sizes[r.id][0],
                        "height": sizes[r.id][1],
                        PREVIEW_KEY: previews.get(r.id),
                    }
                    for r, _, _ in written
                ],
            )
            _count(report, [r.path for r, _, _ in written], stale)
        if progress is not None:
            progress(len(batch))
    _drop_stale(retriever, "image", stale, failed_paths)


def _embed_images_isolating_failures(
    retriever: ChromaMultiCollectionRetriever,
    decoded: list[tuple[ImageRecord, Any]],
    report: IngestReport,
    failed_paths: set[str],
    on_error: str,
) -> list[list[float] | None]:
    if not decoded:
        return []
    try:
        return list(retriever.embed_images([image for _, image in decoded]))
    except Exception as exc:  # an embedding function may raise anything; find the file that broke it
        if on_error == "raise":
            raise IngestError(f"embedding a batch of pictures failed: {exc}") from exc
        logger.warning("embedding a batch of %d pictures failed (%s); retrying one by one", len(decoded), exc)
    out: list[list[float] | None] = []
    for record, image in decoded:
        try:
            out.append(retriever.embed_images([image])[0])
        except Exception as exc:
            failed_paths.add(record.path)
            report.failed.append(IngestFailure(record.path, f"embedding failed: {exc}"))
            out.append(None)
    return out


def check_preview_size(preview_size: int | None) -> None:
    if preview_size is not None and (
        isinstance(preview_size, bool) or not isinstance(preview_size, int) or preview_size < 32
    ):
        raise ValueError(f"preview_size must be an int >= 32 or None, got {preview_size!r}")


def preview_data_uri(image: Any, max_side: int = DEFAULT_PREVIEW_SIZE) -> str:
    """A ``data:image/jpeg;base64,...`` preview of a PIL image, longest side at most ``max_side``.

    Decoding a 384-px JPEG preview takes about a millisecond, against 10-20 ms for a 1024-px photo, which
    is most of a rerank's cost when the scorer reads 224-px input anyway (the starter and CLIP scorers).

    Example:
        >>> from PIL import Image
        >>> preview_data_uri(Image.new("RGB", (1000, 500)), 100)[:23]
        'data:image/jpeg;base64,'
    """
    copy = image.convert("RGB")
    copy.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    copy.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _shrink(image: Any, max_side: int = 1024) -> Any:
    """Large photos are downscaled before embedding: image encoders here read 224-512 px anyway."""
    if max(image.size) <= max_side:
        return image
    copy = image.copy()
    copy.thumbnail((max_side, max_side))
    return copy


def _count(report: IngestReport, paths: list[str], stale: Mapping[str, set[str]]) -> None:
    for path in paths:
        if path in stale:
            report.updated += 1
        else:
            report.added += 1


def _drop_stale(
    retriever: ChromaMultiCollectionRetriever, kind: str, stale: Mapping[str, set[str]], failed: set[str]
) -> None:
    # a file whose new version failed keeps its old records, so a bad edit does not lose data
    ids = [id_ for path, ids_ in stale.items() if path not in failed for id_ in ids_]
    if ids:
        retriever.delete(kind, ids)
        logger.info("replaced %d outdated %s records", len(ids), kind)
