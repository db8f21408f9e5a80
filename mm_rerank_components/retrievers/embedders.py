"""First-stage embedding functions: naming, fingerprinting, calling them, and choosing them by name.

An embedding function follows Chroma's convention: a callable from a list of inputs (strings, or numpy
``HxWx3`` uint8 images) to one vector per input, optionally with ``name()``, ``get_config()`` and
``embed_query()``. :func:`embedding_functions` builds a pair by name: ``"starter"`` (the offline starter
models), ``"hashing"`` (model-free, for tests) or ``"clip:PATH"`` (a local CLIP-family model).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

logger = logging.getLogger(__name__)

#: Config keys that do not change the vectors (a model moved to another device, or run in other batch
#: sizes, embeds the same).
NEUTRAL_CONFIG_KEYS = frozenset({"device", "batch_size"})
EMBEDDER_SPECS = ("starter", "hashing", "clip:PATH")


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


class EmbeddingFunctions(NamedTuple):
    """A text and an image embedding function, and whether an image query may search the text
    collection (true when both embed into one space)."""

    text: Any
    image: Any
    image_query_searches_text: bool


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


def text_producer(embedding_function: Any) -> str | None:
    """The producer of the text vectors a collection stores, for ``Precomputed("text_embedding")``."""
    if isinstance(embedding_function, SignalProducer):
        return embedding_function.signal_producer("text_embedding")
    return fingerprint(embedding_function)


def shares_text_encoder(text_ef: Any, image_ef: Any) -> bool:
    """Whether two embedding functions embed text identically, so a query text is embedded once: the same
    object, two functions over one ``models`` instance (the starter functions), or two instances of one
    class with the same name and settings."""
    if text_ef is image_ef:
        return True
    models = getattr(text_ef, "models", None)
    if models is not None and models is getattr(image_ef, "models", None):
        return True
    # two instances of one class with one name and one config (clip_embedding_functions' pair) agree
    return (
        type(text_ef) is type(image_ef)
        and bool(embedder_config(text_ef))
        and (fingerprint(text_ef) == fingerprint(image_ef))
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


def embedding_functions(spec: str = "starter", **kwargs: Any) -> EmbeddingFunctions:
    """Build the text and image embedding functions named by ``spec``.

    * ``"starter"``: the offline starter models (MiniLM text, EfficientNet-Lite0 ConSE images, one space);
    * ``"hashing"``: :class:`~mm_rerank_components.retrievers.fake.HashingEmbeddingFunction` (no model);
    * ``"clip:PATH"``: a local CLIP-family model folder (CLIP, SigLIP...) through
      :func:`mm_rerank_components.retrievers.clip.clip_embedding_functions`; ``kwargs`` go to it.

    Example:
        >>> embedding_functions("hashing").image_query_searches_text
        True
        >>> embedding_functions("bert")
        Traceback (most recent call last):
        ...
        ValueError: unknown embedder 'bert'; use one of starter, hashing, clip:PATH
    """
    if spec == "starter":
        text, image = starter_embedding_functions()
        return EmbeddingFunctions(text, image, True)
    if spec == "hashing":
        from mm_rerank_components.retrievers.fake import HashingEmbeddingFunction

        ef = HashingEmbeddingFunction(**kwargs)
        return EmbeddingFunctions(ef, ef, True)
    if spec.startswith("clip:") and len(spec) > len("clip:"):
        import importlib

        # resolved by name, when asked for: the CLIP module needs torch and transformers
        clip = importlib.import_module("mm_rerank_components.retrievers.clip")
        text, image = clip.clip_embedding_functions(spec[len("clip:") :], **kwargs)
        return EmbeddingFunctions(text, image, True)
    raise ValueError(f"unknown embedder {spec!r}; use one of {', '.join(EMBEDDER_SPECS)}")


def starter_embedding_functions() -> tuple[Any, Any]:
    """The starter text and image embedding functions, sharing one ``StarterModels``."""
    try:
        from mm_rerank_components.starter.chroma import (
            StarterImageEmbeddingFunction,
            StarterTextEmbeddingFunction,
        )
    except ImportError as exc:
        raise ImportError(
            "No embedding functions were given, so the offline starter models are used; they need "
            'pip install "mm-rerank-components[starter]" (or pass text_embedding_function= and '
            f"image_embedding_function=): {exc}"
        ) from exc
    from mm_rerank_components.starter.models import StarterModels

    models = StarterModels()  # one instance: both functions embed text with the same MiniLM
    return StarterTextEmbeddingFunction(models=models), StarterImageEmbeddingFunction(models=models)
