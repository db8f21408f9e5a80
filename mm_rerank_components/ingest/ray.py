"""Ingest on Ray Data: decoding, classification and embedding as ``map_batches`` stages across a cluster.

The one writer (:mod:`.write`) still plans, upserts and counts, in this process; only the work that turns
records into vectors runs on Ray, through a :class:`RayEngine`:

* passages: one ``embed`` stage (the text embedding function in ``workers`` actors);
* pictures: a ``decode`` stage (tasks: read, decode, preview, downscale; the same code as a local
  ingest), then one ``embed`` stage in ``workers`` actors: for the starter models, EfficientNet class
  probabilities, ConSE vectors and the compact class lists the reranker reuses (one model copy per
  worker); for any other image embedding function, that function.

So the records are those of :func:`~mm_rerank_components.ingest.ingest_folder`: the same ids (from the
scan), documents and metadata, and vectors from the same models on the same decoded pixels. The actors
rebuild the store's own embedding functions: from their class and ``get_config()`` when the class has
Chroma's ``build_from_config`` (the starter and CLIP functions), else from the function itself, pickled
(the hashing function); one that can be neither is refused before anything runs.

Ray runs locally by default (``ray.init()`` on this machine); ``address="auto"`` or
``"ray://HOST:10001"`` joins a cluster. See ``docs/scale.md`` for how it scales and where Chroma
becomes the limit.

Example:
    >>> from mm_rerank_components.ingest.ray import ingest_folder_ray
    >>> report = ingest_folder_ray("my_folder", retriever, workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mm_rerank_components.ingest.embedders import (
    call_embedding_function,
    embed_pictures_with,
    embedder_name,
    fingerprint,
)
from mm_rerank_components.ingest.pictures import DecodedPicture, PictureFailure, decode_picture
from mm_rerank_components.ingest.records import (
    DEFAULT_PREVIEW_SIZE,
    ImageRecord,
    IngestReport,
    Kind,
    TextRecord,
    check_preview_size,
)
from mm_rerank_components.ingest.scan import FolderScan, scan_folder
from mm_rerank_components.ingest.store import EmbeddedPicture, EmbeddingStore, HasStore, Store, as_store
from mm_rerank_components.ingest.write import OnError, Progress, write_scan
from mm_rerank_components.media import ImageOptions

logger = logging.getLogger(__name__)

__all__ = ["RayEngine", "ingest_folder_ray"]


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            'Ingest on Ray needs ray: pip install "mm-rerank-components[ray]" (ray[data])'
        ) from exc
    return ray


@dataclass(frozen=True)
class _EmbeddedPicture(DecodedPicture):
    """A decoded picture that Ray already embedded (its pixels stayed on the cluster)."""

    embedded: EmbeddedPicture | None = None


#: The embedding-function names each ``embedder=`` spec stands for (a cross-check only).
_SPEC_NAMES = {
    "starter": {"mm_rerank_starter_text", "mm_rerank_starter_image"},
    "hashing": {"mm-rerank-hashing"},
    "clip": {"mm_rerank_clip"},
}


def _recipe(ef: Any) -> Any:
    """What a worker needs to build ``ef`` again: ``(class, config)`` when the class follows Chroma's
    ``build_from_config``, else ``ef`` itself (pickled)."""
    build, get_config = getattr(type(ef), "build_from_config", None), getattr(ef, "get_config", None)
    if callable(build) and callable(get_config):
        return (type(ef), dict(get_config()))
    return ef


def _rebuild(recipe: Any) -> Any:
    if isinstance(recipe, tuple):
        cls, config = recipe
        return cls.build_from_config(config)
    return recipe


def _set_threads(threads: int) -> None:
    try:
        import torch
    except ImportError:  # a model-free embedder (hashing)
        return
    torch.set_num_threads(threads)


def _starter_models(image_ef: Any) -> Any | None:
    """The starter models behind an image embedding function, when it is the starter's (two stages)."""
    from mm_rerank_components.starter.chroma import StarterImageEmbeddingFunction

    return image_ef.models if isinstance(image_ef, StarterImageEmbeddingFunction) else None


class _TextEmbedder:
    """Actor: the text embedding function, built once per worker."""

    def __init__(self, recipe: Any, threads: int) -> None:
        _set_threads(threads)
        self.ef = _rebuild(recipe)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        texts = [str(t) for t in batch["text"]]
        try:
            vectors = call_embedding_function(self.ef, texts, query=False)
            errors = [""] * len(texts)
        except Exception as exc:  # noqa: BLE001 - reported per passage by the writer
            vectors, errors = [[] for _ in texts], [f"{type(exc).__name__}: {exc}"] * len(texts)
        return {"i": batch["i"], "vector": [list(map(float, v)) for v in vectors], "error": errors}


