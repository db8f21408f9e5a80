"""A deterministic, model-free embedding function for tests, docs and examples.

It follows Chroma's embedding-function convention (a callable taking a list of inputs and returning one
vector per input; images are ``numpy`` arrays of shape ``(height, width, 3)``), so it can stand in for a
real text or multimodal embedding function anywhere this package takes one.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from typing import Any

_WORD = re.compile(r"\w+", re.UNICODE)

#: Reference colours an image is described by (its "words" in the shared space).
_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 30),
    "blue": (30, 30, 220),
    "yellow": (230, 220, 30),
    "white": (245, 245, 245),
    "black": (10, 10, 10),
    "grey": (128, 128, 128),
}


class HashingEmbeddingFunction:
    """Bag-of-words hashing for text and "the name of the dominant colour" for images, in one space.

    * a text becomes the L2-normalised sum of one hashed unit direction per lower-cased word;
    * an image becomes the embedding of the word for its mean colour (``"red"``, ``"green"``, ``"blue"``,
      ``"yellow"``, ``"white"``, ``"black"`` or ``"grey"``), so the text query ``"red"`` is closest to a
      red picture.

    Vectors are identical across runs and machines. Quality is that of word overlap: this exists so
    tests and examples run with no model, never for real search.

    Example:
        >>> ef = HashingEmbeddingFunction(dim=8)
        >>> len(ef(["a red fox"])[0])
        8
        >>> ef(["red"]) == ef(["RED"])
        True
    """

    def __init__(self, dim: int = 64) -> None:
        if dim < 2:
            raise ValueError(f"dim must be >= 2, got {dim!r}")
        self.dim = dim
        self.calls = 0  # number of __call__s, so tests can see batching

    @staticmethod
    def name() -> str:
        return "mm-rerank-hashing"

    def get_config(self) -> dict[str, Any]:
        """The settings that shape the vectors, recorded with a collection so a mismatch is refused."""
        return {"dim": self.dim}

    def __call__(self, input: Sequence[Any]) -> list[list[float]]:
        self.calls += 1
        return [self._one(item) for item in input]

    def embed_query(self, input: Sequence[Any]) -> list[list[float]]:
        return self(input)

    def _one(self, item: Any) -> list[float]:
        if isinstance(item, str):
            return self._text(item)
        shape = getattr(item, "shape", None)
        if shape is not None and len(shape) == 3:
            return self._text(colour_word(item))
        raise TypeError(
            f"HashingEmbeddingFunction embeds str or HxWx3 numpy images, got {type(item).__name__}"
        )

    def _text(self, text: str) -> list[float]:
        vector = [0.0] * self.dim
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "big") % self.dim
            vector[index] += 1.0 if digest[4] % 2 == 0 else -1.0
        norm = math.sqrt(sum(v * v for v in vector))
        if norm == 0.0:
            # an empty or all-punctuation text still needs a valid, non-zero vector
            vector[0] = 1.0
            return vector
        return [v / norm for v in vector]


def colour_word(image: Any) -> str:
    """The reference colour nearest to an ``(H, W, 3)`` image's mean pixel.

    Example:
        >>> import numpy as np
        >>> colour_word(np.full((2, 2, 3), (200, 10, 10), dtype=np.uint8))
        'red'
    """
    flat = image.reshape(-1, image.shape[-1])[:, :3]
    mean = [float(v) for v in flat.mean(axis=0)]
    return min(
        _COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(mean, _COLOURS[name], strict=True))
    )
