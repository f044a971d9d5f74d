"""Array backend: which array library runs the numbers, in which dtype.

Everything outside this module talks to arrays through a :class:`Backend`
(``be.xp`` is the array namespace, ``be.dtype`` the float type) and draws
random numbers from a :class:`RandomStream`. Only this module decides between
NumPy and CuPy, so the rest of the package never imports either directly for
array creation or randomness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Backend", "RandomStream", "get_backend", "array_module", "BACKENDS", "BackendUnavailable"]

BACKENDS = ("numpy", "cupy")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run on this machine."""


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


def array_module(a):
    """The array namespace (numpy or cupy) an array belongs to, without importing cupy."""
    if type(a).__module__.split(".")[0] == "cupy":
        import sys

        return sys.modules["cupy"]
    return np


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


class RandomStream:
    """A seeded random stream whose exact state can be saved and restored.

    Gaussian draws (the noise of every rule and node model) come from npsim's
    counter-based ziggurat (:mod:`npsim.kernels.normal`, a Numba kernel with a
    bit-identical NumPy twin): one stream of draws under a key, consumed in
    order. Everything else (uniforms, integers, permutations) and the key come
    from ``numpy.random.Generator(PCG64)``. ``state()`` returns a small
    ``uint64`` array; ``set_state`` puts it back, so a resumed run draws
    exactly the numbers an uninterrupted run would have drawn.
    """

    def __init__(self, backend: Backend, seed):
        self.backend = backend
        if backend.name != "numpy":
            raise BackendUnavailable(f"random streams for backend {backend.name!r} are not available")
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self._gen = np.random.Generator(np.random.PCG64(ss))
        self._normal_key = int(self._gen.integers(0, 2**64, dtype=np.uint64))
        self._normal_count = 0

    # -- draws ------------------------------------------------------------
    def normal(self, shape, scale=1.0, dtype=None):
        """Gaussian draws N(0, scale²) of ``shape`` in ``dtype`` (default: the backend's float type).

        Successive calls continue one stream: drawing n then m numbers gives
        the same numbers as drawing n + m at once.
        """
        from .kernels import use_numba
        from .kernels.normal import standard_normal

        dt = self.backend.dtype if dtype is None else np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise ValueError(f"normal: dtype must be float32 or float64, got {dt}")
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        n = int(np.prod(shape, dtype=np.int64))
        z = standard_normal(self._normal_key, n, dt, start=self._normal_count, use_numba=use_numba())
        self._normal_count += n
        z = z.reshape(shape)
        if scale != 1.0:
            z *= dt.type(scale)
        return z

    def uniform(self, shape, dtype=None):
        """Uniform draws on [0, 1)."""
        dt = self.backend.dtype if dtype is None else np.dtype(dtype)
        return self._gen.random(shape, dtype=dt)

    def integers(self, low, high=None, size=None):
        return self._gen.integers(low, high, size=size)

    def permutation(self, n: int):
        return self._gen.permutation(n)

    # -- exact save / restore ---------------------------------------------
    def state(self) -> np.ndarray:
        """The full state as a ``uint64`` array of length 8: PCG64 (6), Gaussian key and count."""
        st = self._gen.bit_generator.state
        s, inc = st["state"]["state"], st["state"]["inc"]
        mask = (1 << 64) - 1
        return np.array(
            [s & mask, s >> 64, inc & mask, inc >> 64, st["has_uint32"], st["uinteger"],
             self._normal_key, self._normal_count],
            dtype=np.uint64,
        )

    def set_state(self, arr) -> None:
        """Restore a state returned by :meth:`state`."""
        a = [int(v) for v in np.asarray(arr, dtype=np.uint64)]
        if len(a) == 6:
            raise ValueError("random stream state has 6 entries: it was saved by an older npsim whose Gaussian "
                             "draws differ, so the run cannot continue exactly; start it afresh")
        if len(a) != 8:
            raise ValueError(f"random stream state must have 8 entries, got {len(a)}")
        self._normal_key, self._normal_count = a[6], a[7]
        self._gen.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": a[0] | (a[1] << 64), "inc": a[2] | (a[3] << 64)},
            "has_uint32": a[4],
            "uinteger": a[5],
        }
