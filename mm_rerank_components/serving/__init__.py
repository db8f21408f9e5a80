"""The rerank service: real clients' request shapes, micro-batching across requests, metrics, Ray Serve.

* :class:`ServeConfig` and :class:`RerankEngine` (:mod:`.engine`): the scorer, micro-batching, limits
  and metrics, without HTTP;
* :func:`create_app` (:mod:`.app`): the FastAPI routes (``/v1/rerank``, ``/rerank``, ``/v2/rerank``,
  ``/health``, ``/metrics``), run with uvicorn or ``mm-rerank serve``;
* :mod:`.ray`: the same routes in a Ray Serve deployment with ``@serve.batch`` (``mm-rerank serve --ray``);
* :mod:`.protocol`: the wire formats; :mod:`.batching`: the micro-batcher.

Nothing heavy is imported until used (FastAPI, prometheus-client, Ray: extras ``serve`` and ``ray``).

Example:
    >>> from mm_rerank_components.serving import RerankEngine, ServeConfig, create_app
    >>> app = create_app(RerankEngine(ServeConfig(scorer="fake")))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ServeConfig": "mm_rerank_components.serving.engine",
    "RerankEngine": "mm_rerank_components.serving.engine",
    "load_scorer": "mm_rerank_components.serving.engine",
    "create_app": "mm_rerank_components.serving.app",
    "MicroBatcher": "mm_rerank_components.serving.batching",
    "MultiQueryScorer": "mm_rerank_components.serving.batching",
    "ScoreCall": "mm_rerank_components.serving.batching",
    "score_many": "mm_rerank_components.serving.batching",
    "RequestError": "mm_rerank_components.serving.protocol",
    "PerBatchCostScorer": "mm_rerank_components.serving.fake",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
