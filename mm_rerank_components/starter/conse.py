"""ConSE: images into a text embedding space through a classifier's class probabilities (numpy only).

ConSE (Norouzi et al., 2014, "Zero-Shot Learning by Convex Combination of Semantic Embeddings") needs no
joint training: take the classifier's top-k class probabilities, renormalise them to sum to one, and
average the text embeddings of those classes with those weights. Here the result is L2-normalised, so
its dot product with a unit-length text embedding is a cosine.
"""

from __future__ import annotations

import numpy as np


def conse(probabilities: np.ndarray, class_embeddings: np.ndarray, top_k: int = 10) -> np.ndarray:
    """ConSE embeddings: top-k renormalised probabilities weighting unit-length class text embeddings.

    Args:
        probabilities: ``(N, C)`` class probabilities (rows need not sum to one).
        class_embeddings: ``(C, D)`` text embeddings of the class prompts.
        top_k: how many of the most probable classes to mix (1 = the top class's embedding).

    Returns:
        float32 ``(N, D)``, each row L2-normalised.

    Example:
        >>> import numpy as np
        >>> emb = np.eye(3, dtype=np.float32)
        >>> conse(np.array([[0.6, 0.3, 0.1]]), emb, top_k=1).round(3).tolist()
        [[1.0, 0.0, 0.0]]
    """
    probs = np.asarray(probabilities, dtype=np.float32)
    emb = np.asarray(class_embeddings, dtype=np.float32)
    if probs.ndim != 2 or emb.ndim != 2 or probs.shape[1] != emb.shape[0]:
        raise ValueError(
            f"shapes do not fit: probabilities {probs.shape} needs class_embeddings of shape "
            f"(C={probs.shape[-1]}, D), got {emb.shape}"
        )
    if not 1 <= top_k <= probs.shape[1]:
        raise ValueError(f"top_k must be between 1 and {probs.shape[1]}, got {top_k}")
    if probs.shape[0] == 0:
        return np.zeros((0, emb.shape[1]), dtype=np.float32)
    top = np.argpartition(-probs, top_k - 1, axis=1)[:, :top_k]
    weights = np.take_along_axis(probs, top, axis=1)
    weights = weights / np.clip(weights.sum(1, keepdims=True), 1e-12, None)
    mixed = np.einsum("nk,nkd->nd", weights, emb[top])
    norms = np.linalg.norm(mixed, axis=1, keepdims=True)
    return (mixed / np.clip(norms, 1e-12, None)).astype(np.float32)
