"""Which array library runs the numbers, on which device, in which dtype.

Everything outside :mod:`npsim.backend` creates arrays through a
:class:`Backend` (``be.xp`` is the array API namespace, ``be.dtype`` the float
type, ``be.device`` where arrays live) and draws random numbers from a
:class:`~npsim.backend.random.RandomStream`. Only this module chooses between
the libraries, and the only place that imports CuPy:

* ``"numpy"`` — the CPU, with npsim's Numba kernels;
* ``"cupy"`` — an NVIDIA GPU through CuPy, with numba-cuda kernels;
* ``"array-api-strict"`` — array-api-strict on its non-default device
  ``Device("device1")``: the CPU stand-in for a GPU that the test suite runs
  the engine on, where any NumPy-only call or implicit host/device transfer
  raises, as it would on a real device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BackendUnavailable
from .arrays import to_host
from .random import RandomStream

__all__ = ["Backend", "get_backend", "BACKENDS"]

BACKENDS = ("numpy", "cupy", "array-api-strict")


@dataclass(frozen=True)
class Backend:
    """An array namespace, a device on it and a floating dtype.

    Attributes
    ----------
    name : "numpy", "cupy" or "array-api-strict".
    xp : the array API namespace (array-api-compat's wrapper of NumPy or CuPy, or array_api_strict).
    host_dtype : the floating dtype as a NumPy dtype (float32 by default, float64 for numerical checks).
    device : the device arrays are created on (None: the namespace's default).
    """

    name: str
    xp: Any
    host_dtype: np.dtype
    device: Any = None

    @property
    def dtype(self):
        """The floating dtype in the namespace (``xp.float32`` or ``xp.float64``)."""
        return self.xp_dtype(self.host_dtype)

    def xp_dtype(self, dtype):
        """The namespace's dtype of the NumPy dtype ``dtype`` (e.g. int64, bool)."""
        return getattr(self.xp, "bool" if np.dtype(dtype) == np.bool_ else np.dtype(dtype).name)

    def asarray(self, a, dtype=None):
        """``a`` (host data or an array of this backend) on this backend's device, as ``dtype``
        (a NumPy dtype or name; default: the float type)."""
        dt = self.host_dtype if dtype is None else np.dtype(dtype)
        if isinstance(a, (np.ndarray, np.generic, list, tuple, int, float)):
            a = np.asarray(a, dtype=dt)  # host data: converted on the host (no copy when it already fits)
            if self.name == "numpy":
                return a
        return self.xp.asarray(a, dtype=self.xp_dtype(dt), device=self.device)

    def to_numpy(self, a) -> np.ndarray:
        """Copy ``a`` to a host NumPy array (no copy for NumPy input)."""
        return to_host(a)

    def zeros(self, shape, dtype=None):
        return self.xp.zeros(shape, dtype=self.dtype if dtype is None else self.xp_dtype(dtype), device=self.device)

    def eye(self, n, dtype=None):
        return self.xp.eye(n, dtype=self.dtype if dtype is None else self.xp_dtype(dtype), device=self.device)

    def stream(self, seed) -> RandomStream:
        """A new random stream on this backend seeded by ``seed`` (int or SeedSequence)."""
        return RandomStream(self, seed)

    @property
    def device_name(self) -> str:
        """The device in words, for the trajectory file: "cpu", "cuda:0 NVIDIA H200", ..."""
        if self.name == "cupy":
            import cupy  # noqa: PLC0415

            dev = cupy.cuda.Device()
            props = cupy.cuda.runtime.getDeviceProperties(dev.id)
            name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
            return f"cuda:{dev.id} {name}"
        if self.name == "array-api-strict":
            return f"cpu (array-api-strict {self.device})"
        return "cpu"


def get_backend(name: str = "numpy", dtype="float32") -> Backend:
    """Return the backend called ``name`` with floating type ``dtype``.

    Raises ``ValueError`` for an unknown name or dtype and
    :class:`~npsim.errors.BackendUnavailable` when CuPy, a GPU or array-api-strict is missing.
    """
    dt = np.dtype(dtype)
    if dt not in (np.dtype("float32"), np.dtype("float64")):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    if name == "numpy":
        import array_api_compat.numpy as xp  # noqa: PLC0415

        return Backend("numpy", xp, dt)
    if name == "cupy":
        try:
            import cupy  # noqa: PLC0415 - the one place cupy is imported
        except ImportError as exc:
            raise BackendUnavailable(
                "backend 'cupy' needs CuPy and numba-cuda: install them with pip install 'npsim[cuda12]' "
                "(or 'npsim[cuda13]')"
            ) from exc
        try:
            n = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # noqa: BLE001 - CUDA driver missing or broken
            raise BackendUnavailable(f"backend 'cupy': no usable CUDA device ({exc})") from None
        if n == 0:
            raise BackendUnavailable("backend 'cupy': no CUDA device found")
        import array_api_compat.cupy as xp  # noqa: PLC0415

        return Backend("cupy", xp, dt, cupy.cuda.Device())
    if name == "array-api-strict":
        try:
            import array_api_strict as xp  # noqa: PLC0415
        except ImportError as exc:
            raise BackendUnavailable("backend 'array-api-strict' needs array-api-strict: pip install "
                                     "array-api-strict (it comes with npsim's test extra)") from exc
        return Backend("array-api-strict", xp, dt, xp.Device("device1"))
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
