"""Hard-negative mining from both first-stage routes, and matching label documents to database records.

For each labelled query the retriever returns the top ``k_text`` hits of the text collection and the
top ``k_image`` hits of the image collection, exactly what the reranker will see in production. Every
hit that is not one of the query's positives is a *hard negative*: the first stage ranked it high,
so the reranker must learn to push it down. Positives are never mined as negatives (a record counts
as positive when its content matches any of the query's relevant documents, duplicates included).

Label documents are found in the database by content: :func:`~mm_rerank_components.ingest.content_id`
of a passage's text, or of a picture file's bytes (a picture's caption is not compared). Documents
that match no record are reported, never silently dropped.

Example:
    >>> match = match_documents(labels, retriever)  # doctest: +SKIP
    >>> mined = mine(labels, retriever, match, k_text=16, k_image=16)  # doctest: +SKIP
    >>> mined.route_counts()  # doctest: +SKIP
    {'mm_images': {'candidates': 3200, 'positives': 150, 'hard_negatives': 3050}, ...}
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_rerank_components.adapt.corpus import _file_path, _pages
from mm_rerank_components.adapt.labels import LabelledQuery, LabelSet
from mm_rerank_components.types import Candidate

__all__ = ["DocMatch", "MinedList", "MinedSet", "index_labels", "match_documents", "mine"]

logger = logging.getLogger(__name__)

_PAGE = 500


@dataclass
class DocMatch:
    """Which database records hold each label document.

    Attributes:
        records: ``{doc key: [record ids]}`` for matched documents (several when the database holds
            duplicates).
        unmatched: ``{doc key: why}`` for documents no record holds.
        collections: ``{record id: "text" | "image"}``: where each matched record lives.
    """

    records: dict[str, list[str]] = field(default_factory=dict)
    unmatched: dict[str, str] = field(default_factory=dict)
    collections: dict[str, str] = field(default_factory=dict)


def _content_key(doc: Candidate) -> tuple[str, str]:
    """``(collection kind, content id)`` of a label document: a picture's bytes, else its text."""
    from mm_rerank_components.ingest import content_id

    if doc.image is not None:
        return "image", content_id("image", Path(str(doc.image)).read_bytes())
    return "text", content_id("text", (doc.text or "").encode("utf-8", "surrogateescape"))


def match_documents(labels: LabelSet, retriever: Any) -> DocMatch:
    """Find each label document among the retriever's records by content (see the module doc).

    Reads every record of both collections once (pictures' files are read to hash their bytes).
    """
    from mm_rerank_components.ingest import content_id

    wanted: dict[tuple[str, str], list[str]] = {}
    for key, doc in labels.docs.items():
        wanted.setdefault(_content_key(doc), []).append(key)
    match = DocMatch()
    unreadable = 0
    for kind, name in (("text", retriever.text_collection_name), ("image", retriever.image_collection_name)):
        if name is None:
            continue
        collection = retriever.client.get_collection(name, embedding_function=None)
        include = ["documents"] if kind == "text" else ["metadatas", "uris"]
        for record in _pages(collection, include):
            record_id = record[0]
            if kind == "text":
                text = record[1]
                if not isinstance(text, str):
                    continue
                cid = content_id("text", text.encode("utf-8", "surrogateescape"))
            else:
                path = _file_path(record[1] or {}, record[2])
                try:
                    cid = content_id("image", Path(path).read_bytes()) if path else ""
                except OSError:
                    unreadable += 1
                    continue
            for doc_key in wanted.get((kind, cid), []):
                match.records.setdefault(doc_key, []).append(record_id)
                match.collections[record_id] = kind
    if unreadable:
        logger.warning("%d image records' files could not be read, so they cannot match a label", unreadable)
    for key, doc in labels.docs.items():
        if key not in match.records:
            kind = "image" if doc.image is not None else "text"
            match.unmatched[key] = f"no record of the {kind} collection holds this " + (
                "picture (compared by file bytes)" if kind == "image" else "exact passage text"
            )
    return match


