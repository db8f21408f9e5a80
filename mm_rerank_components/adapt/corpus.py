"""The corpus itself as training data: records, pseudo-queries, pseudo-labelled pools, label matching.

Label-free adaptation (``mm-rerank adapt --db DB --out FOLDER`` with no ``--data``) needs queries and
relevance labels that nobody wrote. They come from the corpus:

* **Pictures**: a picture's caption or title (ingest stores the caller's title, a short caption, or the
  file name) is a pseudo-query for that picture, as people describe pictures by their captions.
* **Passages**: a short span of one sentence of a passage is a pseudo-query for that passage, the
  Inverse Cloze Task of Lee et al. (2019); a passage's own title, when it has one, is another.
* **Cross-modal pairs**: a passage and a picture that share a document (the same value of one of
  ``pair_fields``, the same file stem, or a caption equal to the passage) are both relevant to a
  pseudo-query of either, so the pools hold positives of both modalities.

Each pseudo-query then runs through the **real first stage** (both routes, the depth you serve with),
its pool is scored by the scorer through the core, and, after GPL (Wang et al. 2022), the scorer acts as
a teacher on the pool: a "negative" it rates above the pseudo-query's own positive of the same modality
is probably another relevant record, so it is left out of training instead of being taught as
irrelevant (:func:`drop_likely_false_negatives`). The pipeline then fits the same learned fusion the
labelled ``adapt`` fits.

The retrieval side is a small protocol, :class:`Corpus` (``records()`` and ``retrieve_many()``), with
two implementations: :class:`ChromaCorpus` (your database) and :class:`VectorCorpus` (vectors in
memory; the eval uses it with its precomputed embeddings).

Example:
    >>> corpus = ChromaCorpus(retriever)  # doctest: +SKIP
    >>> queries = pseudo_queries(corpus.records(), LabelFreeOptions(max_queries=400))  # doctest: +SKIP
    >>> queries[0].kind, queries[0].text  # doctest: +SKIP
    ('picture-title', 'red fox')
"""

from __future__ import annotations

import difflib
import logging
import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mm_rerank_components.types import Candidate

if TYPE_CHECKING:
    from mm_rerank_components.adapt.labels import LabelSet
    from mm_rerank_components.adapt.mining import DocMatch

__all__ = [
    "ChromaCorpus",
    "Corpus",
    "CorpusRecord",
    "LabelFreeOptions",
    "PseudoQuery",
    "UnmatchedLabelError",
    "VectorCorpus",
    "drop_likely_false_negatives",
    "labelled_modalities_only",
    "match_labels",
    "normalise_text",
    "pseudo_queries",
]

logger = logging.getLogger(__name__)

_PAGE = 500
_SENTENCE = re.compile(r"(?<=[.!?;])\s+")
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*", re.UNICODE)
_ALPHA_RUN = re.compile(r"[^\W\d_]{3,}", re.UNICODE)


def normalise_text(text: str) -> str:
    """Whitespace collapsed and trimmed: how label passages are compared with records.

    Example:
        >>> normalise_text("  Foxes live\\n in dens.\\n")
        'Foxes live in dens.'
    """
    return " ".join(text.split())


