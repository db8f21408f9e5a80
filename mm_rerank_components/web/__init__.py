"""A small web chat over a :class:`~mm_rerank_components.answer.RAGPipeline`.

:func:`create_app` builds a FastAPI app serving one page: ask a question, get the answer with its ranked
evidence (thumbnails of pictures, passages, modality and unified score). Requires the ``web`` extra:
``pip install "mm-rerank-components[web]"``.

Example:
    >>> from mm_rerank_components.web import create_app  # doctest: +SKIP
    >>> app = create_app(pipeline)  # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mm_rerank_components.web.app import ImageRegistry, create_app
    from mm_rerank_components.web.limits import WebLimits

__all__ = ["ImageRegistry", "WebLimits", "create_app"]


def __getattr__(name: str) -> Any:
    # FastAPI is imported only when the app is asked for
    if name in __all__:
        from mm_rerank_components.web import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
