"""First-stage embedding functions: choosing them by name, and the helpers ingest shares.

:func:`embedding_functions` builds a text and an image function by name: ``"starter"`` (the offline starter
models), ``"hashing"`` (model-free, for tests) or ``"clip:PATH"`` (a local CLIP-family model). Naming,
fingerprinting and calling them live one layer down, in :mod:`mm_rerank_components.ingest.embedders`
(ingest needs them and never imports retrievers), and are re-exported here.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from mm_rerank_components.ingest.embedders import (
    NEUTRAL_CONFIG_KEYS,
    ClassifyingEmbeddingFunction,
    SignalProducer,
    as_array,
    call_embedding_function,
    embed_pictures_with,
    embedder_config,
    embedder_name,
    fingerprint,
    text_producer,
)

logger = logging.getLogger(__name__)

__all__ = [
    "EMBEDDER_SPECS",
    "NEUTRAL_CONFIG_KEYS",
    "ClassifyingEmbeddingFunction",
    "EmbeddingFunctions",
    "SignalProducer",
    "as_array",
    "call_embedding_function",
    "embed_pictures_with",
    "embedder_config",
    "embedder_name",
    "embedding_functions",
    "fingerprint",
    "shares_text_encoder",
    "starter_embedding_functions",
    "text_producer",
]

EMBEDDER_SPECS = ("starter", "hashing", "clip:PATH")


class EmbeddingFunctions(NamedTuple):
    """A text and an image embedding function, and whether an image query may search the text
    collection (true when both embed into one space)."""

    text: Any
    image: Any
    image_query_searches_text: bool


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