@dataclass(frozen=True)
class LabelFreeOptions:
    """Settings of the pseudo-labelled training data (label-free ``adapt``).

    Attributes:
        max_queries: pseudo-queries in all, half from pictures and half from passages when both exist
            (1,000 documents give at most one query each).
        max_query_words: longest pseudo-query, in words (short, like what people type).
        min_query_words: shortest sentence a passage query is cut from.
        pair_fields: metadata fields that tie a passage and a picture to one document (e.g.
            ``("document",)``); records sharing a file stem or a caption always pair.
        max_siblings: a shared key that ties more cross-modal records than this is ignored (a
            category, not a document).
        false_negative_margin: GPL-style teacher filter: a negative whose raw score exceeds the best
            positive of its modality in the pool by more than this is left out; ``None`` (the
            default) keeps all. Off because it removes exactly the high-scored negatives that tell
            the calibration how often a top score is wrong: with margin 0, label-free probabilities
            were over-confident (Tux Paint pictures +63% on dev queries, FreeOrion passages +34%);
            without it, 1 of 10 dev cells left +-25% instead of 4 (docs/adaptation.md).
        unlabelled_modality: what a pool's candidates of a modality with no pseudo-positive are:
            ``"negative"`` (trained as irrelevant) or ``"drop"`` (unlabelled, left out: a span cut
            from a passage says nothing about the pictures, which may well show the same thing).
        seed: fixes which records are sampled and which span is cut.

    Example:
        >>> LabelFreeOptions(max_queries=200, pair_fields=("document",)).max_queries
        200
    """

    max_queries: int = 600
    max_query_words: int = 8
    min_query_words: int = 3
    pair_fields: tuple[str, ...] = ()
    max_siblings: int = 3
    false_negative_margin: float | None = None
    unlabelled_modality: str = "negative"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_queries < 1:
            raise ValueError(f"max_queries must be >= 1, got {self.max_queries!r}")
        if not 1 <= self.min_query_words <= self.max_query_words:
            raise ValueError(
                "need 1 <= min_query_words <= max_query_words, got "
                f"{self.min_query_words!r} and {self.max_query_words!r}"
            )
        if self.unlabelled_modality not in ("negative", "drop"):
            raise ValueError(
                f"unlabelled_modality must be 'negative' or 'drop', got {self.unlabelled_modality!r}"
            )
        if self.max_siblings < 1:
            raise ValueError(f"max_siblings must be >= 1, got {self.max_siblings!r}")
        object.__setattr__(self, "pair_fields", tuple(self.pair_fields))


@dataclass(frozen=True)
class CorpusRecord:
    """One stored record, as label-free adaptation reads it.

    Attributes:
        id: the record id (what the retriever returns as ``Candidate.id``).
        kind: ``"text"`` (a passage) or ``"image"`` (a picture, captioned or not).
        text: the passage, or the picture's caption.
        title: a short title (ingest's ``title``), or ``None``.
        path: the file the record came from, or ``None``.
        metadata: the stored metadata.
    """

    id: str
    kind: str
    text: str | None = None
    title: str | None = None
    path: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PseudoQuery:
    """A query the corpus wrote: its text, the record ids relevant to it, and how it was made.

    ``kind`` is ``"picture-title"``, ``"picture-caption"``, ``"passage-title"`` or ``"passage-span"``.
    """

    text: str
    positives: frozenset[str]
    kind: str
    source: str


class Corpus(Protocol):
    """What label-free adaptation needs from a first stage: every record, and both routes' hits.

    ``retrieve_many`` returns, per query, the merged pool of both routes, each candidate with
    ``source`` (its route) and ``retrieval_score``, exactly as production reranks it.
    """

    def records(self) -> list[CorpusRecord]: ...

    def retrieve_many(self, queries: Sequence[str], k_text: int, k_image: int) -> list[list[Candidate]]: ...

    def describe(self) -> str: ...


# -- corpora --------------------------------------------------------------------------------------------


def _pages(collection: Any, include: list[str]) -> Iterator[tuple[Any, ...]]:
    offset = 0
    while True:
        page = collection.get(include=include, limit=_PAGE, offset=offset)
        ids = page["ids"]
        if not ids:
            return
        columns = [page.get(key) or [None] * len(ids) for key in include]
        yield from zip(ids, *columns, strict=True)
        offset += len(ids)


def _file_path(meta: Mapping[str, Any], uri: Any) -> str | None:
    for ref in (uri, meta.get("path"), meta.get("image_path")):
        if isinstance(ref, str) and ref:
            if ref.startswith("file://"):
                import urllib.parse
                import urllib.request

                return urllib.request.url2pathname(urllib.parse.urlparse(ref).path)
            if "://" not in ref and not ref.startswith("data:"):
                return ref
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


