"""Relevance labels for adaptation: three JSONL formats, read with errors that name the file and line.

1. **The eval format** (:func:`mm_rerank_components.eval.tasks.load_labelled_jsonl`): documents, then
   queries that name relevant documents by id::

       {"type": "doc", "id": "d1", "text": "Foxes live in dens."}
       {"type": "doc", "id": "img7", "image": "photos/fox.jpg", "text": "optional caption"}
       {"type": "query", "id": "q1", "text": "where do foxes live", "relevant": ["d1", "img7"]}

2. **FlagEmbedding style**: one query per line with its positives and (optional) negatives inline; an
   item is a passage string, ``{"text": ...}``, or ``{"image": path}`` (optionally with ``"text"``, the
   caption)::

       {"query": "red fox", "pos": ["A red fox in the snow.", {"image": "fox.jpg"}], "neg": ["An owl."]}

3. **Click logs** (weak labels, a separate file): what a user was shown, in order, and what they
   clicked. Clicked items are positives; items shown *above* a click but not clicked are negatives
   (the usual "skip-above" reading); items below the last click say nothing. An item is a document id
   of the data file, or an inline ``{"text": ...}`` / ``{"image": path}``. A line without a click
   carries no label and is counted, not an error::

       {"query": "red fox", "shown": ["d3", "d1", "img7"], "clicked": ["img7"]}

Image paths are relative to the JSONL file's folder. Lines with the same query text are merged; a
document that is positive anywhere for a query is never one of its negatives. Every query given is
training data (hold your test queries out of the file, or pass ``splits=("dev",)``).

Hostile or broken input is refused line by line, each :class:`LabelError` naming ``file:line`` and the
reason: malformed JSON, nesting deeper than :data:`MAX_DEPTH`, an integer longer than
:data:`MAX_INT_DIGITS` digits, ``NaN``/``Infinity``, a lone surrogate (``"\\ud800"``) in a string, a
duplicate document or query id (eval format), an unknown document id, a query without a positive.

Example:
    >>> labels = load_labels("labels.jsonl", clicks="clicks.jsonl")  # doctest: +SKIP
    >>> labels.summary()  # doctest: +SKIP
    {'queries': 120, 'documents': 300, ...}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_rerank_components.adapt.splits import assign_split
from mm_rerank_components.types import Candidate

__all__ = [
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "LabelError",
    "LabelSet",
    "LabelledQuery",
    "hash_split",
    "load_labels",
    "parse_line",
    "write_eval_jsonl",
]

logger = logging.getLogger(__name__)

#: Deepest JSON nesting a label line may have (a label line needs 3 levels; 100,000 would exhaust the stack).
MAX_DEPTH = 32
#: Longest integer a label line may hold (grades and years fit; 5,000 digits would stall ``int()``).
MAX_INT_DIGITS = 18


def hash_split(key: str) -> str:
    """``"test"`` or ``"dev"`` for a query id: the eval's fixed hash split (half each), so
    ``splits=("dev",)`` here and the eval agree on a query without a ``"split"`` field.

    Example:
        >>> hash_split("q1") in ("dev", "test")
        True
    """
    return assign_split(key)  # the one split function (adapt.splits), which the eval reads too


class LabelError(ValueError):
    """Bad labels; the message starts with ``file:line``.

    Attributes:
        path: the file.
        line: the 1-based line number (0 when the problem is the whole file).
    """

    def __init__(self, path: Path, line: int, message: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


@dataclass
class LabelledQuery:
    """One query's labels, merged over every line that names it.

    Attributes:
        id: the query id (the eval format's ``id``, else ``"q<line>"`` of its first line).
        text: the query text.
        relevant: ``{doc key: grade >= 1}``.
        negatives: doc keys labelled not relevant (explicitly or by a skipped click).
        where: ``file:line`` of the first line that names it.
        weak: True when every positive comes from clicks.
        split: ``"dev"``/``"test"`` when the file says so, else ``None``.
    """

    id: str
    text: str
    relevant: dict[str, int] = field(default_factory=dict)
    negatives: set[str] = field(default_factory=set)
    where: str = ""
    weak: bool = False
    split: str | None = None


@dataclass
class LabelSet:
    """Every labelled query and document of one adaptation run.

    Attributes:
        docs: ``{doc key: Candidate}`` (key = the eval format's id, or a content key for inline items).
        queries: the queries, in file order.
        files: the files read.
        sha256: a hash of the files' bytes (recorded in the saved reranker).
        click_lines: click-log lines read, and ``clicks_without_click``: lines that carried no label.
        doc_where: ``{doc key: "file:line"}`` of the line that first named each document.
    """

    docs: dict[str, Candidate]
    queries: list[LabelledQuery]
    files: list[str]
    sha256: str
    click_lines: int = 0
    clicks_without_click: int = 0
    doc_where: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Counts for the report."""
        modalities: dict[str, int] = {}
        for doc in self.docs.values():
            modalities[doc.modality] = modalities.get(doc.modality, 0) + 1
        return {
            "queries": len(self.queries),
            "documents": len(self.docs),
            "documents_by_modality": dict(sorted(modalities.items())),
            "positives": sum(len(q.relevant) for q in self.queries),
            "labelled_negatives": sum(len(q.negatives) for q in self.queries),
            "weak_queries": sum(1 for q in self.queries if q.weak),
            "click_lines": self.click_lines,
            "click_lines_without_click": self.clicks_without_click,
            "files": self.files,
            "sha256": self.sha256,
        }


class _Reader:
    def __init__(self) -> None:
        self.docs: dict[str, Candidate] = {}
        self.queries: dict[str, LabelledQuery] = {}
        self.by_text: dict[str, str] = {}
        self.doc_where: dict[str, str] = {}

    # -- documents ----------------------------------------------------------------------------------

    def inline_doc(self, item: object, path: Path, line: int, *, strings_are: str) -> str:
        """The doc key of an item: a string (passage or id, per ``strings_are``) or a dict."""
        from mm_rerank_components.ingest import content_id

        if isinstance(item, str):
            if strings_are == "id":
                if item not in self.docs:
                    raise LabelError(path, line, f"unknown document id {item!r} (no doc line defines it)")
                return item
            item = {"text": item}
        if not isinstance(item, Mapping):
            raise LabelError(
                path, line, f'an item must be a string, {{"text": ...}} or {{"image": path}}, got {item!r}'
            )
        if "id" in item and "text" not in item and "image" not in item:
            doc_id = item["id"]
            if not isinstance(doc_id, str) or doc_id not in self.docs:
                raise LabelError(path, line, f"unknown document id {doc_id!r} (no doc line defines it)")
            return doc_id
        text, image = item.get("text"), item.get("image")
        if text is not None and not isinstance(text, str):
            raise LabelError(path, line, f'"text" must be a string, got {type(text).__name__}')
        if image is not None:
            if not isinstance(image, str) or not image:
                raise LabelError(path, line, f'"image" must be a path string, got {image!r}')
            resolved = (path.parent / image).resolve()
            if not resolved.is_file():
                raise LabelError(path, line, f"image {image!r} not found (looked for {resolved})")
            key = content_id("image", str(resolved).encode(), text or "")
            self.docs.setdefault(key, Candidate(id=key, text=text, image=str(resolved)))
            self.doc_where.setdefault(key, f"{path}:{line}")
            return key
        if not (text and text.strip()):
            raise LabelError(path, line, f'an item needs non-empty "text" or an "image", got {dict(item)!r}')
        key = content_id("text", text.encode("utf-8"))
        self.docs.setdefault(key, Candidate(id=key, text=text))
        self.doc_where.setdefault(key, f"{path}:{line}")
        return key

    def eval_doc(self, record: Mapping[str, Any], path: Path, line: int) -> None:
        rid = record.get("id")
        if not isinstance(rid, str) or not rid:
            raise LabelError(path, line, 'a doc line needs a non-empty string "id"')
        if rid in self.docs:
            first = self.doc_where.get(rid, "an earlier line")
            raise LabelError(path, line, f"duplicate document id {rid!r} (first defined at {first})")
        text, image = record.get("text"), record.get("image")
        if text is not None and not isinstance(text, str):
            raise LabelError(path, line, f'"text" must be a string, got {type(text).__name__}')
        if image is not None:
            if not isinstance(image, str) or not image:
                raise LabelError(path, line, f'"image" must be a path string, got {image!r}')
            resolved = (path.parent / image).resolve()
            if not resolved.is_file():
                raise LabelError(path, line, f"image {image!r} not found (looked for {resolved})")
            image = str(resolved)
        if image is None and not (text and text.strip()):
            raise LabelError(path, line, f'document {rid!r} needs "text", "image" or both')
        metadata = record.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise LabelError(path, line, f'"metadata" must be an object, got {type(metadata).__name__}')
        self.docs[rid] = Candidate(id=rid, text=text, image=image, metadata=dict(metadata))
        self.doc_where[rid] = f"{path}:{line}"

    # -- queries ------------------------------------------------------------------------------------

    def query(self, text: object, path: Path, line: int, qid: str | None = None) -> LabelledQuery:
        if not isinstance(text, str) or not text.strip():
            raise LabelError(path, line, 'a query needs a non-empty "text" (or "query") string')
        key = " ".join(text.split())
        existing = self.by_text.get(key)
        if existing is not None:
            return self.queries[existing]
        qid = qid or f"q{len(self.queries) + 1}"
        if qid in self.queries:
            raise LabelError(path, line, f"duplicate query id {qid!r}")
        labelled = LabelledQuery(id=qid, text=text, where=f"{path}:{line}")
        self.queries[qid] = labelled
        self.by_text[key] = qid
        return labelled

    def eval_query(self, record: Mapping[str, Any], path: Path, line: int) -> None:
        rid = record.get("id")
        if not isinstance(rid, str) or not rid:
            raise LabelError(path, line, 'a query line needs a non-empty string "id"')
        if rid in self.queries:
            raise LabelError(
                path,
                line,
                f"duplicate query id {rid!r} (first at {self.queries[rid].where}); ids must be unique",
            )
        labelled = self.query(record.get("text"), path, line, rid)
        relevant = record.get("relevant")
        grades: dict[str, int] = {}
        if isinstance(relevant, list) and all(isinstance(v, str) for v in relevant):
            grades = {v: 1 for v in relevant}
        elif isinstance(relevant, Mapping):
            for doc, grade in relevant.items():
                if isinstance(grade, bool) or not isinstance(grade, int) or grade < 0:
                    raise LabelError(path, line, f"grade of {doc!r} must be an int >= 0, got {grade!r}")
                grades[str(doc)] = grade
        else:
            raise LabelError(
                path, line, f'query {rid!r}: "relevant" must be a list of document ids or {{"doc_id": grade}}'
            )
        for doc in grades:
            if doc not in self.docs:
                raise LabelError(
                    path, line, f"query {rid!r} names unknown document id {doc!r} (doc lines come first)"
                )
        positives = {d: g for d, g in grades.items() if g > 0}
        if not positives:
            raise LabelError(
                path, line, f"query {rid!r} has no positive (no relevant document with grade >= 1)"
            )
        labelled.relevant.update(positives)
        labelled.negatives.update(d for d, g in grades.items() if g == 0)
        split = record.get("split")
        if split is not None:
            if split not in ("dev", "test"):
                raise LabelError(path, line, f'"split" must be "dev" or "test", got {split!r}')
            labelled.split = split

    def flag_query(self, record: Mapping[str, Any], path: Path, line: int) -> None:
        pos, neg = record.get("pos"), record.get("neg", [])
        if not isinstance(pos, list) or not pos:
            raise LabelError(path, line, 'query has no positive: "pos" must be a non-empty list')
        if not isinstance(neg, list):
            raise LabelError(path, line, f'"neg" must be a list, got {type(neg).__name__}')
        labelled = self.query(record.get("query"), path, line)
        for item in pos:
            labelled.relevant[self.inline_doc(item, path, line, strings_are="text")] = 1
        labelled.negatives.update(self.inline_doc(item, path, line, strings_are="text") for item in neg)

    def click(self, record: Mapping[str, Any], path: Path, line: int) -> bool:
        shown, clicked = record.get("shown"), record.get("clicked", [])
        if not isinstance(shown, list) or not isinstance(clicked, list):
            raise LabelError(path, line, 'a click line needs "shown" and "clicked" lists')
        shown_keys = [self.inline_doc(item, path, line, strings_are="id") for item in shown]
        clicked_keys = [self.inline_doc(item, path, line, strings_are="id") for item in clicked]
        if not clicked_keys:
            return False
        missing = [k for k in clicked_keys if k not in shown_keys]
        if missing:
            raise LabelError(path, line, f'clicked items must also be in "shown"; {missing[0]!r} is not')
        labelled = self.query(record.get("query"), path, line)
        was_unlabelled = not labelled.relevant
        last = max(shown_keys.index(k) for k in clicked_keys)
        for key in clicked_keys:
            labelled.relevant.setdefault(key, 1)
        labelled.negatives.update(k for k in shown_keys[:last] if k not in clicked_keys)
        if was_unlabelled:
            labelled.weak = True
        return True


class _BadValue(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _BadValue(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_constant(name: str) -> float:
    raise _BadValue(f"{name} is not a number JSON allows")


def _check_tree(record: Any) -> str | None:
    """Why a parsed line is refused (too deep, a lone surrogate), or ``None``; iterative, so a deep
    value cannot exhaust the stack."""
    stack: list[tuple[Any, int]] = [(record, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: list[Any] = [*value.keys(), *value.values()]
        elif isinstance(value, list):
            children = value
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"a lone surrogate {value[exc.start]!r} at character {exc.start} of a string"
            continue
        else:
            continue
        if depth > MAX_DEPTH:
            return f"JSON nested deeper than {MAX_DEPTH} levels"
        stack.extend((child, depth + 1) for child in children)
    return None


def parse_line(raw: str, path: Path, lineno: int) -> dict[str, Any]:
    """One label line as a JSON object, or a :class:`LabelError` naming ``path:lineno`` and the reason.

    Example:
        >>> parse_line('{"query": "fox", "pos": ["a fox"]}', Path("l.jsonl"), 1)["query"]
        'fox'
    """
    try:
        record = json.loads(raw, parse_int=_parse_int, parse_constant=_parse_constant)
    except json.JSONDecodeError as exc:
        raise LabelError(path, lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
    except _BadValue as exc:
        raise LabelError(path, lineno, f"refused: {exc}") from exc
    except RecursionError as exc:
        raise LabelError(path, lineno, f"refused: JSON nested deeper than {MAX_DEPTH} levels") from exc
    except ValueError as exc:  # e.g. the interpreter's own integer-size guard
        raise LabelError(path, lineno, f"refused: {exc}") from exc
    problem = _check_tree(record)
    if problem is not None:
        raise LabelError(path, lineno, f"refused: {problem}")
    if not isinstance(record, dict):
        raise LabelError(path, lineno, f"each line must be a JSON object, got {type(record).__name__}")
    return record


def _records(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LabelError(path, 0, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        yield lineno, parse_line(raw, path, lineno)


def _read_data(reader: _Reader, path: Path) -> None:
    for lineno, record in _records(path):
        kind = record.get("type")
        if kind == "task":  # the eval format's optional task line names the task: nothing to train on
            continue
        if kind == "doc":
            reader.eval_doc(record, path, lineno)
        elif kind == "query":
            reader.eval_query(record, path, lineno)
        elif kind is None and "query" in record:
            reader.flag_query(record, path, lineno)
        else:
            raise LabelError(
                path,
                lineno,
                'expected an eval-format line ("type": "task", "doc" or "query") or a FlagEmbedding line '
                '({"query": ..., "pos": [...], "neg": [...]})',
            )


def load_labels(
    data: str | os.PathLike[str] | None = None,
    *,
    clicks: str | os.PathLike[str] | None = None,
    splits: Sequence[str] | None = None,
) -> LabelSet:
    """Read labelled queries (eval or FlagEmbedding format) and optionally a click log.

    Args:
        data: the labels file (eval-format or FlagEmbedding lines; both may be mixed in one file).
        clicks: a click log (weak labels), read after ``data`` so it may name ``data``'s document ids.
        splits: keep only queries of these splits (``("dev",)``): a query's split is its ``"split"``
            field, else the eval's fixed hash of its id (:func:`hash_split`).
            ``None`` (default) keeps every query.

    Raises :class:`LabelError` (a ``ValueError``) naming the file and line for malformed or hostile
    JSON (see the module doc), a duplicate id, an unknown document id, a query without a positive, or
    a missing image file.

    Example:
        >>> labels = load_labels("labels.jsonl")  # doctest: +SKIP
        >>> labels.queries[0].relevant  # doctest: +SKIP
        {'d1': 1, 'img7': 1}
    """
    if data is None and clicks is None:
        raise ValueError("give a labels file (data=...), a click log (clicks=...), or both")
    reader = _Reader()
    digest = hashlib.sha256()
    files: list[str] = []
    click_lines = without = 0
    for role, source in (("data", data), ("clicks", clicks)):
        if source is None:
            continue
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{role} file {path} does not exist")
        digest.update(f"{role}\0".encode() + path.read_bytes() + b"\0")
        files.append(str(path))
        if role == "data":
            _read_data(reader, path)
        else:
            for lineno, record in _records(path):
                click_lines += 1
                if not reader.click(record, path, lineno):
                    without += 1
    queries = list(reader.queries.values())
    for labelled in queries:
        labelled.negatives -= set(labelled.relevant)
    if splits is not None:
        wanted = set(splits)
        queries = [q for q in queries if (q.split or hash_split(q.id)) in wanted]
    if not queries:
        raise ValueError(
            f"no labelled query with a positive in {', '.join(files)}"
            + (f" (splits {sorted(splits)})" if splits is not None else "")
        )
    if without:
        logger.info("%d click-log lines had no click and carry no label", without)
    return LabelSet(reader.docs, queries, files, digest.hexdigest(), click_lines, without, reader.doc_where)


def write_eval_jsonl(task: Any, path: str | os.PathLike[str], *, splits: Sequence[str] | None = None) -> Path:
    """Write an :class:`~mm_rerank_components.eval.tasks.EvalTask` (e.g. a built-in task) as eval-format
    JSONL that :func:`load_labels` and ``mm-rerank adapt --data`` read; each query keeps its ``split``.

    Image documents must be file paths (written as absolute paths). ``splits=("dev",)`` writes only
    those queries (every document is still written, since the first stage searches them all).

    Example:
        >>> from mm_rerank_components.eval.tasks import gcompris_explore_task
        >>> write_eval_jsonl(gcompris_explore_task(), "gcompris.jsonl")  # doctest: +SKIP
        PosixPath('gcompris.jsonl')
    """
    target = Path(path)
    lines: list[str] = []
    for doc_id, doc in task.docs.items():
        record: dict[str, Any] = {"type": "doc", "id": doc_id}
        if doc.text is not None:
            record["text"] = doc.text
        if doc.image is not None:
            if not isinstance(doc.image, (str, os.PathLike)):
                raise TypeError(
                    f"document {doc_id!r}: only file-path images can be written, "
                    f"got {type(doc.image).__name__}"
                )
            record["image"] = str(Path(doc.image).resolve())
        metadata = {k: v for k, v in doc.metadata.items() if isinstance(v, (str, int, float, bool))}
        if metadata:
            record["metadata"] = metadata
        lines.append(json.dumps(record, ensure_ascii=False))
    for qid in task.query_ids("all"):
        split = task.splits[qid]
        if splits is not None and split not in splits:
            continue
        relevant = {d: g for d, g in task.qrels[qid].items() if g > 0}
        record = {"type": "query", "id": qid, "text": task.queries[qid], "relevant": relevant, "split": split}
        lines.append(json.dumps(record, ensure_ascii=False))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target
