"""Array helpers that work on any backend's arrays (NumPy or CuPy) without importing CuPy."""

from __future__ import annotations

import numpy as np

__all__ = ["array_module", "tile_rows"]


def array_module(a):
    """The array namespace (numpy or cupy) an array belongs to, without importing cupy."""
    if type(a).__module__.split(".")[0] == "cupy":
        import sys

        return sys.modules["cupy"]
    return np


def tile_rows(a, k: int):
    """``k`` copies of ``a`` stacked along the first axis (``a`` itself when k == 1)."""
    if k == 1:
        return a
    return array_module(a).tile(a, (k,) + (1,) * (a.ndim - 1))
