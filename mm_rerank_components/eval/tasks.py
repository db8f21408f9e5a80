"""Evaluation tasks: a mixed text and image corpus, queries, relevance labels and a fixed held-out split.

Built-in tasks (data fetched from Debian packages, see :mod:`mm_rerank_components.eval.datasets`):

* ``tuxpaint-mixed``: the 430 Tux Paint photo stamps as images **and** their French captions as text
  passages (860 documents), queried with the English captions. Relevant: the image and the French
  passage of every stamp whose English caption is the query (several stamps share a caption, e.g.
  two "A frog." photos, and all of them count). Honest because the relevance comes from the stamp
  authors' own captions, not from us; the French side means the text route has to match across
  languages and cannot copy words, and the images carry no text at all.
* ``gcompris-explore``: the 82 GCompris explore photos **and** their paragraphs (title removed) as
  164 documents, queried with each item's title ("Golden Temple", "Horse"). Relevant: that item's photo
  and its paragraph. Written by GCompris' authors; the paragraphs often name the subject, so the
  text route is strong here, while the ImageNet-based image route knows few monuments.

Both tasks have two relevant documents per query in different modalities, so **a single route can
find at most half of them** (Recall@10 <= 0.5 for the text or image route alone, up to 1.0 for a
merged list). That cap is real, not an artefact: it is exactly the situation mixed retrieval is for.

Your own data: :func:`load_labelled_jsonl` (format documented there and in ``docs/evaluation.md``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_rerank_components.adapt.splits import SPLIT_SEED, Split, assign_split
from mm_rerank_components.types import Candidate

__all__ = [
    "SPLIT_SEED",
    "EvalTask",
    "assign_split",
    "gcompris_explore_task",
    "load_labelled_jsonl",
    "tuxpaint_mixed_task",
    "wesnoth_units_task",
]


@dataclass
class EvalTask:
    """A labelled retrieval task over a mixed corpus.

    Attributes:
        name: short identifier used in reports.
        description: what a document is, what a query is, and what counts as relevant (and why).
        docs: ``{doc_id: Candidate}``; a candidate with an image goes to the image route, a text-only
            candidate to the text route.
        queries: ``{query_id: query text}``.
        qrels: ``{query_id: {doc_id: grade}}`` with grade >= 1 for relevant documents.
        splits: ``{query_id: "dev" | "test"}``; calibration and tuning only ever see ``"dev"``.
    """

    name: str
    description: str
    docs: dict[str, Candidate]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    splits: dict[str, Split] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for qid in self.queries:
            if qid not in self.qrels or not self.qrels[qid]:
                raise ValueError(f"task {self.name!r}: query {qid!r} has no relevant documents")
            unknown = [d for d in self.qrels[qid] if d not in self.docs]
            if unknown:
                raise ValueError(
                    f"task {self.name!r}: query {qid!r} marks unknown documents relevant: {unknown[:5]}"
                )
        extra = set(self.qrels) - set(self.queries)
        if extra:
            raise ValueError(f"task {self.name!r}: relevance labels for unknown queries {sorted(extra)[:5]}")
        for qid in self.queries:
            self.splits.setdefault(qid, assign_split(qid))

    def query_ids(self, split: str = "all") -> list[str]:
        """Query ids of ``"dev"``, ``"test"`` or ``"all"``, in a stable order."""
        if split not in ("dev", "test", "all"):
            raise ValueError(f"split must be 'dev', 'test' or 'all', got {split!r}")
        return [q for q in self.queries if split == "all" or self.splits[q] == split]

    def summary(self) -> dict[str, int]:
        text_docs = sum(1 for c in self.docs.values() if c.image is None)
        return {
            "documents": len(self.docs),
            "text_documents": text_docs,
            "image_documents": len(self.docs) - text_docs,
            "queries": len(self.queries),
            "dev_queries": len(self.query_ids("dev")),
            "test_queries": len(self.query_ids("test")),
        }


def _norm_caption(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".").split())


def tuxpaint_mixed_task(cache_dir: str | os.PathLike[str] | None = None) -> EvalTask:
    """430 photo stamps as images + their French captions as passages; English captions as queries.

    Example:
        >>> task = tuxpaint_mixed_task()  # doctest: +SKIP
        >>> task.summary()["documents"]  # doctest: +SKIP
        860
    """
    from mm_rerank_components.eval.datasets import fetch_tuxpaint_stamps

    stamps = [s for s in fetch_tuxpaint_stamps(cache_dir) if s.is_photo and s.caption_fr]
    docs: dict[str, Candidate] = {}
    by_caption: dict[str, list[str]] = {}
    first_caption: dict[str, str] = {}
    for stamp in stamps:
        meta = {"stamp": stamp.id, "category": stamp.category, "dataset": "tuxpaint"}
        docs[f"img:{stamp.id}"] = Candidate(id=f"img:{stamp.id}", image=str(stamp.image_path), metadata=meta)
        docs[f"fr:{stamp.id}"] = Candidate(id=f"fr:{stamp.id}", text=stamp.caption_fr, metadata=meta)
        key = _norm_caption(stamp.caption)
        by_caption.setdefault(key, []).append(stamp.id)
        first_caption.setdefault(key, stamp.caption)
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    splits: dict[str, Split] = {}
    for key, ids in by_caption.items():
        qid = f"q:{ids[0]}"
        queries[qid] = first_caption[key]
        qrels[qid] = {f"{prefix}:{sid}": 1 for sid in ids for prefix in ("img", "fr")}
        splits[qid] = assign_split(key)
    description = (
        "Documents: each Tux Paint photo stamp twice, as its image (no text) and as its French caption "
        "(a text passage). Queries: the distinct English captions. Relevant: the image and the French "
        "passage of every stamp with that English caption (captions written by the stamp authors)."
    )
    return EvalTask("tuxpaint-mixed", description, docs, queries, qrels, splits)


def gcompris_explore_task(cache_dir: str | os.PathLike[str] | None = None) -> EvalTask:
    """82 GCompris explore photos + their paragraphs (title removed); item titles as queries.

    Example:
        >>> task = gcompris_explore_task()  # doctest: +SKIP
        >>> task.summary()["queries"]  # doctest: +SKIP
        82
    """
    from mm_rerank_components.eval.datasets import fetch_gcompris_explore

    pairs = [
        (
            item.id,
            str(item.image_path),
            item.paragraph,
            item.title,
            {"item": item.id, "activity": item.activity, "dataset": "gcompris"},
        )
        for item in fetch_gcompris_explore(cache_dir)
    ]
    description = (
        "Documents: each GCompris explore item twice, as its photo (no text) and as its paragraph "
        "(without the title). Queries: the item titles. Relevant: that item's photo and paragraph."
    )
    return _paired_task("gcompris-explore", description, pairs)


def wesnoth_units_task(cache_dir: str | os.PathLike[str] | None = None) -> EvalTask:
    """Battle for Wesnoth: each unit's painted portrait and its description; unit names as queries.

    Example:
        >>> task = wesnoth_units_task()  # doctest: +SKIP
        >>> task.summary()["queries"]  # doctest: +SKIP
        105
    """
    from mm_rerank_components.eval.datasets import fetch_wesnoth_units

    pairs = [
        (
            unit.id,
            str(unit.image_path),
            unit.description,
            unit.name,
            {"unit": unit.id, "race": unit.race, "dataset": "wesnoth"},
        )
        for unit in fetch_wesnoth_units(cache_dir)
    ]
    description = (
        "Documents: each Battle for Wesnoth core unit twice, as its painted portrait (no text) and as its "
        "help description (written by the game's authors). Queries: the unit names ('Elvish Archer'). "
        "Relevant: that unit's portrait and description. Fantasy paintings an ImageNet classifier was "
        "never trained on; units sharing a portrait are left out."
    )
    return _paired_task("wesnoth-units", description, pairs)


def load_labelled_jsonl(path: str | os.PathLike[str], name: str | None = None) -> EvalTask:
    """Load your own labelled data: one JSON object per line, documents then queries.

    Lines (image paths are relative to the JSONL file's folder; blank lines and ``#`` lines are skipped)::

        {"type": "task", "name": "fox-photos", "description": "optional"}
        {"type": "doc", "id": "d1", "text": "Foxes live in dens."}
        {"type": "doc", "id": "img7", "image": "photos/fox.jpg", "text": "optional caption"}
        {"type": "query", "id": "q1", "text": "where do foxes live", "relevant": ["d1", "img7"]}
        {"type": "query", "id": "q2", "text": "red fox", "relevant": {"img7": 2, "d1": 1}, "split": "test"}

    ``relevant``: ids or a ``{doc_id: grade >= 1}`` map; without ``split`` a seeded hash holds half out.

    The task's name: ``name=``, else the ``task`` line's ``"name"``, else the file's stem plus 8 hex
    digits of its bytes' SHA-256 (two ``labels.jsonl`` in different folders never collide).

    Example:
        >>> task = load_labelled_jsonl("my_labels.jsonl")  # doctest: +SKIP
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"labelled data file {source} does not exist")
    base = source.parent
    raw_bytes = source.read_bytes()
    declared: dict[str, str] = {}
    docs: dict[str, Candidate] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    splits: dict[str, Split] = {}
    for lineno, line in enumerate(raw_bytes.decode("utf-8").splitlines(), start=1):
        where = f"{source}:{lineno}"
        record = _read_line(line, where)
        if record is None:
            continue
        kind = record.get("type")
        if kind == "task":
            _parse_task_line(record, where, declared)
            continue
        rid = record.get("id")
        if not isinstance(rid, str) or not rid:
            raise ValueError(f'{where}: every line needs a non-empty string "id"')
        if kind == "doc":
            if rid in docs:
                raise ValueError(f"{where}: duplicate document id {rid!r}")
            docs[rid] = _parse_doc_line(record, rid, where, base)
        elif kind == "query":
            if rid in queries:
                raise ValueError(f"{where}: duplicate query id {rid!r}")
            queries[rid], qrels[rid], split = _parse_query_line(record, rid, where)
            if split is not None:
                splits[rid] = split
        else:
            raise ValueError(f'{where}: "type" must be "task", "doc" or "query", got {kind!r}')
    if not docs or not queries:
        raise ValueError(
            f"{source}: needs at least one doc line and one query line (found {len(docs)} and {len(queries)})"
        )
    task_name = name or declared.get("name") or f"{source.stem}-{hashlib.sha256(raw_bytes).hexdigest()[:8]}"
    description = declared.get("description") or f"user data from {source}"
    return EvalTask(task_name, description, docs, queries, qrels, splits)


