"""Seeded random streams whose exact state can be saved and restored, on any backend."""

from __future__ import annotations

import numpy as np

from .arrays import host_dtype
from .kernels import use_numba
from .kernels.normal import standard_normal
from .kernels.uniform import standard_uniform

__all__ = ["RandomStream"]


class RandomStream:
    """A seeded random stream whose exact state can be saved and restored.

    Gaussian and uniform draws (the noise of every rule, node model and spike
    encoder) are counter-based: draw i of a stream is a function of (key, i)
    only (:mod:`npsim.backend.kernels.normal`, :mod:`npsim.backend.kernels.uniform`),
    computed by a Numba kernel on the CPU, a CUDA kernel on a GPU, and a NumPy
    twin, all bit-identical, so a GPU run draws exactly the noise a CPU run
    draws. Gaussian and uniform draws share one counter (they hash it
    differently). Integers and permutations (offsets, seeds of sub-streams,
    shuffles: host numbers) and the key come from
    ``numpy.random.Generator(PCG64)``. ``state()`` returns a small ``uint64``
    array; ``set_state`` puts it back, so a resumed run draws exactly the
    numbers an uninterrupted run would have drawn.
    """

    def __init__(self, backend, seed):
        self.backend = backend
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self._gen = np.random.Generator(np.random.PCG64(ss))
        self._normal_key = int(self._gen.integers(0, 2**64, dtype=np.uint64))
        self._normal_count = 0

    # -- draws ------------------------------------------------------------
    def _draw(self, kind: str, shape, dtype):
        dt = self.backend.host_dtype if dtype is None else host_dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise ValueError(f"{kind}: dtype must be float32 or float64, got {dt}")
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        n = int(np.prod(shape, dtype=np.int64))
        be = self.backend
        if be.name == "cupy":
            from .kernels import cuda  # noqa: PLC0415 - only with a GPU

            fn = cuda.standard_normal if kind == "normal" else cuda.standard_uniform
            z = fn(self._normal_key, n, dt, start=self._normal_count)
        else:
            fn = standard_normal if kind == "normal" else standard_uniform
            z = fn(self._normal_key, n, dt, start=self._normal_count, use_numba=use_numba())
            if be.name != "numpy":
                z = be.asarray(z, dtype=dt)  # the draws' one explicit transfer to the device
        self._normal_count += n
        return be.xp.reshape(z, shape)

    def normal(self, shape, scale=1.0, dtype=None):
        """Gaussian draws N(0, scale²) of ``shape`` in ``dtype`` (default: the backend's float type).

        Successive calls continue one stream: drawing n then m numbers gives
        the same numbers as drawing n + m at once.
        """
        z = self._draw("normal", shape, dtype)
        if scale != 1.0:
            z *= float(scale)
        return z

    def uniform(self, shape, dtype=None):
        """Uniform draws on [0, 1) of ``shape`` in ``dtype`` (default: the backend's float type)."""
        return self._draw("uniform", shape, dtype)

    def integers(self, low, high=None, size=None):
        return self._gen.integers(low, high, size=size)

    def permutation(self, n: int):
        return self._gen.permutation(n)

    # -- exact save / restore ---------------------------------------------
    def state(self) -> np.ndarray:
        """The full state as a ``uint64`` array of length 8: PCG64 (6), the draws' key and count."""
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
