"""Turning Chroma query results into Candidates, and merging the routes (keyed by collection and id)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from mm_rerank_components.ingest.embedders import CAPTION_EMBEDDING_KEY, CAPTION_PRODUCER_KEY, unpack_vector
from mm_rerank_components.ingest.records import (
    CLASSES_KEY,
    CLASSES_PRODUCER_KEY,
    CONTENT_ID_KEY,
    PREVIEW_KEY,
)
from mm_rerank_components.media import image_key, text_key
from mm_rerank_components.types import Candidate, Precomputed

logger = logging.getLogger(__name__)

SPACES = ("cosine", "l2", "ip")
TEXT_EMBEDDING = "text_embedding"
IMAGE_CLASSES = "image_classes"


def distance_to_similarity(distance: float, space: str) -> float:
    """Turn a Chroma distance into a similarity where higher is better.

    * ``cosine``: Chroma returns ``1 - cos``; the similarity is ``cos = 1 - distance`` (in ``[-1, 1]``).
    * ``ip``: Chroma returns ``1 - dot``; the similarity is ``dot = 1 - distance``.
    * ``l2``: Chroma returns the *squared* Euclidean distance; the similarity is ``1 - distance / 2``,
      which equals the cosine for unit-length vectors and is a decreasing map of the distance otherwise.

    Example:
        >>> distance_to_similarity(0.25, "cosine")
        0.75
        >>> distance_to_similarity(0.5, "l2")
        0.75
    """
    if space in ("cosine", "ip"):
        return 1.0 - distance
    if space == "l2":
        return 1.0 - distance / 2.0
    raise ValueError(f"unknown Chroma distance space {space!r}; expected one of {', '.join(SPACES)}")


@dataclass(frozen=True)
class Hit:
    """One hit of one route (query part -> collection), at its rank in that route."""

    candidate: Candidate
    route: str
    rank: int

    @property
    def key(self) -> tuple[str | None, str]:
        """Records are identified by collection *and* id: two collections may reuse an id."""
        return self.candidate.source, self.candidate.id


@dataclass(frozen=True)
class HitOptions:
    """How a route's results become Candidates."""

    kind: str
    collection: str
    space: str
    route: str
    candidate_image: str
    text_producer: str | None = None


def hits_from_result(result: Mapping[str, Any], options: HitOptions) -> list[Hit]:
    """The Candidates of one Chroma ``query`` result (one query embedding), in rank order."""
    ids = result["ids"][0]
    columns = {
        name: (result.get(name) or [[None] * len(ids)])[0]
        for name in ("documents", "metadatas", "distances", "uris", "embeddings")
    }
    if columns["embeddings"] is None:
        columns["embeddings"] = [None] * len(ids)
    hits: list[Hit] = []
    for rank, id_ in enumerate(ids):
        row = {name: values[rank] for name, values in columns.items()}
        candidate = _candidate(id_, rank, row, options)
        if candidate is not None:
            hits.append(Hit(candidate, options.route, rank))
    return hits