def _read_line(line: str, where: str) -> dict[str, object] | None:
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc.msg})") from exc
    if not isinstance(record, dict):
        raise ValueError(f"{where}: each line must be a JSON object, got {type(record).__name__}")
    return record


def _parse_doc_line(record: Mapping[str, object], rid: str, where: str, base: Path) -> Candidate:
    image = record.get("image")
    text = record.get("text")
    if image is not None:
        if not isinstance(image, str):
            raise ValueError(f'{where}: "image" must be a path string, got {image!r}')
        image_path = (base / image).resolve()
        if not image_path.is_file():
            raise ValueError(f"{where}: image {image!r} not found (looked for {image_path})")
        image = str(image_path)
    if text is not None and not isinstance(text, str):
        raise ValueError(f'{where}: "text" must be a string, got {type(text).__name__}')
    if image is None and not (text and text.strip()):
        raise ValueError(f'{where}: document {rid!r} needs "text", "image" or both')
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f'{where}: "metadata" must be an object, got {type(metadata).__name__}')
    return Candidate(id=rid, text=text, image=image, metadata=dict(metadata))


def _parse_query_line(
    record: Mapping[str, object], rid: str, where: str
) -> tuple[str, dict[str, int], Split | None]:
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f'{where}: query {rid!r} needs a non-empty "text"')
    split = record.get("split")
    if split is not None and split not in ("dev", "test"):
        raise ValueError(f'{where}: "split" must be "dev" or "test", got {split!r}')
    return text, _parse_relevant(record.get("relevant"), where, rid), split


