"""A CLIP / SigLIP bi-encoder scorer (transformers' own ``CLIPModel`` and ``SiglipModel``).

A bi-encoder embeds the query and each candidate separately and scores their cosine similarity. The
cosines of a query with *texts* and with *images* live on different scales (the modality gap), so raw
scores are **not** comparable across modalities: give the scorer a per-modality calibrator (``calibrator=``,
for example ``fit_calibrator(raw, modalities, labels, method="platt")``) to reach the unified scale. Without
one it logs a warning and the reranker falls back to an uncalibrated sigmoid.

Needs the ``models`` extra: ``pip install "mm-rerank-components[models]"``.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from mm_rerank_components.calibration import Calibrator
from mm_rerank_components.scorers._batching import plan_batches
from mm_rerank_components.scorers._hf import (
    HFLoadOptions,
    ModelRef,
    as_calibrator,
    check_positive,
    load_hf_model,
    settings_digest,
    to_device,
)
from mm_rerank_components.scorers.base import ALL_MODALITIES, BaseScorer
from mm_rerank_components.types import Candidate, Modality, Query

if TYPE_CHECKING:
    import torch
    from typing_extensions import Unpack

    from mm_rerank_components.scorers._hf import LoadKwargs

logger = logging.getLogger(__name__)

Fusion = Literal["max", "mean"]
_SIGLIP_TYPES = frozenset({"siglip", "siglip2"})


class CLIPEncoder:
    """A CLIP-family dual encoder: L2-normalised text and image embeddings in one space.

    Loads CLIP, SigLIP and SigLIP2 through transformers' own classes (``AutoModel``), and jina-clip-v2
    (or any dual encoder with ``get_text_features``/``get_image_features``) when you pass
    ``trust_remote_code=True``. Shared by :class:`CLIPScorer` and the Chroma
    :class:`~mm_rerank_components.retrievers.clip.CLIPEmbeddingFunction`.

    Args:
        model_name_or_path: a Hugging Face id or a local folder.
        model, tokenizer, image_processor: ready objects instead of loading them.
        batch_size: texts or images per forward pass (texts are sorted by length first).
        load: :class:`~mm_rerank_components.scorers._hf.HFLoadOptions` keywords.

    Example:
        >>> encoder = CLIPEncoder("openai/clip-vit-base-patch32", local_files_only=True)  # doctest: +SKIP
        >>> encoder.embed_texts(["a red fox"]).shape  # doctest: +SKIP
        torch.Size([1, 512])
    """

    def __init__(
        self,
        model_name_or_path: ModelRef | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        image_processor: Any = None,
        batch_size: int = 32,
        **load: Unpack[LoadKwargs],
    ) -> None:
        check_positive("batch_size", batch_size)
        loaded = load_hf_model(
            "CLIP/SigLIP model", model_name_or_path, model, ("AutoModel",), HFLoadOptions(**load)
        )
        import torch  # importable now: load_hf_model checked the extra

        self.torch = torch
        self.batch_size = batch_size
        self.model, self.device, self.dtype, self.ident = (
            loaded.model,
            loaded.device,
            loaded.dtype,
            loaded.ident,
        )
        for method in ("get_text_features", "get_image_features"):
            if not hasattr(self.model, method):
                raise ValueError(
                    f"{loaded.ident} ({type(self.model).__name__}) is not a dual encoder: it has no "
                    f"{method}(); use a CLIP, SigLIP or SigLIP2 checkpoint (jina-clip-v2 with "
                    "trust_remote_code=True)"
                )
        self.tokenizer = loaded.companion("AutoTokenizer", tokenizer)
        self.image_processor = loaded.companion("AutoImageProcessor", image_processor)
        self.model_type = str(getattr(self.model.config, "model_type", ""))
        text_config = getattr(self.model.config, "text_config", None)
        self.max_length = int(getattr(text_config, "max_position_embeddings", 77) or 77)
        # SigLIP was trained on texts padded to the full length; CLIP pads to the longest in the batch.
        self._padding: bool | str = "max_length" if self.model_type in _SIGLIP_TYPES else True
        self._image_args = set(inspect.signature(self.model.get_image_features).parameters)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings, one row per text (float32, on the CPU)."""
        return self._embed(list(texts), [len(t) for t in texts], self._text_batch)

    def embed_images(self, images: Sequence[Any]) -> torch.Tensor:
        """L2-normalised image embeddings, one row per decoded PIL image (float32, on the CPU)."""
        return self._embed([_rgb(image) for image in images], [1] * len(images), self._image_batch)

    def _embed(self, items: list[Any], costs: list[int], encode: Any) -> torch.Tensor:
        torch = self.torch
        out = torch.zeros((len(items), 0))
        for chunk in plan_batches(costs, max_items=self.batch_size):
            with torch.inference_mode():
                rows = _features(encode([items[i] for i in chunk])).float().cpu()
            if out.shape[1] == 0:
                out = torch.zeros((len(items), rows.shape[1]))
            out[chunk] = rows
        return torch.nn.functional.normalize(out, dim=-1)

    def _text_batch(self, texts: list[str]) -> Any:
        batch = self.tokenizer(
            texts, padding=self._padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        if self._padding == "max_length":
            batch.pop("attention_mask", None)  # SigLIP attends over its padding, as in training
        return self.model.get_text_features(**to_device(batch, self.device, self.dtype))

    def _image_batch(self, images: list[Any]) -> Any:
        batch = self.image_processor(images=images, return_tensors="pt")
        # SigLIP2 (NaFlex) also needs its patch mask and spatial shapes; CLIP and SigLIP take pixels only.
        batch = {k: v for k, v in batch.items() if k in self._image_args}
        return self.model.get_image_features(**to_device(batch, self.device, self.dtype))


class CLIPScorer(BaseScorer):
    """Cosine similarity of CLIP / SigLIP embeddings; needs per-modality calibration.

    * text query: its text embedding; image query: its image embedding; both: their normalised mean;
    * text candidate: cosine with its text embedding; image candidate: with its image embedding;
      text+image candidate: ``fusion`` (``"max"`` or ``"mean"``) of the two cosines.

    Raw scores are cosines in ``[-1, 1]`` and ``outputs_probabilities`` is False. Fit a calibrator per
    modality on labelled pairs and pass it as ``calibrator=`` (an object or the path of a JSON written by
    ``calibrator.save(...)``); :meth:`default_calibrator` hands it to the reranker.

    Args:
        model_name_or_path: a Hugging Face id (``"openai/clip-vit-base-patch32"``,
            ``"google/siglip-base-patch16-224"``) or a local folder.
        model, tokenizer, image_processor: ready objects instead of loading them.
        calibrator: a fitted per-modality calibrator, or the path of its JSON file.
        fusion: how a text+image candidate's two cosines combine.
        batch_size: texts or images per forward pass.
        name: overrides the scorer name.
        load: :class:`~mm_rerank_components.scorers._hf.HFLoadOptions` keywords (``device``, ``dtype``,
            ``local_files_only``, ``revision``, ``cache_dir``, ``trust_remote_code``,
            ``attn_implementation``).

    Example:
        >>> from mm_rerank_components.calibration import load_calibrator
        >>> scorer = CLIPScorer("openai/clip-vit-base-patch32",
        ...                     calibrator=load_calibrator("clip_calibration.json"))  # doctest: +SKIP
        >>> scorer.score(Query("a red fox"), [Candidate("i", image=pil_image)])  # doctest: +SKIP
        [0.31]
    """

    outputs_probabilities = False
    modalities: frozenset[Modality] = ALL_MODALITIES

    def __init__(
        self,
        model_name_or_path: ModelRef | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        image_processor: Any = None,
        calibrator: Calibrator | str | os.PathLike[str] | None = None,
        fusion: Fusion = "max",
        batch_size: int = 32,
        name: str | None = None,
        **load: Unpack[LoadKwargs],
    ) -> None:
        if fusion not in ("max", "mean"):
            raise ValueError(f"fusion must be 'max' or 'mean', got {fusion!r}")
        self.fusion = fusion
        self.encoder = CLIPEncoder(
            model_name_or_path,
            model=model,
            tokenizer=tokenizer,
            image_processor=image_processor,
            batch_size=batch_size,
            **load,
        )
        self.torch, self.model = self.encoder.torch, self.encoder.model
        self.tokenizer, self.image_processor = self.encoder.tokenizer, self.encoder.image_processor
        self.device, self.dtype = self.encoder.device, self.encoder.dtype
        self.calibrator = as_calibrator(calibrator)
        settings = {"fusion": fusion, "dtype": str(self.dtype)}
        self.name = name or f"clip:{self.encoder.ident}:{settings_digest(settings)}"
        if self.calibrator is None:
            logger.warning(
                "CLIPScorer %s has no calibrator: its raw cosines are not comparable between text and "
                "image candidates, so mixed lists will not share one scale. Fit one per modality "
                "(fit_calibrator(..., method='platt')) and pass calibrator=...",
                self.name,
            )

    def default_calibrator(self) -> Calibrator | None:
        """The per-modality calibrator given at construction, or None."""
        return self.calibrator

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings, one row per text (float32, on the CPU)."""
        return self.encoder.embed_texts(texts)

    def embed_images(self, images: Sequence[Any]) -> torch.Tensor:
        """L2-normalised image embeddings, one row per decoded PIL image (float32, on the CPU)."""
        return self.encoder.embed_images(images)

    # -- scoring ------------------------------------------------------------------------------------------

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        if not candidates:
            return []
        torch = self.torch
        parts = []
        if query.text and query.text.strip():
            parts.append(self.embed_texts([query.text])[0])
        if query.image is not None:
            parts.append(self.embed_images([query.image])[0])
        q = _normalise(torch, torch.stack(parts).mean(dim=0, keepdim=True))[0]

        text_idx = [i for i, c in enumerate(candidates) if c.text and c.text.strip()]
        image_idx = [i for i, c in enumerate(candidates) if c.image is not None]
        text_cos: dict[int, float] = {}
        image_cos: dict[int, float] = {}
        if text_idx:
            sims = self.embed_texts([candidates[i].text or "" for i in text_idx]) @ q
            text_cos = dict(zip(text_idx, sims.tolist(), strict=True))
        if image_idx:
            sims = self.embed_images([candidates[i].image for i in image_idx]) @ q
            image_cos = dict(zip(image_idx, sims.tolist(), strict=True))
        scores = []
        for i in range(len(candidates)):
            found = [d[i] for d in (text_cos, image_cos) if i in d]
            if len(found) == 1:
                scores.append(float(found[0]))
            else:
                scores.append(float(max(found) if self.fusion == "max" else sum(found) / len(found)))
        return scores


def _features(output: Any) -> Any:
    """The projected embedding: a tensor (transformers 4.x) or an output's ``pooler_output`` (5.x)."""
    if hasattr(output, "pooler_output") and not hasattr(output, "shape"):
        return output.pooler_output
    return output


def _normalise(torch: Any, x: Any) -> Any:
    return torch.nn.functional.normalize(x, dim=-1)


def _rgb(image: Any) -> Any:
    if not hasattr(image, "convert"):
        raise TypeError(
            f"CLIPScorer expects decoded PIL images (the reranker decodes them), got {type(image).__name__}"
        )
    return image.convert("RGB") if image.mode != "RGB" else image
