"""Argument checks shared across the package: one wording for "a positive int, not a bool".

Example:
    >>> check_int("top_n", 3)
    >>> check_int("retries", 0, minimum=0)
    >>> check_int("batch_size", True)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be a positive int, got True
"""

from __future__ import annotations

from typing import Any


def check_int(name: str, value: Any, *, minimum: int = 1, optional: bool = False, hint: str = "") -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an int ``>= minimum`` (a bool is not an int
    here); ``optional`` also accepts None. ``hint`` follows the wording, e.g. ``" (no cap)"``."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        allowed = f"{kind} or None" if optional else kind
        raise ValueError(f"{name} must be {allowed}{hint}, got {value!r}")
