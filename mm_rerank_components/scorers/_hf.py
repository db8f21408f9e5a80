"""Shared Hugging Face helpers for the model-backed scorers (extra ``models``).

Nothing here imports torch or transformers at module import time: :func:`require_models` does it on
first use and turns a missing package into one :class:`ImportError` that names the extra.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypedDict, Union

from mm_rerank_components._checks import check_int
from mm_rerank_components._deps import require

if TYPE_CHECKING:
    import torch

    from mm_rerank_components.calibration import Calibrator

logger = logging.getLogger(__name__)

MODELS_EXTRA_HINT = 'pip install "mm-rerank-components[models]"'
MIN_TRANSFORMERS = (4, 45)

#: A Hugging Face model id (``"Qwen/Qwen2-VL-2B-Instruct"``) or a local folder saved with ``save_pretrained``.
ModelRef = Union[str, "os.PathLike[str]"]


class LoadKwargs(TypedDict, total=False):
    """The loading keywords every Hugging Face scorer accepts (see :class:`HFLoadOptions`)."""

    device: str | torch.device | None
    dtype: str | torch.dtype | None
    local_files_only: bool
    revision: str | None
    cache_dir: str | os.PathLike[str] | None
    trust_remote_code: bool
    attn_implementation: str | None


@dataclass(frozen=True)
class HFLoadOptions:
    """How a Hugging Face scorer loads and places its weights; one set of options for every backend.

    Attributes:
        device: ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"`` or None/``"auto"`` (CUDA, else MPS, else CPU).
        dtype: ``"auto"`` (bf16 on CUDA, fp16 on MPS, fp32 on CPU), ``"float32"``, ``"bfloat16"``,
            ``"float16"`` or a ``torch.dtype``. A ready ``model=`` keeps its own dtype under ``"auto"``.
        local_files_only: never reach the network (the Hugging Face cache or a local folder only).
        revision, cache_dir: passed to every ``from_pretrained``.
        trust_remote_code: run code shipped in a model repository; off unless you pass True.
        attn_implementation: ``"sdpa"``, ``"eager"``, ``"flash_attention_2"`` or None (the model's default).

    Example:
        >>> HFLoadOptions(device="cpu", local_files_only=True).trust_remote_code
        False
    """

    device: str | torch.device | None = None
    dtype: str | torch.dtype | None = "auto"
    local_files_only: bool = False
    revision: str | None = None
    cache_dir: str | os.PathLike[str] | None = None
    trust_remote_code: bool = False
    attn_implementation: str | None = None

    def pretrained(self) -> dict[str, Any]:
        """Keyword arguments for every ``from_pretrained`` call (tokenizers and processors included)."""
        return pretrained_kwargs(
            local_files_only=self.local_files_only,
            revision=self.revision,
            trust_remote_code=self.trust_remote_code,
            cache_dir=self.cache_dir,
        )


@dataclass
class HFModel:
    """A loaded (or ready) model placed on its device, with what is needed to load its companions.

    Example:
        >>> loaded = load_hf_model("cross-encoder", "my-folder", None,
        ...                        ("AutoModelForSequenceClassification",), HFLoadOptions())  # doctest: +SKIP
        >>> tokenizer = loaded.companion("AutoTokenizer")  # doctest: +SKIP
    """

    model: Any
    ref: str | None
    device: torch.device
    dtype: torch.dtype
    options: HFLoadOptions
    what: str
    transformers: ModuleType = field(repr=False)

    @property
    def ident(self) -> str:
        """The short weights identifier for scorer names (see :func:`model_id`)."""
        return model_id(self.ref, self.model)

    def companion(self, auto_class: str, given: Any = None) -> Any:
        """``given`` if not None, else ``transformers.<auto_class>.from_pretrained(ref)`` with the options."""
        if given is not None:
            return given
        if self.ref is None:
            raise ValueError(
                f"with a ready model=..., also pass the {auto_class.removeprefix('Auto')} object "
                "(tokenizer=..., processor=... or image_processor=...), or the model_name_or_path to load "
                "it from"
            )
        try:
            return getattr(self.transformers, auto_class).from_pretrained(
                self.ref, **self.options.pretrained()
            )
        except OSError as exc:
            raise load_error(self.what, self.ref, exc, self.options.local_files_only) from exc


def load_hf_model(
    what: str,
    model_name_or_path: ModelRef | None,
    model: Any,
    auto_classes: Sequence[str],
    options: HFLoadOptions,
    *,
    fp32_on_mps: bool = False,
) -> HFModel:
    """The one loading path of every Hugging Face scorer: a ready ``model`` or ``from_pretrained``.

    The first of ``auto_classes`` that recognises the checkpoint's configuration loads it; the model is
    then moved to the options' device and dtype and put in eval mode. A ready model keeps its own dtype
    under ``"auto"``; ``fp32_on_mps`` makes ``"auto"`` pick float32 on Apple MPS (models known to
    overflow in fp16). Errors name the model and what to try.

    Example:
        >>> loaded = load_hf_model("cross-encoder", "folder", None, ("AutoModelForSequenceClassification",),
        ...                        HFLoadOptions(local_files_only=True))  # doctest: +SKIP
    """
    torch, transformers = require_models()
    if model_name_or_path is None and model is None:
        raise ValueError(f"pass a model name or local path for the {what}, or a ready model=...")
    device = resolve_device(options.device)
    auto = options.dtype in (None, "auto")
    dtype = resolve_dtype(options.dtype, device)
    if auto and fp32_on_mps and device.type == "mps":
        dtype = torch.float32
    ref = model_ref_str(model_name_or_path) if model_name_or_path is not None else None
    if model is None:
        assert ref is not None
        model = _from_pretrained(transformers, what, ref, auto_classes, options, dtype)
    elif auto:
        dtype = next(model.parameters()).dtype
    model = model.to(device=device, dtype=dtype).eval()
    return HFModel(model, ref, device, dtype, options, what, transformers)


def _from_pretrained(
    transformers: ModuleType,
    what: str,
    ref: str,
    auto_classes: Sequence[str],
    options: HFLoadOptions,
    dtype: torch.dtype,
) -> Any:
    kwargs = {**options.pretrained(), **dtype_kwarg(transformers, dtype)}
    if options.attn_implementation is not None:
        kwargs["attn_implementation"] = options.attn_implementation
    errors: list[str] = []
    for name in auto_classes:
        auto = getattr(transformers, name, None)
        if auto is None:
            continue
        try:
            return auto.from_pretrained(ref, **kwargs)
        except ValueError as exc:  # "Unrecognized configuration class" or remote code refused: try the next
            if not options.trust_remote_code and "trust_remote_code" in str(exc):
                raise ValueError(
                    f"{ref!r} runs its own model code from its repository, which this package never "
                    "enables by itself: pass trust_remote_code=True if you trust that code"
                ) from exc
            errors.append(str(exc))
        except OSError as exc:
            raise load_error(what, ref, exc, options.local_files_only) from exc
    reason = "; ".join(errors) or f"none of {list(auto_classes)} exists in this transformers"
    raise load_error(what, ref, ValueError(reason), options.local_files_only)


def check_positive(name: str, value: Any, *, optional: bool = False) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a positive int (or None when optional)."""
    check_int(name, value, optional=optional)


def require_models() -> tuple[ModuleType, ModuleType]:
    """Import and return ``(torch, transformers)``, or raise an ImportError naming the ``models`` extra.

    Example:
        >>> torch, transformers = require_models()  # doctest: +SKIP
    """
    torch = require("torch", "models", "this scorer")
    transformers = require("transformers", "models", "this scorer")
    version = _version_tuple(transformers.__version__)
    if version < MIN_TRANSFORMERS:
        raise ImportError(
            f"transformers {transformers.__version__} is too old for this scorer; need >= "
            f"{'.'.join(map(str, MIN_TRANSFORMERS))}: {MODELS_EXTRA_HINT} --upgrade"
        )
    return torch, transformers


def _version_tuple(version: str) -> tuple[int, int]:
    parts = version.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device to run on: the one given, else CUDA, else Apple MPS, else CPU.

    Example:
        >>> str(resolve_device("cpu"))  # doctest: +SKIP
        'cpu'
    """
    torch, _ = require_models()
    if device is not None and str(device) != "auto":
        resolved = torch.device(device)
        if resolved.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was asked for but CUDA is not available; use device='cpu'")
        if resolved.type == "mps" and not _mps_available(torch):
            raise ValueError(f"device={device!r} was asked for but MPS is not available; use device='cpu'")
        return resolved
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available(torch):
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available(torch: Any) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The weights' dtype: the one given, else bf16 on CUDA (fp16 where bf16 is unsupported), fp16 on MPS,
    fp32 on CPU.

    Example:
        >>> resolve_dtype("bf16", torch.device("cuda"))  # doctest: +SKIP
        torch.bfloat16
    """
    torch, _ = require_models()
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    name = _DTYPES.get(str(dtype).lower())
    if name is None:
        raise ValueError(
            f"unknown dtype {dtype!r}; use 'auto', 'float32', 'bfloat16' or 'float16' (or a torch.dtype)"
        )
    return getattr(torch, name)


def is_local_path(ref: ModelRef) -> bool:
    """True when ``ref`` names an existing local folder (saved with ``save_pretrained``)."""
    return Path(os.fspath(ref)).expanduser().is_dir()


def model_ref_str(ref: ModelRef) -> str:
    """The string to hand to ``from_pretrained``: a local folder as an absolute path, a hub id as is."""
    if isinstance(ref, os.PathLike) or is_local_path(ref):
        return str(Path(os.fspath(ref)).expanduser().resolve())
    if not isinstance(ref, str) or not ref.strip():
        raise ValueError(f"model name or path must be a non-empty str or path, got {ref!r}")
    return ref


def model_id(ref: ModelRef | None, fallback: Any = None) -> str:
    """A short, stable identifier of the weights for scorer names and cache keys.

    A hub id is used as is; a local folder becomes ``"<folder name>@<short hash of its absolute path>"``.
    A ready model object falls back to its ``config.name_or_path`` (or its class name).
    """
    if ref is not None:
        text = model_ref_str(ref)
        if is_local_path(text):
            digest = hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
            return f"{Path(text).name}@{digest}"
        return text
    config = getattr(fallback, "config", None)
    name = getattr(config, "name_or_path", None) or getattr(config, "_name_or_path", None)
    if name:
        return model_id(name) if is_local_path(name) else str(name)
    return type(fallback).__name__


def settings_digest(settings: Mapping[str, Any]) -> str:
    """A short hash of the settings that change scores (prompt, labels, pixel budget ...)."""
    text = repr(sorted((k, repr(v)) for k, v in settings.items()))
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def pretrained_kwargs(
    *,
    local_files_only: bool,
    revision: str | None,
    trust_remote_code: bool,
    cache_dir: str | os.PathLike[str] | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Keyword arguments shared by every ``from_pretrained`` call: remote code is off unless asked for."""
    kwargs: dict[str, Any] = {"local_files_only": local_files_only, "trust_remote_code": trust_remote_code}
    if revision is not None:
        kwargs["revision"] = revision
    if cache_dir is not None:
        kwargs["cache_dir"] = os.fspath(cache_dir)
    if extra:
        kwargs.update(extra)
    return kwargs


def dtype_kwarg(transformers: ModuleType, dtype: torch.dtype) -> dict[str, Any]:
    """``{"dtype": ...}`` on transformers >= 4.56, ``{"torch_dtype": ...}`` before (renamed upstream)."""
    if _version_tuple(transformers.__version__) >= (4, 56):
        return {"dtype": dtype}
    return {"torch_dtype": dtype}


def load_error(what: str, ref: str, exc: Exception, local_files_only: bool) -> ValueError:
    """A loading failure rewritten to say which model failed and what to try."""
    hint = (
        "check that the folder holds the files save_pretrained wrote"
        if is_local_path(ref)
        else (
            "it is not in the local Hugging Face cache; drop local_files_only=True to download it, "
            "or pass a local folder"
            if local_files_only
            else "check the model id, your network and HF_TOKEN for gated models, or pass a local folder"
        )
    )
    return ValueError(f"could not load the {what} from {ref!r}: {exc} ({hint})")


def to_device(batch: Mapping[str, Any], device: torch.device, float_dtype: torch.dtype) -> dict[str, Any]:
    """Move a processor's output to ``device``; floating tensors (pixel values) take the model dtype.

    To a CUDA device, CPU tensors go through pinned memory without blocking, so the host keeps preparing
    the next batch while the GPU still runs the previous one (a plain copy would wait for it).
    """
    to_cuda = device.type == "cuda"
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if hasattr(value, "to") and hasattr(value, "is_floating_point"):
            if to_cuda and value.device.type == "cpu":
                value = value.pin_memory().to(device, non_blocking=True)
            else:
                value = value.to(device)
            if value.is_floating_point() and value.dtype != float_dtype:
                value = value.to(float_dtype)
        out[key] = value
    return out


def as_calibrator(value: Calibrator | str | os.PathLike[str] | None) -> Calibrator | None:
    """A calibrator object as given, or one loaded from the JSON file a path names."""
    if value is None or hasattr(value, "calibrate"):
        return value  # type: ignore[return-value]
    if isinstance(value, (str, os.PathLike)):
        from mm_rerank_components.calibration import load_calibrator

        if not Path(value).is_file():
            raise ValueError(f"calibrator file {os.fspath(value)!r} does not exist")
        return load_calibrator(value)
    raise TypeError(f"calibrator must be a Calibrator, a JSON path or None, got {type(value).__name__}")


def default_token_budget(value: int | str | None, device: Any) -> int | None:
    """The padded-token budget per batch: the one given, or for ``"auto"`` a device default.

    On CPU small batches run fastest (they stay in cache): 1024 padded tokens measured 0.55-0.8x
    sentence-transformers' time on a MiniLM-L6-shaped cross-encoder (``benchmarks/cross_encoder_vs_st.py``),
    against 1.0-1.4x for one batch of 32. On an accelerator the budget is left to ``batch_size`` alone.
    """
    if value == "auto":
        return 1024 if getattr(device, "type", "cpu") == "cpu" else None
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"max_batch_tokens must be a positive int, 'auto' or None, got {value!r}")
    return value if value is None else int(value)


def pad_rows(
    rows: Sequence[Sequence[int]], value: int, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(padded, mask)`` long tensors from ragged token rows, padded with ``value`` on ``side``.

    Example:
        >>> ids, mask = pad_rows([[5, 6, 7], [8]], 0, side="left")  # doctest: +SKIP
        >>> ids.tolist(), mask.tolist()  # doctest: +SKIP
        ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    """
    import torch

    width = max((len(row) for row in rows), default=0)
    padded = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        cols = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        padded[r, cols] = torch.tensor(list(row), dtype=torch.long)
        mask[r, cols] = 1
    return padded, mask


def check_readable(who: str, modalities: frozenset[str], query: Any, candidates: Sequence[Any]) -> None:
    """Raise a ValueError unless the query has text and every candidate's modality is readable.

    Example:
        >>> check_readable("CrossEncoderScorer", frozenset({"text"}), query, candidates)  # doctest: +SKIP
    """
    if not query.text or not query.text.strip():
        raise ValueError(
            f"{who} reads text queries: the query has no text; use a VLM scorer for image queries"
        )
    for candidate in candidates:
        if candidate.modality not in modalities:
            raise ValueError(
                f"{who} reads {', '.join(sorted(modalities))} candidates only; {candidate.id!r} is "
                f"{candidate.modality}: route it to another scorer with ModalityRouter"
            )
