"""Import guards for the ``starter`` extra: one clear ImportError naming what to install."""

from __future__ import annotations

import importlib
from types import ModuleType

STARTER_INSTALL_HINT = 'pip install "mm-rerank-components[starter]"'
CHROMA_INSTALL_HINT = 'pip install "mm-rerank-components[chroma]"'


def require(module: str, extra: str = "starter") -> ModuleType:
    """Import ``module`` or raise an ImportError that names the extra to install.

    Only a missing top-level package becomes the friendly error; an ImportError raised *inside* an
    installed package (a real bug) propagates unchanged.

    Example:
        >>> require("json").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise
        raise ImportError(
            f"{module!r} is needed for the starter models but is not installed: "
            f'pip install "mm-rerank-components[{extra}]"'
        ) from exc
