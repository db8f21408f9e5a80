"""Tiny, hand-built PDF files for tests and benchmarks: text lines and embedded RGB figures per page.

Nothing here is needed to ingest documents; it writes valid PDF 1.4 (one font, Flate-compressed image
XObjects, a correct cross-reference table) without any PDF library, so tests can also build hostile
files (a figure that claims huge dimensions, thousands of pages) byte by byte.

Example:
    >>> data = make_pdf([SyntheticPage(["Results"], [(8, 8, (255, 0, 0))])])
    >>> data[:8]
    b'%PDF-1.4'
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

#: A figure: width, height and a fill colour (RGB), or raw RGB bytes of width x height pixels.
Figure = tuple[int, int, tuple[int, int, int]]


@dataclass
class SyntheticPage:
    """One page: text lines (top to bottom) and figures (drawn below the text, in order)."""

    lines: Sequence[str] = ()
    figures: Sequence[Figure] = ()
    #: claimed /Width and /Height of each figure (default: the real ones); lets tests lie about sizes
    claimed: Sequence[tuple[int, int]] = field(default_factory=tuple)


def _escape(text: str) -> bytes:
    raw = text.encode("latin-1", "replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _content(page: SyntheticPage) -> bytes:
    parts = [b"BT /F1 11 Tf 72 760 Td 14 TL"]
    for line in page.lines:
        parts.append(b"(" + _escape(line) + b") Tj T*")
    parts.append(b"ET")
    y = 600
    for i, (width, height, _) in enumerate(page.figures):
        shown_w, shown_h = min(width, 400), min(height, 300)
        parts.append(f"q {shown_w} 0 0 {shown_h} 72 {y - shown_h} cm /Im{i} Do Q".encode())
        y -= shown_h + 20
    return b"\n".join(parts)


def _stream(header: str, data: bytes) -> bytes:
    return f"<< {header} /Length {len(data)} >>\nstream\n".encode() + data + b"\nendstream"


def make_pdf(pages: Sequence[SyntheticPage]) -> bytes:
    """The bytes of a PDF with ``pages`` (Helvetica text, Flate RGB figures).

    Example:
        >>> len(make_pdf([SyntheticPage(["a"])])) > 300
        True
    """
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    page_ids: list[int] = []
    for page in pages:
        images: list[str] = []
        for i, (width, height, colour) in enumerate(page.figures):
            claimed = page.claimed[i] if i < len(page.claimed) else (width, height)
            pixels = zlib.compress(bytes(colour) * (width * height))
            header = (
                f"/Type /XObject /Subtype /Image /Width {claimed[0]} /Height {claimed[1]} "
                "/ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode"
            )
            objects.append(_stream(header, pixels))
            images.append(f"/Im{i} {len(objects)} 0 R")
        objects.append(_stream("", _content(page)))
        content_id = len(objects)
        resources = f"<< /Font << /F1 3 0 R >> /XObject << {' '.join(images)} >> >>"
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources {resources} "
            f"/Contents {content_id} 0 R >>".encode()
        )
        page_ids.append(len(objects))
    kids = " ".join(f"{i} 0 R" for i in page_ids)
    objects[1] = f"<< /Type /Pages /Kids [{kids}] /Count {len(page_ids)} >>".encode()
    return _serialise(objects)


def _serialise(objects: Sequence[bytes]) -> bytes:
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
