"""Seeded random streams whose exact state can be saved and restored."""

from __future__ import annotations

import numpy as np

from ..errors import BackendUnavailable
from .kernels import use_numba
from .kernels.normal import standard_normal

__all__ = ["RandomStream"]


class RandomStream:
    """A seeded random stream whose exact state can be saved and restored.

    Gaussian draws (the noise of every rule and node model) come from npsim's
    counter-based ziggurat (:mod:`npsim.backend.kernels.normal`, a Numba kernel with a
    bit-identical NumPy twin): one stream of draws under a key, consumed in
    order. Everything else (uniforms, integers, permutations) and the key come
    from ``numpy.random.Generator(PCG64)``. ``state()`` returns a small
    ``uint64`` array; ``set_state`` puts it back, so a resumed run draws
    exactly the numbers an uninterrupted run would have drawn.
    """

    def __init__(self, backend, seed):
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
