"""Fused hot loops: Numba kernels on the CPU and numba-cuda kernels on a GPU, each with an array-API twin.

Callers use the dispatching functions here; they pick the Numba kernel for
NumPy arrays when Numba is available and ``NPSIM_KERNELS`` is not ``numpy``,
the CUDA kernel (:mod:`.cuda`) for CuPy arrays, and the array-API twin
(:mod:`.reference`) otherwise: the reference the kernels are tested against,
and the path every other array library takes (array-api-strict in the test
suite). CPU kernels are compiled with ``cache=True``, so only the first run on
a machine pays the compile time; the cache lives in the user's cache folder
(:func:`keep_cache_outside_the_package`).
"""

from __future__ import annotations

import os
import sys

import numpy as np


def keep_cache_outside_the_package() -> str:
    """Point Numba's kernel cache at ``$XDG_CACHE_HOME/npsim/numba`` (default ``~/.cache``), unless
    ``NUMBA_CACHE_DIR`` is set; returns the folder in use.

    Numba's default writes the cache beside the source, inside an installed package, where the files
    outlive ``pip uninstall``: the folder they keep alive then shadows a later install of npsim (an
    editable install after a wheel) as an empty namespace package. Runs before any kernel is compiled.
    """
    if not os.environ.get("NUMBA_CACHE_DIR"):
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        os.environ["NUMBA_CACHE_DIR"] = os.path.join(base, "npsim", "numba")
        numba = sys.modules.get("numba")
        if numba is not None:  # imported before npsim: it has read its configuration already
            numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
    return os.environ["NUMBA_CACHE_DIR"]


keep_cache_outside_the_package()

from . import reference  # noqa: E402

__all__ = ["adam_step", "decorrelation_finish", "drive_activate", "leaky_backprop", "membrane_run", "scale_rows",
           "use_numba", "keep_cache_outside_the_package"]

_numba = None


def use_numba() -> bool:
    """Whether the Numba kernels are in use (set NPSIM_KERNELS=numpy to force the NumPy twins)."""
    global _numba
    if os.environ.get("NPSIM_KERNELS", "numba").lower() == "numpy":
        return False
    if _numba is None:
        try:
            from . import cpu  # noqa: F401

            _numba = cpu
        except ImportError:  # pragma: no cover - numba is a dependency
            _numba = False
    return bool(_numba)


def _host_f32_or_f64(*arrays) -> bool:
    return all(type(a) is np.ndarray and a.dtype in (np.float32, np.float64) and a.flags.c_contiguous
               for a in arrays)


def _on_gpu(a) -> bool:
    """Whether ``a`` is a CuPy array (the CUDA kernels apply)."""
    return type(a).__module__.split(".")[0] == "cupy"


def _cuda():
    from . import cuda  # noqa: PLC0415 - only with a GPU

    return cuda


def adam_step(p, g, m, v, *, b1: float, b2: float, step_size: float, eps: float) -> float:
    """In place: m ← b1 m + (1−b1) g; v ← b2 v + (1−b2) g²; p ← p − step_size·m/(√v + eps).

    All arrays of one shape and dtype. Returns the squared norm of the change of p (a float, or a 0-d
    array on the arrays' device, so that a GPU step needs no transfer per parameter).
    """
    if use_numba() and _host_f32_or_f64(p, g, m, v) and p.dtype == g.dtype == m.dtype == v.dtype:
        t = p.dtype.type
        return float(_numba.adam_step(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                                      t(b1), t(1 - b1), t(b2), t(1 - b2), t(step_size), t(eps)))
    if _on_gpu(p):
        return _cuda().adam_step(p, g, m, v, b1=b1, b2=b2, step_size=step_size, eps=eps)
    return reference.adam_step(p, g, m, v, b1=b1, b2=b2, step_size=step_size, eps=eps)


def drive_activate(d, bias, perturb, repeats: int, slope: float | None, clean_rows: int = 0):
    """Bias, tiling, perturbation and node model in one pass.

    d (B, n) : W x (+ b already, when ``bias`` is None). With ``bias`` (n,),
        d += bias in place.
    perturb : (repeats·B − clean_rows, n) added to the rows of the tiled d from
        row ``clean_rows`` on (the first ``clean_rows`` rows stay unperturbed:
        a clean copy stacked above the perturbed ones), or None.
    slope : leak of a (leaky) ReLU, 0 for ReLU; None for the linear node model.

    Returns (a, x): a = tile(d, repeats) with perturb added (d itself when
    there is nothing to add or tile) and x = leaky_relu(a; slope) (a itself
    when linear).
    """
    rows = d.shape[0] * repeats
    if perturb is not None and perturb.shape[0] != rows - clean_rows:
        raise ValueError(f"drive_activate: perturb has {perturb.shape[0]} rows, expected {rows - clean_rows}")
    arrays = (d,) + ((bias,) if bias is not None else ()) + ((perturb,) if perturb is not None else ())
    if use_numba() and _host_f32_or_f64(*arrays) and len({a.dtype for a in arrays}) == 1:
        a_is_d = perturb is None and repeats == 1
        a = d if a_is_d else np.empty((rows, d.shape[1]), d.dtype)
        x = a if slope is None else np.empty_like(a)
        t = d.dtype.type
        _numba.drive_activate(d, d[0] if bias is None else bias, a if perturb is None else perturb, a, x,
                              t(0 if slope is None else slope), bias is not None, perturb is not None,
                              clean_rows, a_is_d, slope is not None)
        return a, x
    if _on_gpu(d):
        return _cuda().drive_activate(d, bias, perturb, repeats, slope, clean_rows)
    return reference.drive_activate(d, bias, perturb, repeats, slope, clean_rows)


