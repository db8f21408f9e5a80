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

#: The graph is exported with the model's eager attention (plain MatMul/Softmax), not the SDPA form that
#: ``transformers`` picks by default: on the MiniLM-L6-shaped cross-encoder, 100 varied passages per query,
#: 1 thread (benchmarks/cross_encoder_vs_st.py, 5 rotated rounds, two runs), ONNX Runtime ran the eager
#: graph faster in every round: fp32 0.96-0.97x, int8 0.92-0.95x the SDPA graph's time, scores equal to
#: rounding (4e-7).
#: ``None`` exports the model as it is configured (the benchmark's ``:sdpa`` contenders).
EXPORT_ATTENTION: str | None = "eager"

#: Run ONNX Runtime's transformer optimiser (``onnxruntime.transformers.optimizer``, model_type ``"bert"``)
#: on the exported graph: Attention, EmbedLayerNormalization, SkipLayerNormalization and BiasGelu fused
#: into single kernels, then (for int8) quantised, as ONNX Runtime's quantisation guide says for
#: transformers (the fused Attention becomes QAttention). Off: on this project's 2-core AVX2 machine the
#: fused graph was slower in every round of both runs above (fp32 and int8 1.06-1.07x the unfused eager
#: graph's time; ~85% of the unfused time is MatMul, and the fused Attention kernel is no faster than
#: MatMul/Softmax). Kept as an option (``OnnxEncoder(fuse=True)``, the benchmark's ``:fused``) to re-measure
#: on CPUs with other kernels (AVX-512, VNNI); docs/speed.md has the figures.
FUSE = False

#: largest score difference the fused fp32 graph may show against torch on the probe batch before it is
#: discarded (rounding on a MiniLM-shaped model is ~5e-6)
FUSE_TOLERANCE = 1e-4


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
        fuse: fuse the graph with ONNX Runtime's transformer optimiser before any quantisation (default
            :data:`FUSE`); a graph it cannot fuse, or whose fp32 scores then differ from torch's by more
            than :data:`FUSE_TOLERANCE`, is used unfused, with a warning.

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
        fuse: bool | None = None,
    ) -> None:
        ort = require("onnxruntime", "onnx", "the ONNX Runtime backend")
        import torch

        self.input_names = list(input_names)
        self.output = output
        #: whether the session runs the fused graph (False where fusion was off or fell back)
        self.fused = False
        with tempfile.TemporaryDirectory(prefix="mm-rerank-onnx-") as tmp:
            path = Path(tmp) / "model.onnx"
            _export(model, self.input_names, output, path)
            if FUSE if fuse is None else fuse:
                fused = fuse_transformer(
                    model, path, Path(tmp) / "model-fused.onnx", self.input_names, output
                )
                self.fused, path = fused is not None, fused or path
            if int8:
                path = _quantize(path, Path(tmp) / "model-int8.onnx", fused=self.fused)
            self.session = _session(ort, path, threads or torch.get_num_threads())
        logger.debug("ONNX Runtime session ready (%s, int8=%s, fused=%s)", output, int8, self.fused)

    def __call__(self, batch: Mapping[str, Any]) -> np.ndarray:
        """The ``output`` tensor of a padded batch (torch tensors or arrays), as a float32 array."""
        feeds = {name: _as_int64(batch[name]) for name in self.input_names}
        (out,) = self.session.run([self.output], feeds)
        return np.asarray(out, dtype=np.float32)


