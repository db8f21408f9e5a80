"""What ingest writes: the report, the records, the one id formula and the one metadata schema.

Every record, whether it comes from a folder (:func:`~mm_rerank_components.ingest.ingest_folder`) or from
``add_texts``/``add_images``, is built here, so both ways of writing agree on ids, metadata and previews.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Kind = Literal["text", "image"]

#: Longest side of the JPEG preview stored with each picture (see ``preview_data_uri``).
DEFAULT_PREVIEW_SIZE = 384
#: Metadata key of that preview (a data URI); the retriever pops it out of a hit's metadata.
PREVIEW_KEY = "preview"
#: Metadata key of the content id (the one formula below), which tells a changed record from an unchanged
#: one even when the caller chose the record's id.
CONTENT_ID_KEY = "content_id"
#: Metadata keys of a picture's compact class probabilities and of the model that produced them.
CLASSES_KEY = "classes"
CLASSES_PRODUCER_KEY = "classes_producer"
#: Pictures are downscaled to this longest side before embedding (encoders here read 224-512 px).
EMBED_MAX_SIDE = 1024
_MAX_TITLE = 160


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
        updated: records written for a file (or id) whose earlier version was replaced.
        unchanged: records already stored with the same content (nothing written).
        failed: files not ingested, each with the reason; the rest were still ingested.
        skipped: files not ingested on purpose: other types, hidden files and folders, links that leave
            the folder.
        texts, images: records of each kind seen.
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
        """Records written (added or updated)."""
        return self.added + self.updated

    def summary(self) -> str:
        """One line, e.g. ``"82 text + 82 image records: 164 added, 0 updated, 0 unchanged, ..."``."""
        return (
            f"{self.texts} text + {self.images} image records: {self.added} added, {self.updated} updated, "
            f"{self.unchanged} unchanged, {len(self.failed)} failed, {len(self.skipped)} skipped"
        )


@dataclass(frozen=True)
class TextRecord:
    """A passage (or one chunk of a long passage file) ready to embed.

    ``path`` is the source file (``None`` for a passage given directly); ``metadata`` follows the schema
    of :func:`text_metadata` and holds the record's ``content_id``.
    """

    id: str
    path: str | None
    text: str
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class ImageRecord:
    """A picture file, its optional caption and metadata, ready to decode and embed."""

    id: str
    path: str
    caption: str | None
    metadata: Mapping[str, Any]


def content_id(kind: str, data: bytes, *parts: str) -> str:
    """A stable record id: ``"<kind>-"`` and 32 hex digits of a BLAKE2b hash of ``data`` and ``parts``.

    Example:
        >>> content_id("text", b"hello")[:5], len(content_id("text", b"hello"))
        ('text-', 37)
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(kind.encode())
    for part in parts:
        digest.update(b"\0" + part.encode("utf-8", "surrogateescape"))
    digest.update(b"\0" + data)
    return f"{kind}-{digest.hexdigest()}"


def record_id(kind: Kind, data: bytes, path: str | None, detail: str, extra: Mapping[str, Any]) -> str:
    """The one id formula of every record: :func:`content_id` of the bytes, the source path (``""`` when
    there is none), a detail (a passage's chunk number, a picture's caption) and the caller's metadata.

    A folder's passage hashes the file's bytes with its chunk number, a directly added passage its own
    text with ``"0"``; a picture hashes its file's bytes with its caption. The result is every record's
    ``content_id`` (its version) and the id of every record with a source path; a passage without a path
    is identified by its text alone (:func:`bare_text_id`), so new metadata updates it in place.

    Example:
        >>> record_id("text", b"Foxes.", None, "0", {}) == record_id("text", b"Foxes.", None, "0", {})
        True
    """
    meta_json = json.dumps(dict(extra), sort_keys=True, default=str)
    return content_id(kind, data, path or "", detail, meta_json)


def bare_text_id(text: str) -> str:
    """The id of a passage given without a source path: :func:`content_id` of its text alone (as the
    package has always made it), so the same text is one record whatever its metadata.

    Example:
        >>> bare_text_id("Foxes.") == content_id("text", b"Foxes.")
        True
    """
    return content_id("text", text.encode("utf-8", "surrogatepass"))


def text_metadata(
    extra: Mapping[str, Any],
    *,
    cid: str,
    path: str | None,
    rel_path: str | None,
    title: str | None,
    chunk: tuple[int, int] = (0, 1),
) -> dict[str, Any]:
    """The metadata schema of a passage record: the caller's fields, then ``kind``, ``path``,
    ``rel_path``, ``title``, ``chunk``/``n_chunks`` (long files only) and ``content_id``."""
    metadata: dict[str, Any] = {k: v for k, v in extra.items() if k not in ("caption", "text")}
    metadata.update(kind="text", path=path, rel_path=rel_path, title=title, content_id=cid)
    if chunk[1] > 1:
        metadata.update(chunk=chunk[0], n_chunks=chunk[1])
    return {k: v for k, v in metadata.items() if v is not None}


def image_metadata(
    extra: Mapping[str, Any], *, cid: str, path: str, rel_path: str | None, caption: str | None
) -> dict[str, Any]:
    """The metadata schema of a picture record (before decoding): the caller's fields, then ``kind``,
    ``path``, ``rel_path``, ``title`` (the caller's, a short caption, or the file name), ``caption`` and
    ``content_id``. Decoding adds ``width``, ``height``, ``preview`` and, when the embedding function
    classifies, ``classes`` and ``classes_producer``."""
    metadata: dict[str, Any] = {k: v for k, v in extra.items() if k not in ("caption", "text")}
    title = extra.get("title") or (caption if caption and len(caption) <= _MAX_TITLE else Path(path).stem)
    metadata.update(kind="image", path=path, rel_path=rel_path, title=str(title), content_id=cid)
    if caption is not None:
        metadata["caption"] = caption
    return {k: v for k, v in metadata.items() if v is not None}


def clean_caption(caption: Any) -> str | None:
    """A caption as stored: stripped text, or ``None`` for a missing or blank one."""
    if caption is None:
        return None
    text = str(caption).strip()
    return text or None


def check_preview_size(preview_size: int | None) -> None:
    """Raise ``ValueError`` unless ``preview_size`` is ``None`` or an int >= 32."""
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
    # a box reduction then bilinear: 3-4x cheaper than thumbnail()'s bicubic, and a preview is small
    small = _fit(image, max_side, _pil_image().Resampling.BILINEAR, reducing_gap=1.0)
    if small.mode != "RGB":
        small = small.convert("RGB")
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _pil_image() -> Any:
    from PIL import Image

    return Image


def _fit(image: Any, max_side: int, resample: Any, reducing_gap: float) -> Any:
    """``image`` resized (a new image) so its longest side is at most ``max_side``, or itself."""
    width, height = image.size
    scale = max_side / max(width, height)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, resample, reducing_gap=reducing_gap)


def shrink(image: Any, max_side: int = EMBED_MAX_SIDE) -> Any:
    """A copy of a PIL image with its longest side at most ``max_side`` (the image itself if smaller).

    Every picture is embedded after this, whichever way it was written, so one file always gets one
    vector.
    """
    return _fit(image, max_side, _pil_image().Resampling.BICUBIC, reducing_gap=2.0)


def chunk_text(text: str, max_chars: int) -> list[str]:
    """``text`` in pieces of at most ``max_chars`` characters, split at blank lines (a longer paragraph at
    its last space before the limit).

    Example:
        >>> chunk_text("a" * 150 + "\\n\\n" + "b" * 150, 200) == ["a" * 150, "b" * 150]
        True
    """
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
