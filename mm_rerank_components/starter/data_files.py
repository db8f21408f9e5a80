"""Files shipped in ``mm_rerank_components/starter/data`` that more than one layer reads.

Example:
    >>> data_path(DEFAULT_FUSION_FILE).name
    'default_fusion.json'
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["DEFAULT_FUSION_FILE", "data_path"]

#: The shipped default's learned-fusion model (``defaults`` serves it, ``adapt`` starts from it).
DEFAULT_FUSION_FILE = "default_fusion.json"


def data_path(name: str) -> Path:
    """The path of the shipped data file ``name`` inside the installed package."""
    return Path(str(resources.files("mm_rerank_components.starter").joinpath("data", name)))
