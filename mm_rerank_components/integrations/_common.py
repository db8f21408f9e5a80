"""The one key schema both framework translators share, and the helpers that apply it (no framework here).

A :class:`~mm_rerank_components.types.Candidate` becomes a LangChain ``Document`` or a LlamaIndex node
and back through :mod:`~mm_rerank_components.integrations.langchain` (``to_document``/``from_document``)
and :mod:`~mm_rerank_components.integrations.llama_index` (``to_node``/``from_node``). Both read and
write the metadata keys defined here, so the two sides never disagree.

Example:
    >>> from mm_rerank_components import Candidate
    >>> c = Candidate("i1", image="/data/fox.jpg", text="A fox", source="mm_images")
    >>> meta = candidate_metadata(c)
    >>> meta["modality"], meta["image_path"], meta[ADDED_KEYS_KEY]
    ('text+image', '/data/fox.jpg', 'modality,source,retrieval_score,image_uri,image_path')
    >>> strip_added(meta) == dict(c.metadata)
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mm_rerank_components.media import classify, has_base64_image_header
from mm_rerank_components.types import Candidate, Precomputed, RankedCandidate

# -- the schema --------------------------------------------------------------------------------------------

#: An inline picture (a data URI or base64), e.g. a retriever's preview. Read first.
IMAGE_KEY = "image"
#: A local file path of the picture.
IMAGE_PATH_KEY = "image_path"
#: Any reference of the picture (path, ``file://`` or ``http(s)://`` URI).
IMAGE_URI_KEY = "image_uri"
#: Where a Document's picture is looked for, in this order (the last three are what other tools write:
#: LangChain loaders' ``image_url``/``image_base64`` and Chroma's ``uri``).
IMAGE_KEYS: tuple[str, ...] = (IMAGE_KEY, IMAGE_PATH_KEY, IMAGE_URI_KEY, "image_url", "image_base64", "uri")
#: Where an ImageNode's picture is looked for when its ``image``, ``image_path`` and ``image_url`` are empty
#: (``file_path`` is what LlamaIndex's SimpleDirectoryReader sets).
NODE_IMAGE_KEYS: tuple[str, ...] = ("file_path", IMAGE_PATH_KEY, IMAGE_URI_KEY)
#: The caption of a picture stored as base64 ``page_content`` (langchain-chroma's ``add_images``).
CAPTION_KEYS: tuple[str, ...] = ("caption", "title", "alt_text")
#: Where a first-stage score is read from a Document.
SCORE_KEYS: tuple[str, ...] = ("retrieval_score", "score")
#: The candidate fields a translator writes into metadata.
CANDIDATE_KEYS: tuple[str, ...] = ("modality", "source", "retrieval_score")
#: Where ``Candidate.source`` (the route) goes when the candidate's own metadata already has a ``source``
#: of another value (the file path LangChain loaders set): the caller's ``source`` is kept, never overwritten.
ROUTE_SOURCE_KEY = "mm_rerank_source"
#: The keys a translator added to a candidate's own metadata (comma-separated), so the way back removes
#: exactly those and ``from_document(to_document(c)) == c``.
ADDED_KEYS_KEY = "mm_rerank_added"
#: The first stage's precomputed signals (a passage's stored embedding, a picture's stored classes) as plain
#: data, ``{name: {"kind", "producer", "content", "value"}}``, so a scorer reuses them after a round trip
#: through a framework exactly as it does on the retriever's own Candidates (same scores).
PRECOMPUTED_KEY = "mm_rerank_precomputed"
#: Metadata keys the rerank adapters write; they are kept out of LLM prompts and embeddings.
RESULT_KEYS: tuple[str, ...] = ("relevance_score", "modality", "retrieval_score", "rerank_error")
#: Metadata keys left out of the text LlamaIndex shows an LLM or an embedding model.
BOOKKEEPING_KEYS: tuple[str, ...] = (
    "path",
    "rel_path",
    "kind",
    "source",
    ROUTE_SOURCE_KEY,
    "source_collection",
    "route",
    "routes",
    "retrieval_score",
    "retrieval_rank",
    "distance",
    "distance_space",
    IMAGE_KEY,
    IMAGE_URI_KEY,
    IMAGE_PATH_KEY,
    "width",
    "height",
    "chunk",
    "n_chunks",
    "modality",
    "image_preview",
    "preview",
    "content_id",
    "classes",
    "classes_producer",
    PRECOMPUTED_KEY,
    ADDED_KEYS_KEY,
)


# -- Candidate -> framework metadata ------------------------------------------------------------------------


def image_reference(candidate: Candidate, what: str) -> str | None:
    """The candidate's image as a string reference, or None; an in-memory image cannot travel in metadata."""
    image = candidate.image
    if image is None or isinstance(image, str):
        return image
    raise TypeError(
        f"candidate {candidate.id!r} holds an in-memory image ({type(image).__name__}); {what} needs a "
        "path, URI, data URI or base64 string: save the picture and pass its path"
    )


