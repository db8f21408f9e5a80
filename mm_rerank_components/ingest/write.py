"""The only writer: folder ingest and the ``add_texts``/``add_images`` of the retriever share this code.

One stale-record rule holds for every write: a record is skipped when its id is stored with the same
content id; otherwise it is written, and afterwards any other record stored for the same source ``path``
is deleted (counted as ``updated``), unless the new version failed, so a bad edit never loses the old one.
Records without a path (passages given directly without ``metadata["path"]``) are identified by id alone.
A document's figures carry the document's path as their ``path`` metadata (their PNG is the URI and
``image_path``), so a changed PDF/HTML/DOCX replaces its figures too, and a document read again that no
longer yields any passage (or figure) loses its old ones (issue 25).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from mm_rerank_components.ingest.embedders import (
    CAPTION_EMBEDDING_KEY,
    CAPTION_PRODUCER_KEY,
    pack_vector,
    text_producer,
)
from mm_rerank_components.ingest.files import FileRejected, read_regular_file
from mm_rerank_components.ingest.pictures import (
    DecodedPicture,
    PictureFailure,
    decoded_batches,
    default_workers,
)
from mm_rerank_components.ingest.records import (
    DEFAULT_PREVIEW_SIZE,
    ImageRecord,
    IngestError,
    IngestFailure,
    IngestReport,
    Kind,
    TextRecord,
    bare_text_id,
    check_preview_size,
    clean_caption,
    image_metadata,
    record_id,
    text_metadata,
)
from mm_rerank_components.ingest.scan import FolderScan, scan_folder
from mm_rerank_components.ingest.store import EmbeddedPicture, EmbeddingStore, HasStore, Store, as_store
from mm_rerank_components.media import ImageOptions

logger = logging.getLogger(__name__)

OnError = Literal["collect", "raise"]
Progress = Callable[[int], None]


def ingest_folder(
    folder: str | os.PathLike[str],
    retriever: Store | HasStore,
    *,
    batch_size: int = 32,
    recursive: bool = True,
    max_chars: int = 2000,
    on_error: OnError = "collect",
    progress: Progress | None = None,
    scan: FolderScan | None = None,
    preview_size: int | None = DEFAULT_PREVIEW_SIZE,
    follow_symlinks: bool = False,
    max_bytes: int | None = None,
    workers: int | None = None,
    engine: Engine | None = None,
) -> IngestReport:
    """Embed and upsert every passage and picture of ``folder`` into ``retriever``'s collections.

    Args:
        retriever: a :class:`~mm_rerank_components.retrievers.ChromaMultiCollectionRetriever` (or any
            :class:`~mm_rerank_components.ingest.store.Store`).
        batch_size: records embedded per call of an embedding function.
        on_error: ``"collect"`` (default) ingests everything it can and lists failures in the report;
            ``"raise"`` raises :class:`IngestError` on the first bad file (records already written stay).
        progress: called with the number of records just processed (the CLI feeds a progress bar).
        scan: a ready :func:`scan_folder` result, so a caller can size a progress bar first.
        preview_size: also store a small JPEG preview of each picture (longest side in pixels) in its
            metadata (``preview``, a data URI), which a retriever built with
            ``candidate_image="preview"`` hands to the reranker instead of the full file; ``None``
            stores none.
        follow_symlinks: also ingest links that lead out of the folder (default: reported as skipped).
        max_bytes: largest file read (default: the retriever's ``image_options.max_bytes``, 20 MB).
        workers: threads decoding pictures while the model embeds (default: one per spare core, 2 to 4).
        engine: where decoding and embedding run (default: this process, :class:`LocalEngine`);
            :func:`~mm_rerank_components.ingest.ray.ingest_folder_ray` passes a Ray Data engine.

    Example:
        >>> report = ingest_folder("my_folder", retriever)  # doctest: +SKIP
        >>> print(report.summary())  # doctest: +SKIP
    """
    store = as_store(retriever)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    check_preview_size(preview_size)
    _check_on_error(on_error)
    start = time.perf_counter()
    if scan is None:
        limit = store.image_options.max_bytes if max_bytes is None else max_bytes
        scan = scan_folder(
            folder, recursive=recursive, max_chars=max_chars, follow_symlinks=follow_symlinks, max_bytes=limit
        )
    engine = engine or LocalEngine(default_workers() if workers is None else workers)
    report = write_scan(scan, store, engine, batch_size, on_error, progress, preview_size)
    report.seconds = time.perf_counter() - start
    logger.info("ingested %s: %s in %.1f s", scan.root, report.summary(), report.seconds)
    return report


def write_scan(
    scan: FolderScan,
    store: Store,
    engine: Engine,
    batch_size: int,
    on_error: OnError,
    progress: Progress | None,
    preview_size: int | None,
) -> IngestReport:
    """Write a scanned folder through the one writer, with ``engine`` doing the embedding work."""
    if on_error == "raise" and scan.failed:
        raise IngestError(f"cannot ingest {scan.failed[0]}")
    report = IngestReport(
        failed=list(scan.failed), skipped=list(scan.skipped), texts=len(scan.texts), images=len(scan.images)
    )
    for failure in scan.failed:
        logger.warning("not ingested: %s", failure)
    store.create_collections()
    writer = _Writer(store, batch_size, report, progress, on_error, engine)
    documents = _documents_read(scan)
    writer.write_texts(scan.texts, documents)
    # pictures are read again to decode them, with the limit the scan used
    options = dataclasses.replace(store.image_options, max_bytes=scan.max_bytes)
    writer.write_images(scan.images, preview_size, options, documents)
    return report


def _documents_read(scan: FolderScan) -> list[str]:
    """The documents (PDF, HTML, DOCX) this scan read: their records are versions of the document."""
    found: dict[str, None] = {}
    records: list[TextRecord | ImageRecord] = [*scan.texts, *scan.images]
    for record in records:
        path = record.metadata.get("path")
        if isinstance(path, str) and record.metadata.get("document_path") == path:
            found[path] = None
    return list(found)


def _source(record: TextRecord | ImageRecord) -> str | None:
    """What a record is a version of (the stale-record rule's key): its ``path`` metadata, else its file."""
    path = record.metadata.get("path")
    return path if isinstance(path, str) else record.path


class Engine(Protocol):
    """Where the embedding work of a write runs: in this process (:class:`LocalEngine`) or on a Ray
    cluster (:class:`~mm_rerank_components.ingest.ray.RayEngine`). The writer plans, upserts and counts;
    an engine only turns records into vectors, in order."""

    def text_vectors(
        self, store: Store, records: Sequence[TextRecord], batch_size: int
    ) -> Iterator[tuple[list[TextRecord], list[list[float]] | Exception]]:
        """Batches of passages with their vectors (or the exception embedding them raised)."""
        ...

    def pictures(
        self,
        store: Store,
        records: Sequence[ImageRecord],
        batch_size: int,
        options: ImageOptions,
        preview_size: int | None,
    ) -> Iterator[list[DecodedPicture | PictureFailure]]:
        """Batches of decoded pictures, in order; the writer embeds them with :meth:`embed_pictures`."""
        ...

    def embed_pictures(self, store: Store, decoded: list[DecodedPicture]) -> list[EmbeddedPicture]:
        """Vectors of a batch from :meth:`pictures` (already embedded by an engine that embeds while it
        decodes)."""
        ...


class LocalEngine:
    """Embedding in this process: pictures decoded in ``workers`` threads one batch ahead of the model.

    Example:
        >>> LocalEngine(workers=2).workers
        2
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def text_vectors(
        self, store: Store, records: Sequence[TextRecord], batch_size: int
    ) -> Iterator[tuple[list[TextRecord], list[list[float]] | Exception]]:
        for start in range(0, len(records), batch_size):
            batch = list(records[start : start + batch_size])
            vectors: list[list[float]] | Exception
            try:
                vectors = store.embed_texts([r.text for r in batch], kind="text")
            except Exception as exc:  # noqa: BLE001 - any embedding error; the writer names the files
                vectors = exc
            yield batch, vectors

    def pictures(
        self,
        store: Store,
        records: Sequence[ImageRecord],
        batch_size: int,
        options: ImageOptions,
        preview_size: int | None,
    ) -> Iterator[list[DecodedPicture | PictureFailure]]:
        return decoded_batches(records, batch_size, options, preview_size, self.workers)

    def embed_pictures(self, store: Store, decoded: list[DecodedPicture]) -> list[EmbeddedPicture]:
        return list(store.embed_pictures([d.image for d in decoded]))


def add_texts(
    retriever: Store | HasStore,
    texts: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    batch_size: int = 32,
) -> IngestReport:
    """Write passages given directly.

    Ids default to the content id of the text alone (:func:`~.records.bare_text_id`); a
    ``metadata["path"]`` makes the passage a version of that source instead (its id also hashes the path
    and metadata, and the stale-record rule applies). Changed metadata or text under the same id is
    written (``updated``); the same content again is ``unchanged``.

    Example:
        >>> add_texts(retriever, ["Foxes live in dens."]).added  # doctest: +SKIP
        1
    """
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is a {type(text).__name__}, not a str")
    metas = _metadatas(metadatas, len(texts))
    records: list[TextRecord] = []
    for i, text in enumerate(texts):
        extra = {k: v for k, v in metas[i].items() if k != "path"}
        path = metas[i].get("path")
        path = str(path) if path is not None else None
        cid = record_id("text", text.encode("utf-8", "surrogatepass"), path, "0", extra)
        metadata = text_metadata(extra, cid=cid, path=path, rel_path=None, title=extra.get("title"))
        id_ = cid if path is not None else bare_text_id(text)
        records.append(TextRecord(id=id_, path=path, text=text, metadata=metadata))
    records = _with_ids(records, ids, lambda a, b: a.text == b.text)
    report = IngestReport(texts=len(texts))
    store = as_store(retriever)
    store.create_collections()
    _Writer(store, batch_size, report, None, "collect", LocalEngine(default_workers())).write_texts(records)
    report.unchanged += len(texts) - len(records)  # repeats within the call
    return report


def add_images(
    retriever: Store | HasStore,
    images: Sequence[str | os.PathLike[str]],
    *,
    ids: Sequence[str] | None = None,
    captions: Sequence[str | None] | None = None,
    metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    preview_size: int | None = DEFAULT_PREVIEW_SIZE,
    batch_size: int = 32,
) -> IngestReport:
    """Write picture files (URI = absolute path, document = caption), exactly as folder ingest would.

    Ids default to the content id of the file's bytes, path, caption and metadata. A file that cannot be
    read (not a regular file, too large, missing) or decoded is listed in the report's ``failed``; the
    others are still written.

    Example:
        >>> add_images(retriever, ["fox.jpg"], captions=["a red fox"]).added  # doctest: +SKIP
        1
    """
    check_preview_size(preview_size)
    store = as_store(retriever)
    paths = list(images)
    caps = list(captions) if captions is not None else [None] * len(paths)
    metas = _metadatas(metadatas, len(paths))
    _check_lengths(images=paths, captions=caps, ids=paths if ids is None else list(ids))
    report = IngestReport(images=len(paths))
    records: list[ImageRecord | None] = []
    for path, caption, extra in zip(paths, caps, metas, strict=True):
        record, failure = _image_record(path, clean_caption(caption), extra, store.image_options.max_bytes)
        records.append(record)
        if failure is not None:
            report.failed.append(failure)
            logger.warning("not added: %s", failure)
    kept = _with_ids(records, ids, lambda a, b: a.metadata == b.metadata)
    report.unchanged += len(paths) - len(kept) - len(report.failed)  # repeats within the call
    store.create_collections()
    _Writer(store, batch_size, report, None, "collect", LocalEngine(default_workers())).write_images(
        kept, preview_size
    )
    return report


def _image_record(
    path: str | os.PathLike[str], caption: str | None, extra: Mapping[str, Any], max_bytes: int
) -> tuple[ImageRecord | None, IngestFailure | None]:
    name = os.fspath(path)
    try:
        absolute = str(Path(name).expanduser().resolve())
        data = read_regular_file(absolute, max_bytes)
    except (FileRejected, OSError, RuntimeError, ValueError) as exc:  # RuntimeError: a link loop
        reason = str(exc) if isinstance(exc, FileRejected) else f"cannot read {name!r}: {exc}"
        return None, IngestFailure(name, reason)
    extra = dict(extra)
    cid = record_id("image", data, absolute, caption or "", extra)
    metadata = image_metadata(extra, cid=cid, path=absolute, rel_path=None, caption=caption)
    return ImageRecord(id=cid, path=absolute, caption=caption, metadata=metadata), None


def _with_ids(
    records: Sequence[Any], ids: Sequence[str] | None, same: Callable[[Any, Any], bool]
) -> list[Any]:
    """Apply caller ids (else keep the content ids), drop ``None`` records, and drop repeats of an id
    within the call; an id given twice for different content is an error."""
    if ids is not None:
        ids = list(ids)
        _check_lengths(items=records, ids=ids)
        for i, id_ in enumerate(ids):
            if not isinstance(id_, str) or not id_:
                raise ValueError(f"ids[{i}] must be a non-empty str, got {id_!r}")
    first: dict[str, Any] = {}
    for i, record in enumerate(records):
        if record is None:
            continue
        id_ = ids[i] if ids is not None else record.id
        record = dataclasses.replace(record, id=id_)
        if id_ in first and not same(first[id_], record):
            raise ValueError(f"id {id_!r} is given twice with different content; ids must be unique")
        first.setdefault(id_, record)
    return list(first.values())


def _check_on_error(on_error: str) -> None:
    if on_error not in ("collect", "raise"):
        raise ValueError(f"on_error must be 'collect' or 'raise', got {on_error!r}")


def _check_lengths(**columns: Sequence[Any]) -> None:
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"lengths differ: {lengths}; pass one value per item")


def _metadatas(metadatas: Sequence[Mapping[str, Any] | None] | None, n: int) -> list[dict[str, Any]]:
    if metadatas is None:
        return [{} for _ in range(n)]
    metas = [dict(m or {}) for m in metadatas]
    if len(metas) != n:
        raise ValueError(f"metadatas has {len(metas)} entries for {n} items; pass one per item")
    return metas


@dataclass
class _Plan:
    """What to write for one kind: the new or changed records, and the stale ids per source path."""

    todo: list[Any]
    replaced: set[str] = field(default_factory=set)
    stale: dict[str, set[str]] = field(default_factory=dict)
    failed_paths: set[str] = field(default_factory=set)
    #: the source of each record file that is not its own source (a figure's document)
    sources: dict[str, str] = field(default_factory=dict)


class _Writer:
    """Embeds and upserts records of one run, counting them into ``report``."""

    def __init__(
        self,
        store: Store,
        batch_size: int,
        report: IngestReport,
        progress: Progress | None,
        on_error: str,
        engine: Engine,
    ) -> None:
        self.engine = engine
        self.store = store
        self.batch_size = batch_size
        self.report = report
        self.progress = progress
        self.on_error = on_error

    def _tick(self, n: int) -> None:
        if self.progress is not None and n:
            self.progress(n)

    def _fail(self, path: str, reason: str, plan: _Plan | None = None) -> None:
        if self.on_error == "raise":
            raise IngestError(f"cannot ingest {path}: {reason}")
        if plan is not None:
            if path in plan.failed_paths:
                return
            plan.failed_paths.add(path)
        self.report.failed.append(IngestFailure(path, reason))
        logger.warning("not ingested: %s: %s", path, reason)

    def _switched_off(
        self, kind: Kind, records: Sequence[TextRecord | ImageRecord], documents: Sequence[str] = ()
    ) -> bool:
        if not records:  # nothing to write, but documents read again may have left some records stale
            return not documents or self.store.collection_name(kind) is None
        if self.store.collection_name(kind) is not None:
            return False
        for path in dict.fromkeys(r.path or r.id for r in records):
            self._fail(path, f"the {kind} collection is switched off")
        return True

    def _plan(
        self, kind: Kind, records: Sequence[TextRecord | ImageRecord], documents: Sequence[str] = ()
    ) -> _Plan:
        stored = self.store.existing_ids(kind, [r.id for r in records])
        chosen = [r.id for r in records if r.id in stored and r.id != r.metadata["content_id"]]
        versions = self.store.content_ids(kind, chosen) if chosen else {}
        todo = [
            r for r in records if r.id not in stored or versions.get(r.id, r.id) != r.metadata["content_id"]
        ]
        self.report.unchanged += len(records) - len(todo)
        self._tick(len(records) - len(todo))
        wanted: dict[str, set[str]] = {path: set() for path in documents}
        sources: dict[str, str] = {}
        for r in records:
            source = _source(r)
            if source is not None:
                wanted.setdefault(source, set()).add(r.id)
                if r.path is not None and r.path != source:
                    sources[r.path] = source
        stale = self.store.ids_for_paths(kind, wanted) if wanted else {}
        replaced = {r.id for r in todo if r.id in stored}
        return _Plan(todo, replaced, {p: ids for p, ids in stale.items() if ids}, sources=sources)

    def _count(self, plan: _Plan, written: Sequence[TextRecord | ImageRecord]) -> None:
        for r in written:
            if r.id in plan.replaced or _source(r) in plan.stale:
                self.report.updated += 1
            else:
                self.report.added += 1

    def _drop_stale(self, kind: Kind, plan: _Plan) -> None:
        failed = plan.failed_paths | {plan.sources[p] for p in plan.failed_paths if p in plan.sources}
        ids = [i for path, ids in plan.stale.items() if path not in failed for i in ids]
        if ids:
            self.store.delete(kind, ids)
            logger.info("replaced %d outdated %s records", len(ids), kind)

    def write_texts(self, records: Sequence[TextRecord], documents: Sequence[str] = ()) -> None:
        if self._switched_off("text", records, documents):
            return
        plan = self._plan("text", records, documents)
        for batch, vectors in self.engine.text_vectors(self.store, plan.todo, self.batch_size):
            if isinstance(vectors, Exception):  # an embedding function may raise anything; name the files
                exc = vectors
                if self.on_error == "raise":
                    raise IngestError(
                        f"embedding passages failed ({batch[0].path or batch[0].id}...): {exc}"
                    ) from exc
                for r in batch:
                    self._fail(r.path or r.id, f"embedding failed: {exc}", plan)
                self._tick(len(batch))
                continue
            self.store.upsert(
                "text",
                ids=[r.id for r in batch],
                embeddings=vectors,
                documents=[r.text for r in batch],
                metadatas=[r.metadata for r in batch],
            )
            self._count(plan, batch)
            self._tick(len(batch))
        self._drop_stale("text", plan)

    def write_images(
        self,
        records: Sequence[ImageRecord],
        preview_size: int | None,
        options: ImageOptions | None = None,
        documents: Sequence[str] = (),
    ) -> None:
        if self._switched_off("image", records, documents):
            return
        plan = self._plan("image", records, documents)
        options = options or self.store.image_options
        for batch in self.engine.pictures(self.store, plan.todo, self.batch_size, options, preview_size):
            decoded: list[DecodedPicture] = []
            for item in batch:
                if isinstance(item, PictureFailure):
                    self._fail(item.record.path, item.reason, plan)
                else:
                    decoded.append(item)
            embedded = self._embed_pictures(decoded, plan)
            written = [(d, e) for d, e in zip(decoded, embedded, strict=True) if e is not None]
            if written:
                captions = self._caption_metadata([d.record.caption for d, _ in written])
                self.store.upsert(
                    "image",
                    ids=[d.record.id for d, _ in written],
                    embeddings=[e.vector for _, e in written],
                    documents=[d.record.caption for d, _ in written],
                    uris=[d.record.path for d, _ in written],
                    metadatas=[
                        {**_picture_metadata(d, e), **c} for (d, e), c in zip(written, captions, strict=True)
                    ],
                )
                self._count(plan, [d.record for d, _ in written])
            self._tick(len(batch))
        self._drop_stale("image", plan)

    def _caption_metadata(self, captions: Sequence[str | None]) -> list[dict[str, str]]:
        """Each caption's text embedding, packed, for the reranker to reuse (issue 21): empty where a
        picture has no caption, or the text function names no producer a scorer could check."""
        out: list[dict[str, str]] = [{} for _ in captions]
        ef = self.store.embedding_function("text") if isinstance(self.store, EmbeddingStore) else None
        producer = text_producer(ef) if ef is not None else None
        wanted = [n for n, c in enumerate(captions) if c]
        if producer is None or not wanted:
            return out
        try:
            vectors = self.store.embed_texts([str(captions[n]) for n in wanted], kind="text")
        except Exception as exc:  # noqa: BLE001 - a saving only: the reranker embeds the captions itself
            logger.warning(
                "caption embeddings of %d pictures not stored (%s); the reranker computes them",
                len(wanted),
                exc,
            )
            return out
        for n, vector in zip(wanted, vectors, strict=True):
            out[n] = {CAPTION_EMBEDDING_KEY: pack_vector(vector), CAPTION_PRODUCER_KEY: producer}
        return out

    def _embed_pictures(self, decoded: list[DecodedPicture], plan: _Plan) -> list[EmbeddedPicture | None]:
        if not decoded:
            return []
        try:
            return list(self.engine.embed_pictures(self.store, decoded))
        except Exception as exc:  # an embedding function may raise anything; find the file
            if self.on_error == "raise":
                raise IngestError(f"embedding a batch of pictures failed: {exc}") from exc
            logger.warning("embedding %d pictures failed (%s); retrying one by one", len(decoded), exc)
        out: list[EmbeddedPicture | None] = []
        for d in decoded:
            try:
                out.append(self.store.embed_pictures([d.image])[0])
            except Exception as exc:  # noqa: BLE001 - any embedding error, now pinned to one file
                self._fail(d.record.path, f"embedding failed: {exc}", plan)
                out.append(None)
        return out


def _picture_metadata(decoded: DecodedPicture, embedded: EmbeddedPicture) -> dict[str, Any]:
    return {
        **decoded.record.metadata,
        **embedded.metadata,
        "width": decoded.size[0],
        "height": decoded.size[1],
        "preview": decoded.preview,
    }
