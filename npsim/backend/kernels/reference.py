"""Array-API twins of the Numba kernels: the reference the kernels are tested against, and the code every
array library without a kernel of its own runs (array-api-strict; CuPy where no CUDA kernel applies)."""

from __future__ import annotations

from ..arrays import namespace as _xp
from ..arrays import tile_rows


def adam_step(p, g, m, v, *, b1, b2, step_size, eps):
    """In place (see kernels.adam_step); returns the squared norm of the change as a 0-d array."""
    xp = _xp(p)
    m *= b1
    m += g * (1 - b1)
    v *= b2
    v += (g * g) * (1 - b2)
    u = m * step_size / (xp.sqrt(v) + eps)
    p -= u
    return xp.sum(u * u)


def drive_activate(d, bias, perturb, repeats, slope, clean_rows=0):
    xp = _xp(d)
    if bias is not None:
        d += bias
    a = tile_rows(d, repeats)
    if perturb is not None:
        if clean_rows:
            a = xp.asarray(a, copy=True) if a is d else a
            a[clean_rows:, ...] = a[clean_rows:, ...] + perturb
        else:
            a = a + perturb
    if slope is None:
        return a, a
    return a, xp.where(a > 0, a, a * slope)


def leaky_backprop(dout, a, slope):
    return _xp(a).where(a > 0, dout, dout * slope)


def scale_rows(a, w):
    a *= w[:, None]
    return a


def decorrelation_finish(CR, R, v, B, lr):
    CR /= B
    CR -= v[:, None] * R
    CR *= lr
    return R - CR


def membrane_run(I, noise, v, refr, count, sum_i, sum_v, spikes, vrec, alpha, beta, threshold,
                 subtract, n_ref, spiking, use_noise, record):
    """The membrane time loop step by step, vectorised over rows and units (see kernels.membrane_run)."""
    xp = _xp(v)
    for t in range(spikes.shape[0]):
        cur = I[0 if I.shape[0] == 1 else t, ...]
        if use_noise:
            cur = cur + noise[t, ...]
        sum_i += cur
        free = refr <= 0
        refr -= xp.astype(~free, refr.dtype)
        vn = alpha * v + beta * cur
        fired = free & (vn >= threshold) if spiking else xp.zeros(v.shape, dtype=xp.bool, device=v.device)
        count += xp.astype(fired, count.dtype)
        vn = xp.where(fired, vn - threshold if subtract else vn * 0.0, vn)
        v[...] = xp.where(free, vn, v)
        refr[...] = xp.where(fired, n_ref, refr)
        sum_v += v
        spikes[t, ...] = xp.astype(fired, spikes.dtype)
        if record:
            vrec[t, ...] = v