def fuse_transformer(
    model: Any, path: Path, out: Path, input_names: Sequence[str], output: str
) -> Path | None:
    """The graph at ``path`` fused by ONNX Runtime's transformer optimiser and saved to ``out``, or None
    (with a warning) where the optimiser fails, fuses no attention, or changes the scores on a probe batch
    by more than :data:`FUSE_TOLERANCE` against ``model`` (torch). Heads and width: ``model.config``."""
    require("onnx", "onnx", "fusing an ONNX model's transformer operators")
    from onnxruntime.transformers.optimizer import optimize_model

    config = getattr(model, "config", None)  # 0: the optimiser reads it from the graph
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    try:
        optimized = optimize_model(
            str(path), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0
        )
        counts = optimized.get_fused_operator_statistics()
        if not counts.get("Attention"):
            raise ValueError(f"no attention fused (fused operators: {counts})")
        optimized.save_model_to_file(str(out))
        difference = _probe_difference(model, out, input_names, output)
    except Exception as exc:  # noqa: BLE001 - any optimiser failure: the unfused graph scores the same
        logger.warning(
            "ONNX Runtime's transformer fusion failed for this model (heads=%d, hidden=%d): %s; "
            "using the unfused graph",
            heads,
            hidden,
            exc,
        )
        return None
    if difference > FUSE_TOLERANCE:
        logger.warning(
            "the fused ONNX graph's scores differ from torch's by %.2e (> %.0e); using the unfused graph",
            difference,
            FUSE_TOLERANCE,
        )
        return None
    logger.debug("fused ONNX graph: %s, probe difference %.1e", counts, difference)
    return out


def _probe_difference(model: Any, path: Path, input_names: Sequence[str], output: str) -> float:
    """Largest absolute difference between the graph at ``path`` and ``model`` on a small padded batch."""
    import onnxruntime as ort
    import torch

    generator = torch.Generator().manual_seed(0)
    vocab = int(getattr(model.config, "vocab_size", 100))
    batch = {name: torch.zeros((2, 12), dtype=torch.long) for name in input_names}
    if "input_ids" in batch:
        batch["input_ids"] = torch.randint(1, vocab, (2, 12), generator=generator)
    if "attention_mask" in batch:
        batch["attention_mask"][0] = 1
        batch["attention_mask"][1, :7] = 1  # one padded row: the fused attention's mask path
    with torch.no_grad():
        expected = getattr(model(**batch), output).float().numpy()
    (got,) = _session(ort, path, 1).run([output], {k: _as_int64(v) for k, v in batch.items()})
    if "attention_mask" in batch and output == "last_hidden_state":  # padded positions are undefined
        keep = batch["attention_mask"].numpy().astype(bool)
        expected, got = expected[keep], np.asarray(got)[keep]
    return float(np.abs(np.asarray(got, dtype=np.float32) - expected).max())


def _quantize(path: Path, out: Path, *, fused: bool) -> Path:
    """The graph at ``path`` with ONNX Runtime's dynamic int8 quantisation (per :data:`PER_CHANNEL`)."""
    onnx = require("onnx", "onnx", "int8 quantisation of an ONNX model")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # the fused graph's com.microsoft operators defeat ONNX shape inference: their outputs are float
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT} if fused else None
    quantize_dynamic(
        str(path), str(out), weight_type=QuantType.QInt8, per_channel=PER_CHANNEL, extra_options=extra
    )
    return out


def _session(ort: Any, path: Path, threads: int) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path.read_bytes(), sess_options=options, providers=["CPUExecutionProvider"])


def _as_int64(value: Any) -> np.ndarray:
    array = value.cpu().numpy() if hasattr(value, "cpu") else np.asarray(value)
    return np.ascontiguousarray(array, dtype=np.int64)


def _export(model: Any, input_names: list[str], output: str, path: Path) -> None:
    """``torch.onnx.export`` with dynamic batch and sequence axes, one named output, the attention as
    :data:`EXPORT_ATTENTION` says (the model's own setting restored after)."""
    before = getattr(getattr(model, "config", None), "_attn_implementation", None)
    switch = EXPORT_ATTENTION is not None and before not in (None, EXPORT_ATTENTION)
    if switch:
        try:
            model.set_attn_implementation(EXPORT_ATTENTION)
        except (AttributeError, ValueError) as exc:  # a model without it: its own attention, same scores
            logger.warning("exporting with %s attention, not %s: %s", before, EXPORT_ATTENTION, exc)
            switch = False
    try:
        _trace(model, input_names, output, path)
    finally:
        if switch:
            model.set_attn_implementation(before)


def _trace(model: Any, input_names: list[str], output: str, path: Path) -> None:
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
