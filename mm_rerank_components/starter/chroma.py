"""Chroma embedding functions for the starter models (chromadb 1.x ``EmbeddingFunction`` protocol).

* :class:`StarterTextEmbeddingFunction` embeds documents (and query texts) with all-MiniLM-L6-v2.
* :class:`StarterImageEmbeddingFunction` embeds images (numpy arrays, as Chroma's ``ImageLoader`` yields
  them) by ConSE *and* texts with the same text encoder, so ``query_texts=`` works on an image collection.

Both are registered with Chroma under their :meth:`name`, report a JSON config, and rebuild from it, so a
``PersistentClient`` collection created with them reopens with them (not with Chroma's default model,
which would try to download weights). Creating an embedding function loads nothing; the weights load on
the first call and are shared with every other :class:`~mm_rerank_components.starter.StarterModels` on
the same device.

Example:
    >>> import chromadb
    >>> from mm_rerank_components.starter.chroma import StarterTextEmbeddingFunction
    >>> client = chromadb.EphemeralClient()
    >>> docs = client.create_collection("docs", embedding_function=StarterTextEmbeddingFunction())
    >>> docs.add(ids=["a"], documents=["Foxes live in dens."])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from mm_rerank_components.starter._deps import require

require("chromadb", extra="chroma")

from chromadb.api.types import (  # noqa: E402
    Documents,
    Embeddable,
    EmbeddingFunction,
    Embeddings,
    Space,
)
from chromadb.utils.embedding_functions import register_embedding_function  # noqa: E402

from mm_rerank_components.starter.classes import PROMPT_STYLES, PromptStyle  # noqa: E402
from mm_rerank_components.starter.image_models import DEFAULT_IMAGE_MODEL  # noqa: E402
from mm_rerank_components.starter.models import (  # noqa: E402
    DEFAULT_PROMPT_STYLE,
    DEFAULT_TOP_K,
    StarterModels,
)
from mm_rerank_components.starter.precomputed import (  # noqa: E402
    IMAGE_CLASSES,
    TEXT_EMBEDDING,
    image_producer,
    text_producer,
)

_CONFIG_KEYS = ("device", "top_k", "prompt_style", "n_views", "image_model")


def _models_from_config(config: dict[str, Any]) -> StarterModels:
    unknown = set(config) - set(_CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown starter embedding config keys {sorted(unknown)}; known: {_CONFIG_KEYS}")
    return StarterModels(
        device=str(config.get("device", "cpu")),
        top_k=int(config.get("top_k", DEFAULT_TOP_K)),
        prompt_style=cast(PromptStyle, config.get("prompt_style", DEFAULT_PROMPT_STYLE)),
        n_views=int(config.get("n_views", 1)),
        image_model=str(config.get("image_model", DEFAULT_IMAGE_MODEL)),
    )


def _config_of(models: StarterModels) -> dict[str, Any]:
    return {
        "device": models.device,
        "top_k": models.top_k,
        "prompt_style": models.prompt_style,
        "n_views": models.n_views,
        "image_model": models.image_model,
    }


def _as_list(embeddings: np.ndarray) -> Embeddings:
    return [row for row in np.asarray(embeddings, dtype=np.float32)]


def array_to_pil(array: np.ndarray, position: int) -> Any:
    """A Chroma image (``H x W``, ``H x W x 3`` or ``H x W x 4`` array) as a PIL image."""
    from PIL import Image

    arr = np.asarray(array)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(
            f"input[{position}]: expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), "
            f"got {arr.shape}"
        )
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
            raise ValueError(
                f"input[{position}]: image array must hold finite numbers, got dtype {arr.dtype}"
            )
        # Float images in [0, 1] are scaled; anything else is read as 0..255 pixel values.
        scale = 255.0 if np.issubdtype(arr.dtype, np.floating) and arr.max(initial=0) <= 1.0 else 1.0
        arr = np.clip(arr.astype(np.float64) * scale, 0, 255).round().astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return Image.fromarray(arr)


@register_embedding_function
class StarterTextEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embedding function: all-MiniLM-L6-v2 text embeddings (384-d, unit length, cosine space).

    Args:
        device: torch device, e.g. ``"cpu"``.
        models: a ready :class:`~mm_rerank_components.starter.StarterModels` to use instead (its device is
            what the persisted config records).

    Example:
        >>> ef = StarterTextEmbeddingFunction()
        >>> StarterTextEmbeddingFunction.name()
        'mm_rerank_starter_text'
        >>> len(ef(["a red fox"])[0])  # doctest: +SKIP
        384
    """

    def __init__(self, device: str = "cpu", models: StarterModels | None = None) -> None:
        self.models = models if models is not None else StarterModels(device=device)

    def __call__(self, input: Documents) -> Embeddings:
        texts = list(input)
        for i, item in enumerate(texts):
            if not isinstance(item, str):
                raise TypeError(
                    f"input[{i}] is a {type(item).__name__}; StarterTextEmbeddingFunction embeds texts only, "
                    "use StarterImageEmbeddingFunction for images"
                )
        return _as_list(self.models.embed_texts(texts))

    @staticmethod
    def name() -> str:
        return "mm_rerank_starter_text"

    def signal_producer(self, kind: str) -> str | None:
        """The fingerprint :class:`~mm_rerank_components.scorers.starter.StarterScorer` compares before it
        reuses a stored passage embedding (``kind="text_embedding"``)."""
        return text_producer(self.models) if kind == TEXT_EMBEDDING else None

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        return {"device": self.models.device}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> StarterTextEmbeddingFunction:
        StarterTextEmbeddingFunction.validate_config(config)
        return StarterTextEmbeddingFunction(device=str(config.get("device", "cpu")))

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        unknown = set(config) - {"device"}
        if unknown:
            raise ValueError(f"unknown StarterTextEmbeddingFunction config keys {sorted(unknown)}")

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        # The device may change; the model may not (it is fixed by the class).
        self.validate_config(new_config)