def leaky_backprop(dout, a, slope: float):
    """dout where a > 0, else dout · slope: BP through a (leaky) ReLU, a new array of dout's shape.

    One branch-free pass on the CPU; NumPy's ``where`` over a random mask costs several times more.
    """
    if use_numba() and _host_f32_or_f64(dout, a) and dout.dtype == a.dtype and dout.shape == a.shape:
        out = np.empty_like(dout)
        _numba.leaky_backprop(dout.reshape(-1), a.reshape(-1), out.reshape(-1), dout.dtype.type(slope))
        return out
    return reference.leaky_backprop(dout, a, slope)


def scale_rows(a, w):
    """In place a[r, :] *= w[r] for a (N, n), w (N,); returns a."""
    if use_numba() and _host_f32_or_f64(a, w) and a.dtype == w.dtype:
        _numba.scale_rows(a, w)
        return a
    if _on_gpu(a):
        return _cuda().scale_rows(a, w)
    return reference.scale_rows(a, w)


def decorrelation_finish(CR, R, v, B: int, lr: float):
    """The new R from CR = Xᵀ X R, in place into CR: CR ← R − lr (CR / B − v[:, None] R). Returns CR."""
    if use_numba() and _host_f32_or_f64(CR, R, v) and CR.dtype == R.dtype == v.dtype:
        t = CR.dtype.type
        _numba.decorrelation_finish(CR, R, v, t(B), t(lr))
        return CR
    if _on_gpu(CR):
        return _cuda().decorrelation_finish(CR, R, v, B, lr)
    return reference.decorrelation_finish(CR, R, v, B, lr)


def membrane_run(I, noise, v, refr, count, sum_i, sum_v, spikes, vrec, *, alpha: float, beta: float,
                 threshold: float, subtract: bool, n_ref: int, spiking: bool, record: bool,
                 parallel: bool = False) -> None:
    """Advance leaky membranes through ``spikes.shape[0]`` time steps, in place.

    Per step t, row r and unit j (rows = samples, units = neurons)::

        i = I[t] (+ noise[t])                  input current, voltage units
        if refractory: count the refractory step down, v held
        else: v = alpha·v + beta·i;  spiking and v >= threshold: spike, v reset
              (to 0, or v − threshold if ``subtract``), refractory for n_ref steps

    I (T_I, rows, n), T_I = 1 for a constant current or the chunk's steps;
    noise (steps, rows, n) or None; v, count, sum_i, sum_v (rows, n) floats and
    refr (rows, n) int32 carry the state across calls; spikes (steps, rows, n)
    receives 0/1; vrec (steps, rows, n) receives v after each step when
    ``record``. count, sum_i (current) and sum_v (potential) accumulate.
    ``spiking=False`` is a non-spiking leaky integrator.
    """
    use_noise = noise is not None
    arrays = (I, v, count, sum_i, sum_v, spikes) + ((noise,) if use_noise else ()) + ((vrec,) if record else ())
    if use_numba() and _host_f32_or_f64(*arrays) and len({a.dtype for a in arrays}) == 1:
        t = v.dtype.type
        dummy = np.zeros((1, 1, 1), v.dtype)
        fn = _numba.membrane_run_parallel if parallel else _numba.membrane_run
        fn(I, noise if use_noise else dummy, v, refr, count, sum_i, sum_v, spikes, vrec if record else dummy,
           t(alpha), t(beta), t(threshold), bool(subtract), np.int32(n_ref), bool(spiking), use_noise, bool(record))
        return
    if _on_gpu(v):
        _cuda().membrane_run(I, noise, v, refr, count, sum_i, sum_v, spikes, vrec, alpha=alpha, beta=beta,
                             threshold=threshold, subtract=subtract, n_ref=n_ref, spiking=spiking, record=record)
        return
    reference.membrane_run(I, noise, v, refr, count, sum_i, sum_v, spikes, vrec, float(alpha), float(beta),
                           float(threshold), subtract, n_ref, spiking, use_noise, record)
