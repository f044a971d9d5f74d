"""Array helpers for any array library that follows the Python array API (NumPy, CuPy, array-api-strict).

The engine writes its array code against the array API standard
(https://data-apis.org/array-api/), reached through array-api-compat, so the
same code runs on NumPy, on CuPy and on array-api-strict (the CPU stand-in for
a device, which refuses every NumPy-only call and every implicit host/device
copy). :func:`namespace` gives the namespace of an array; the other helpers
fill the few gaps of the standard the engine needs. Nothing here imports CuPy.
"""

from __future__ import annotations

import sys

import array_api_compat
import array_api_compat.numpy as _compat_numpy
import numpy as np

__all__ = ["namespace", "array_module", "device_of", "tile_rows", "take_rows", "to_host", "is_numpy",
           "cumulative_max", "host_dtype", "add_into", "contiguous", "host_floats"]


def namespace(*arrays):
    """The array API namespace of ``arrays`` (array-api-compat's wrapper for NumPy and CuPy)."""
    if all(type(a) is np.ndarray for a in arrays):  # the common case, without array-api-compat's inspection
        return _compat_numpy
    return array_api_compat.array_namespace(*arrays)


#: the name the engine has long used for :func:`namespace`
array_module = namespace


def host_dtype(dtype) -> np.dtype:
    """The NumPy dtype of any namespace's dtype (``np.float32``, ``"float64"``, ``array_api_strict.int64``)."""
    try:
        return np.dtype(dtype)
    except TypeError:
        return np.dtype(str(dtype).rsplit(".", 1)[-1])


def is_numpy(a) -> bool:
    """Whether ``a`` is a host NumPy array (where npsim's Numba kernels apply)."""
    return type(a) is np.ndarray


def device_of(a):
    """The device ``a`` lives on (array-api-compat's ``device``)."""
    return array_api_compat.device(a)


def tile_rows(a, k: int):
    """``k`` copies of ``a`` stacked along the first axis (``a`` itself when k == 1)."""
    if k == 1:
        return a
    return namespace(a).tile(a, (k,) + (1,) * (a.ndim - 1))


def take_rows(x, idx):
    """Rows ``idx`` (host integers) of ``x``, on ``x``'s device (one transfer of the indices)."""
    if type(x) is np.ndarray:
        return x[idx]
    xp = namespace(x)
    return xp.take(x, xp.asarray(np.asarray(idx, dtype=np.int64), device=device_of(x)), axis=0)


def to_host(a) -> np.ndarray:
    """A host NumPy copy of ``a`` (no copy for a NumPy array): the one explicit device -> host transfer."""
    if isinstance(a, np.ndarray):
        return a
    if isinstance(a, (int, float, bool, np.generic)):
        return np.asarray(a)
    module = type(a).__module__.split(".")[0]
    if module == "cupy":
        return a.get()
    if module == "array_api_strict":
        import array_api_strict  # noqa: PLC0415 - only when such arrays exist

        return np.from_dlpack(a.to_device(array_api_strict.Device("CPU_DEVICE")))
    return np.asarray(array_api_compat.to_device(a, "cpu"))


def host_floats(values) -> list[float]:
    """Python floats of scalars that may live on a device (floats, 0-d arrays), with one transfer for all."""
    values = list(values)
    on_device = [i for i, v in enumerate(values) if not isinstance(v, (int, float, np.generic, np.ndarray))]
    out = [float(v) if i not in on_device else None for i, v in enumerate(values)]
    if on_device:
        xp = namespace(values[on_device[0]])
        stacked = to_host(xp.stack([xp.astype(values[i], xp.float64) for i in on_device]))
        for i, v in zip(on_device, stacked.tolist()):
            out[i] = v
    return out


def contiguous(a):
    """``a`` in C order (NumPy: a copy if it is a strided view, which makes later slicing and products
    faster); other libraries lay out their arrays themselves."""
    return np.ascontiguousarray(a) if type(a) is np.ndarray else a


def add_into(out, a, b) -> None:
    """``out[...] = a + b`` reshaped to ``out``'s shape (NumPy: without a temporary)."""
    if type(out) is np.ndarray:
        np.add(a, b, out=out.reshape(np.broadcast_shapes(a.shape, b.shape)))
    else:
        out[...] = namespace(out).reshape(a + b, out.shape)


def cumulative_max(a, axis: int = 0):
    """Running maximum along ``axis`` (not in the array API): NumPy's and CuPy's ufunc, else a loop of maxima."""
    if type(a) is np.ndarray:
        return np.maximum.accumulate(a, axis=axis)
    library = sys.modules.get(type(a).__module__.split(".")[0])
    native = getattr(getattr(library, "maximum", None), "accumulate", None) if library is not None else None
    if native is not None:  # CuPy
        return native(a, axis=axis)
    xp = namespace(a)
    if axis != 0:
        raise ValueError("cumulative_max: only axis 0 without a native accumulate")
    out = xp.asarray(a, copy=True)
    for t in range(1, a.shape[0]):
        out[t, ...] = xp.maximum(out[t - 1, ...], out[t, ...])
    return out
