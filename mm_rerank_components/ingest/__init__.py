"""Ingest: the only code that writes records, from a folder or from ``add_texts``/``add_images``.

What a folder may hold:

* passages: ``.txt`` and ``.md`` files (UTF-8), one record per file, or per chunk of at most
  ``max_chars`` characters (split at blank lines) for long files. The title is the first line when it is
  followed by a blank line (``.md``: a leading ``# Heading``), else the file name;
* pictures: ``.png``, ``.jpg``/``.jpeg``, ``.webp``, ``.gif`` (first frame) and ``.bmp``;
* documents: ``.pdf`` (one passage per page, embedded pictures as figures of their page), ``.html``/``.htm``
  (main text in sections, ``<img>`` with ``figcaption``/``alt``) and ``.docx`` (paragraphs and tables,
  embedded pictures with their captions); every record carries ``document``, ``page`` and ``figure``
  metadata and cites itself as ``"paper.pdf p. 4, figure 2"`` (see :mod:`.documents` and
  docs/documents.md; PDF and DOCX need the ``documents`` extra);
* captions for pictures, optional: a ``metadata.jsonl`` (or ``metadata.csv``) in the Hugging Face
  *imagefolder* style, one line per file with a ``file_name`` relative to that metadata file, its
  ``caption`` (or ``text``) field becoming the picture's caption and every other field its metadata; or a
  sidecar ``<stem>.caption.txt`` next to the picture, which wins over ``metadata.jsonl``.

Ids come from content (:func:`record_id`, one formula for every write): a hash of the file's absolute
path, its bytes, its caption and metadata (and the chunk number). Re-ingesting an unchanged folder adds
nothing; a changed file gets a new id and its old records are deleted (counted as ``updated``); two
identical files at different paths are both kept. Files that disappeared are not removed.

Only regular files are read, never more than ``max_bytes`` (a FIFO, a device or ``/dev/zero`` named
``notes.txt`` fails alone). Hidden files and folders and links that leave the folder are skipped and
reported (``follow_symlinks=True`` follows links). Nothing is skipped silently: files that cannot be read
or decoded are listed in :attr:`IngestReport.failed` (each naming the file and the reason) and files left
out on purpose in :attr:`IngestReport.skipped`. With ``on_error="raise"`` the first failure raises
:class:`IngestError` instead; records written before it stay, and a re-run after the fix skips them.

Modules: :mod:`.records` (report, records, id formula, metadata schema, previews), :mod:`.files` (safe
reading, listing), :mod:`.scan` (folder to records), :mod:`.documents` (PDF, HTML, DOCX; LangChain and
LlamaIndex loaders' output), :mod:`.pictures` (decoding pool), :mod:`.store` (the
store protocol) and :mod:`.write` (the writer).

Example:
    >>> from mm_rerank_components.ingest import ingest_folder
    >>> report = ingest_folder("my_folder", retriever)  # doctest: +SKIP
"""

from mm_rerank_components.ingest.files import DEFAULT_MAX_BYTES, FileRejected, list_files, read_regular_file
from mm_rerank_components.ingest.records import (
    CLASSES_KEY,
    CLASSES_PRODUCER_KEY,
    CONTENT_ID_KEY,
    DEFAULT_PREVIEW_SIZE,
    PREVIEW_KEY,
    ImageRecord,
    IngestError,
    IngestFailure,
    IngestReport,
    TextRecord,
    check_preview_size,
    content_id,
    preview_data_uri,
    record_id,
)
from mm_rerank_components.ingest.scan import (
    CAPTION_SUFFIX,
    IMAGE_EXTENSIONS,
    METADATA_FILES,
    TEXT_EXTENSIONS,
    FolderScan,
    scan_folder,
)
from mm_rerank_components.ingest.store import EmbeddedPicture, HasStore, Store, as_store
from mm_rerank_components.ingest.write import add_images, add_texts, ingest_folder

__all__ = [
    "CAPTION_SUFFIX",
    "CLASSES_KEY",
    "CLASSES_PRODUCER_KEY",
    "CONTENT_ID_KEY",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_PREVIEW_SIZE",
    "IMAGE_EXTENSIONS",
    "METADATA_FILES",
    "PREVIEW_KEY",
    "TEXT_EXTENSIONS",
    "EmbeddedPicture",
    "FileRejected",
    "FolderScan",
    "HasStore",
    "ImageRecord",
    "IngestError",
    "IngestFailure",
    "IngestReport",
    "Store",
    "TextRecord",
    "add_images",
    "add_texts",
    "as_store",
    "check_preview_size",
    "content_id",
    "ingest_folder",
    "list_files",
    "preview_data_uri",
    "read_regular_file",
    "record_id",
    "scan_folder",
]
