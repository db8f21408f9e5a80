"""int8 dynamic quantisation and an ONNX Runtime backend for BERT-style encoders (the implementation).

It lives in the starter package so that both the starter's text model (``starter/text.py``) and the
scorers (``scorers/onnx.py`` re-exports it, with the full description) can use it without an import
cycle between ``starter`` and ``scorers``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from mm_rerank_components._deps import require

logger = logging.getLogger(__name__)

Backend = Literal["torch", "torch-int8", "onnx", "onnx-int8"]
BACKENDS: tuple[Backend, ...] = ("torch", "torch-int8", "onnx", "onnx-int8")
#: the environment variable that picks the starter text encoder's default ``backend``
TEXT_BACKEND_ENV = "MM_RERANK_TEXT_BACKEND"


def env_text_backend() -> str:
    """The backend the starter text encoder takes when none is passed: ``$MM_RERANK_TEXT_BACKEND``, else
    ``"torch"`` (unchecked; the encoder checks it), read without importing torch.

    Example:
        >>> env_text_backend() in ("torch", "torch-int8", "onnx", "onnx-int8")
        True
    """
    return os.environ.get(TEXT_BACKEND_ENV) or "torch"


def check_backend(backend: object, device: object = "cpu") -> Backend:
    """``backend`` as a :data:`Backend`, or a ValueError naming the choices (int8 and ONNX run on CPU).

    Example:
        >>> check_backend("onnx")
        'onnx'
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "torch" and str(device).split(":")[0] != "cpu":
        raise ValueError(
            f"backend {backend!r} runs on the CPU, but the model is on {device!s}; use backend='torch' "
            "on an accelerator or device='cpu'"
        )
    return cast(Backend, backend)


#: int8 weights get one scale per output channel (torch's ``per_channel_dynamic_qconfig``, ONNX Runtime's
#: ``quantize_dynamic(per_channel=True)``), not one per tensor: on the starter's MiniLM over the five
#: built-in tasks (benchmarks/starter_int8_quality.py, 447 test queries) per tensor cost rerank nDCG@10
#: -0.015 [-0.024, -0.005] (torch) and -0.008 [-0.017, +0.001] (ONNX); per channel -0.007 [-0.014, -0.000]
#: and -0.002 [-0.008, +0.004], passage cosine to fp32 0.991 (ONNX), at the same speed.
PER_CHANNEL = True


def quantize_int8(model: Any) -> Any:
    """``model`` with its ``nn.Linear`` layers dynamically quantised to int8, weights per output channel
    (:data:`PER_CHANNEL`; a new module; CPU only)."""
    import torch

    quantization = torch.ao.quantization
    layers: Any = (
        {torch.nn.Linear: quantization.per_channel_dynamic_qconfig} if PER_CHANNEL else {torch.nn.Linear}
    )
    quantized = quantization.quantize_dynamic(model, layers, dtype=torch.qint8)
    return quantized.eval()


class OnnxEncoder:
    """A loaded ``transformers`` encoder exported to ONNX and run by ONNX Runtime.

    Args:
        model: the torch model (eval mode, on the CPU, fp32).
        input_names: the tensors a batch holds, in the model's keyword names (``input_ids``,
            ``attention_mask``, ``token_type_ids``).
        output: the model output to return: ``"logits"`` or ``"last_hidden_state"``.
        int8: quantise the MatMul weights to int8 (ONNX Runtime's ``quantize_dynamic``, per channel).
        threads: ONNX Runtime intra-op threads (default: torch's current thread count).

    Example:
        >>> encoder = OnnxEncoder(model, ["input_ids", "attention_mask"], "logits")  # doctest: +SKIP
        >>> encoder({"input_ids": ids, "attention_mask": mask}).shape  # doctest: +SKIP
        (8, 1)
    """

    def __init__(
        self,
        model: Any,
        input_names: Sequence[str],
        output: Literal["logits", "last_hidden_state"],
        *,
        int8: bool = False,
        threads: int | None = None,
    ) -> None:
        ort = require("onnxruntime", "onnx", "the ONNX Runtime backend")
        import torch

        self.input_names = list(input_names)
        self.output = output
        with tempfile.TemporaryDirectory(prefix="mm-rerank-onnx-") as tmp:
            path = Path(tmp) / "model.onnx"
            _export(model, self.input_names, output, path)
            if int8:
                require("onnx", "onnx", "int8 quantisation of an ONNX model")
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantized = Path(tmp) / "model-int8.onnx"
                quantize_dynamic(
                    str(path), str(quantized), weight_type=QuantType.QInt8, per_channel=PER_CHANNEL
                )
                path = quantized
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads or torch.get_num_threads()
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.session = ort.InferenceSession(
                path.read_bytes(), sess_options=options, providers=["CPUExecutionProvider"]
            )
        logger.debug("ONNX Runtime session ready (%s, int8=%s)", output, int8)

    def __call__(self, batch: Mapping[str, Any]) -> np.ndarray:
        """The ``output`` tensor of a padded batch (torch tensors or arrays), as a float32 array."""
        feeds = {name: _as_int64(batch[name]) for name in self.input_names}
        (out,) = self.session.run([self.output], feeds)
        return np.asarray(out, dtype=np.float32)


def _as_int64(value: Any) -> np.ndarray:
    array = value.cpu().numpy() if hasattr(value, "cpu") else np.asarray(value)
    return np.ascontiguousarray(array, dtype=np.int64)


def _export(model: Any, input_names: list[str], output: str, path: Path) -> None:
    """``torch.onnx.export`` with dynamic batch and sequence axes; one named output."""
    import torch

    class _Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return getattr(self.inner(**dict(zip(input_names, tensors, strict=True))), output)

    sample = tuple(torch.ones((2, 8), dtype=torch.long) for _ in input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes[output] = {0: "batch"} if output == "logits" else {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow: sizes are dynamic axes
        torch.onnx.export(
            _Wrapped().eval(),
            sample,
            str(path),
            input_names=input_names,
            output_names=[output],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