def _parse_task_line(record: Mapping[str, object], where: str, declared: dict[str, str]) -> None:
    if declared:
        raise ValueError(f'{where}: a second "task" line; give the task\'s name once')
    task_name = record.get("name")
    if not isinstance(task_name, str) or not task_name.strip():
        raise ValueError(f'{where}: the "task" line needs a non-empty string "name"')
    declared["name"] = task_name.strip()
    description = record.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise ValueError(f'{where}: "description" must be a string, got {type(description).__name__}')
        declared["description"] = description


def _parse_relevant(value: object, where: str, qid: str) -> dict[str, int]:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return {v: 1 for v in value}
    if isinstance(value, Mapping) and value:
        out: dict[str, int] = {}
        for doc, grade in value.items():
            if isinstance(grade, bool) or not isinstance(grade, int) or grade < 0:
                raise ValueError(f"{where}: grade of {doc!r} must be an int >= 0, got {grade!r}")
            if grade > 0:
                out[str(doc)] = grade
        if out:
            return out
    raise ValueError(
        f'{where}: query {qid!r} needs "relevant": a non-empty list of document ids or '
        '{"doc_id": grade} with at least one grade >= 1'
    )


def _paired_task(
    name: str, description: str, pairs: Sequence[tuple[str, str, str, str, dict[str, Any]]]
) -> EvalTask:
    """A task whose every item is a picture and a passage, both relevant to the item's own query.

    ``pairs`` holds ``(item id, picture path, passage, query, metadata)``; documents are ``img:ID`` (the
    picture alone) and ``txt:ID`` (the passage alone), the query ``q:ID``, split by the item id.
    """
    docs: dict[str, Candidate] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    splits: dict[str, Split] = {}
    for item_id, image_path, passage, query, meta in pairs:
        docs[f"img:{item_id}"] = Candidate(id=f"img:{item_id}", image=image_path, metadata=meta)
        docs[f"txt:{item_id}"] = Candidate(id=f"txt:{item_id}", text=passage, metadata=meta)
        qid = f"q:{item_id}"
        queries[qid] = query
        qrels[qid] = {f"img:{item_id}": 1, f"txt:{item_id}": 1}
        splits[qid] = assign_split(item_id)
    return EvalTask(name, description, docs, queries, qrels, splits)
