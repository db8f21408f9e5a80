"""Chroma embedding functions for a CLIP-family dual encoder: texts and pictures in one space.

:class:`CLIPEmbeddingFunction` embeds strings (passages, query texts) with the text tower and images
(numpy arrays, as Chroma's ``ImageLoader`` yields them, or PIL images) with the vision tower of one
CLIP, SigLIP or SigLIP2 model loaded through transformers (jina-clip-v2 only with
``trust_remote_code=True``), so one function serves both the text and the image collection and a text
query searches pictures. It is registered with Chroma under :meth:`~CLIPEmbeddingFunction.name` and its
config records the model folder and a fingerprint of its files, so a collection reopened with other
weights or settings is refused instead of silently searching another space.

Weights load on the first call, and functions with the same model and settings share them.

Needs the ``models`` and ``chroma`` extras.

Example:
    >>> text_ef, image_ef = clip_embedding_functions("models/clip-vit-b32")  # doctest: +SKIP
    >>> len(text_ef(["a red fox"])[0])  # doctest: +SKIP
    512
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mm_rerank_components._deps import require

require("chromadb", "chroma", "CLIPEmbeddingFunction")

from chromadb.api.types import Embeddable, EmbeddingFunction, Embeddings, Space  # noqa: E402
from chromadb.utils.embedding_functions import register_embedding_function  # noqa: E402

_CONFIG_KEYS = ("model", "fingerprint", "device", "dtype", "trust_remote_code", "batch_size")
#: Settings that change the vectors; a reopened collection must match them.
_FIXED_KEYS = ("model", "fingerprint", "dtype", "trust_remote_code")
_ENCODERS: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()


def weights_fingerprint(folder: str | os.PathLike[str]) -> str:
    """A short hash of a model folder's config and the names and sizes of its weight files.

    Cheap (no weights are read) and changes when the checkpoint does.

    Example:
        >>> weights_fingerprint("models/clip-vit-b32")  # doctest: +SKIP
        'c3f1a9e0b2d4'
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"CLIP model folder {os.fspath(folder)!r} does not exist; pass a local folder")
    digest = hashlib.blake2b(digest_size=6)
    for name in ("config.json", "preprocessor_config.json", "tokenizer_config.json"):
        if (root / name).is_file():
            digest.update(name.encode() + (root / name).read_bytes())
    for path in sorted(root.iterdir()):
        if path.suffix in (".safetensors", ".bin", ".pt"):
            digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()


