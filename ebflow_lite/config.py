"""The one switch between the book's two run modes.

``EBFLOW_FAST=1`` in the environment selects *fast* mode (CI and tests: few steps, little
data); anything else selects *full* mode (the rendered book). Chapters read every size
through :func:`pick`, so one line states both modes side by side.
"""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")

_FALSE_WORDS = {"", "0", "false", "no", "off"}


def fast_mode() -> bool:
    """Return True when the environment variable ``EBFLOW_FAST`` asks for fast mode."""
    return os.environ.get("EBFLOW_FAST", "0").strip().lower() not in _FALSE_WORDS


def pick(full: T, fast: T) -> T:
    """Return ``fast`` in fast mode and ``full`` otherwise.

    Example:
        >>> steps = pick(full=5000, fast=200)
    """
    return fast if fast_mode() else full


def mode_name() -> str:
    """Return ``"fast"`` or ``"full"``, for printing in chapters."""
    return "fast" if fast_mode() else "full"
