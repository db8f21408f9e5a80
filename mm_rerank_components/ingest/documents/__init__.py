"""Documents in: PDF, HTML and DOCX files as passages and figure pictures linked to their page.

:func:`read_document` picks the reader by the file's extension (:mod:`.pdf` with pypdf, :mod:`.html` with
the standard library's parser, :mod:`.docx` with python-docx); :mod:`.records` turns what it read into
ingest records with ``document``/``page``/``figure`` metadata. Folder ingest
(:func:`~mm_rerank_components.ingest.scan_folder`) calls both for every ``.pdf``, ``.html``/``.htm`` and
``.docx`` file; :mod:`.frameworks` writes LangChain documents and LlamaIndex nodes.

Example:
    >>> from mm_rerank_components.ingest.documents.synthetic import SyntheticPage, make_pdf
    >>> out = read_document("a.pdf", make_pdf([SyntheticPage(["Hello"])]), DocumentOptions())
    >>> out.passages[0].text
    'Hello'
"""

from __future__ import annotations

import os
from pathlib import Path

from mm_rerank_components.ingest.documents.base import (
    FIGURES_ENV,
    DocumentError,
    DocumentOptions,
    Extracted,
    Figure,
    Passage,
    default_figures_dir,
)
from mm_rerank_components.ingest.documents.deadline import run_capped
from mm_rerank_components.ingest.documents.records import citation, figure_records, page_records, text_records

#: File extensions read as documents, and the extra each needs.
DOCUMENT_EXTENSIONS = frozenset({".pdf", ".html", ".htm", ".docx"})


def read_document(
    path: str | os.PathLike[str],
    data: bytes,
    options: DocumentOptions,
    root: str | os.PathLike[str] | None = None,
) -> Extracted:
    """Read one document's bytes with the reader of its extension (``root``: the folder an HTML page's
    pictures must stay in, default the page's own folder), within ``options.max_seconds``.

    Raises:
        DocumentError: the whole file cannot be read, or reading it took longer than ``max_seconds``
            (the message names the cause and the fix).
        ImportError: the format's library is missing (the message names the extra).
    """
    return run_capped(lambda: _read(path, data, options, root), options.max_seconds, Path(path).name)


def _read(
    path: str | os.PathLike[str],
    data: bytes,
    options: DocumentOptions,
    root: str | os.PathLike[str] | None,
) -> Extracted:
    suffix = Path(path).suffix.lower()
    if suffix == ".pdf":
        from mm_rerank_components.ingest.documents.pdf import read_pdf

        return read_pdf(data, options)
    if suffix in (".html", ".htm"):
        from mm_rerank_components.ingest.documents.html import read_html

        return read_html(Path(path), data, options, Path(root) if root is not None else None)
    if suffix == ".docx":
        from mm_rerank_components.ingest.documents.docx import read_docx

        return read_docx(data, options)
    raise DocumentError(f"{suffix!r} is not a document type; documents are {sorted(DOCUMENT_EXTENSIONS)}")


__all__ = [
    "DOCUMENT_EXTENSIONS",
    "FIGURES_ENV",
    "DocumentError",
    "DocumentOptions",
    "Extracted",
    "Figure",
    "Passage",
    "citation",
    "default_figures_dir",
    "figure_records",
    "page_records",
    "read_document",
    "text_records",
]
