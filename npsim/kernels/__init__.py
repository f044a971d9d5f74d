"""Fused hot loops: Numba kernels on the CPU, each with a plain-NumPy twin.

Callers use the dispatching functions here; they pick the Numba kernel for
NumPy arrays when Numba is available and ``NPSIM_KERNELS`` is not ``numpy``,
and the NumPy twin otherwise (the reference the kernels are tested against,
and the path other array libraries take). Kernels are compiled with
``cache=True``, so only the first run on a machine pays the compile time.
"""

from __future__ import annotations

import os

import numpy as np

from . import reference

__all__ = ["adam_step", "perturb_activate", "use_numba"]

_numba = None


def use_numba() -> bool:
    """Whether the Numba kernels are in use (set NPSIM_KERNELS=numpy to force the NumPy twins)."""
    global _numba
    if os.environ.get("NPSIM_KERNELS", "numba").lower() == "numpy":
        return False
    if _numba is None:
        try:
            from . import cpu  # noqa: F401

            _numba = cpu
        except ImportError:  # pragma: no cover - numba is a dependency
            _numba = False
    return bool(_numba)


def _host_f32_or_f64(*arrays) -> bool:
    return all(type(a) is np.ndarray and a.dtype in (np.float32, np.float64) and a.flags.c_contiguous
               for a in arrays)


def adam_step(p, g, m, v, *, b1: float, b2: float, step_size: float, eps: float) -> float:
    """In place: m ← b1 m + (1−b1) g; v ← b2 v + (1−b2) g²; p ← p − step_size·m/(√v + eps).

    All arrays of one shape and dtype. Returns the squared norm of the change of p.
    """
    if use_numba() and _host_f32_or_f64(p, g, m, v) and p.dtype == g.dtype == m.dtype == v.dtype:
        t = p.dtype.type
        return float(_numba.adam_step(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                                      t(b1), t(1 - b1), t(b2), t(1 - b2), t(step_size), t(eps)))
    return reference.adam_step(p, g, m, v, b1=b1, b2=b2, step_size=step_size, eps=eps)


def perturb_activate(drive, perturb, repeats: int, slope: float | None):
    """a = tile(drive, repeats) + perturb and x = leaky_relu(a; slope) in one pass.

    drive (B, n), perturb (repeats·B, n) or None. ``slope=None`` means the
    linear node model (x = a). Returns (a, x).
    """
    if (use_numba() and perturb is not None and _host_f32_or_f64(drive, perturb)
            and drive.dtype == perturb.dtype):
        a = np.empty_like(perturb)
        x = a if slope is None else np.empty_like(perturb)
        t = drive.dtype.type
        _numba.perturb_activate(drive, perturb, a, x, t(0 if slope is None else slope), slope is not None)
        return a, x
    return reference.perturb_activate(drive, perturb, repeats, slope)
