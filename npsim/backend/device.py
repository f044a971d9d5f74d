"""Which array library runs the numbers, on which device, in which dtype.

Everything outside :mod:`npsim.backend` talks to arrays through a
:class:`Backend` (``be.xp`` is the array namespace, ``be.dtype`` the float
type) and draws random numbers from a :class:`~npsim.backend.random.RandomStream`.
Only this module decides between NumPy and CuPy (and the only place that
imports CuPy), so the rest of the package never imports either directly for
array creation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BackendUnavailable
from .random import RandomStream

__all__ = ["Backend", "get_backend", "BACKENDS"]

BACKENDS = ("numpy", "cupy")


@dataclass(frozen=True)
class Backend:
    """An array namespace plus a floating dtype.

    Attributes
    ----------
    name : "numpy" or "cupy".
    xp : the array module (``numpy`` or ``cupy``).
    dtype : the floating dtype every parameter and activity uses
        (float32 by default, float64 for numerical checks).
    """

    name: str
    xp: Any
    dtype: np.dtype

    def asarray(self, a, dtype=None):
        """Move ``a`` onto this backend's device, cast to ``dtype`` (default: ``self.dtype``)."""
        return self.xp.asarray(a, dtype=self.dtype if dtype is None else dtype)

    def to_numpy(self, a) -> np.ndarray:
        """Copy ``a`` to a host NumPy array (no copy for NumPy input)."""
        if self.name == "cupy":
            return a.get()
        return np.asarray(a)

    def zeros(self, shape, dtype=None):
        return self.xp.zeros(shape, dtype=self.dtype if dtype is None else dtype)

    def eye(self, n, dtype=None):
        return self.xp.eye(n, dtype=self.dtype if dtype is None else dtype)

    def stream(self, seed) -> RandomStream:
        """A new random stream on this backend seeded by ``seed`` (int or SeedSequence)."""
        return RandomStream(self, seed)

    @property
    def device(self) -> str:
        if self.name == "cupy":
            dev = self.xp.cuda.Device()
            props = self.xp.cuda.runtime.getDeviceProperties(dev.id)
            return f"cuda:{dev.id} {props['name'].decode()}"
        return "cpu"


def get_backend(name: str = "numpy", dtype="float32") -> Backend:
    """Return the backend called ``name`` with floating type ``dtype``.

    Raises ``ValueError`` for an unknown name or dtype and
    :class:`BackendUnavailable` when CuPy or a GPU is missing.
    """
    dt = np.dtype(dtype)
    if dt not in (np.dtype("float32"), np.dtype("float64")):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    if name == "numpy":
        return Backend("numpy", np, dt)
    if name == "cupy":
        try:
            import cupy  # noqa: PLC0415 - the one place cupy is imported
        except ImportError as exc:
            raise BackendUnavailable(
                "backend 'cupy' needs CuPy: install it with pip install 'npsim[gpu]'"
            ) from exc
        try:
            n = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CUDA driver missing or broken
            raise BackendUnavailable(f"backend 'cupy': no usable CUDA device ({exc})") from None
        if n == 0:
            raise BackendUnavailable("backend 'cupy': no CUDA device found")
        return Backend("cupy", cupy, dt)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