class ChromaCorpus:
    """A :class:`~mm_rerank_components.retrievers.chroma.ChromaMultiCollectionRetriever` as a
    :class:`Corpus`: records are read page by page from both collections, queries go through
    ``retriever.retrieve``.

    Example:
        >>> corpus = ChromaCorpus(retriever)  # doctest: +SKIP
        >>> len(corpus.records())  # doctest: +SKIP
        1000
    """

    def __init__(self, retriever: Any) -> None:
        self.retriever = retriever

    def describe(self) -> str:
        return str(self.retriever.describe())

    def records(self) -> list[CorpusRecord]:
        out: list[CorpusRecord] = []
        r = self.retriever
        for kind, name in (("text", r.text_collection_name), ("image", r.image_collection_name)):
            if name is None:
                continue
            collection = r.client.get_collection(name, embedding_function=None)
            for rid, document, meta, uri in _pages(collection, ["documents", "metadatas", "uris"]):
                meta = dict(meta or {})
                meta.pop("preview", None)
                text = _str_or_none(document) if kind == "text" else _str_or_none(meta.get("caption"))
                if kind == "image" and text is None:
                    text = _str_or_none(document)
                out.append(
                    CorpusRecord(
                        id=str(rid),
                        kind=kind,
                        text=text,
                        title=_str_or_none(meta.get("title")),
                        path=_file_path(meta, uri),
                        metadata=meta,
                    )
                )
        return out

    def retrieve_many(self, queries: Sequence[str], k_text: int, k_image: int) -> list[list[Candidate]]:
        return [list(self.retriever.retrieve(q, k_text=k_text, k_image=k_image)) for q in queries]


class VectorCorpus:
    """Records and their first-stage vectors in memory (cosine similarity per route), as a
    :class:`Corpus`: the eval's stand-in for two Chroma collections.

    Args:
        docs: the documents; one with an image is on the ``"image"`` route, a passage on ``"text"``.
        vectors: ``{doc id: unit vector}`` for every document (its route's embedding).
        embed_queries: query texts -> ``(n, dim)`` unit vectors, one embedding shared by both routes
            (as the starter's ConSE pictures live in the text model's space); or a mapping
            ``{"text": fn, "image": fn}`` when the routes embed queries differently.
        titles: optional ``{doc id: title}`` (e.g. a picture's file stem, as ingest stores it).

    Example:
        >>> import numpy as np
        >>> docs = [Candidate("a", text="a fox"), Candidate("b", text="an owl")]
        >>> vec = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}
        >>> corpus = VectorCorpus(docs, vec, lambda qs: np.array([[1.0, 0.0]] * len(qs)))
        >>> [c.id for c in corpus.retrieve_many(["fox"], 1, 0)[0]]
        ['a']
    """

    def __init__(
        self,
        docs: Sequence[Candidate],
        vectors: Mapping[str, Any],
        embed_queries: Callable[[Sequence[str]], Any] | Mapping[str, Callable[[Sequence[str]], Any]],
        *,
        titles: Mapping[str, str] | None = None,
    ) -> None:
        self.docs = list(docs)
        self.titles = dict(titles or {})
        self._embed = (
            dict(embed_queries)
            if isinstance(embed_queries, Mapping)
            else {"text": embed_queries, "image": embed_queries}
        )
        self._routes: dict[str, tuple[list[Candidate], np.ndarray]] = {}
        for route in ("text", "image"):
            members = [d for d in self.docs if (d.image is not None) == (route == "image")]
            missing = [d.id for d in members if d.id not in vectors]
            if missing:
                raise ValueError(f"VectorCorpus: no vector for documents {missing[:3]}")
            rows = [np.asarray(vectors[d.id], dtype=np.float32).reshape(-1) for d in members]
            matrix = np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)  # a route may be empty
            self._routes[route] = (members, matrix)

    def describe(self) -> str:
        texts, images = len(self._routes["text"][0]), len(self._routes["image"][0])
        return f"in-memory vectors ({texts} passages, {images} pictures)"

    def records(self) -> list[CorpusRecord]:
        out = []
        for d in self.docs:
            path = str(d.image) if isinstance(d.image, (str, Path)) else None
            title = self.titles.get(d.id) or _str_or_none(d.metadata.get("title"))
            out.append(
                CorpusRecord(
                    id=d.id,
                    kind="image" if d.image is not None else "text",
                    text=d.text,
                    title=title,
                    path=path,
                    metadata=dict(d.metadata),
                )
            )
        return out

    def retrieve_many(self, queries: Sequence[str], k_text: int, k_image: int) -> list[list[Candidate]]:
        from dataclasses import replace

        pools: list[list[Candidate]] = [[] for _ in queries]
        for route, k in (("text", k_text), ("image", k_image)):
            members, matrix = self._routes[route]
            if k <= 0 or not members or not queries:
                continue
            q = np.asarray(self._embed[route](list(queries)), dtype=np.float32)
            sims = q @ matrix.T
            for row, pool in enumerate(pools):
                order = np.argsort(-sims[row], kind="stable")[:k]
                pool.extend(
                    replace(members[i], source=route, retrieval_score=float(sims[row, i])) for i in order
                )
        return pools


