"""Reading a folder into records, without touching any database (see :func:`scan_folder`)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_rerank_components.ingest.documents import (
    DOCUMENT_EXTENSIONS,
    DocumentError,
    DocumentOptions,
    figure_records,
    page_records,
    read_document,
    text_records,
)
from mm_rerank_components.ingest.files import DEFAULT_MAX_BYTES, FileRejected, list_files, read_regular_file
from mm_rerank_components.ingest.records import (
    ImageRecord,
    IngestFailure,
    TextRecord,
    chunk_text,
    clean_caption,
    image_metadata,
    record_id,
    text_metadata,
)

TEXT_EXTENSIONS = frozenset({".txt", ".md"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
CAPTION_SUFFIX = ".caption.txt"
_MAX_TITLE = 160


@dataclass
class FolderScan:
    """What :func:`scan_folder` found: records to ingest, files that failed, files left out on purpose."""

    root: Path
    texts: list[TextRecord] = field(default_factory=list)
    images: list[ImageRecord] = field(default_factory=list)
    failed: list[IngestFailure] = field(default_factory=list)
    skipped: list[IngestFailure] = field(default_factory=list)
    #: the largest file read, in bytes (pictures are read again, with the same limit, when decoded)
    max_bytes: int = DEFAULT_MAX_BYTES
    #: caps and the figures folder for PDF, HTML and DOCX files
    documents: DocumentOptions = field(default_factory=DocumentOptions)
    #: local picture files an HTML page shows: ingested once, as that page's captioned figure
    claimed: dict[str, str] = field(default_factory=dict)


def scan_folder(
    folder: str | os.PathLike[str],
    *,
    recursive: bool = True,
    max_chars: int = 2000,
    follow_symlinks: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    documents: DocumentOptions | None = None,
) -> FolderScan:
    """Read a folder into records without touching any database.

    Text files are read and chunked, picture files are hashed (they are decoded later, only when they
    are new), captions and ``metadata.jsonl`` are attached. Only regular files of at most ``max_bytes``
    are read. Problems are collected, never raised: a file that cannot be read, a metadata row that names
    no file, a link loop each fail alone and the rest is scanned.

    Args:
        follow_symlinks: also read links that lead out of the folder (off: they are reported as skipped).
        documents: caps for PDF, HTML and DOCX files and where their figures are written (default:
            :class:`~mm_rerank_components.ingest.documents.DocumentOptions`).

    Example:
        >>> scan = scan_folder("my_folder")  # doctest: +SKIP
        >>> len(scan.texts), len(scan.images), [str(f) for f in scan.failed]  # doctest: +SKIP
    """
    if max_chars < 100:
        raise ValueError(f"max_chars must be >= 100, got {max_chars!r}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be an int >= 1, got {max_bytes!r}")
    root = Path(folder).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"folder not found: {str(root)!r}; check the path")
    if not root.is_dir():
        raise NotADirectoryError(f"{str(root)!r} is a file, not a folder; pass the folder that holds it")
    root = root.resolve()
    listing = list_files(root, recursive=recursive, follow_symlinks=follow_symlinks)
    scan = FolderScan(root=root, failed=listing.failed, skipped=listing.skipped, max_bytes=max_bytes)
    scan.documents = documents or DocumentOptions()
    files = listing.files
    extra = _read_metadata_files(files, scan)
    image_stems = {(p.parent, p.stem) for p in files if p.suffix.lower() in IMAGE_EXTENSIONS}
    file_set = set(files)
    for path in files:
        ext = path.suffix.lower()
        if path.name in METADATA_FILES:
            continue
        if path.name.lower().endswith(CAPTION_SUFFIX):
            if (path.parent, path.name[: -len(CAPTION_SUFFIX)]) not in image_stems:
                scan.failed.append(IngestFailure(str(path), "caption file has no picture of the same name"))
            continue
        if ext in TEXT_EXTENSIONS:
            _scan_text(path, extra.get(path, {}), max_chars, scan)
        elif ext in IMAGE_EXTENSIONS:
            _scan_image(path, extra.get(path, {}), file_set, scan)
        elif ext in DOCUMENT_EXTENSIONS:
            _scan_document(path, extra.get(path, {}), max_chars, scan)
        else:
            scan.skipped.append(IngestFailure(str(path), f"unsupported file type {ext or '(none)'!r}"))
    _drop_claimed(scan)
    return scan


def _scan_document(path: Path, extra: Mapping[str, Any], max_chars: int, scan: FolderScan) -> None:
    """A PDF, HTML or DOCX file: its passages and figures, or one failure naming why it was not read."""
    data = _read(path, scan)
    if data is None:
        return
    try:
        extracted = read_document(path, data, scan.documents, root=scan.root)
    except (DocumentError, ImportError) as exc:
        scan.failed.append(IngestFailure(str(path), str(exc)))
        return
    for where, reason in extracted.failed:
        scan.failed.append(IngestFailure(str(path), f"{where}: {reason}"))
    for where, reason in extracted.skipped:
        scan.skipped.append(IngestFailure(str(path), f"{where}: {reason}"))
    if not extracted.passages and not extracted.figures and not extracted.rendered:
        if not extracted.failed:
            scan.failed.append(
                IngestFailure(str(path), "no text and no figures found (a scanned document needs OCR first)")
            )
        return
    rel_path = path.relative_to(scan.root).as_posix()
    scan.texts.extend(text_records(path, rel_path, data, extracted, extra, max_chars))
    scan.images.extend(figure_records(path, rel_path, data, extracted, extra))
    scan.images.extend(page_records(path, rel_path, data, extracted, extra))
    for figure in extracted.figures:
        if figure.local:
            scan.claimed.setdefault(figure.path, rel_path)


def _drop_claimed(scan: FolderScan) -> None:
    """Pictures of the folder that a page shows are ingested once, as that page's figure."""
    if not scan.claimed:
        return
    kept: list[ImageRecord] = []
    for record in scan.images:
        page = scan.claimed.get(record.path)
        if page is not None and "document" not in record.metadata:
            scan.skipped.append(
                IngestFailure(record.path, f"ingested as a figure of {page}, with its caption")
            )
        else:
            kept.append(record)
    scan.images = kept