@register_embedding_function
class CLIPEmbeddingFunction(EmbeddingFunction[Embeddable]):
    """Chroma embedding function: CLIP / SigLIP / SigLIP2 text and image embeddings in one space.

    Strings become text embeddings; images (``H x W [x 3|4]`` numpy arrays or PIL images) become image
    embeddings; a list may mix both. Vectors are L2-normalised (cosine space).

    Args:
        model_name_or_path: a local model folder written by ``save_pretrained`` (the config records its
            absolute path and a fingerprint of its files).
        device, dtype: as for :class:`~mm_rerank_components.scorers._hf.HFLoadOptions` (dtype
            ``"float32"`` by default, so vectors do not depend on the device).
        trust_remote_code: needed for jina-clip-v2 (it runs the repository's code); off by default.
        batch_size: texts or images per forward pass.

    Example:
        >>> import chromadb
        >>> from chromadb.utils.data_loaders import ImageLoader
        >>> ef = CLIPEmbeddingFunction("models/siglip-base")  # doctest: +SKIP
        >>> client = chromadb.EphemeralClient()  # doctest: +SKIP
        >>> images = client.create_collection("images", embedding_function=ef,
        ...                                   data_loader=ImageLoader())  # doctest: +SKIP
        >>> images.query(query_texts=["a red fox"], n_results=1)  # doctest: +SKIP
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        *,
        device: str = "cpu",
        dtype: str = "float32",
        trust_remote_code: bool = False,
        batch_size: int = 32,
    ) -> None:
        self.model = str(Path(model_name_or_path).expanduser().resolve())
        self.fingerprint = weights_fingerprint(self.model)
        self.device, self.dtype = str(device), str(dtype)
        self.trust_remote_code = bool(trust_remote_code)
        self.batch_size = int(batch_size)

    @property
    def encoder(self) -> Any:
        """The shared :class:`~mm_rerank_components.scorers.clip.CLIPEncoder`, loaded on first use."""
        key = (self.model, self.fingerprint, self.device, self.dtype, self.trust_remote_code)
        with _LOCK:
            if key not in _ENCODERS:
                from mm_rerank_components.scorers.clip import CLIPEncoder

                _ENCODERS[key] = CLIPEncoder(
                    self.model,
                    batch_size=self.batch_size,
                    device=self.device,
                    dtype=self.dtype,
                    local_files_only=True,
                    trust_remote_code=self.trust_remote_code,
                )
            return _ENCODERS[key]

    def __call__(self, input: Embeddable) -> Embeddings:
        items: Sequence[Any] = list(input)
        text_pos = [i for i, x in enumerate(items) if isinstance(x, str)]
        image_pos = [i for i, x in enumerate(items) if not isinstance(x, str)]
        rows: dict[int, np.ndarray] = {}
        if text_pos:
            vectors = self.encoder.embed_texts([items[i] for i in text_pos]).numpy()
            rows.update(zip(text_pos, vectors, strict=True))
        if image_pos:
            pictures = [_picture(items[i], i) for i in image_pos]
            vectors = self.encoder.embed_images(pictures).numpy()
            rows.update(zip(image_pos, vectors, strict=True))
        return [np.asarray(rows[i], dtype=np.float32) for i in range(len(items))]

    @staticmethod
    def name() -> str:
        return "mm_rerank_clip"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "fingerprint": self.fingerprint,
            "device": self.device,
            "dtype": self.dtype,
            "trust_remote_code": self.trust_remote_code,
            "batch_size": self.batch_size,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> CLIPEmbeddingFunction:
        CLIPEmbeddingFunction.validate_config(config)
        ef = CLIPEmbeddingFunction(
            config["model"],
            device=str(config.get("device", "cpu")),
            dtype=str(config.get("dtype", "float32")),
            trust_remote_code=bool(config.get("trust_remote_code", False)),
            batch_size=int(config.get("batch_size", 32)),
        )
        recorded = config.get("fingerprint")
        if recorded is not None and recorded != ef.fingerprint:
            raise ValueError(
                f"the collection was embedded with the CLIP model at {config['model']!r} whose files had "
                f"fingerprint {recorded}, but they now give {ef.fingerprint}: the weights changed, so "
                "stored vectors live in another space; re-embed into a new collection"
            )
        return ef

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        unknown = set(config) - set(_CONFIG_KEYS)
        if unknown:
            raise ValueError(
                f"unknown CLIPEmbeddingFunction config keys {sorted(unknown)}; known: {_CONFIG_KEYS}"
            )
        if not config.get("model"):
            raise ValueError("CLIPEmbeddingFunction config needs 'model' (the model folder)")

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        self.validate_config(new_config)
        for key in _FIXED_KEYS:
            if key in new_config and new_config[key] != old_config.get(key):
                raise ValueError(
                    f"{key} changes the stored embeddings and cannot be updated "
                    f"({old_config.get(key)!r} -> {new_config[key]!r}); re-embed into a new collection"
                )

    def __repr__(self) -> str:
        return f"CLIPEmbeddingFunction({json.dumps(self.get_config())})"


def _picture(item: Any, position: int) -> Any:
    if hasattr(item, "convert") and hasattr(item, "size"):
        return item
    if isinstance(item, np.ndarray):
        from mm_rerank_components.starter.chroma import array_to_pil

        return array_to_pil(item, position)
    raise TypeError(
        f"input[{position}] is a {type(item).__name__}; expected a str, a numpy image array or a PIL image"
    )


def clip_embedding_functions(
    path: str | os.PathLike[str], **kwargs: Any
) -> tuple[CLIPEmbeddingFunction, CLIPEmbeddingFunction]:
    """The text and image embedding functions for ``--embedder clip:PATH``: one model, one space.

    Both are :class:`CLIPEmbeddingFunction` with the same settings (``kwargs``: ``device``, ``dtype``,
    ``trust_remote_code``, ``batch_size``) and share one loaded encoder.

    Example:
        >>> text_ef, image_ef = clip_embedding_functions("models/clip-b32", device="cpu")  # doctest: +SKIP
    """
    ef = CLIPEmbeddingFunction(path, **kwargs)
    return ef, CLIPEmbeddingFunction(path, **kwargs)
