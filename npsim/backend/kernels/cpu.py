"""Numba CPU kernels (no fastmath: results match the NumPy twins).

``error_model="numpy"`` gives IEEE division (no zero-division check), which
lets the loops vectorise; each loop touches few arrays so that LLVM's runtime
alias checks stay within its limits (Adam works block by block for that).
They are serial on purpose: they are memory-bound, and parallel Numba regions
interleaved with multi-threaded BLAS calls made each wait for the other's
spinning threads (a measured 2x slowdown of the whole step on 2 cores).
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, error_model="numpy")
def adam_step(p, g, m, v, b1, c1, b2, c2, step, eps):
    n = p.shape[0]
    block = 1024  # short loops over a cache-resident block, each over few arrays: they vectorise
    u = np.empty(block, p.dtype)
    lanes = 8  # independent partial sums of u^2, so no sum is reordered
    acc = np.zeros(lanes, np.float64)
    for s in range(0, n, block):
        k = min(n - s, block)
        ps, gs, ms, vs = p[s:s + k], g[s:s + k], m[s:s + k], v[s:s + k]
        for i in range(k):
            gi = gs[i]
            mi = ms[i] * b1 + gi * c1
            vi = vs[i] * b2 + (gi * gi) * c2
            ms[i] = mi
            vs[i] = vi
            u[i] = mi * step / (np.sqrt(vi) + eps)
        for i in range(k):
            ps[i] -= u[i]
        body = k - k % lanes
        for i in range(0, body, lanes):
            for j in range(lanes):
                acc[j] += u[i + j] * u[i + j]
        for i in range(body, k):
            acc[0] += u[i] * u[i]
    return acc.sum()


@nb.njit(cache=True, error_model="numpy")
def drive_activate(d, bias, perturb, a, x, slope, add_bias, use_perturb, clean_rows, a_is_d, nonlinear):
    """d (B, n) += bias (if add_bias); a[r] = d[r mod B] (+ perturb[r - clean_rows] for r >= clean_rows);
    x = leaky_relu(a; slope) (if nonlinear). With a_is_d, a is d itself (B rows, nothing added)."""
    B, n = d.shape
    for r in range(a.shape[0]):
        dr = d[r % B]
        ar = a[r]
        if add_bias and r < B:  # rows are visited in order: later copies read the biased d
            for j in range(n):
                dr[j] += bias[j]
        if use_perturb and r >= clean_rows:
            pr = perturb[r - clean_rows]
            for j in range(n):
                ar[j] = dr[j] + pr[j]
        elif not a_is_d:
            for j in range(n):
                ar[j] = dr[j]
        if nonlinear:
            xr = x[r]
            for j in range(n):
                xr[j] = ar[j] if ar[j] > 0 else ar[j] * slope


@nb.njit(cache=True, error_model="numpy")
def leaky_backprop(dout, a, out, slope):
    """out = dout where a > 0, else dout · slope (flat, contiguous arrays)."""
    for i in range(a.shape[0]):
        d = dout[i]
        out[i] = d if a[i] > 0 else d * slope


@nb.njit(cache=True, error_model="numpy")
def scale_rows(a, w):
    """In place a[r, :] *= w[r]."""
    for r in range(a.shape[0]):
        wr = w[r]
        for j in range(a.shape[1]):
            a[r, j] = a[r, j] * wr


@nb.njit(cache=True, error_model="numpy")
def decorrelation_finish(CR, R, v, B, lr):
    """In place CR <- R - lr (CR / B - v[:, None] R): the new R from CR = X^T X R."""
    n, m = CR.shape
    for i in range(n):
        vi = v[i]
        for j in range(m):
            CR[i, j] = R[i, j] - lr * (CR[i, j] / B - vi * R[i, j])


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
                    vj = vj - threshold if subtract else vj * (threshold - threshold)  # 0, signed as the twin's v·0
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