def _decode(batch: dict[str, Any], options: ImageOptions, preview_size: int | None) -> dict[str, Any]:
    """Task: read, decode, preview and downscale, exactly as a local ingest (``decode_picture``)."""
    out: dict[str, list[Any]] = {
        k: [] for k in ("i", "pixels", "width", "height", "size", "preview", "error")
    }
    for i, path in zip(batch["i"], batch["path"], strict=True):
        record = ImageRecord(id=str(i), path=str(path), caption=None, metadata={})
        result = decode_picture(record, options, preview_size)
        out["i"].append(i)
        if isinstance(result, PictureFailure):
            out["pixels"].append(b"")
            out["width"].append(0)
            out["height"].append(0)
            out["size"].append([0, 0])
            out["preview"].append("")
            out["error"].append(result.reason)
            continue
        image = result.image.convert("RGB")
        out["pixels"].append(image.tobytes())
        out["width"].append(image.width)
        out["height"].append(image.height)
        out["size"].append(list(result.size))
        out["preview"].append(result.preview or "")
        out["error"].append("")
    return out


def _images(batch: dict[str, Any]) -> tuple[list[int], list[Any]]:
    """The decoded pictures of a batch (rows without an error) and their positions."""
    from PIL import Image

    keep = [n for n, error in enumerate(batch["error"]) if not error]
    images = [
        Image.frombytes("RGB", (int(batch["width"][n]), int(batch["height"][n])), bytes(batch["pixels"][n]))
        for n in keep
    ]
    return keep, images


def _failed_rows(batch: dict[str, Any], keep: list[int], exc: Exception) -> list[str]:
    errors = [str(e) for e in batch["error"]]
    for n in keep:
        errors[n] = f"embedding failed: {type(exc).__name__}: {exc}"
    return errors


def _passed(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: batch[k] for k in ("i", "size", "preview")}


class _StarterPictures:
    """Actor: the starter's picture model, once per worker: class probabilities, then the ConSE vectors and
    compact class lists the reranker reuses (what ``embed_with_classes`` does, in one stage, so a worker
    holds one copy of the model and probabilities never travel between stages)."""

    def __init__(self, recipe: Any, threads: int) -> None:
        _set_threads(threads)
        self.models: Any = _starter_models(_rebuild(recipe))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        keep, images = _images(batch)
        vectors: list[list[float]] = [[] for _ in batch["i"]]
        metadata: list[dict[str, str]] = [{} for _ in batch["i"]]
        errors = [str(e) for e in batch["error"]]
        if images:
            try:
                rows = self._embed(images)
            except Exception as exc:  # noqa: BLE001 - reported per picture by the writer
                errors = _failed_rows(batch, keep, exc)
            else:
                for n, (vector, meta) in zip(keep, rows, strict=True):
                    vectors[n], metadata[n] = vector, meta
        return {**_passed(batch), "vector": vectors, "meta": metadata, "error": errors}

    def _embed(self, images: list[Any]) -> list[tuple[list[float], dict[str, str]]]:
        import numpy as np

        from mm_rerank_components.ingest.records import CLASSES_KEY, CLASSES_PRODUCER_KEY
        from mm_rerank_components.starter.precomputed import (
            DEFAULT_COMPACT_K,
            compact_classes,
            image_producer,
        )

        probs = np.asarray(self.models.image_probabilities(images), dtype=np.float32)
        embedded = self.models.conse(probs)
        producer = image_producer(self.models)
        return [
            (
                [float(x) for x in vector],
                {CLASSES_KEY: compact_classes(row, DEFAULT_COMPACT_K), CLASSES_PRODUCER_KEY: producer},
            )
            for vector, row in zip(embedded, probs, strict=True)
        ]


class _PictureEmbedder:
    """Actor: any other image embedding function, in one stage (``embed_pictures`` of the store)."""

    def __init__(self, recipe: Any, threads: int) -> None:
        _set_threads(threads)
        self.ef = _rebuild(recipe)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        keep, images = _images(batch)
        vectors: list[list[float]] = [[] for _ in batch["i"]]
        metadata: list[dict[str, str]] = [{} for _ in batch["i"]]
        errors = [str(e) for e in batch["error"]]
        if images:
            try:
                embedded = embed_pictures_with(self.ef, images)
            except Exception as exc:  # noqa: BLE001 - reported per picture by the writer
                errors = _failed_rows(batch, keep, exc)
            else:
                for n, picture in zip(keep, embedded, strict=True):
                    vectors[n] = list(picture.vector)
                    metadata[n] = {str(k): str(v) for k, v in picture.metadata.items()}
        return {**_passed(batch), "vector": vectors, "meta": metadata, "error": errors}


