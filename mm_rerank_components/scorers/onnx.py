"""Faster CPU inference for BERT-style encoders: int8 dynamic quantisation and an ONNX Runtime backend.

One option, ``backend``, picks how a loaded ``transformers`` encoder runs (the cross-encoder's model, the
starter's text model):

* ``"torch"``: the model as loaded (fp32 on CPU), the reference;
* ``"torch-int8"``: ``torch.ao.quantization.quantize_dynamic`` on the ``nn.Linear`` layers (int8 weights,
  activations quantised per batch), CPU only;
* ``"onnx"``: the model exported to ONNX (in memory, once per load) and run by ONNX Runtime in fp32;
* ``"onnx-int8"``: that graph with ONNX Runtime's dynamic int8 quantisation of its MatMul weights.

The export uses the model's eager attention (``starter._onnx.EXPORT_ATTENTION``), which ONNX Runtime runs
faster than the SDPA form (fp32 0.96-0.97x, int8 0.92-0.95x its time on a MiniLM-L6-shaped cross-encoder).
ONNX Runtime's transformer optimiser (fused Attention, SkipLayerNormalization, BiasGelu; then int8
quantisation, which turns Attention into QAttention) is an option, ``OnnxEncoder(fuse=True)`` or
``starter._onnx.FUSE``, off because it measured slower on a 2-core AVX2 CPU (1.06-1.07x); a graph it
cannot fuse, or whose fp32 scores move by more than ``FUSE_TOLERANCE``, runs unfused with a warning.

ONNX Runtime is used directly (``onnxruntime`` plus ``onnx`` for the quantiser), not through optimum:
optimum 2.x moved its exporters into a separate ``optimum-onnx`` package that pins its own transformers
range, and the export needed here is a single ``torch.onnx.export`` of an already loaded model with
dynamic batch and sequence axes, which keeps the loading code (local files, revisions, ready ``model=``
objects) in one place, ``scorers/_hf.py``. Needs the ``onnx`` extra:
``pip install "mm-rerank-components[onnx]"``. Rankings agree with fp32 closely but not exactly;
``benchmarks/cross_encoder_vs_st.py`` measures the top-10 agreement and Kendall tau.
"""

from mm_rerank_components.starter._onnx import (
    BACKENDS,
    Backend,
    OnnxEncoder,
    check_backend,
    quantize_int8,
)

__all__ = ["BACKENDS", "Backend", "OnnxEncoder", "check_backend", "quantize_int8"]