# -- pseudo-queries -------------------------------------------------------------------------------------


def _title_query(title: str, max_words: int) -> str | None:
    """A file-name-like title made readable (``red_fox-02`` -> ``red fox 02``), or ``None`` if it has
    no word of three letters (a hash or a number is no query)."""
    text = re.sub(r"[_\-.]+", " ", Path(title).stem if "/" in title else title)
    words = text.split()
    if not words or not _ALPHA_RUN.search(text):
        return None
    return " ".join(words[:max_words])


def _span_query(text: str, rng: random.Random, options: LabelFreeOptions) -> str | None:
    """A short span of one sentence (Inverse Cloze Task), at most half the passage's words."""
    sentences = [s for s in _SENTENCE.split(text) if len(_WORD.findall(s)) >= options.min_query_words]
    if not sentences:
        return None
    words = _WORD.findall(rng.choice(sentences))
    total = len(_WORD.findall(text))
    width = min(options.max_query_words, len(words), max(options.min_query_words, total // 2))
    start = rng.randrange(0, len(words) - width + 1)
    return " ".join(words[start : start + width])


def _pair_keys(record: CorpusRecord, pair_fields: Sequence[str]) -> list[tuple[str, str]]:
    keys = [
        ("field:" + name, str(record.metadata[name]))
        for name in pair_fields
        if isinstance(record.metadata.get(name), (str, int))
        and not isinstance(record.metadata.get(name), bool)
    ]
    if record.path:
        keys.append(("stem", Path(record.path).stem.lower()))
    if record.text:
        keys.append(("text", normalise_text(record.text).lower()))
    return keys


def _siblings(records: Sequence[CorpusRecord], options: LabelFreeOptions) -> dict[str, set[str]]:
    """``{record id: ids of the other modality that share a document with it}``."""
    by_key: dict[tuple[str, str], list[CorpusRecord]] = {}
    for record in records:
        for key in _pair_keys(record, options.pair_fields):
            by_key.setdefault(key, []).append(record)
    out: dict[str, set[str]] = {}
    for members in by_key.values():
        kinds = {m.kind for m in members}
        if len(kinds) < 2 or len(members) > options.max_siblings + 1:
            continue
        for a in members:
            out.setdefault(a.id, set()).update(b.id for b in members if b.kind != a.kind)
    return out


def _record_queries(
    record: CorpusRecord, rng: random.Random, options: LabelFreeOptions
) -> list[tuple[str, str]]:
    """Candidate ``(kind, text)`` pseudo-queries of one record, best first."""
    out: list[tuple[str, str]] = []
    words = options.max_query_words
    if record.kind == "image":
        if record.text:
            caption = normalise_text(record.text)
            short = (
                " ".join(caption.split()[:words])
                if len(caption.split()) <= words
                else _span_query(caption, rng, options)
            )
            if short:
                out.append(("picture-caption", short))
        title = _title_query(record.title or (Path(record.path).stem if record.path else ""), words)
        if title and not any(title.lower() == t.lower() for _, t in out):
            out.append(("picture-title", title))
    else:
        title = _title_query(record.title, words) if record.title else None
        if title and record.text and not normalise_text(record.text).lower().startswith(title.lower()):
            out.append(("passage-title", title))
        span = _span_query(record.text or "", rng, options)
        if span:
            out.append(("passage-span", span))
    return out


def pseudo_queries(
    records: Sequence[CorpusRecord], options: LabelFreeOptions | None = None
) -> list[PseudoQuery]:
    """Pseudo-queries of a corpus (see the module doc): at most ``options.max_queries``, half from
    pictures and half from passages when both exist, each with its record and that record's
    cross-modal siblings as positives. Deterministic for a given seed and record order.

    Example:
        >>> recs = [CorpusRecord("p1", "text", text="Foxes live in dens under old trees in the forest.")]
        >>> [q.kind for q in pseudo_queries(recs)]
        ['passage-span']
    """
    options = options or LabelFreeOptions()
    rng = random.Random(options.seed)
    siblings = _siblings(records, options)
    by_kind: dict[str, list[CorpusRecord]] = {"image": [], "text": []}
    for record in records:
        by_kind.setdefault(record.kind, []).append(record)
    present = [k for k, members in by_kind.items() if members]
    out: list[PseudoQuery] = []
    seen: set[str] = set()
    for n, kind in enumerate(present):
        budget = (options.max_queries - len(out)) // (len(present) - n)
        members = list(by_kind[kind])
        rng.shuffle(members)
        taken = 0
        for record in members:
            if taken >= budget:
                break
            made = _record_queries(record, rng, options)
            for query_kind, text in made[:1]:
                key = text.lower()
                if key in seen:
                    continue
                seen.add(key)
                positives = frozenset({record.id, *siblings.get(record.id, set())})
                out.append(PseudoQuery(text, positives, query_kind, record.id))
                taken += 1
    return out


def drop_likely_false_negatives(
    candidates: Sequence[Candidate], raw_scores: Sequence[float], grades: Sequence[int], margin: float | None
) -> list[int]:
    """Indices to keep: GPL's teacher reading of a pseudo-labelled pool. A negative that the scorer
    rates more than ``margin`` above the best positive of its modality is probably relevant too (the
    pseudo-query was cut from one record, but others may answer it), so it is not trained as a
    negative. Modalities without a positive in the pool keep every candidate. ``None``: keep all.

    Example:
        >>> c = [Candidate("a", text="x"), Candidate("b", text="y"), Candidate("c", text="z")]
        >>> drop_likely_false_negatives(c, [0.2, 0.9, 0.1], [1, 0, 0], 0.0)
        [0, 2]
    """
    if margin is None:
        return list(range(len(candidates)))
    best: dict[str, float] = {}
    for c, s, g in zip(candidates, raw_scores, grades, strict=True):
        kind = "image" if c.image is not None else "text"
        if g > 0:
            best[kind] = max(best.get(kind, float("-inf")), float(s))
    keep = []
    for i, (c, s, g) in enumerate(zip(candidates, raw_scores, grades, strict=True)):
        kind = "image" if c.image is not None else "text"
        if g > 0 or kind not in best or float(s) <= best[kind] + margin:
            keep.append(i)
    return keep


def labelled_modalities_only(candidates: Sequence[Candidate], grades: Sequence[int]) -> list[int]:
    """Indices of the candidates whose modality has a pseudo-positive in the pool (the others are
    unlabelled rather than irrelevant: ``LabelFreeOptions(unlabelled_modality="drop")``).

    Example:
        >>> c = [Candidate("a", text="x"), Candidate("b", text="y"), Candidate("i", image="p.png")]
        >>> labelled_modalities_only(c, [1, 0, 0])
        [0, 1]
    """
    kinds = ["image" if c.image is not None else "text" for c in candidates]
    labelled = {k for k, g in zip(kinds, grades, strict=True) if g > 0}
    return [i for i, k in enumerate(kinds) if k in labelled]


# -- matching label documents to records -----------------------------------------------------------------


class UnmatchedLabelError(ValueError):
    """Label documents that match no record of the database; the message names each one's
    ``file:line`` and the nearest record, and the fix."""


def _nearest(text: str, pool: Sequence[tuple[str, str]]) -> tuple[str, str, float] | None:
    """The record whose text is most like ``text``: word overlap picks 20, difflib ranks them."""
    if not pool:
        return None
    words = set(text.lower().split())
    overlap = sorted(pool, key=lambda r: -len(words & set(r[1].lower().split())))[:20]
    scored = [(rid, t, difflib.SequenceMatcher(None, text, t).ratio()) for rid, t in overlap]
    return max(scored, key=lambda x: x[2])


def _image_bytes_id(path: str | None) -> str | None:
    from mm_rerank_components.ingest import content_id

    if not path:
        return None
    try:
        return content_id("image", Path(path).read_bytes())
    except OSError:
        return None


def _record_index(
    records: Iterable[CorpusRecord], wanted_images: bool
) -> tuple[dict[str, list[str]], dict[str, list[str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """Records by normalised passage text and by picture bytes, and the pools to find the nearest in."""
    texts: dict[str, list[str]] = {}
    images: dict[str, list[str]] = {}
    text_pool: list[tuple[str, str]] = []
    image_pool: list[tuple[str, str]] = []
    for record in records:
        if record.kind == "text" and record.text:
            texts.setdefault(normalise_text(record.text), []).append(record.id)
            text_pool.append((record.id, normalise_text(record.text)))
        elif record.kind == "image" and wanted_images:
            cid = _image_bytes_id(record.path)
            if cid is not None:
                images.setdefault(cid, []).append(record.id)
            image_pool.append((record.id, record.path or record.title or record.id))
    return texts, images, text_pool, image_pool


def match_labels(
    labels: LabelSet, records: Iterable[CorpusRecord], *, allow_unmatched: bool = False
) -> DocMatch:
    """Find each label document among the records: a passage by its text with whitespace normalised
    (a passage copied from a file with its trailing newline matches), a picture by its file's bytes.

    Raises :class:`UnmatchedLabelError` naming ``file:line`` and the nearest record of every document
    that matches none, unless ``allow_unmatched`` (then they are listed in ``DocMatch.unmatched``).

    Example:
        >>> match = match_labels(labels, ChromaCorpus(retriever).records())  # doctest: +SKIP
    """
    from mm_rerank_components.adapt.mining import DocMatch

    wanted_images = any(d.image is not None for d in labels.docs.values())
    texts, images, text_pool, image_pool = _record_index(records, wanted_images)
    match = DocMatch()
    problems: list[str] = []
    for key, doc in labels.docs.items():
        if doc.image is not None:
            cid = _image_bytes_id(str(doc.image))
            found = images.get(cid or "", [])
            kind, probe, pool = "image", str(doc.image), image_pool
        else:
            probe = normalise_text(doc.text or "")
            found = texts.get(probe, [])
            kind, pool = "text", text_pool
        if found:
            match.records[key] = list(found)
            for rid in found:
                match.collections[rid] = kind
            continue
        near = _nearest(probe, pool)
        hint = (
            f"nearest record {near[0]!r}: {near[1][:80]!r} (similarity {near[2]:.2f})"
            if near
            else "the collection is empty"
        )
        what = "picture (compared by file bytes)" if kind == "image" else f"passage {probe[:60]!r}"
        where = labels.doc_where.get(key, key)
        match.unmatched[key] = f"no record holds this {what}; {hint}"
        problems.append(f"{where}: no record holds this {what}; {hint}")
    if problems and not allow_unmatched:
        raise UnmatchedLabelError(
            f"{len(problems)} label document(s) match no record of the database:\n  "
            + "\n  ".join(problems[:10])
            + ("\n  ..." if len(problems) > 10 else "")
            + "\nfix the labels, ingest those documents, or pass --allow-unmatched (allow_unmatched=True) "
            "to train without them"
        )
    return match
