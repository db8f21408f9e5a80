"""Import guards for optional extras: one clear ImportError naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise an ImportError naming the extra that provides it.

    Only a missing top-level package becomes the friendly error; an ImportError raised *inside* an
    installed package (a real bug) propagates unchanged.

    Example:
        >>> require("json", "eval", "this example").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise
        raise ImportError(
            f"{module!r} is needed for {purpose} but is not installed: "
            f'pip install "mm-rerank-components[{extra}]"'
        ) from exc


def pyplot(purpose: str) -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (plots are written to files)."""
    matplotlib = require("matplotlib", "eval", purpose)
    matplotlib.use("Agg", force=False)
    return require("matplotlib.pyplot", "eval", purpose)