def index_labels(labels: LabelSet, retriever: Any) -> DocMatch:
    """Embed the label documents into ``retriever``'s (temporary) collections, record id = doc key.

    Passages go to the text collection; pictures (with their caption, if any) to the image collection.
    A picture that cannot be read is reported as unmatched.
    """
    match = DocMatch()
    texts = [(k, d) for k, d in labels.docs.items() if d.image is None]
    images = [(k, d) for k, d in labels.docs.items() if d.image is not None]
    if texts:
        retriever.add_texts(
            [d.text or "" for _, d in texts],
            ids=[k for k, _ in texts],
            metadatas=[_scalar_metadata(d) for _, d in texts],
        )
        for key, _ in texts:
            match.records[key] = [key]
            match.collections[key] = "text"
    if images:
        report = retriever.add_images(
            [str(d.image) for _, d in images],
            ids=[k for k, _ in images],
            captions=[d.text for _, d in images],
            metadatas=[_scalar_metadata(d) for _, d in images],
        )
        failed = {str(Path(f.path).resolve()): f.reason for f in report.failed}
        for key, doc in images:
            reason = failed.get(str(Path(str(doc.image)).resolve()))
            if reason is not None:
                match.unmatched[key] = f"could not be embedded: {reason}"
                continue
            match.records[key] = [key]
            match.collections[key] = "image"
    return match


def _scalar_metadata(doc: Candidate) -> dict[str, Any]:
    # Chroma stores only scalar metadata; numbers and strings are what fusion's metadata fields read
    return {k: v for k, v in doc.metadata.items() if isinstance(v, (str, int, float, bool))}


@dataclass
class MinedList:
    """One query's first-stage pool with labels (grade per candidate)."""

    query: LabelledQuery
    candidates: list[Candidate]
    grades: list[int]
    labelled_negative: list[bool]
    positives_missed: dict[str, int] = field(default_factory=dict)


@dataclass
class MinedSet:
    """Every mined pool, plus what could not be used and why."""

    lists: list[MinedList]
    skipped_queries: dict[str, str] = field(default_factory=dict)
    k_text: int = 0
    k_image: int = 0

    def route_counts(self) -> dict[str, dict[str, int]]:
        """Per route (collection): pool candidates, positives found, hard negatives, labelled negatives
        found, and positives the route holds but did not return at this depth."""
        counts: dict[str, dict[str, int]] = {}
        for item in self.lists:
            for candidate, grade, negative in zip(
                item.candidates, item.grades, item.labelled_negative, strict=True
            ):
                route = str(candidate.source)
                entry = counts.setdefault(
                    route,
                    {"candidates": 0, "positives": 0, "hard_negatives": 0, "labelled_negatives": 0},
                )
                entry["candidates"] += 1
                if grade > 0:
                    entry["positives"] += 1
                else:
                    entry["hard_negatives"] += 1
                    entry["labelled_negatives"] += int(negative)
            for route, missed in item.positives_missed.items():
                entry = counts.setdefault(
                    route, {"candidates": 0, "positives": 0, "hard_negatives": 0, "labelled_negatives": 0}
                )
                entry["positives_not_retrieved"] = entry.get("positives_not_retrieved", 0) + missed
        for entry in counts.values():
            entry.setdefault("positives_not_retrieved", 0)
        return dict(sorted(counts.items()))


def mine(
    labels: LabelSet,
    retriever: Any,
    match: DocMatch,
    *,
    k_text: int = 16,
    k_image: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> MinedSet:
    """Retrieve each labelled query's pool from both routes and label it (positives vs hard negatives).

    A query none of whose positives matched a record is skipped and reported in ``skipped_queries``.
    """
    mined = MinedSet(lists=[], k_text=k_text, k_image=k_image)
    collection_names = {"text": retriever.text_collection_name, "image": retriever.image_collection_name}
    for n, labelled in enumerate(labels.queries, start=1):
        grade_of: dict[str, int] = {}
        for doc_key, grade in labelled.relevant.items():
            for record_id in match.records.get(doc_key, []):
                grade_of[record_id] = max(grade, grade_of.get(record_id, 0))
        if not grade_of:
            mined.skipped_queries[labelled.id] = (
                f"{labelled.where}: none of its {len(labelled.relevant)} relevant documents is in the "
                "database"
            )
            continue
        labelled_negative_ids = {
            record_id for doc_key in labelled.negatives for record_id in match.records.get(doc_key, [])
        }
        pool = retriever.retrieve(labelled.text, k_text=k_text, k_image=k_image)
        grades = [grade_of.get(c.id, 0) for c in pool]
        labelled_negative = [c.id in labelled_negative_ids for c in pool]
        found = {c.id for c in pool}
        missed: dict[str, int] = {}
        for record_id in grade_of:
            if record_id not in found:
                route = str(collection_names.get(match.collections.get(record_id, ""), "?"))
                missed[route] = missed.get(route, 0) + 1
        mined.lists.append(MinedList(labelled, list(pool), grades, labelled_negative, missed))
        if progress is not None:
            progress(n, len(labels.queries))
    return mined
