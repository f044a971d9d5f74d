"""Plain-NumPy twins of the Numba kernels: the reference they are tested against."""

from __future__ import annotations

from ..backend import array_module as _xp


def adam_step(p, g, m, v, *, b1, b2, step_size, eps) -> float:
    t = p.dtype.type
    m *= t(b1)
    m += g * t(1 - b1)
    v *= t(b2)
    v += (g * g) * t(1 - b2)
    u = m * t(step_size) / (v**0.5 + t(eps))
    p -= u
    return float((u * u).sum())


def perturb_activate(drive, perturb, repeats, slope):
    xp = _xp(drive)
    a = xp.tile(drive, (repeats, 1)) if repeats > 1 else drive
    if perturb is not None:
        a = a + perturb
    if slope is None:
        return a, a
    return a, xp.where(a > 0, a, a * a.dtype.type(slope))
