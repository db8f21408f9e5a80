"""First-stage embeddings for the evaluation: the two retrieval routes, computed once and cached.

The product's first stage is two Chroma collections (text and image) queried with ``k_text`` and
``k_image``. The evaluation reproduces that with plain numpy over the same starter embeddings, so it
needs no database: the text route is all-MiniLM-L6-v2 cosine between query and passage; the image route
is the cosine between the query's MiniLM embedding and the image's ConSE embedding (EfficientNet-Lite0
class probabilities mixing the MiniLM embeddings of the class names).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["Embedder", "HashingEmbedder", "StarterEmbedder", "cached_embeddings"]


class Embedder(Protocol):
    """Embeds texts and images into one space (rows L2-normalised, so a dot product is a cosine)."""

    name: str

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_images(self, images: Sequence[Any]) -> np.ndarray: ...


class StarterEmbedder:
    """The starter models as a first stage (a thin adapter over ``starter.models.StarterModels``).

    MiniLM embeds texts; images become ConSE embeddings (EfficientNet-Lite0 class probabilities mixing
    the MiniLM embeddings of the class names). Images are decoded by the package's own
    :func:`~mm_rerank_components.media.load_image`, as in the product.

    Example:
        >>> emb = StarterEmbedder()  # doctest: +SKIP
        >>> emb.embed_texts(["a red fox"]).shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(self, models: Any = None, batch: int = 64) -> None:
        if models is None:
            from mm_rerank_components.starter.models import get_starter_models

            models = get_starter_models()
        self.models = models
        self.batch = batch
        self.name = str(models.name)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.models.embed_texts(list(texts)), dtype=np.float32)

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        from mm_rerank_components.media import load_image

        out = []
        for start in range(0, len(images), self.batch):
            chunk = [load_image(ref) for ref in images[start : start + self.batch]]
            out.append(np.asarray(self.models.embed_images(chunk), dtype=np.float32))
        if not out:
            return np.zeros((0, int(self.models.dim)), dtype=np.float32)
        return np.concatenate(out)


def _fingerprint(kind: str, embedder_name: str, items: Sequence[Any]) -> str:
    digest = hashlib.sha256(f"{kind}|{embedder_name}|".encode())
    for item in items:
        if isinstance(item, (str, os.PathLike)) and kind == "image":
            digest.update(Path(item).read_bytes())
        else:
            digest.update(str(item).encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:24]


def cached_embeddings(
    embedder: Embedder, kind: str, items: Sequence[Any], cache_dir: Path | None
) -> np.ndarray:
    """``embedder.embed_texts(items)`` or ``embed_images(items)``, cached as ``.npy`` by content hash.

    Image items must be paths here (the cache key hashes the file bytes).
    """
    if kind not in ("text", "image"):
        raise ValueError(f"kind must be 'text' or 'image', got {kind!r}")
    path = None
    if cache_dir is not None:
        path = cache_dir / f"{kind}-{_fingerprint(kind, embedder.name, items)}.npy"
        if path.exists():
            cached = np.load(path)
            if cached.shape[0] == len(items):
                return np.asarray(cached)
    logger.info("embedding %d %s items with %s", len(items), kind, embedder.name)
    result = embedder.embed_texts(items) if kind == "text" else embedder.embed_images(items)
    if result.shape[0] != len(items):
        raise ValueError(
            f"{embedder.name} returned {result.shape[0]} embeddings for {len(items)} {kind} items"
        )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, result)
    return result


class HashingEmbedder:
    """A dependency-free embedder for tests and smoke runs: hashed words for text, colours for images.

    Text: a bag of hashed lower-cased words. Images: a coarse colour histogram placed in the same
    number of dimensions. The two are *not* semantically aligned; it exercises the plumbing only.

    Example:
        >>> HashingEmbedder(dim=16).embed_texts(["red fox"]).shape
        (1, 16)
    """

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.name = f"hashing(dim={dim})"

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import re

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[
                    i,
                    int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big") % self.dim,
                ] += 1
        return _unit(out)

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        from PIL import Image

        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for i, ref in enumerate(images):
            with Image.open(ref) if not isinstance(ref, Image.Image) else _nullcontext(ref) as im:
                small = np.asarray(im.convert("RGB").resize((4, 4)), dtype=np.float32).reshape(-1)
            out[i, : min(self.dim, small.size)] = small[: self.dim]
        return _unit(out)


class _nullcontext:
    def __init__(self, value: Any) -> None:
        self.value = value

    def __enter__(self) -> Any:
        return self.value

    def __exit__(self, *exc: object) -> None:
        return None


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.clip(norms, 1e-12, None)).astype(np.float32)