def _items(ray: Any, rows: list[dict[str, Any]], batch_size: int) -> Any:
    """A dataset of ``rows`` in blocks of one batch each, so every worker gets work from the start."""
    return ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / batch_size)))


class RayEngine:
    """Decoding and embedding on Ray Data for the one writer (see the module docstring).

    Args:
        workers: actors per model stage (and decoding tasks at a time); 2 fills a 2-core machine.
        embedder: optional cross-check: the embedder name the store was built with (``"starter"``,
            ``"hashing"``, ``"clip:PATH"``); the actors always rebuild the store's own functions.
        address: a Ray cluster to join (``"auto"``, ``"ray://HOST:10001"``); None starts or reuses a
            local Ray with ``workers`` CPUs.
        threads: torch threads per actor (1: the workers, not the threads, use the cores).

    Example:
        >>> RayEngine(workers=2).workers
        2
    """

    def __init__(
        self, workers: int = 2, *, embedder: str | None = None, address: str | None = None, threads: int = 1
    ) -> None:
        for label, value in (("workers", workers), ("threads", threads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive int, got {value!r}")
        if embedder is not None and embedder.split(":", 1)[0] not in _SPEC_NAMES:
            raise ValueError(f"unknown embedder {embedder!r}; use one of starter, hashing, clip:PATH")
        self.workers = workers
        self.embedder = embedder
        self.address = address
        self.threads = threads
        self._recipes: dict[int, tuple[Any, Any]] = {}
        self._starter: dict[int, bool] = {}

    # -- setup ------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start or join Ray now (otherwise the first write does)."""
        ray = _ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address is None:
                kwargs["num_cpus"] = self.workers
            else:
                kwargs["address"] = self.address
            ray.init(**kwargs)
            ray.data.DataContext.get_current().enable_progress_bars = False

    def _recipes_for(self, store: Store) -> tuple[Any, Any]:
        """The store's text and image functions as the actors rebuild them (checked once per store)."""
        if id(store) in self._recipes:
            return self._recipes[id(store)]
        if not isinstance(store, EmbeddingStore):
            raise TypeError(
                f"ingest on Ray rebuilds the store's embedding functions in its workers, but "
                f"{type(store).__name__} has no embedding_function(kind); use a ChromaStore or retriever"
            )
        recipes = []
        for kind in ("text", "image"):
            ef = store.embedding_function(kind) if store.collection_name(kind) is not None else None
            self._cross_check(kind, ef)
            recipes.append(self._checked_recipe(kind, ef))
        self._starter[id(store)] = _starter_models(store.embedding_function("image")) is not None
        self._recipes[id(store)] = (recipes[0], recipes[1])
        return self._recipes[id(store)]

    def _cross_check(self, kind: Kind, ef: Any) -> None:
        if self.embedder is None or ef is None:
            return
        names = _SPEC_NAMES[self.embedder.split(":", 1)[0]]
        if embedder_name(ef) not in names:
            raise ValueError(
                f"RayEngine(embedder={self.embedder!r}) expects {sorted(names)} for the {kind} collection, "
                f"but the store embeds with {fingerprint(ef)!r}; pass the embedder the retriever was "
                "built with"
            )

    @staticmethod
    def _checked_recipe(kind: Kind, ef: Any) -> Any:
        if ef is None:
            return None
        recipe = _recipe(ef)
        try:
            _ray().cloudpickle.dumps(recipe)
        except Exception as exc:
            raise ValueError(
                f"the {kind} embedding function {embedder_name(ef)!r} cannot be sent to Ray workers "
                f"({type(exc).__name__}: {exc}); give its class Chroma's get_config()/build_from_config(), "
                "or make it picklable"
            ) from exc
        return recipe

    def _stage(self, ds: Any, fn: Callable[..., Any], batch_size: int, recipe: Any, **kwargs: Any) -> Any:
        return ds.map_batches(
            fn,
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=self.workers,
            num_cpus=1,
            fn_constructor_kwargs={"recipe": recipe, "threads": self.threads},
            **kwargs,
        )

    # -- Engine -----------------------------------------------------------------------------------------
    def text_vectors(
        self, store: Store, records: Sequence[TextRecord], batch_size: int
    ) -> Iterator[tuple[list[TextRecord], list[list[float]] | Exception]]:
        if not records:
            return
        text_recipe, _ = self._recipes_for(store)
        self.start()
        ray = _ray()
        rows = [{"i": n, "text": r.text} for n, r in enumerate(records)]
        ds = self._stage(_items(ray, rows, batch_size), _TextEmbedder, batch_size, text_recipe)
        for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
            done = [records[int(i)] for i in batch["i"]]
            failed = [str(e) for e in batch["error"] if e]
            if failed:
                yield done, RuntimeError(failed[0])
            else:
                yield done, [list(map(float, v)) for v in batch["vector"]]

    def pictures(
        self,
        store: Store,
        records: Sequence[ImageRecord],
        batch_size: int,
        options: ImageOptions,
        preview_size: int | None,
    ) -> Iterator[list[DecodedPicture | PictureFailure]]:
        if not records:
            return
        _, image_recipe = self._recipes_for(store)
        self.start()
        ray = _ray()
        rows = [{"i": n, "path": r.path} for n, r in enumerate(records)]
        ds = _items(ray, rows, batch_size).map_batches(
            _decode,
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=self.workers,
            num_cpus=1,
            fn_kwargs={"options": options, "preview_size": preview_size},
        )
        if self._starter[id(store)]:
            ds = self._stage(ds, _StarterPictures, batch_size, image_recipe)
        else:
            ds = self._stage(ds, _PictureEmbedder, batch_size, image_recipe)
        for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
            yield [self._result(records, batch, n) for n in range(len(batch["i"]))]

    @staticmethod
    def _result(
        records: Sequence[ImageRecord], batch: dict[str, Any], n: int
    ) -> DecodedPicture | PictureFailure:
        record = records[int(batch["i"][n])]
        if batch["error"][n]:
            return PictureFailure(record, str(batch["error"][n]))
        width, height = (int(x) for x in batch["size"][n])
        embedded = EmbeddedPicture([float(x) for x in batch["vector"][n]], dict(batch["meta"][n]))
        preview = str(batch["preview"][n]) or None
        return _EmbeddedPicture(record, None, (width, height), preview, embedded)

    def embed_pictures(self, store: Store, decoded: list[DecodedPicture]) -> list[EmbeddedPicture]:
        out = []
        for d in decoded:
            if not isinstance(d, _EmbeddedPicture) or d.embedded is None:
                raise TypeError("RayEngine.embed_pictures takes the pictures its own pictures() yielded")
            out.append(d.embedded)
        return out


def ingest_folder_ray(
    folder: str | os.PathLike[str],
    retriever: Store | HasStore,
    *,
    workers: int = 2,
    embedder: str | None = None,
    address: str | None = None,
    threads: int = 1,
    batch_size: int = 32,
    recursive: bool = True,
    max_chars: int = 2000,
    on_error: OnError = "collect",
    progress: Progress | None = None,
    scan: FolderScan | None = None,
    preview_size: int | None = DEFAULT_PREVIEW_SIZE,
    follow_symlinks: bool = False,
    max_bytes: int | None = None,
) -> IngestReport:
    """:func:`~mm_rerank_components.ingest.ingest_folder` with decoding and embedding on Ray Data.

    The same records and ids as a local ingest, written by the same writer; ``workers``, ``embedder``,
    ``address`` and ``threads`` are :class:`RayEngine`'s, the rest ``ingest_folder``'s.

    Example:
        >>> report = ingest_folder_ray("my_folder", retriever, workers=4)  # doctest: +SKIP
        >>> print(report.summary())  # doctest: +SKIP
    """
    store = as_store(retriever)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    check_preview_size(preview_size)
    engine = RayEngine(workers, embedder=embedder, address=address, threads=threads)
    start = time.perf_counter()
    if scan is None:
        limit = store.image_options.max_bytes if max_bytes is None else max_bytes
        scan = scan_folder(
            folder, recursive=recursive, max_chars=max_chars, follow_symlinks=follow_symlinks, max_bytes=limit
        )
    report = write_scan(scan, store, engine, batch_size, on_error, progress, preview_size)
    report.seconds = time.perf_counter() - start
    logger.info(
        "ingested %s on Ray (%d workers): %s in %.1f s", scan.root, workers, report.summary(), report.seconds
    )
    return report
