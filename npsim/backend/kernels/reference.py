"""Plain-NumPy twins of the Numba kernels: the reference they are tested against."""

from __future__ import annotations

from ..arrays import array_module as _xp


def adam_step(p, g, m, v, *, b1, b2, step_size, eps) -> float:
    t = p.dtype.type
    m *= t(b1)
    m += g * t(1 - b1)
    v *= t(b2)
    v += (g * g) * t(1 - b2)
    u = m * t(step_size) / (v**0.5 + t(eps))
    p -= u
    return float((u * u).sum())


def drive_activate(d, bias, perturb, repeats, slope, clean_rows=0):
    xp = _xp(d)
    if bias is not None:
        d += bias
    a = xp.tile(d, (repeats, 1)) if repeats > 1 else d
    if perturb is not None:
        if clean_rows:
            a = a.copy() if a is d else a
            a[clean_rows:] = a[clean_rows:] + perturb
        else:
            a = a + perturb
    if slope is None:
        return a, a
    return a, xp.where(a > 0, a, a * a.dtype.type(slope))


def scale_rows(a, w):
    a *= w[:, None]
    return a


def decorrelation_finish(CR, R, v, B, lr):
    t = CR.dtype.type
    CR /= t(B)
    CR -= v[:, None] * R
    CR *= t(lr)
    return R - CR


def membrane_run(I, noise, v, refr, count, sum_i, sum_v, spikes, vrec, alpha, beta, threshold,
                 subtract, n_ref, spiking, use_noise, record):
    """The membrane time loop step by step, vectorised over rows and units (see kernels.membrane_run)."""
    xp = _xp(v)
    zero = v.dtype.type(0)
    for t in range(spikes.shape[0]):
        cur = I[0 if I.shape[0] == 1 else t]
        if use_noise:
            cur = cur + noise[t]
        sum_i += cur
        free = refr <= 0
        refr -= (~free).astype(refr.dtype)
        vn = alpha * v + beta * cur
        fired = free & (vn >= threshold) if spiking else xp.zeros(v.shape, dtype=bool)
        count += fired.astype(count.dtype)
        vn = xp.where(fired, vn - threshold if subtract else vn * zero, vn)
        v[...] = xp.where(free, vn, v)
        refr[...] = xp.where(fired, n_ref, refr)
        sum_v += v
        spikes[t] = fired
        if record:
            vrec[t] = v
