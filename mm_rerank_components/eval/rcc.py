"""A small reader for Qt binary resource archives (``.rcc`` files), written from the format.

Layout (all integers big-endian):

* header: ``b"qres"``, format version (1, 2 or 3), then the offsets of the *tree*, the *data* block and
  the *names* block; version 3 adds a 4-byte flags word.
* tree: fixed-size nodes (14 bytes in version 1, 22 bytes from version 2, which appends an 8-byte
  modification time). Each node holds ``name_offset: u32`` and ``flags: u16``; a directory
  (``flags & 0x02``) then holds ``child_count: u32, first_child_index: u32``, a file holds
  ``country: u16, language: u16, data_offset: u32``. Node 0 is the root directory.
* names: ``length: u16, hash: u32``, then ``length`` UTF-16BE code units.
* data: ``size: u32`` then ``size`` bytes. A zlib-compressed file (``flags & 0x01``) stores Qt's
  ``qCompress`` format (a ``u32`` uncompressed size, then a zlib stream); a zstd-compressed file
  (``flags & 0x04``) stores a plain zstd frame.

GCompris 3.1 (Debian's ``gcompris-qt-data``) uses version 3 archives with zlib-compressed and stored
entries only; zstd entries need the ``zstandard`` package and raise a clear :class:`ImportError`
without it.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

__all__ = ["RCC_COMPRESSED_ZLIB", "RCC_COMPRESSED_ZSTD", "RCC_DIRECTORY", "read_rcc"]

RCC_COMPRESSED_ZLIB = 0x01
RCC_DIRECTORY = 0x02
RCC_COMPRESSED_ZSTD = 0x04


def read_rcc(source: str | os.PathLike[str] | bytes) -> dict[str, bytes]:
    """Return every file in a Qt ``.rcc`` archive as ``{"/path/in/archive": decompressed bytes}``.

    Example:
        >>> files = read_rcc("explore_monuments.rcc")  # doctest: +SKIP
        >>> sorted(files)[0]  # doctest: +SKIP
        '/gcompris/src/activities/explore_monuments/ActivityInfo.qml'
    """
    label = "<bytes>" if isinstance(source, bytes) else str(source)
    blob = source if isinstance(source, bytes) else Path(source).read_bytes()
    return _RccReader(blob, label).files()


class _RccReader:
    def __init__(self, blob: bytes, label: str) -> None:
        self.blob = blob
        self.label = label
        if len(blob) < 20 or blob[:4] != b"qres":
            raise ValueError(f"{label} is not a Qt resource archive: it does not start with b'qres'")
        self.version, self.tree, self.data, self.names = struct.unpack(">IIII", blob[4:20])
        if self.version not in (1, 2, 3):
            raise ValueError(f"{label}: unsupported rcc format version {self.version} (expected 1, 2 or 3)")
        self.node_size = 14 if self.version == 1 else 22

    def _unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        if offset < 0 or offset + size > len(self.blob):
            raise ValueError(f"{self.label}: truncated rcc archive (needed bytes {offset}..{offset + size})")
        return struct.unpack(fmt, self.blob[offset : offset + size])

    def _name(self, offset: int) -> str:
        start = self.names + offset
        (length, _hash) = self._unpack(">HI", start)
        raw = self.blob[start + 6 : start + 6 + 2 * length]
        if len(raw) != 2 * length:
            raise ValueError(f"{self.label}: truncated name at offset {start}")
        return raw.decode("utf-16-be")

    def _payload(self, offset: int, flags: int, path: str) -> bytes:
        start = self.data + offset
        (size,) = self._unpack(">I", start)
        payload = self.blob[start + 4 : start + 4 + size]
        if len(payload) != size:
            raise ValueError(f"{self.label}: truncated data for {path}")
        if flags & RCC_COMPRESSED_ZSTD:
            try:
                import zstandard
            except ImportError as exc:
                raise ImportError(
                    f"{self.label}: {path} is zstd-compressed; install the zstandard package: "
                    "pip install zstandard"
                ) from exc
            return bytes(zstandard.ZstdDecompressor().decompress(payload, max_output_size=1 << 30))
        if flags & RCC_COMPRESSED_ZLIB:
            if len(payload) < 4:
                raise ValueError(f"{self.label}: compressed entry {path} is too short")
            try:
                return zlib.decompress(payload[4:])
            except zlib.error as exc:
                raise ValueError(f"{self.label}: cannot decompress {path}: {exc}") from exc
        return payload

    def files(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        seen: set[int] = set()
        stack: list[tuple[int, str]] = [(0, "")]
        while stack:
            index, parent = stack.pop()
            if index in seen:
                raise ValueError(f"{self.label}: malformed rcc tree (node {index} is reached twice)")
            seen.add(index)
            base = self.tree + index * self.node_size
            name_offset, flags = self._unpack(">IH", base)
            path = parent if index == 0 else f"{parent}/{self._name(name_offset)}"
            if flags & RCC_DIRECTORY:
                count, first = self._unpack(">II", base + 6)
                stack.extend((first + i, path) for i in reversed(range(count)))
            else:
                _country, _language, data_offset = self._unpack(">HHI", base + 6)
                out[path] = self._payload(data_offset, flags, path)
        return out
