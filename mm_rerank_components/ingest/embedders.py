"""Embedding functions as ingest meets them: naming, fingerprinting and calling them (the lower layer).

An embedding function follows Chroma's convention: a callable from a list of inputs (strings, or numpy
``HxWx3`` uint8 images) to one vector per input, optionally with ``name()``, ``get_config()``,
``build_from_config()`` and ``embed_query()``. Ingest (the writer, :mod:`.ray`) needs only these helpers;
choosing functions by name (``"starter"``, ``"hashing"``, ``"clip:PATH"``) is the retrievers' business
(:func:`mm_rerank_components.retrievers.embedders.embedding_functions`), which re-exports everything here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from mm_rerank_components.ingest.records import CLASSES_KEY, CLASSES_PRODUCER_KEY
from mm_rerank_components.ingest.store import EmbeddedPicture

logger = logging.getLogger(__name__)

__all__ = [
    "CAPTION_EMBEDDING_KEY",
    "CAPTION_PRODUCER_KEY",
    "NEUTRAL_CONFIG_KEYS",
    "ClassifyingEmbeddingFunction",
    "SignalProducer",
    "as_array",
    "call_embedding_function",
    "embed_pictures_with",
    "embedder_config",
    "embedder_name",
    "fingerprint",
    "pack_vector",
    "text_producer",
    "unpack_vector",
]

#: Config keys that do not change the vectors (a model moved to another device, or run in other batch
#: sizes, embeds the same).
NEUTRAL_CONFIG_KEYS = frozenset({"device", "batch_size"})
#: Picture metadata: the text embedding of the picture's caption (its document), packed by
#: :func:`pack_vector`, so the reranker reuses it as ``Precomputed("text_embedding")`` instead of running
#: the text model on every picture's caption at query time; and who produced it.
CAPTION_EMBEDDING_KEY = "caption_embedding"
CAPTION_PRODUCER_KEY = "caption_embedding_producer"


@runtime_checkable
class SignalProducer(Protocol):
    """An embedding function whose vectors a second-stage scorer can reuse: it names the producer
    fingerprint the scorer compares with its own (see :class:`~mm_rerank_components.types.Precomputed`)."""

    def signal_producer(self, kind: str) -> str | None:
        """The producer of ``kind`` signals (``"text_embedding"``, ``"image_classes"``), or ``None``."""
        ...


@runtime_checkable
class ClassifyingEmbeddingFunction(Protocol):
    """An image embedding function that also returns each picture's compact class probabilities, so
    ingest stores them beside the vector without running the classifier twice."""

    def embed_with_classes(self, images: list[Any]) -> tuple[list[list[float]], list[str], str]:
        """Vectors of decoded pictures (RGB PIL images), one compact class string per picture, and the
        classes' producer fingerprint."""
        ...


def embedder_name(embedding_function: Any) -> str:
    """A stable name for an embedding function: its Chroma ``name()`` if it has one, else its class.

    Example:
        >>> from mm_rerank_components.retrievers.fake import HashingEmbeddingFunction
        >>> embedder_name(HashingEmbeddingFunction())
        'mm-rerank-hashing'
    """
    name_fn = getattr(embedding_function, "name", None)
    if callable(name_fn):
        try:
            name = name_fn()
        except TypeError:
            name = None
        if isinstance(name, str) and name:
            return name
    own = getattr(embedding_function, "__qualname__", None)  # a plain function
    return own if isinstance(own, str) else type(embedding_function).__qualname__


def embedder_config(embedding_function: Any) -> dict[str, Any]:
    """The settings that shape an embedding function's vectors: its Chroma ``get_config()`` without
    :data:`NEUTRAL_CONFIG_KEYS`, as JSON-safe values (``{}`` when it reports none).

    Example:
        >>> from mm_rerank_components.retrievers.fake import HashingEmbeddingFunction
        >>> embedder_config(HashingEmbeddingFunction(dim=8))
        {'dim': 8}
    """
    get_config = getattr(embedding_function, "get_config", None)
    if not callable(get_config):
        return {}
    try:
        config = get_config()
    except NotImplementedError:
        return {}
    if not isinstance(config, Mapping):
        return {}
    clean = {str(k): v for k, v in config.items() if k not in NEUTRAL_CONFIG_KEYS}
    return dict(json.loads(json.dumps(clean, sort_keys=True, default=str)))


