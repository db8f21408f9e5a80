"""The served model's names: a short id for responses and ``/health``, the long form for ``/info`` and
``/metrics``.

A scorer's own name records every setting that changes a score (the starter scorer's is about 100
characters: model files, views, class counts, weights), which is right for caches and saved folders but
noise in every response. Responses carry a short id: the ``--model-name`` given, else ``mm-rerank-default``
for the product default, ``reranker:FOLDER`` for a saved folder (either with ``+captions`` when captions
are read as passages, ``read_captions``), else the scorer's name when short or its kind plus a hash of the
full name (two settings never share an id).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_MODEL_ID", "MAX_MODEL_ID", "model_info", "short_model_id", "short_name"]

#: the id of the product default (:func:`~mm_rerank_components.defaults.default_reranker`)
DEFAULT_MODEL_ID = "mm-rerank-default"
#: longest id sent in responses
MAX_MODEL_ID = 48


def short_name(name: str, limit: int = MAX_MODEL_ID) -> str:
    """``name`` when it is at most ``limit`` characters, else its kind (before the first ``:``) and the
    first 8 hex digits of its SHA-256.

    Example:
        >>> short_name("fake")
        'fake'
        >>> short_name("starter:" + "x" * 90)[:8], len(short_name("starter:" + "x" * 90))
        ('starter-', 16)
    """
    if len(name) <= limit:
        return name
    kind = name.split(":", 1)[0][: limit - 9] or "model"
    return f"{kind}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"


def short_model_id(config: Any, scorer_name: str, *, plain: bool = False) -> str:
    """The id a :class:`~mm_rerank_components.serving.ServeConfig` serves under (see the module doc).

    Example:
        >>> from mm_rerank_components.serving import ServeConfig
        >>> short_model_id(ServeConfig(), "starter:" + "x" * 90)
        'mm-rerank-default'
        >>> short_model_id(ServeConfig(reranker_folder="/srv/models/my-reranker/"), "starter:x")
        'reranker:my-reranker'
        >>> short_model_id(ServeConfig(read_captions=True), "starter:x")
        'mm-rerank-default+captions'
    """
    if config.model:
        return str(config.model)
    if plain:  # a scorer handed to the engine: served as it is, whatever the config names
        return short_name(scorer_name)
    captions = "+captions" if getattr(config, "read_captions", False) else ""
    if config.reranker_folder is not None:
        return short_name(f"reranker:{Path(config.reranker_folder).name}{captions}")
    if config.scorer == "default":
        return DEFAULT_MODEL_ID + captions
    return short_name(scorer_name)


def model_info(config: Any, scorer_name: str, *, plain: bool = False) -> dict[str, str]:
    """``{"model", "scorer", "reranker"}``: the short id, the scorer's full name and what wraps it;
    ``plain``: the engine was handed its scorer (a plain :class:`MultimodalReranker` around it).

    Example:
        >>> from mm_rerank_components.serving import ServeConfig
        >>> model_info(ServeConfig(scorer="fake"), "fake")["reranker"]
        'MultimodalReranker (the scorer, calibrated per modality)'
    """
    if plain:
        reranker = "MultimodalReranker (the scorer, calibrated per modality)"
    elif config.reranker_folder is not None:
        reranker = f"reranker folder {Path(config.reranker_folder).name} (learned fusion, mm-rerank adapt)"
    elif config.scorer == "default":
        reranker = "default_reranker() (the starter scorer fused with the first stage's signals)"
    else:
        reranker = "MultimodalReranker (the scorer, calibrated per modality)"
    if not plain and getattr(config, "read_captions", False):
        reranker += ", captions read as passages"
    model = short_model_id(config, scorer_name, plain=plain)
    return {"model": model, "scorer": scorer_name, "reranker": reranker}
