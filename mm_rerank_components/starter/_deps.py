"""Import guards for the ``starter`` extra: one clear ImportError naming what to install."""

from __future__ import annotations

from types import ModuleType

from mm_rerank_components._deps import require as _require

STARTER_INSTALL_HINT = 'pip install "mm-rerank-components[starter]"'
CHROMA_INSTALL_HINT = 'pip install "mm-rerank-components[chroma]"'


def require(module: str, extra: str = "starter") -> ModuleType:
    """Import ``module`` or raise an ImportError that names the extra to install.

    Example:
        >>> require("json").__name__
        'json'
    """
    return _require(module, extra, "the starter models")
