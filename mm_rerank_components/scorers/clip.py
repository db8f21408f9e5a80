"""A CLIP / SigLIP bi-encoder scorer (transformers' own ``CLIPModel`` and ``SiglipModel``).

A bi-encoder embeds the query and each candidate separately and scores their cosine similarity. The
cosines of a query with *texts* and with *images* live on different scales (the modality gap), so raw
scores are **not** comparable across modalities: give the scorer a per-modality calibrator (``calibrator=``,
for example ``fit_calibrator(raw, modalities, labels, method="platt")``) to reach the unified scale. Without
one it logs a warning and the reranker falls back to an uncalibrated sigmoid.

Needs the ``models`` extra: ``pip install "mm-rerank-components[models]"``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from mm_rerank_components.calibration import Calibrator
from mm_rerank_components.scorers._hf import (
    ModelRef,
    as_calibrator,
    dtype_kwarg,
    load_error,
    model_id,
    model_ref_str,
    pretrained_kwargs,
    require_models,
    resolve_device,
    resolve_dtype,
    settings_digest,
    to_device,
)
from mm_rerank_components.scorers.base import ALL_MODALITIES
from mm_rerank_components.types import Candidate, Modality, Query

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Fusion = Literal["max", "mean"]
_SIGLIP_TYPES = frozenset({"siglip", "siglip2"})


class CLIPScorer:
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
        device, dtype: as for :class:`~mm_rerank_components.scorers.VLMYesNoScorer`.
        batch_size: texts or images per forward pass.
        local_files_only, revision, cache_dir, trust_remote_code: passed to ``from_pretrained``.
        name: overrides the scorer name.

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
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = "auto",
        batch_size: int = 32,
        local_files_only: bool = False,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        trust_remote_code: bool = False,
        name: str | None = None,
    ) -> None:
        self.torch, transformers = require_models()
        if fusion not in ("max", "mean"):
            raise ValueError(f"fusion must be 'max' or 'mean', got {fusion!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if model_name_or_path is None and (model is None or tokenizer is None or image_processor is None):
            raise ValueError(
                "pass a model name or local path, or all of model=..., tokenizer=... and image_processor=..."
            )
        self.fusion = fusion
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        ref = model_ref_str(model_name_or_path) if model_name_or_path is not None else None
        common = pretrained_kwargs(
            local_files_only=local_files_only,
            revision=revision,
            trust_remote_code=trust_remote_code,
            cache_dir=cache_dir,
        )
        ready_model = model is not None
        try:
            if model is None:
                assert ref is not None
                model = transformers.AutoModel.from_pretrained(
                    ref, **common, **dtype_kwarg(transformers, self.dtype)
                )
            if tokenizer is None:
                assert ref is not None
                tokenizer = transformers.AutoTokenizer.from_pretrained(ref, **common)
            if image_processor is None:
                assert ref is not None
                image_processor = transformers.AutoImageProcessor.from_pretrained(ref, **common)
        except OSError as exc:
            raise load_error("CLIP/SigLIP model", str(ref), exc, local_files_only) from exc
        for method in ("get_text_features", "get_image_features"):
            if not hasattr(model, method):
                raise ValueError(
                    f"{model_id(ref, model)} ({type(model).__name__}) is not a dual encoder: it has no "
                    f"{method}(); use a CLIP or SigLIP checkpoint"
                )
        if ready_model and dtype in (None, "auto"):
            self.dtype = next(model.parameters()).dtype  # a ready model keeps its dtype under "auto"
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        model_type = getattr(self.model.config, "model_type", "")
        text_config = getattr(self.model.config, "text_config", None)
        self.max_length = int(getattr(text_config, "max_position_embeddings", 77) or 77)
        # SigLIP was trained on texts padded to the full length; CLIP pads to the longest in the batch.
        self._padding: bool | str = "max_length" if model_type in _SIGLIP_TYPES else True
        self.calibrator = as_calibrator(calibrator)
        settings = {"fusion": fusion, "dtype": str(self.dtype)}
        self.name = name or f"clip:{model_id(ref, self.model)}:{settings_digest(settings)}"
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

    # -- embeddings ---------------------------------------------------------------------------------------

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings, one row per text (float32, on the CPU)."""
        torch = self.torch
        rows = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=self._padding,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
            if self._padding == "max_length":
                batch.pop("attention_mask", None)  # SigLIP attends over its padding, as in training
            batch = to_device(batch, self.device, self.dtype)
            with torch.inference_mode():
                rows.append(_features(self.model.get_text_features(**batch)).float().cpu())
        return _normalise(torch, torch.cat(rows))

    def embed_images(self, images: Sequence[Any]) -> torch.Tensor:
        """L2-normalised image embeddings, one row per decoded PIL image (float32, on the CPU)."""
        torch = self.torch
        rows = []
        for start in range(0, len(images), self.batch_size):
            chunk = [_rgb(image) for image in images[start : start + self.batch_size]]
            batch = self.image_processor(images=chunk, return_tensors="pt")
            batch = to_device({"pixel_values": batch["pixel_values"]}, self.device, self.dtype)
            with torch.inference_mode():
                rows.append(_features(self.model.get_image_features(**batch)).float().cpu())
        return _normalise(torch, torch.cat(rows))

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
