"""Numba CPU kernels (no fastmath: results match the NumPy twins).

They are serial on purpose: they are memory-bound, and parallel Numba regions
interleaved with multi-threaded BLAS calls made each wait for the other's
spinning threads (a measured 2x slowdown of the whole step on 2 cores).
"""

from __future__ import annotations

import math

import numba as nb



@nb.njit(cache=True)
def adam_step(p, g, m, v, b1, c1, b2, c2, step, eps):
    n = p.shape[0]
    chunk = 4096
    nchunks = (n + chunk - 1) // chunk
    total = 0.0
    for c in range(nchunks):
        s = 0.0
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            gi = g[i]
            mi = m[i] * b1 + gi * c1
            vi = v[i] * b2 + (gi * gi) * c2
            m[i] = mi
            v[i] = vi
            u = mi * step / (math.sqrt(vi) + eps)
            p[i] -= u
            s += u * u
        total += s
    return total


@nb.njit(cache=True)
def perturb_activate(drive, perturb, a, x, slope, nonlinear):
    rows, n = perturb.shape
    B = drive.shape[0]
    for r in range(rows):
        b = r % B
        for j in range(n):
            v = drive[b, j] + perturb[r, j]
            a[r, j] = v
            if nonlinear:
                x[r, j] = v if v > 0 else v * slope


@nb.njit(cache=True, inline="always")
def _membrane_row(r, I, noise, v, refr, count, sum_i, sum_v, spikes, vrec, alpha, beta, threshold,
                  subtract, n_ref, spiking, use_noise, record):
    steps = spikes.shape[0]
    n = v.shape[1]
    const = I.shape[0] == 1
    for t in range(steps):
        ti = 0 if const else t
        for j in range(n):
            cur = I[ti, r, j]
            if use_noise:
                cur = cur + noise[t, r, j]
            sum_i[r, j] += cur
            s = 0.0
            if refr[r, j] > 0:
                refr[r, j] -= 1
            else:
                vj = alpha * v[r, j] + beta * cur
                if spiking and vj >= threshold:
                    s = 1.0
                    count[r, j] += 1.0
                    vj = vj - threshold if subtract else threshold - threshold
                    refr[r, j] = n_ref
                v[r, j] = vj
            sum_v[r, j] += v[r, j]
            spikes[t, r, j] = s
            if record:
                vrec[t, r, j] = v[r, j]


@nb.njit(cache=True)
def membrane_run(I, noise, v, refr, count, sum_i, sum_v, spikes, vrec, alpha, beta, threshold,
                 subtract, n_ref, spiking, use_noise, record):
    for r in range(v.shape[0]):
        _membrane_row(r, I, noise, v, refr, count, sum_i, sum_v, spikes, vrec, alpha, beta, threshold,
                      subtract, n_ref, spiking, use_noise, record)


@nb.njit(cache=True, parallel=True)
def membrane_run_parallel(I, noise, v, refr, count, sum_i, sum_v, spikes, vrec, alpha, beta, threshold,
                          subtract, n_ref, spiking, use_noise, record):
    for r in nb.prange(v.shape[0]):
        _membrane_row(r, I, noise, v, refr, count, sum_i, sum_v, spikes, vrec, alpha, beta, threshold,
                      subtract, n_ref, spiking, use_noise, record)