@register_embedding_function
class StarterImageEmbeddingFunction(EmbeddingFunction[Embeddable]):
    """Chroma embedding function for image collections: ConSE image embeddings and text embeddings.

    Images (numpy arrays ``H x W [x 3|4]``, e.g. from ``chromadb.utils.data_loaders.ImageLoader``) become
    ConSE embeddings; strings become all-MiniLM-L6-v2 embeddings in the same 384-d space, so
    ``collection.query(query_texts=[...])`` searches images by text. A list may mix both.

    Args:
        device: torch device.
        top_k: classes ConSE mixes per image.
        prompt_style: how classes are written for the text encoder (see ``StarterModels``).
        n_views: views per image (1 is fastest).
        image_model: ``"efficientnet-lite0"`` (default) or another size the starter models offer.
        models: a ready :class:`~mm_rerank_components.starter.StarterModels` to use instead of the five
            settings above.

    Example:
        >>> import chromadb
        >>> from chromadb.utils.data_loaders import ImageLoader
        >>> client = chromadb.EphemeralClient()
        >>> images = client.create_collection(
        ...     "images", embedding_function=StarterImageEmbeddingFunction(), data_loader=ImageLoader()
        ... )
        >>> images.add(ids=["fox"], uris=["photos/fox.jpg"])  # doctest: +SKIP
        >>> images.query(query_texts=["a red fox"], n_results=1)  # doctest: +SKIP
    """

    def __init__(
        self,
        device: str = "cpu",
        top_k: int = DEFAULT_TOP_K,
        prompt_style: PromptStyle = DEFAULT_PROMPT_STYLE,
        n_views: int = 1,
        models: StarterModels | None = None,
        image_model: str = DEFAULT_IMAGE_MODEL,
    ) -> None:
        self.models = (
            models
            if models is not None
            else StarterModels(
                device=device,
                top_k=top_k,
                prompt_style=prompt_style,
                n_views=n_views,
                image_model=image_model,
            )
        )

    def __call__(self, input: Embeddable) -> Embeddings:
        items: Sequence[Any] = list(input)
        text_pos = [i for i, x in enumerate(items) if isinstance(x, str)]
        image_pos = [i for i, x in enumerate(items) if not isinstance(x, str)]
        out = np.zeros((len(items), self.models.dim), dtype=np.float32)
        if text_pos:
            out[text_pos] = self.models.embed_texts([items[i] for i in text_pos])
        if image_pos:
            for i in image_pos:
                if not isinstance(items[i], np.ndarray):
                    raise TypeError(
                        f"input[{i}] is a {type(items[i]).__name__}; expected a str or a numpy image array"
                    )
            images = [array_to_pil(items[i], i) for i in image_pos]
            out[image_pos] = self.models.embed_images(images)
        return _as_list(out)

    def embed_with_classes(self, images: list[Any]) -> tuple[Embeddings, list[str], str]:
        """Embeddings of pictures (PIL images or numpy arrays) and, from the same classifier pass, each
        picture's compact class probabilities and their producer, which ingest stores for the second stage
        to reuse.

        Example:
            >>> vectors, classes, producer = StarterImageEmbeddingFunction().embed_with_classes(
            ...     [np.zeros((8, 8, 3), dtype=np.uint8)])  # doctest: +SKIP
            >>> classes[0][:4], producer  # doctest: +SKIP
            ('904:', 'starter-image:efficientnet-lite0-...:v1:p2')
        """
        from PIL import Image

        pictures = [
            image if isinstance(image, Image.Image) else array_to_pil(image, i)
            for i, image in enumerate(images)
        ]
        vectors, classes = self.models.embed_images_and_classes(pictures)
        return _as_list(vectors), classes, image_producer(self.models)

    def signal_producer(self, kind: str) -> str | None:
        """The fingerprint of what this function hands the second stage: the stored class probabilities
        (``"image_classes"``); text embeddings are the text function's."""
        return image_producer(self.models) if kind == IMAGE_CLASSES else None

    @staticmethod
    def name() -> str:
        return "mm_rerank_starter_image"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        return _config_of(self.models)

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> StarterImageEmbeddingFunction:
        StarterImageEmbeddingFunction.validate_config(config)
        return StarterImageEmbeddingFunction(models=_models_from_config(config))

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        unknown = set(config) - set(_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown StarterImageEmbeddingFunction config keys {sorted(unknown)}")
        style = config.get("prompt_style", DEFAULT_PROMPT_STYLE)
        if style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt_style {style!r}; use one of {PROMPT_STYLES}")

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        self.validate_config(new_config)
        for key in ("top_k", "prompt_style", "n_views", "image_model"):
            if key in new_config and new_config[key] != old_config.get(key):
                raise ValueError(
                    f"{key} changes the stored image embeddings and cannot be updated "
                    f"({old_config.get(key)!r} -> {new_config[key]!r}); re-embed into a new collection"
                )
