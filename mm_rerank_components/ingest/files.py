"""Reading files safely: regular files only, never more than ``max_bytes + 1`` bytes, links checked.

A FIFO would block a plain ``read`` forever and ``/dev/zero`` would fill memory, so every file ingest
reads goes through :func:`read_regular_file`: it checks the file type before opening, opens without
blocking, checks the type again on the open descriptor, and reads at most ``max_bytes + 1`` bytes.
:func:`list_files` walks a folder without following links out of it unless asked to.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from mm_rerank_components.ingest.records import IngestFailure

#: Largest file ingest reads (passages, captions, metadata files, pictures) unless told otherwise.
DEFAULT_MAX_BYTES = 20 * 1024 * 1024


class FileRejected(ValueError):
    """A file that ingest will not read; the message says why and what to do."""


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_regular_file(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` bytes; :class:`FileRejected` otherwise.

    Devices, FIFOs, sockets and folders are refused before anything is read, so ``/dev/zero`` or a pipe
    named ``notes.txt`` neither fills memory nor blocks.

    Example:
        >>> try:
        ...     read_regular_file("/dev/zero")
        ... except FileRejected as exc:
        ...     print(str(exc)[:38])
        '/dev/zero' is a character device, not
    """
    name = os.fspath(path)
    try:
        info = os.stat(name)
    except FileNotFoundError:
        raise FileRejected(f"cannot read {name!r}: no such file (or a link to a missing file)") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise FileRejected(f"cannot read {name!r}: {_reason(exc)}") from None
    _check(name, info, max_bytes)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags)
    except OSError as exc:
        raise FileRejected(f"cannot read {name!r}: {_reason(exc)}") from None
    with os.fdopen(fd, "rb") as handle:
        _check(name, os.fstat(fd), max_bytes)  # the file may have been swapped since the first check
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise FileRejected(f"cannot read {name!r}: {_reason(exc)}") from None
    if len(data) > max_bytes:
        raise FileRejected(f"{name!r} grew past the limit of {max_bytes} bytes while it was read")
    return data


def _check(name: str, info: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise FileRejected(
            f"{name!r} is {_file_type(info.st_mode)}, not a regular file; only regular files are read"
        )
    if info.st_size > max_bytes:
        raise FileRejected(
            f"{name!r} is {info.st_size} bytes, over the limit of {max_bytes}; raise max_bytes= "
            "(mm-rerank ingest --max-bytes) or shrink the file"
        )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


@dataclass
class Listing:
    """The files :func:`list_files` found, and the entries it left out (each with the reason)."""

    files: list[Path] = field(default_factory=list)
    failed: list[IngestFailure] = field(default_factory=list)
    skipped: list[IngestFailure] = field(default_factory=list)


def list_files(root: Path, *, recursive: bool = True, follow_symlinks: bool = False) -> Listing:
    """Every non-hidden file under ``root`` (an absolute, resolved folder), sorted, with a report.

    Hidden files and folders (``.name``) are skipped and reported. A link that points inside ``root`` is
    skipped (its target is read where it is); a link that leaves ``root`` is skipped and reported unless
    ``follow_symlinks=True``; a broken link or a link loop is a failure. Folders reached
    twice through links are walked once.

    Example:
        >>> listing = list_files(Path("my_folder").resolve())  # doctest: +SKIP
        >>> [str(s) for s in listing.skipped]  # doctest: +SKIP
    """
    listing = Listing()
    seen: set[Path] = {root}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            listing.failed.append(IngestFailure(str(folder), f"cannot list: {_reason(exc)}"))
            continue
        subfolders: list[Path] = []
        for entry in entries:
            path = Path(entry.path)
            kind = _classify(entry, root, follow_symlinks, listing)
            if kind == "file":
                listing.files.append(path)
            elif kind == "folder" and not recursive:
                listing.skipped.append(IngestFailure(str(path), "sub-folder (recursive=False)"))
            elif kind == "folder":
                real = path.resolve()
                if real in seen:
                    listing.skipped.append(IngestFailure(str(path), "folder already walked (a link to it)"))
                else:
                    seen.add(real)
                    subfolders.append(path)
        stack.extend(reversed(subfolders))
    listing.files.sort()
    return listing


def _classify(entry: os.DirEntry[str], root: Path, follow_symlinks: bool, listing: Listing) -> str:
    """``"file"``, ``"folder"`` or ``""`` (left out, with the reason recorded in ``listing``)."""
    path = entry.path
    if entry.name.startswith("."):
        what = "hidden folder" if entry.is_dir(follow_symlinks=False) else "hidden file"
        listing.skipped.append(IngestFailure(path, what))
        return ""
    if entry.is_symlink():
        try:
            target = Path(path).resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # RuntimeError: a link loop on some Pythons
            loop = isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == 40
            reason = "symbolic link loop" if loop else "no such file (a broken symbolic link)"
            listing.failed.append(IngestFailure(path, f"cannot read: {reason}"))
            return ""
        inside = target == root or root in target.parents
        if not inside and not follow_symlinks:
            listing.skipped.append(
                IngestFailure(path, "symbolic link to outside the folder (follow_symlinks=True to ingest it)")
            )
            return ""
        if inside:
            listing.skipped.append(IngestFailure(path, "link to a place inside the folder (read there)"))
            return ""
        return "folder" if target.is_dir() else "file"
    return "folder" if entry.is_dir(follow_symlinks=False) else "file"
