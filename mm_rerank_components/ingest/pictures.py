"""Decoding pictures for ingest in a small worker pool, one batch ahead of the embedding model.

Reading, decoding, the preview and the downscale to :data:`~.records.EMBED_MAX_SIDE` run in threads
(Pillow releases the GIL while it decodes and resizes), so the next batch is ready when the model
finishes the current one.
"""

from __future__ import annotations

import io
import math
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mm_rerank_components.ingest.files import FileRejected, read_regular_file
from mm_rerank_components.ingest.records import EMBED_MAX_SIDE, ImageRecord, preview_data_uri, shrink
from mm_rerank_components.media import ImageLoadError, ImageOptions, load_image

#: Pictures in the first batch (the next ones double up to the batch size).
FIRST_BATCH = 4


@dataclass(frozen=True)
class DecodedPicture:
    """A picture ready to embed: the downscaled image, its original size and its preview (or ``None``)."""

    record: ImageRecord
    image: Any
    size: tuple[int, int]
    preview: str | None


@dataclass(frozen=True)
class PictureFailure:
    """A picture that could not be read or decoded."""

    record: ImageRecord
    reason: str


def default_workers() -> int:
    """Decoding threads: one per spare core, at least two (measured faster than one on 2 cores), at most
    four."""
    return max(2, min(4, (os.cpu_count() or 2) - 1))


def decode_picture(
    record: ImageRecord, options: ImageOptions, preview_size: int | None
) -> DecodedPicture | PictureFailure:
    """Read (regular files only, at most ``options.max_bytes``), decode, preview and downscale."""
    try:
        data = read_regular_file(record.path, options.max_bytes)
        image, size = _decode(data, options)
    except (FileRejected, ImageLoadError) as exc:
        return PictureFailure(record, str(exc))
    small = shrink(image)
    preview = preview_data_uri(small, preview_size) if preview_size is not None else None
    return DecodedPicture(record, small, size, preview)


def _decode(data: bytes, options: ImageOptions) -> tuple[Any, tuple[int, int]]:
    """The RGB picture and its original size. A JPEG at least twice :data:`EMBED_MAX_SIDE` is decoded
    at a reduced scale (JPEG's DCT scaling, still at least that size), several times cheaper than a full
    decode; everything else, and every error, goes through :func:`~mm_rerank_components.media.load_image`.
    """
    from PIL import Image

    try:
        opened = Image.open(io.BytesIO(data))
        size = opened.size
        big = opened.format == "JPEG" and max(size) >= 2 * EMBED_MAX_SIDE
        if big and size[0] * size[1] <= options.max_pixels:
            scale = EMBED_MAX_SIDE / max(size)
            opened.draft("RGB", (math.ceil(size[0] * scale), math.ceil(size[1] * scale)))
            opened.load()
            return load_image(opened, options), size
    except Exception:  # noqa: BLE001 - any decoding problem: load_image below names it properly
        pass
    image = load_image(data, options)
    return image, image.size


def _ramp(records: Sequence[ImageRecord], batch_size: int) -> list[Sequence[ImageRecord]]:
    batches: list[Sequence[ImageRecord]] = []
    size, start = min(batch_size, FIRST_BATCH), 0
    while start < len(records):
        batches.append(records[start : start + size])
        start += size
        size = min(batch_size, size * 2)
    return batches


def decoded_batches(
    records: Sequence[ImageRecord],
    batch_size: int,
    options: ImageOptions,
    preview_size: int | None,
    workers: int,
) -> Iterator[list[DecodedPicture | PictureFailure]]:
    """Batches of decoded pictures, in order; the next batch is decoded while the caller embeds this one.

    At most two batches are held in memory at a time. Batches start at :data:`FIRST_BATCH` pictures and
    double up to ``batch_size``, so the model starts early and the pool, which decodes faster than the
    model embeds, stays ahead of it.
    """
    batches = _ramp(records, batch_size)
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mm-rerank-decode") as pool:
        pending: deque[list[Future[DecodedPicture | PictureFailure]]] = deque()

        def submit(batch: Sequence[ImageRecord]) -> None:
            pending.append([pool.submit(decode_picture, r, options, preview_size) for r in batch])

        submit(batches[0])
        for index in range(len(batches)):
            if index + 1 < len(batches):
                submit(batches[index + 1])
            yield [future.result() for future in pending.popleft()]