def fingerprint(embedding_function: Any) -> str:
    """Name and a hash of the config: identifies the vectors an embedding function makes.

    Example:
        >>> from mm_rerank_components.retrievers.fake import HashingEmbeddingFunction
        >>> fingerprint(HashingEmbeddingFunction(8)) != fingerprint(HashingEmbeddingFunction(16))
        True
    """
    config = json.dumps(embedder_config(embedding_function), sort_keys=True)
    return (
        f"{embedder_name(embedding_function)}:{hashlib.blake2b(config.encode(), digest_size=6).hexdigest()}"
    )


def as_array(image: Any) -> Any:
    """A PIL image or ``HxWx3`` array as a uint8 ``HxWx3`` numpy array (Chroma's image type)."""
    import numpy as np

    if hasattr(image, "convert"):  # a PIL image
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got an array of shape {array.shape}")
    return array


def call_embedding_function(ef: Any, inputs: list[Any], *, query: bool) -> list[list[float]]:
    """``ef(inputs)`` (or ``ef.embed_query`` for queries) as lists of floats, one per input."""
    if ef is None:
        raise ValueError("no embedding function for this collection; pass text_/image_embedding_function=")
    if not inputs:
        return []
    fn = getattr(ef, "embed_query", None) if query else None
    vectors = fn(inputs) if callable(fn) else ef(inputs)
    return _check_count(ef, [[float(v) for v in vector] for vector in vectors], len(inputs))


def _check_count(ef: Any, vectors: list[Any], n: int) -> list[Any]:
    if len(vectors) != n:
        raise ValueError(
            f"embedding function {embedder_name(ef)!r} returned {len(vectors)} vectors for {n} inputs"
        )
    return vectors


def embed_pictures_with(ef: Any, images: Sequence[Any]) -> list[EmbeddedPicture]:
    """Embed decoded pictures (PIL images) for storage with ``ef``; a classifying function's compact class
    probabilities come along as metadata (what a store's ``embed_pictures`` and a Ray worker both do)."""
    if not isinstance(ef, ClassifyingEmbeddingFunction):
        vectors = call_embedding_function(ef, [as_array(image) for image in images], query=False)
        return [EmbeddedPicture(v) for v in vectors]
    vectors, classes, producer = ef.embed_with_classes(list(images))  # PIL images: no array round trip
    if len(vectors) != len(images) or len(classes) != len(images):
        raise ValueError(f"{embedder_name(ef)!r} returned {len(vectors)} vectors for {len(images)} pictures")
    return [
        EmbeddedPicture([float(x) for x in v], {CLASSES_KEY: c, CLASSES_PRODUCER_KEY: producer})
        for v, c in zip(vectors, classes, strict=True)
    ]


def text_producer(embedding_function: Any) -> str | None:
    """The producer of the text vectors a collection stores, for ``Precomputed("text_embedding")``: the
    function's own :class:`SignalProducer` name, else its fingerprint."""
    if isinstance(embedding_function, SignalProducer):
        return embedding_function.signal_producer("text_embedding")
    return fingerprint(embedding_function)


def pack_vector(vector: Sequence[float]) -> str:
    """A vector as a metadata string: base64 of little-endian float32 (exact for float32 vectors).

    Example:
        >>> unpack_vector(pack_vector([0.5, -1.0]))
        (0.5, -1.0)
    """
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def unpack_vector(text: str) -> tuple[float, ...]:
    """The vector :func:`pack_vector` packed; raises ValueError for a string that is not one."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"not a packed vector: {text[:40]!r}") from exc
    if not data or len(data) % 4:
        raise ValueError(f"not a packed vector ({len(data)} bytes): {text[:40]!r}")
    return struct.unpack(f"<{len(data) // 4}f", data)
