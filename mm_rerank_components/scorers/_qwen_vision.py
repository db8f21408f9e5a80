"""Qwen-VL model inputs built from the tokenizer and image processor, as the Qwen processors do.

Shared by the VLM yes/no scorer and the ColQwen2 late-interaction scorer. Two pieces:

* :class:`QwenPixels`: Qwen2-VL image preprocessing in torch, on the scorer's device;
* :class:`QwenVLInputs`: prompt text to left-padded ``input_ids`` with each image placeholder expanded to
  the image's visual tokens, texts tokenised once (the token ids also give the batch planner its costs).

:class:`ProcessorInputs` is the fallback for other model families: their own ``AutoProcessor``.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mm_rerank_components.scorers._hf import HFModel, pad_rows

if TYPE_CHECKING:
    import torch

#: Model types whose inputs this module builds itself (tokenizer + image processor): their processors'
#: image-token expansion is simple and the same across transformers 4.45 to 5.x, and transformers 5
#: cannot build their processor class at all without torchvision.
QWEN_VL_MODEL_TYPES = frozenset({"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "colqwen2"})


class QwenVLInputs:
    """Builds Qwen-VL model inputs from the tokenizer and image processor, as the Qwen processors do.

    Each ``<|image_pad|>`` in the text becomes ``grid_t * grid_h * grid_w / merge_size**2`` copies, one per
    visual token the vision tower emits for that image. Rows are left-padded (the answer is read at the
    last position) unless ``padding_side="right"``.

    Example:
        >>> inputs = QwenVLInputs(tokenizer, image_processor, wants_token_types=False)  # doctest: +SKIP
        >>> batch = inputs.encode(["<|im_start|>user\nfox<|im_end|>"], [])  # doctest: +SKIP
    """

    def __init__(
        self, tokenizer: Any, image_processor: Any, wants_token_types: bool, padding_side: str = "left"
    ) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        if image_token_id is None or image_token_id == getattr(tokenizer, "unk_token_id", None):
            raise ValueError(f"the tokenizer has no {self.image_token!r} token, so it cannot hold images")
        self.image_token_id = int(image_token_id)
        self.merge_size = int(getattr(image_processor, "merge_size", 2))
        self.patch_size = int(getattr(image_processor, "patch_size", 14))
        self.wants_token_types = wants_token_types
        self.padding_side = padding_side
        # Where pixels are normalised and cut into patches: the scorer's device (set by the scorer).
        self.pixel_device: Any = None
        self._pixels = QwenPixels(image_processor) if QwenPixels.supports(image_processor) else None
        self._on_torch = any(
            cls.__name__ in ("TorchvisionBackend", "BaseImageProcessorFast")
            for cls in type(image_processor).__mro__
        )
        prepare_tokenizer(tokenizer, padding_side)

    def render(self, messages: list[dict[str, Any]]) -> str:
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def cap_pixels(self, max_pixels: int) -> bool:
        """Lower the pixel budget of this package's Qwen preprocessing to ``max_pixels``, so its one resize
        (``smart_resize``) also keeps a caller's budget and no earlier resize is needed. False when the
        image processor is not one :class:`QwenPixels` reproduces (the caller must resize itself)."""
        if self._pixels is None:
            return False
        self._pixels.max_pixels = min(self._pixels.max_pixels, max_pixels)
        return True

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids (no special tokens added, images not yet expanded): the one tokenisation."""
        if not texts:
            return []
        return [list(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def visual_tokens(self, image: Any) -> int:
        """How many visual tokens ``image`` (a PIL image, already fitted to the budget) becomes."""
        if self._pixels is not None:
            width, height = self._pixels.target_size(*image.size)
        else:
            width, height = image.size
        return max(1, width * height // (self.patch_size * self.merge_size) ** 2)

    def encode(self, texts: Sequence[str], images: Sequence[Any]) -> dict[str, Any]:
        """A padded batch from prompt texts and their images (tokenises the texts)."""
        return self.encode_ids(self.token_ids(texts), images)

    def encode_ids(self, ids: Sequence[Sequence[int]], images: Sequence[Any]) -> dict[str, Any]:
        """A padded batch from token ids (see :meth:`token_ids`) and the images of their placeholders."""

        out: dict[str, Any] = {}
        rows = [list(row) for row in ids]
        if images:
            if self._pixels is not None:
                out["pixel_values"], out["image_grid_thw"] = self._pixels(images, self.pixel_device)
            else:
                kwargs: dict[str, Any] = {"images": list(images), "return_tensors": "pt"}
                if self.pixel_device is not None and self.pixel_device.type == "cuda" and self._on_torch:
                    kwargs["device"] = str(self.pixel_device)
                vision = self.image_processor(**kwargs)
                out["pixel_values"] = vision["pixel_values"]
                out["image_grid_thw"] = vision["image_grid_thw"]
            counts = iter([int(g.prod()) // self.merge_size**2 for g in out["image_grid_thw"]])
            rows = [self._expand(row, counts) for row in rows]
            if next(counts, None) is not None:
                raise ValueError("more images than image placeholders in the prompts")
        elif any(self.image_token_id in row for row in rows):
            raise ValueError("more image placeholders in the prompts than images")
        input_ids, mask = pad_rows(rows, int(self.tokenizer.pad_token_id), self.padding_side)
        out["input_ids"] = input_ids
        out["attention_mask"] = mask
        if self.wants_token_types:
            out["mm_token_type_ids"] = (input_ids == self.image_token_id).int()
        return out

    def _expand(self, row: list[int], counts: Any) -> list[int]:
        out: list[int] = []
        for token in row:
            if token != self.image_token_id:
                out.append(token)
                continue
            n = next(counts, None)
            if n is None:
                raise ValueError("more image placeholders in the prompts than images")
            out.extend([token] * n)
        return out


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


class ProcessorInputs:
    """Model inputs from a model family's own ``AutoProcessor`` (any family other than Qwen-VL).

    Example:
        >>> inputs = ProcessorInputs(processor)  # doctest: +SKIP
    """

    def __init__(self, processor: Any, padding_side: str = "left") -> None:
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        prepare_tokenizer(self.tokenizer, padding_side)

    def render(self, messages: list[dict[str, Any]]) -> str:
        owner = self.processor if getattr(self.processor, "chat_template", None) else self.tokenizer
        return str(owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def visual_tokens(self, image: Any) -> int:
        """A rough cost of one image for batch planning (the processor decides the real count)."""
        return max(1, image.size[0] * image.size[1] // 784)

    def encode(self, texts: Sequence[str], images: Sequence[Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"text": list(texts), "padding": True, "return_tensors": "pt"}
        if images:
            kwargs["images"] = list(images)
        return dict(self.processor(**kwargs))


Inputs = QwenVLInputs | ProcessorInputs


def processor_chat_template(loaded: HFModel) -> str:
    """The chat template some checkpoints keep beside the processor rather than in the tokenizer."""
    assert loaded.ref is not None
    lookup = {
        k: v
        for k, v in loaded.options.pretrained().items()
        if k in ("local_files_only", "revision", "cache_dir")
    }
    for filename in ("chat_template.jinja", "chat_template.json"):
        try:
            path = loaded.transformers.utils.cached_file(
                loaded.ref, filename, _raise_exceptions_for_missing_entries=False, **lookup
            )
        except OSError:
            path = None
        if path:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            return str(json.loads(text)["chat_template"]) if filename.endswith(".json") else text
    raise ValueError(
        f"{loaded.ref!r} has no chat template (none in the tokenizer, no chat_template.jinja/.json); the "
        "scorer renders prompts with the model's own chat template, so pass a tokenizer that has one"
    )


def prepare_tokenizer(tokenizer: Any, padding_side: str = "left") -> None:
    """Pad on ``padding_side`` (left: the answer is read at the last position) with a pad token set."""
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def build_inputs(
    loaded: HFModel,
    processor: Any = None,
    tokenizer: Any = None,
    image_processor: Any = None,
    *,
    padding_side: str = "left",
    needs_chat_template: bool = True,
) -> Inputs:
    """Qwen-VL inputs for Qwen-VL models (tokenizer + image processor), else the model's own processor.

    Example:
        >>> inputs = build_inputs(load_hf_model(...))  # doctest: +SKIP
    """
    if processor is not None:
        return ProcessorInputs(processor, padding_side)
    model = loaded.model
    model_type = getattr(model.config, "model_type", "")
    wants_token_types = "mm_token_type_ids" in inspect.signature(model.forward).parameters
    if tokenizer is not None and image_processor is not None:
        inputs: Inputs = QwenVLInputs(tokenizer, image_processor, wants_token_types, padding_side)
    elif loaded.ref is None:
        raise ValueError(
            "with a ready model=..., also pass processor=... (or tokenizer=... and image_processor=... for "
            "Qwen-VL models), or the model_name_or_path to load them from"
        )
    elif model_type in QWEN_VL_MODEL_TYPES:
        tokenizer = loaded.companion("AutoTokenizer", tokenizer)
        image_processor = loaded.companion("AutoImageProcessor", image_processor)
        if needs_chat_template and not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = processor_chat_template(loaded)
        inputs = QwenVLInputs(tokenizer, image_processor, wants_token_types, padding_side)
    else:
        inputs = ProcessorInputs(loaded.companion("AutoProcessor"), padding_side)
    if isinstance(inputs, QwenVLInputs):
        inputs.pixel_device = loaded.device
    return inputs