def is_local_path(ref: str) -> bool:
    """True for a reference that names a local file (not a URL, ``file://`` URI, data URI or base64)."""
    return classify(ref) == "path"


def candidate_metadata(candidate: Candidate, *, what: str = "a Document") -> dict[str, Any]:
    """The candidate's metadata plus its ``modality``, ``source``, ``retrieval_score`` and picture keys.

    ``source`` is the candidate's route unless the metadata has its own ``source`` (a loader's file path):
    that one is kept and the route goes to ``mm_rerank_source`` (see :func:`candidate_source`).

    A data URI or base64 picture goes to ``image``; any other reference to ``image_uri``, and a local file
    also to ``image_path`` (existing values are kept, and ``image`` is set instead when they name another
    picture). The keys added are listed in ``mm_rerank_added``.
    """
    own = dict(candidate.metadata)
    metadata: dict[str, Any] = {**own, "modality": candidate.modality}
    if "source" in own and own["source"] != candidate.source:
        metadata[ROUTE_SOURCE_KEY] = candidate.source
    else:
        metadata["source"] = candidate.source
    metadata["retrieval_score"] = candidate.retrieval_score
    if candidate.precomputed:
        metadata[PRECOMPUTED_KEY] = precomputed_to_data(candidate.precomputed)
    image = image_reference(candidate, what)
    if image is not None:
        kind = classify(image)
        if kind in ("data", "base64"):
            metadata[IMAGE_KEY] = image
        else:
            metadata.setdefault(IMAGE_URI_KEY, image)
            if kind == "path":
                metadata.setdefault(IMAGE_PATH_KEY, image)
            if first_present(metadata, IMAGE_KEYS) != image:
                metadata[IMAGE_KEY] = image  # the keys read first name another picture
    metadata[ADDED_KEYS_KEY] = ",".join(key for key in metadata if key not in own)
    return metadata


def candidate_source(metadata: Mapping[str, Any]) -> str | None:
    """The ``Candidate.source`` (route) a translator wrote: ``mm_rerank_source`` when set, else ``source``.

    Example:
        >>> c = Candidate("t1", text="Foxes dig dens.", source="mm_text", metadata={"source": "paper.pdf"})
        >>> meta = candidate_metadata(c)
        >>> meta["source"], candidate_source(meta), strip_added(meta)
        ('paper.pdf', 'mm_text', {'source': 'paper.pdf'})
    """
    if ROUTE_SOURCE_KEY in metadata:
        return string_or_none(metadata[ROUTE_SOURCE_KEY])
    return string_or_none(metadata.get("source"))