def _candidate(id_: str, rank: int, row: Mapping[str, Any], options: HitOptions) -> Candidate | None:
    meta = dict(row["metadatas"] or {})
    preview = meta.pop(PREVIEW_KEY, None)
    classes, producer = meta.pop(CLASSES_KEY, None), meta.pop(CLASSES_PRODUCER_KEY, None)
    caption = meta.pop(CAPTION_EMBEDDING_KEY, None), meta.pop(CAPTION_PRODUCER_KEY, None)
    doc, dist = row["documents"], row["distances"]
    text = doc if isinstance(doc, str) and doc.strip() else None
    image_ref: str | None = None
    if options.kind == "image":
        image_ref = row["uris"] or meta.get("path") or meta.get("image_path")
        if image_ref is None:
            logger.warning("image record %r in %r has no URI or path metadata", id_, options.collection)
    if text is None and image_ref is None:
        logger.warning("record %r in %r has neither a document nor a URI; left out", id_, options.collection)
        return None
    score = distance_to_similarity(float(dist), options.space) if dist is not None else None
    meta.update(
        source_collection=options.collection,
        route=options.route,
        routes=options.route,
        retrieval_score=score,
        retrieval_rank=rank,
        distance=float(dist) if dist is not None else None,
        distance_space=options.space,
    )
    shown = _image_fields(image_ref, preview, meta, options) if image_ref is not None else None
    precomputed: dict[str, Precomputed] = {}
    vector = row["embeddings"]
    if options.kind == "text" and text is not None and vector is not None and options.text_producer:
        value = tuple(float(v) for v in vector)
        precomputed[TEXT_EMBEDDING] = Precomputed(
            TEXT_EMBEDDING, options.text_producer, text_key(text), value
        )
    elif text is not None and isinstance(caption[0], str) and isinstance(caption[1], str):
        stored = _caption_vector(id_, caption[0])  # a picture's caption, embedded at ingest
        if stored is not None:
            precomputed[TEXT_EMBEDDING] = Precomputed(TEXT_EMBEDDING, caption[1], text_key(text), stored)
    if shown is not None and isinstance(classes, str) and isinstance(producer, str):
        precomputed[IMAGE_CLASSES] = Precomputed(IMAGE_CLASSES, producer, image_key(shown), classes)
    return Candidate(
        id=id_,
        text=text,
        image=shown,
        metadata=meta,
        source=options.collection,
        retrieval_score=score,
        precomputed=precomputed,
    )


def _caption_vector(id_: str, packed: str) -> tuple[float, ...] | None:
    try:
        return unpack_vector(packed)
    except ValueError as exc:  # a damaged record: the reranker embeds the caption itself
        logger.warning("record %r: stored caption embedding unusable (%s); it is computed instead", id_, exc)
        return None


def _image_fields(image_ref: str, preview: Any, meta: dict[str, Any], options: HitOptions) -> str:
    """Record the original picture in ``meta`` and return what the Candidate's ``image`` is."""
    meta["image_uri"] = image_ref
    local = local_path(image_ref)
    if local is not None:
        meta["image_path"] = local
    if options.candidate_image == "preview":
        if isinstance(preview, str) and preview.startswith("data:image/"):
            meta["image_preview"] = True
            return preview
        logger.debug("image record %r has no preview; using its URI", meta.get(CONTENT_ID_KEY))
    return image_ref


def merge(routes: Sequence[Sequence[Hit]]) -> list[Candidate]:
    """Interleave the routes rank by rank and merge hits of the same record (same collection and id),
    keeping its best-scoring hit (scores of one collection are comparable) and listing every route that
    found it in ``metadata["routes"]``.

    Two records that share an id in different collections are different records and both stay.
    """
    best: dict[tuple[str | None, str], Hit] = {}
    found_by: dict[tuple[str | None, str], list[str]] = {}
    depth = max((len(r) for r in routes), default=0)
    for rank in range(depth):
        for hits in routes:
            if rank >= len(hits):
                continue
            hit = hits[rank]
            found_by.setdefault(hit.key, []).append(hit.route)
            old = best.get(hit.key)
            if old is None or _better(hit, old):
                best[hit.key] = hit
    out: list[Candidate] = []
    for key in found_by:  # first-seen order, which is the interleaved rank order
        candidate = best[key].candidate
        routes_text = ",".join(dict.fromkeys(found_by[key]))
        if routes_text != candidate.metadata.get("routes"):
            candidate = replace(candidate, metadata={**candidate.metadata, "routes": routes_text})
        out.append(candidate)
    return out


def _better(new: Hit, old: Hit) -> bool:
    new_score, old_score = new.candidate.retrieval_score, old.candidate.retrieval_score
    return new_score is not None and (old_score is None or new_score > old_score)


def local_path(ref: str) -> str | None:
    """The local file behind an image URI (a path or ``file://`` URI), or ``None`` for remote/inline ones."""
    if ref.startswith("file://"):
        import urllib.parse
        import urllib.request

        return urllib.request.url2pathname(urllib.parse.urlparse(ref).path)
    if "://" in ref or ref.startswith("data:"):
        return None
    return ref
