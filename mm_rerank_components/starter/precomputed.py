"""What the first stage hands the starter second stage: producer fingerprints and compact class lists.

The Chroma route already has each passage's MiniLM embedding (the stored vector) and, when ingest keeps
them, each picture's ImageNet class probabilities. :class:`~mm_rerank_components.scorers.starter.
StarterScorer` reuses them instead of running the models again, through
:class:`~mm_rerank_components.types.Precomputed` entries on ``Candidate.precomputed``:

* ``kind="text_embedding"``: ``value`` is the passage's 384 floats from
  :meth:`StarterModels.embed_texts <mm_rerank_components.starter.StarterModels.embed_texts>`;
  ``producer`` is :func:`text_producer`; ``content`` is ``media.text_key(candidate.text)``.
* ``kind="image_classes"``: ``value`` is :func:`compact_classes` of the picture's class probabilities
  from :meth:`StarterModels.image_probabilities <mm_rerank_components.starter.StarterModels.
  image_probabilities>` (a short string, storable as Chroma metadata); ``producer`` is
  :func:`image_producer`; ``content`` is ``media.image_key(candidate.image)``.

:func:`text_signal` and :func:`image_signal` build those entries. A scorer uses an entry only when its
producer equals the scorer's own fingerprint (the same model files and settings), so a vector from another
model is never mixed in; the reranker checks the content key.

Example:
    >>> import numpy as np
    >>> probs = np.full(1000, 0.2 / 998, dtype=np.float32)
    >>> probs[[207, 208]] = [0.7, 0.1]
    >>> compact_classes(probs, k=2)
    '207:0.7,208:0.1'
    >>> expanded = expand_classes("207:0.7,208:0.1")
    >>> round(float(expanded[207]), 3), round(float(expanded.sum()), 3)
    (0.7, 0.8)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mm_rerank_components.types import Precomputed

if TYPE_CHECKING:
    from mm_rerank_components.starter.models import StarterModels

#: ``Precomputed.kind`` of a passage's stored MiniLM embedding.
TEXT_EMBEDDING = "text_embedding"
#: ``Precomputed.kind`` of a picture's compact ImageNet class probabilities.
IMAGE_CLASSES = "image_classes"
#: Classes kept by :func:`compact_classes` by default: the number StarterScorer reads (its ``class_k``), so
#: a reused list gives the scores a fresh classification gives (measured, docs/starter_models.md).
DEFAULT_COMPACT_K = 50
#: Bump when preprocessing changes the class probabilities (v2: 16-bit and float pictures scaled to 8 bits).
IMAGE_PREPROCESSING = "p2"
#: Bump when text handling changes the embeddings (b1: passages bounded to 16 characters per token).
TEXT_PREPROCESSING = "b1"
NUM_CLASSES = 1000


def text_producer(models: StarterModels) -> str:
    """The fingerprint of passage embeddings made by ``models.embed_texts``.

    It names the text model's files and the text handling; two ``StarterModels`` that embed passages
    identically give the same string.

    Example:
        >>> from mm_rerank_components.starter import StarterModels
        >>> text_producer(StarterModels())
        'starter-text:minilm-l6-v2:b1'
    """
    return f"starter-text:{models.text_label}:{TEXT_PREPROCESSING}"


def image_producer(models: StarterModels, n_views: int | None = None) -> str:
    """The fingerprint of class probabilities made by ``models.image_probabilities(images, n_views)``.

    It names the image model's file, the number of views (default: ``models.n_views``) and the
    preprocessing version.

    Example:
        >>> from mm_rerank_components.starter import StarterModels
        >>> image_producer(StarterModels())  # doctest: +SKIP
        'starter-image:efficientnet-lite0-57934424:v1:p2'
    """
    views = models.n_views if n_views is None else n_views
    return f"starter-image:{models.image_label}:v{views}:{IMAGE_PREPROCESSING}"


def compact_classes(probabilities: Any, k: int = DEFAULT_COMPACT_K) -> str:
    """The ``k`` most probable classes of one picture as ``"index:probability,..."``, most probable first.

    Probabilities keep 6 significant digits. The string is short (about 14 characters a class, some 700
    for the default 50), so it fits in Chroma metadata; :func:`expand_classes` turns it back into a
    1,000-class vector.

    Args:
        probabilities: one picture's ``(1000,)`` class probabilities (a row of
            ``StarterModels.image_probabilities``).
        k: how many classes to keep (1..1000).

    Example:
        >>> import numpy as np
        >>> p = np.zeros(1000)
        >>> p[[3, 9]] = [0.25, 0.75]
        >>> compact_classes(p, k=2)
        '9:0.75,3:0.25'
    """
    probs = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if probs.shape != (NUM_CLASSES,):
        raise ValueError(
            f"compact_classes takes one picture's {NUM_CLASSES} class probabilities, got shape "
            f"{np.shape(probabilities)}; pass one row of StarterModels.image_probabilities"
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= NUM_CLASSES:
        raise ValueError(f"k must be an int between 1 and {NUM_CLASSES}, got {k!r}")
    if not np.isfinite(probs).all() or probs.min() < 0:
        raise ValueError("class probabilities must be finite and >= 0")
    top = np.argsort(-probs, kind="stable")[:k]
    return ",".join(f"{int(i)}:{probs[i]:.6g}" for i in top)


def parse_classes(value: Any) -> list[tuple[int, float]]:
    """The ``(index, probability)`` pairs of a compact value: the string of :func:`compact_classes`, a
    mapping ``{index: probability}``, or a sequence of pairs.

    Example:
        >>> parse_classes("9:0.75,3:0.25")
        [(9, 0.75), (3, 0.25)]
    """
    pairs: list[tuple[Any, Any]]
    if isinstance(value, str):
        try:
            pairs = [tuple(part.split(":", 1)) for part in value.split(",") if part.strip()]  # type: ignore[misc]
        except ValueError:
            pairs = []
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, Sequence):
        pairs = list(value)
    else:
        raise ValueError(f"cannot read class probabilities from a {type(value).__name__}")
    out: list[tuple[int, float]] = []
    for pair in pairs:
        try:
            index, prob = int(pair[0]), float(pair[1])
        except (TypeError, ValueError, IndexError):
            raise ValueError(
                f"bad class entry {pair!r}; expected 'index:probability' (see compact_classes)"
            ) from None
        if not 0 <= index < NUM_CLASSES or not (math.isfinite(prob) and 0.0 <= prob <= 1.0001):
            raise ValueError(f"bad class entry {pair!r}: index must be 0..999 and probability in [0, 1]")
        out.append((index, prob))
    if not out:
        raise ValueError(f"no classes in {value!r}")
    if len({i for i, _ in out}) != len(out):
        raise ValueError(f"a class is listed twice in {value!r}")
    return out


def expand_classes(value: Any) -> np.ndarray:
    """A float32 ``(1000,)`` probability vector from a compact value (see :func:`parse_classes`).

    The listed classes keep their probabilities and the others are 0, which is what StarterScorer reads of
    a freshly classified picture too (its top ``class_k`` classes).

    Example:
        >>> v = expand_classes("9:0.75,3:0.2")
        >>> float(v[9]), float(v[0])
        (0.75, 0.0)
    """
    pairs = parse_classes(value)
    out = np.zeros(NUM_CLASSES, dtype=np.float32)
    for index, prob in pairs:
        out[index] = prob
    return out


def text_signal(models: StarterModels, text: str, embedding: Any) -> Precomputed:
    """A ``text_embedding`` entry for ``Candidate.precomputed``: a passage's stored MiniLM embedding.

    Example:
        >>> from mm_rerank_components.starter import StarterModels
        >>> s = text_signal(StarterModels(), "Foxes live in dens.", [0.0] * 384)
        >>> s.kind, s.producer
        ('text_embedding', 'starter-text:minilm-l6-v2:b1')
    """
    from mm_rerank_components.media import text_key

    return Precomputed(TEXT_EMBEDDING, text_producer(models), text_key(text), embedding)


def image_signal(
    models: StarterModels, image_ref: Any, classes: str, n_views: int | None = None
) -> Precomputed:
    """An ``image_classes`` entry for ``Candidate.precomputed``: a picture's :func:`compact_classes`.

    ``image_ref`` must be the reference exactly as the candidate carries it (the content key is
    ``media.image_key(image_ref)``).

    Example:
        >>> from mm_rerank_components.starter import StarterModels
        >>> s = image_signal(StarterModels(), b"...png bytes...", "9:0.75,3:0.25")
        >>> s.kind
        'image_classes'
    """
    from mm_rerank_components.media import image_key

    return Precomputed(IMAGE_CLASSES, image_producer(models, n_views), image_key(image_ref), classes)