def strip_added(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata`` without the keys a translator added (see :data:`ADDED_KEYS_KEY`)."""
    added = metadata.get(ADDED_KEYS_KEY)
    if not isinstance(added, str):
        return dict(metadata)
    drop = {*added.split(","), ADDED_KEYS_KEY}
    return {key: value for key, value in metadata.items() if key not in drop}


def precomputed_to_data(precomputed: Mapping[str, Precomputed]) -> dict[str, dict[str, Any]]:
    """``Candidate.precomputed`` as JSON-ready data (a vector becomes a list of floats, exactly).

    Example:
        >>> precomputed_to_data({"text_embedding": Precomputed("text_embedding", "m", "text:ab", (0.5,))})
        {'text_embedding': {'kind': 'text_embedding', 'producer': 'm', 'content': 'text:ab', 'value': [0.5]}}
    """
    out: dict[str, dict[str, Any]] = {}
    for name, signal in precomputed.items():
        value = signal.value
        if not isinstance(value, (str, int, float)) and hasattr(value, "__len__"):
            value = [float(v) for v in value]
        out[name] = {
            "kind": signal.kind,
            "producer": signal.producer,
            "content": signal.content,
            "value": value,
        }
    return out


def precomputed_from_data(data: Any, where: str = "metadata") -> dict[str, Precomputed]:
    """The inverse of :func:`precomputed_to_data`; a malformed entry is a ``ValueError`` naming it.

    Example:
        >>> data = {"text_embedding": {"kind": "text_embedding", "producer": "m", "content": "text:ab",
        ...                            "value": [0.5]}}
        >>> precomputed_from_data(data)["text_embedding"].value
        (0.5,)
    """
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{where}[{PRECOMPUTED_KEY!r}] must be an object of named signals, got {type(data).__name__}"
        )
    out: dict[str, Precomputed] = {}
    for name, entry in data.items():
        fields = ("kind", "producer", "content")
        if (
            not isinstance(entry, Mapping)
            or any(not isinstance(entry.get(f), str) for f in fields)
            or "value" not in entry
        ):
            raise ValueError(
                f"{where}[{PRECOMPUTED_KEY!r}][{name!r}] must be an object with string kind, producer and "
                f'content and a value, like {{"kind": "text_embedding", "producer": "...", "content": '
                f'"text:...", "value": [0.1, ...]}}; got {str(entry)[:80]!r}'
            )
        value = entry["value"]
        if isinstance(value, list):
            value = tuple(value)
        out[str(name)] = Precomputed(entry["kind"], entry["producer"], entry["content"], value)
    return out


# -- framework metadata -> Candidate ------------------------------------------------------------------------


def first_present(metadata: Mapping[str, Any], keys: tuple[str, ...]) -> Any | None:
    """The value of the first key in ``keys`` that ``metadata`` holds with a non-empty value."""
    for key in keys:
        value = metadata.get(key)
        if value is not None and value != "":
            return value
    return None


def looks_like_base64_image(text: str) -> bool:
    """True for a data URI or base64 text whose first bytes are a known image header.

    langchain-chroma's ``add_images`` stores the base64 image itself as ``page_content``; this tells such
    a document from a passage without decoding the whole string.

    Example:
        >>> looks_like_base64_image("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMB")
        True
        >>> looks_like_base64_image("A passage about foxes.")
        False
    """
    head = text[:64].strip()
    return head[:11].lower().startswith("data:image/") or has_base64_image_header(head)


def float_or_none(value: Any) -> float | None:
    """A first-stage score as float, or None when absent or not a finite number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def string_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def result_metadata(
    ranked: RankedCandidate, retrieval_score: float | None, *, keep_retrieval_score: bool
) -> dict[str, Any]:
    """The metadata entries an adapter adds to a reranked node or document."""
    extra: dict[str, Any] = {"relevance_score": ranked.score, "modality": ranked.modality}
    if keep_retrieval_score and retrieval_score is not None:
        extra["retrieval_score"] = retrieval_score
    if ranked.error is not None:
        extra["rerank_error"] = ranked.error
    return extra
