"""A yes/no relevance scorer for Hugging Face vision-language causal LMs (Qwen2-VL family first).

The model reads the query and the candidate *as they are*: a text candidate as text, an image candidate
as an image, a captioned image as both (the UniRank approach; nothing is rendered into a picture). The
score is the probability of the positive label token against the negative one at the answer position,
``P(yes) / (P(yes) + P(no))``, so it is a probability by construction and needs no calibrator.

Needs the ``models`` extra: ``pip install "mm-rerank-components[models]"``.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mm_rerank_components.scorers._hf import (
    ModelRef,
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
    from PIL import Image as PILImage

logger = logging.getLogger(__name__)

_QUERY = "{query}"
_DOCUMENT = "{document}"

#: Model types whose inputs this module builds itself (tokenizer + image processor): their processors'
#: image-token expansion is simple and the same across transformers 4.45 to 5.x, and transformers 5
#: cannot build their processor class at all without torchvision.
QWEN_VL_MODEL_TYPES = frozenset({"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"})


@dataclass(frozen=True)
class VLMPrompt:
    """How a (query, candidate) pair is put to the model, and which answer tokens are read.

    ``template`` holds ``{query}`` and ``{document}`` once each; everything else is literal text (other
    braces are kept as they are). ``{query}`` becomes the query's image (if any) then its text;
    ``{document}`` becomes the candidate's image (if any) then its text. The filled template is the
    user turn of a chat rendered with the model's own chat template, and the answer is read right after
    the generation prompt plus ``answer_prefix``.

    A label is one token or a tuple of single-token variants (``("yes", "Yes")``), whose probabilities
    are added up.

    Example:
        >>> p = VLMPrompt(template="Query: {query}\\nDocument: {document}\\nRelevant?", positive_label="Yes",
        ...               negative_label="No")
        >>> p.positive_labels
        ('Yes',)
    """

    template: str
    positive_label: str | tuple[str, ...] = "yes"
    negative_label: str | tuple[str, ...] = "no"
    system_prompt: str | None = None
    answer_prefix: str = ""

    def __post_init__(self) -> None:
        for marker in (_QUERY, _DOCUMENT):
            count = self.template.count(marker)
            if count != 1:
                raise ValueError(
                    f"VLMPrompt.template must contain {marker} exactly once, found {count} in "
                    f"{self.template!r}"
                )
        for field_name in ("positive_label", "negative_label"):
            labels = _as_labels(getattr(self, field_name))
            if not labels or any(not isinstance(x, str) or x == "" for x in labels):
                raise ValueError(f"VLMPrompt.{field_name} must be a non-empty str or tuple of them")
        if set(self.positive_labels) & set(self.negative_labels):
            raise ValueError(
                "a label cannot be both positive and negative: "
                f"{self.positive_labels} / {self.negative_labels}"
            )

    @property
    def positive_labels(self) -> tuple[str, ...]:
        return _as_labels(self.positive_label)

    @property
    def negative_labels(self) -> tuple[str, ...]:
        return _as_labels(self.negative_label)


def _as_labels(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


#: Prompt presets. ``"yes-no"`` suits instruction-tuned VLMs zero-shot (Qwen2-VL-Instruct,
#: Qwen2.5-VL-Instruct); ``"monoqwen"`` is the prompt MonoQwen2-VL-style rerankers were fine-tuned on.
PROMPT_PRESETS: dict[str, VLMPrompt] = {
    "yes-no": VLMPrompt(
        template=(
            "Judge whether the document is relevant to the search query. "
            'Answer with only "yes" or "no".\n'
            "Query: {query}\n"
            "Document: {document}\n"
            "Is the document relevant to the query?"
        ),
        positive_label="yes",
        negative_label="no",
    ),
    "monoqwen": VLMPrompt(
        template=(
            "{document}Assert the relevance of the previous image document to the following query, "
            "answer True or False. The query is: {query}"
        ),
        positive_label="True",
        negative_label="False",
    ),
}


class VLMYesNoScorer:
    """Relevance as the likelihood of a "yes" label from a vision-language causal LM.

    Text, image and text+image candidates (and text and/or image queries) are scored in one call:
    candidates are grouped by kind and size, run in padded micro-batches of ``batch_size`` (left padding
    with matching attention masks and position ids, so a score does not depend on its batch-mates), and
    put back in input order. Scores are probabilities: ``outputs_probabilities`` is True.

    Args:
        model_name_or_path: a Hugging Face id (``"Qwen/Qwen2-VL-2B-Instruct"``) or a local folder written by
            ``save_pretrained``. Omit it when passing ``model=`` and ``processor=``/``tokenizer=``.
        model: a ready model (e.g. a PEFT-merged MonoQwen2-VL) instead of loading one.
        processor: a ready processor (``AutoProcessor``-like: ``__call__(text=, images=)`` and a
            ``tokenizer``) for model families other than Qwen-VL.
        tokenizer, image_processor: ready Qwen-VL tokenizer and image processor.
        prompt: a :class:`VLMPrompt` or a preset name from :data:`PROMPT_PRESETS`.
        device: ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"`` or None/``"auto"`` (CUDA, else MPS, else CPU).
        dtype: ``"auto"`` (bf16 on CUDA, fp32 on MPS and CPU), ``"float32"``, ``"bfloat16"``,
            ``"float16"`` or a ``torch.dtype``. With a ready ``model=``, "auto" keeps its dtype.
        batch_size: pairs per forward pass.
        max_pixels: pixel budget per image; larger images are downscaled (aspect kept) before the
            processor sees them. 448*448 gives 256 visual tokens on Qwen2-VL.
        max_text_tokens: candidate text is cut to this many tokens (None: no cut).
        attn_implementation: passed to ``from_pretrained``; ``"sdpa"`` by default, so flash-attention is
            never required (pass ``"flash_attention_2"`` to use it).
        local_files_only, revision, cache_dir: passed to every ``from_pretrained``.
        trust_remote_code: off unless you pass True.
        name: overrides the scorer name used in cache keys and reports. Set it when passing a ready
            ``model=`` (a merged fine-tune keeps its base model's name in its config), so cached scores
            of the fine-tune and its base are told apart.

    Example:
        >>> scorer = VLMYesNoScorer("Qwen/Qwen2-VL-2B-Instruct", dtype="bfloat16")  # doctest: +SKIP
        >>> scorer.score(Query("a red fox"), [Candidate("t", text="Foxes are red."),
        ...                                   Candidate("i", image=pil_image)])  # doctest: +SKIP
        [0.93, 0.41]
    """

    outputs_probabilities = True
    modalities: frozenset[Modality] = ALL_MODALITIES

    def __init__(
        self,
        model_name_or_path: ModelRef | None = None,
        *,
        model: Any = None,
        processor: Any = None,
        tokenizer: Any = None,
        image_processor: Any = None,
        prompt: VLMPrompt | str = "yes-no",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = "auto",
        batch_size: int = 8,
        max_pixels: int | None = 448 * 448,
        max_text_tokens: int | None = 1024,
        attn_implementation: str | None = "sdpa",
        local_files_only: bool = False,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        trust_remote_code: bool = False,
        name: str | None = None,
    ) -> None:
        self.torch, transformers = require_models()
        if isinstance(prompt, str):
            if prompt not in PROMPT_PRESETS:
                raise ValueError(f"unknown prompt preset {prompt!r}; use one of {sorted(PROMPT_PRESETS)}")
            prompt = PROMPT_PRESETS[prompt]
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if max_pixels is not None and max_pixels < 28 * 28:
            raise ValueError(f"max_pixels must be at least 784 (28*28) or None, got {max_pixels!r}")
        if max_text_tokens is not None and max_text_tokens < 1:
            raise ValueError(f"max_text_tokens must be a positive int or None, got {max_text_tokens!r}")
        if model_name_or_path is None and model is None:
            raise ValueError("pass a model name or local path, or a ready model=...")
        self.prompt = prompt
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.max_text_tokens = max_text_tokens
        self.device = resolve_device(device)

        ref = model_ref_str(model_name_or_path) if model_name_or_path is not None else None
        common = pretrained_kwargs(
            local_files_only=local_files_only,
            revision=revision,
            trust_remote_code=trust_remote_code,
            cache_dir=cache_dir,
        )
        if model is None:
            assert ref is not None
            # Qwen-family LMs are known to overflow in fp16, which "auto" picks on MPS; stay in fp32 there.
            auto_mps = dtype in (None, "auto") and self.device.type == "mps"
            self.dtype = self.torch.float32 if auto_mps else resolve_dtype(dtype, self.device)
            model = _load_model(transformers, ref, common, self.dtype, attn_implementation, local_files_only)
        else:
            self.dtype = (
                next(model.parameters()).dtype
                if dtype in (None, "auto")
                else resolve_dtype(dtype, self.device)
            )
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self._inputs = _build_inputs(
            transformers, self.model, ref, common, processor, tokenizer, image_processor, local_files_only
        )
        if isinstance(self._inputs, _QwenVLInputs):
            self._inputs.pixel_device = self.device
        tok = self._inputs.tokenizer
        self.positive_ids = [label_token_id(tok, label) for label in prompt.positive_labels]
        self.negative_ids = [label_token_id(tok, label) for label in prompt.negative_labels]
        forward_args = inspect.signature(self.model.forward).parameters
        self._keep_arg = next(
            (a for a in ("logits_to_keep", "num_logits_to_keep") if a in forward_args), None
        )
        self._uses_mrope = _uses_mrope(self.model)
        settings = {
            "prompt": prompt,
            "max_pixels": max_pixels,
            "max_text_tokens": max_text_tokens,
            "dtype": str(self.dtype),
        }
        self.name = name or f"vlm-yesno:{model_id(ref, self.model)}:{settings_digest(settings)}"

    # -- prompt construction -------------------------------------------------------------------------------

    def build_messages(self, query: Query, candidate: Candidate) -> tuple[list[dict[str, Any]], list[Any]]:
        """The chat messages for one pair and the images they refer to, in order of appearance.

        Example:
            >>> pair = (Query("fox"), Candidate("t", text="a fox"))
            >>> messages, images = scorer.build_messages(*pair)  # doctest: +SKIP
        """
        parts: list[dict[str, Any]] = []
        images: list[Any] = []

        def add_text(text: str) -> None:
            if text:
                if parts and parts[-1]["type"] == "text":
                    parts[-1] = {"type": "text", "text": parts[-1]["text"] + text}
                else:
                    parts.append({"type": "text", "text": text})

        def add_image(image: Any) -> None:
            parts.append({"type": "image"})
            images.append(self._fit_image(image))

        template = self.prompt.template
        q_at, d_at = template.index(_QUERY), template.index(_DOCUMENT)
        pieces = sorted([(q_at, _QUERY), (d_at, _DOCUMENT)])
        cursor = 0
        for at, marker in pieces:
            add_text(template[cursor:at])
            if marker == _QUERY:
                if query.image is not None:
                    add_image(query.image)
                add_text(query.text or "")
            else:
                if candidate.image is not None:
                    add_image(candidate.image)
                if candidate.text and candidate.text.strip():
                    add_text(("\n" if candidate.image is not None else "") + self._cut(candidate.text))
            cursor = at + len(marker)
        add_text(template[cursor:])
        messages: list[dict[str, Any]] = []
        if self.prompt.system_prompt is not None:
            messages.append(
                {"role": "system", "content": [{"type": "text", "text": self.prompt.system_prompt}]}
            )
        messages.append({"role": "user", "content": parts})
        return messages, images

    def build_prompt(self, query: Query, candidate: Candidate) -> tuple[str, list[Any]]:
        """The exact model input text for one pair (chat template applied) and its images."""
        messages, images = self.build_messages(query, candidate)
        text = self._inputs.render(messages) + self.prompt.answer_prefix
        return text, images

    def _cut(self, text: str) -> str:
        if self.max_text_tokens is None:
            return text
        tok = self._inputs.tokenizer
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_text_tokens:
            return text
        return str(tok.decode(ids[: self.max_text_tokens], skip_special_tokens=False))

    def _fit_image(self, image: Any) -> PILImage.Image:
        if not hasattr(image, "size") or not hasattr(image, "convert"):
            raise TypeError(
                f"VLMYesNoScorer expects decoded PIL images (the reranker decodes them), got "
                f"{type(image).__name__}; use MultimodalReranker or load the image with PIL first"
            )
        image = image.convert("RGB") if image.mode != "RGB" else image
        width, height = image.size
        if self.max_pixels is not None and width * height > self.max_pixels:
            scale = math.sqrt(self.max_pixels / (width * height))
            size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
            image = image.resize(size, resample=3)  # 3 = BICUBIC, spelled out for old and new Pillow
        return image

    # -- scoring -------------------------------------------------------------------------------------------

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        if not candidates:
            return []
        prompts = [self.build_prompt(query, c) for c in candidates]
        # Results stay on the device until every batch is queued, so on a GPU the next batch's
        # preprocessing overlaps the current forward pass.
        pending = [
            (chunk, self._forward(self._encode([prompts[i] for i in chunk]))) for chunk in self._plan(prompts)
        ]
        scores = [math.nan] * len(candidates)
        for chunk, probs in pending:
            for i, value in zip(chunk, probs.cpu().tolist(), strict=True):
                scores[i] = float(value)
        return scores

    def _plan(self, prompts: Sequence[tuple[str, list[Any]]]) -> list[list[int]]:
        """Micro-batches of prompt indices, at most ``batch_size`` each.

        Pairs with different image counts never share a batch, and within a count they are sorted by size
        and split into near-equal consecutive chunks (50 pairs at batch size 16: 13, 13, 12, 12), so
        batches pad little and none is a small leftover.
        """
        groups: dict[int, list[int]] = {}
        for i, (_, images) in enumerate(prompts):
            groups.setdefault(len(images), []).append(i)
        plan: list[list[int]] = []
        for count in sorted(groups):
            members = sorted(groups[count], key=lambda i: _cost(prompts[i]))
            chunks = -(-len(members) // self.batch_size)
            base, extra = divmod(len(members), chunks)
            start = 0
            for k in range(chunks):
                size = base + (1 if k < extra else 0)
                plan.append(members[start : start + size])
                start += size
        return plan

    def _encode(self, prompts: Sequence[tuple[str, list[Any]]]) -> dict[str, Any]:
        """Tokenise and preprocess one micro-batch (left-padded) and move it to the device."""
        texts = [text for text, _ in prompts]
        images = [image for _, imgs in prompts for image in imgs]
        encoded = self._inputs.encode(texts, images)
        if bool(encoded["attention_mask"].all()):
            # No padding: without a mask, attention can take its fastest (causal) kernel.
            del encoded["attention_mask"]
            return to_device(encoded, self.device, self.dtype)
        batch = to_device(encoded, self.device, self.dtype)
        if not ("pixel_values" in batch and self._uses_mrope):
            # With left padding the model's default positions (0..L-1) would shift every padded row;
            # count real tokens instead. Multimodal RoPE models build their own from the mask.
            batch["position_ids"] = (batch["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
        return batch

    def _forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """P(positive label) for each row of an encoded micro-batch, as a tensor on the device."""
        torch = self.torch
        kwargs: dict[str, Any] = {**batch, "use_cache": False}
        if self._keep_arg is not None:
            kwargs[self._keep_arg] = 1
        with torch.inference_mode():
            logits = self.model(**kwargs).logits[:, -1, :].float()
        pos = torch.logsumexp(logits[:, self.positive_ids], dim=-1)
        neg = torch.logsumexp(logits[:, self.negative_ids], dim=-1)
        return torch.sigmoid(pos - neg)


def _cost(prompt: tuple[str, list[Any]]) -> int:
    text, images = prompt
    return len(text) + sum(img.size[0] * img.size[1] // 196 for img in images)


def label_token_id(tokenizer: Any, label: str) -> int:
    """The one token id ``label`` encodes to, or a ValueError saying how it splits.

    Example:
        >>> label_token_id(tokenizer, "yes")  # doctest: +SKIP
        9693
    """
    ids = list(tokenizer(label, add_special_tokens=False)["input_ids"])
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids) if ids else []
        raise ValueError(
            f"label {label!r} is {len(ids)} tokens {pieces!r} for this tokenizer, but the score reads the "
            f"probability of one token: pick a label that is a single token (e.g. 'yes'/'no' or "
            f"'True'/'False'), see VLMPrompt"
        )
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and ids[0] == unk:
        raise ValueError(
            f"label {label!r} is not in this tokenizer's vocabulary (it encodes to the unknown token)"
        )
    return int(ids[0])


def _uses_mrope(model: Any) -> bool:
    inner = getattr(model, "model", None)
    return hasattr(model, "get_rope_index") or (inner is not None and hasattr(inner, "get_rope_index"))


def _load_model(
    transformers: Any,
    ref: str,
    common: dict[str, Any],
    dtype: Any,
    attn_implementation: str | None,
    local_files_only: bool,
) -> Any:
    auto_classes = [
        getattr(transformers, n, None) for n in ("AutoModelForImageTextToText", "AutoModelForVision2Seq")
    ]
    kwargs = {**common, **dtype_kwarg(transformers, dtype)}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    errors: list[str] = []
    for auto in auto_classes:
        if auto is None:
            continue
        try:
            return auto.from_pretrained(ref, **kwargs)
        except ValueError as exc:  # "Unrecognized configuration class" for this auto class: try the next
            errors.append(str(exc))
        except OSError as exc:
            raise load_error("vision-language model", ref, exc, local_files_only) from exc
    raise load_error(
        "vision-language model",
        ref,
        ValueError("; ".join(errors) or "no image-text-to-text auto class in this transformers"),
        local_files_only,
    )


class _QwenVLInputs:
    """Builds Qwen-VL model inputs from the tokenizer and image processor, as the Qwen processors do.

    Each ``<|image_pad|>`` in the text becomes ``grid_t * grid_h * grid_w / merge_size**2`` copies, one per
    visual token the vision tower emits for that image.
    """

    def __init__(self, tokenizer: Any, image_processor: Any, wants_token_types: bool) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        if image_token_id is None or image_token_id == getattr(tokenizer, "unk_token_id", None):
            raise ValueError(f"the tokenizer has no {self.image_token!r} token, so it cannot hold images")
        self.image_token_id = int(image_token_id)
        self.merge_size = int(getattr(image_processor, "merge_size", 2))
        self.wants_token_types = wants_token_types
        # Where pixels are normalised and cut into patches: the scorer's device (set by the scorer).
        self.pixel_device: Any = None
        self._pixels = QwenPixels(image_processor) if QwenPixels.supports(image_processor) else None
        self._on_torch = any(
            cls.__name__ in ("TorchvisionBackend", "BaseImageProcessorFast")
            for cls in type(image_processor).__mro__
        )
        _prepare_tokenizer(tokenizer)

    def render(self, messages: list[dict[str, Any]]) -> str:
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def encode(self, texts: list[str], images: list[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if images:
            if self._pixels is not None:
                out["pixel_values"], out["image_grid_thw"] = self._pixels(images, self.pixel_device)
            else:
                kwargs: dict[str, Any] = {"images": images, "return_tensors": "pt"}
                if self.pixel_device is not None and self.pixel_device.type == "cuda" and self._on_torch:
                    kwargs["device"] = str(self.pixel_device)
                vision = self.image_processor(**kwargs)
                out["pixel_values"] = vision["pixel_values"]
                out["image_grid_thw"] = vision["image_grid_thw"]
            counts = iter([int(g.prod()) // self.merge_size**2 for g in out["image_grid_thw"]])
            texts = [self._expand(text, counts) for text in texts]
            if next(counts, None) is not None:
                raise ValueError("more images than image placeholders in the prompts")
        tokens = self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        out["input_ids"] = tokens["input_ids"]
        out["attention_mask"] = tokens["attention_mask"]
        if self.wants_token_types:
            out["mm_token_type_ids"] = (tokens["input_ids"] == self.image_token_id).int()
        return out

    def _expand(self, text: str, counts: Any) -> str:
        pieces = text.split(self.image_token)
        out = [pieces[0]]
        for piece in pieces[1:]:
            n = next(counts, None)
            if n is None:
                raise ValueError("more image placeholders in the prompts than images")
            out.append(self.image_token * n + piece)
        return "".join(out)


class QwenPixels:
    """Qwen2-VL image preprocessing in torch, on the scorer's device.

    Same steps and numbers as ``Qwen2VLImageProcessor``: a PIL resize to the processor's ``smart_resize``
    size (sides multiples of ``patch_size * merge_size``, pixel count within its bounds), rescale,
    normalise, then patches of ``channels x temporal_patch_size x patch x patch`` in merge-window order.
    Doing it here keeps the CPU work per image to one resize and a uint8 copy, with or without
    torchvision, and on a GPU the arithmetic runs there. The tests check it against the processor.

    Example:
        >>> pixels, grid = QwenPixels(image_processor)([pil_image], torch.device("cpu"))  # doctest: +SKIP
    """

    CLASSES = frozenset({"Qwen2VLImageProcessor", "Qwen2VLImageProcessorPil", "Qwen2VLImageProcessorFast"})

    @classmethod
    def supports(cls, image_processor: Any) -> bool:
        return type(image_processor).__name__ in cls.CLASSES

    def __init__(self, image_processor: Any) -> None:
        import torch

        self.torch = torch
        ip = image_processor
        self.patch = int(ip.patch_size)
        self.temporal = int(ip.temporal_patch_size)
        self.merge = int(ip.merge_size)
        self.min_pixels, self.max_pixels = _pixel_bounds(ip)
        self.do_resize = bool(getattr(ip, "do_resize", True))
        self.resample = int(getattr(ip, "resample", 3) or 3)
        self.scale = float(ip.rescale_factor) if getattr(ip, "do_rescale", True) else 1.0
        normalise = getattr(ip, "do_normalize", True)
        mean = list(ip.image_mean) if normalise else [0.0, 0.0, 0.0]
        std = list(ip.image_std) if normalise else [1.0, 1.0, 1.0]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after Qwen2-VL's ``smart_resize``."""
        factor = self.patch * self.merge
        if max(height, width) / min(height, width) > 200:
            raise ValueError(
                f"image aspect ratio {max(height, width) / min(height, width):.0f} is above 200, which "
                "Qwen2-VL cannot read; crop it first"
            )
        h_bar = max(factor, round(height / factor) * factor)
        w_bar = max(factor, round(width / factor) * factor)
        if h_bar * w_bar > self.max_pixels:
            beta = math.sqrt((height * width) / self.max_pixels)
            h_bar = max(factor, math.floor(height / beta / factor) * factor)
            w_bar = max(factor, math.floor(width / beta / factor) * factor)
        elif h_bar * w_bar < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h_bar = math.ceil(height * beta / factor) * factor
            w_bar = math.ceil(width * beta / factor) * factor
        return w_bar, h_bar

    def __call__(self, images: Sequence[Any], device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        import numpy as np

        torch = self.torch
        device = device if device is not None else torch.device("cpu")
        mean, std = self.mean.to(device), self.std.to(device)
        rows, grids = [], []
        for image in images:
            if self.do_resize:
                size = self.target_size(*image.size)
                if size != image.size:
                    image = image.resize(size, resample=self.resample)
            pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
            if device.type == "cuda":
                pixels = pixels.pin_memory().to(device, non_blocking=True)
            else:
                pixels = pixels.to(device)
            x = (pixels.permute(2, 0, 1).float() * self.scale - mean) / std
            channels, height, width = x.shape
            gh, gw, m, p = height // self.patch, width // self.patch, self.merge, self.patch
            x = x.reshape(channels, gh // m, m, p, gw // m, m, p).permute(1, 4, 2, 5, 0, 3, 6)
            x = x.unsqueeze(5).expand(*x.shape[:5], self.temporal, p, p)
            rows.append(x.reshape(gh * gw, channels * self.temporal * p * p))
            grids.append([1, gh, gw])
        return torch.cat(rows), torch.tensor(grids, dtype=torch.long)


def _pixel_bounds(image_processor: Any) -> tuple[int, int]:
    """(min_pixels, max_pixels) across transformers versions' ways of storing them."""
    size = getattr(image_processor, "size", None)

    def pick(*names: str) -> int | None:
        for name in names:
            value = size.get(name) if isinstance(size, dict) else getattr(size, name, None)
            if value:
                return int(value)
            value = getattr(image_processor, name, None)
            if isinstance(value, int) and value:
                return value
        return None

    return pick("shortest_edge", "min_pixels") or 56 * 56, pick(
        "longest_edge", "max_pixels"
    ) or 28 * 28 * 1280


class _ProcessorInputs:
    """Model inputs from a model family's own ``AutoProcessor``."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        _prepare_tokenizer(self.tokenizer)

    def render(self, messages: list[dict[str, Any]]) -> str:
        owner = self.processor if getattr(self.processor, "chat_template", None) else self.tokenizer
        return str(owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def encode(self, texts: list[str], images: list[Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if images:
            kwargs["images"] = images
        return dict(self.processor(**kwargs))


def _processor_chat_template(transformers: Any, ref: str, common: dict[str, Any]) -> str:
    """The chat template some checkpoints keep beside the processor rather than in the tokenizer."""
    import json

    lookup = {k: v for k, v in common.items() if k in ("local_files_only", "revision", "cache_dir")}
    for filename in ("chat_template.jinja", "chat_template.json"):
        try:
            path = transformers.utils.cached_file(
                ref, filename, _raise_exceptions_for_missing_entries=False, **lookup
            )
        except OSError:
            path = None
        if path:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            return str(json.loads(text)["chat_template"]) if filename.endswith(".json") else text
    raise ValueError(
        f"{ref!r} has no chat template (none in the tokenizer, no chat_template.jinja/.json); the scorer "
        "renders prompts with the model's own chat template, so pass a tokenizer that has one"
    )


def _prepare_tokenizer(tokenizer: Any) -> None:
    tokenizer.padding_side = "left"  # the answer is read at the last position of every row
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _build_inputs(
    transformers: Any,
    model: Any,
    ref: str | None,
    common: dict[str, Any],
    processor: Any,
    tokenizer: Any,
    image_processor: Any,
    local_files_only: bool,
) -> _QwenVLInputs | _ProcessorInputs:
    if processor is not None:
        return _ProcessorInputs(processor)
    model_type = getattr(model.config, "model_type", "")
    wants_token_types = "mm_token_type_ids" in inspect.signature(model.forward).parameters
    if tokenizer is not None and image_processor is not None:
        return _QwenVLInputs(tokenizer, image_processor, wants_token_types)
    if ref is None:
        raise ValueError(
            "with a ready model=..., also pass processor=... (or tokenizer=... and image_processor=... for "
            "Qwen-VL models), or the model_name_or_path to load them from"
        )
    try:
        if model_type in QWEN_VL_MODEL_TYPES:
            tokenizer = tokenizer or transformers.AutoTokenizer.from_pretrained(ref, **common)
            image_processor = image_processor or transformers.AutoImageProcessor.from_pretrained(
                ref, **common
            )
            if not getattr(tokenizer, "chat_template", None):
                tokenizer.chat_template = _processor_chat_template(transformers, ref, common)
            return _QwenVLInputs(tokenizer, image_processor, wants_token_types)
        return _ProcessorInputs(transformers.AutoProcessor.from_pretrained(ref, **common))
    except OSError as exc:
        raise load_error("processor", ref, exc, local_files_only) from exc