def _read(path: Path, scan: FolderScan) -> bytes | None:
    try:
        return read_regular_file(path, scan.max_bytes)
    except FileRejected as exc:
        scan.failed.append(IngestFailure(str(path), str(exc)))
        return None


def _read_metadata_files(files: list[Path], scan: FolderScan) -> dict[Path, dict[str, Any]]:
    """``metadata.jsonl`` / ``metadata.csv`` rows, keyed by the file they describe."""
    extra: dict[Path, dict[str, Any]] = {}
    file_set = set(files)
    for meta_path in (p for p in files if p.name in METADATA_FILES):
        data = _read(meta_path, scan)
        if data is None:
            continue
        try:
            rows = list(_metadata_rows(meta_path, data))
        except (UnicodeDecodeError, csv.Error) as exc:
            scan.failed.append(IngestFailure(str(meta_path), f"cannot read: {exc}"))
            continue
        for line_no, row in rows:
            where = f"{meta_path}:{line_no}"
            target, problem = _row_target(meta_path, row, file_set)
            if target is None:
                scan.failed.append(IngestFailure(where, problem))
                continue
            assert isinstance(row, dict)
            extra.setdefault(target, {}).update(row)
    return extra


def _row_target(meta_path: Path, row: Any, file_set: set[Path]) -> tuple[Path | None, str]:
    """The listed file a metadata row describes (its ``file_name`` is popped), or why there is none."""
    if isinstance(row, str):
        return None, row
    file_name = row.pop("file_name", None)
    if not isinstance(file_name, str) or not file_name:
        return None, "row has no 'file_name' field"
    if "\0" in file_name:
        return None, f"file_name {file_name!r} holds a NUL byte; no file can have that name"
    # normpath, not resolve: the row only selects among files already listed, so no link is followed
    target = Path(os.path.normpath(meta_path.parent / file_name))
    if target not in file_set:
        return None, f"file_name {file_name!r} names no file in the folder"
    return target, ""


def _metadata_rows(path: Path, data: bytes) -> Iterator[tuple[int, dict[str, Any] | str]]:
    text = data.decode("utf-8-sig")
    if path.suffix == ".csv":
        for line_no, row in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=2):
            yield line_no, {k: v for k, v in row.items() if k is not None and v not in (None, "")}
        return
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield line_no, f"invalid JSON: {exc.msg}"
            continue
        yield line_no, row if isinstance(row, dict) else "line is not a JSON object"


def _read_text(path: Path, scan: FolderScan, what: str = "text") -> tuple[bytes, str] | None:
    """A UTF-8 file's bytes and text, or ``None`` with the failure recorded."""
    data = _read(path, scan)
    if data is None:
        return None
    try:
        return data, data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        scan.failed.append(
            IngestFailure(str(path), f"not UTF-8 {what} (byte {exc.start}); convert it to UTF-8")
        )
        return None


def _scan_text(path: Path, extra: Mapping[str, Any], max_chars: int, scan: FolderScan) -> None:
    read = _read_text(path, scan)
    if read is None:
        return
    data, text = read
    text = text.replace("\r\n", "\n").strip()
    if not text:
        scan.failed.append(IngestFailure(str(path), "empty text file"))
        return
    title = str(extra.get("title") or _title(text, path))
    chunks = chunk_text(text, max_chars)
    rel_path = path.relative_to(scan.root).as_posix()
    for i, chunk in enumerate(chunks):
        cid = record_id("text", data, str(path), str(i), extra)
        metadata = text_metadata(
            extra, cid=cid, path=str(path), rel_path=rel_path, title=title, chunk=(i, len(chunks))
        )
        scan.texts.append(TextRecord(id=cid, path=str(path), text=chunk, metadata=metadata))


def _scan_image(path: Path, extra: Mapping[str, Any], file_set: set[Path], scan: FolderScan) -> None:
    data = _read(path, scan)
    if data is None:
        return
    caption = extra.get("caption", extra.get("text"))
    sidecar = path.with_name(path.stem + CAPTION_SUFFIX)
    if sidecar in file_set:
        side = _read_text(sidecar, scan, "caption")
        if side is None:
            return
        caption = side[1]
    caption = clean_caption(caption)
    cid = record_id("image", data, str(path), caption or "", extra)
    rel_path = path.relative_to(scan.root).as_posix()
    metadata = image_metadata(extra, cid=cid, path=str(path), rel_path=rel_path, caption=caption)
    scan.images.append(ImageRecord(id=cid, path=str(path), caption=caption, metadata=metadata))


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
