"""CUDA kernels (numba.cuda) for npsim's hot loops, each the twin of a NumPy reference.

Every launcher here has the signature and the in-place semantics of its
reference (:mod:`.reference`, :func:`.normal.standard_normal`,
:func:`.uniform.standard_uniform`; the dispatching docstrings in
:mod:`npsim.backend.kernels` define them) and computes the same IEEE
operations in the same order, so results are bitwise those of the twin,
except the sum Adam returns (see :func:`adam_step`).

Arrays
    Arguments are anything numba.cuda accepts: arrays exporting
    ``__cuda_array_interface__`` (CuPy arrays, numba device arrays), used in
    place with no copy, or NumPy arrays, which numba copies to the device and
    back around each launch (correct, slow: for tests). Under Numba's CUDA
    simulator (``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported) NumPy
    arrays are the device arrays and the kernels run as Python threads.
    Outputs a launcher allocates follow the library of an input array: NumPy
    for NumPy, ``cuda.device_array`` for numba device arrays, the array-API
    namespace's ``empty`` on the input's device otherwise (CuPy). The random
    streams, which have no input array, allocate CuPy arrays when CuPy is
    importable and numba device arrays otherwise (NumPy under the simulator),
    unless ``out`` is given. Kernels run on numba's default stream; numba
    synchronises on the stream an input array's interface names. NumPy
    arguments must not alias one another (numba copies each to the device and
    back on its own, and a stale copy would overwrite the other's result);
    parameters a launch does not use get small arrays of their own.

Launch configuration
    ``TPB = 256`` threads per block; ``min(ceil(N / 256), MAX_BLOCKS)``
    blocks for N work items (draws, elements of the output, (row, unit)
    pairs), every kernel a grid-stride loop, so any N runs with a bounded
    grid. ``MAX_BLOCKS = 1024`` keeps 8 blocks of 256 threads resident on
    each of ~128 SMs (an H100/H200 has 132) and makes Adam's reduction order
    depend on N only, not on the GPU. Tests lower it to exercise the stride.

Floating point
    numba.cuda compiles with ``fastmath=False`` (no flush-to-zero, IEEE
    division and square root), but NVVM's default ``-fma=1`` still contracts
    ``a*b + c`` into one fused multiply-add (numba passes no ``-fma`` option
    unless fastmath is on; verified in the PTX: ``x*y + 2.0`` compiles to
    ``fma.rn.f64``), and ptxas may fuse a plain ``mul.f32``/``mul.f64`` with
    a following add. Every float product in these kernels therefore goes
    through libdevice's ``__nv_fmul_rn``/``__nv_dmul_rn`` (PTX ``mul.rn``: an
    explicit rounding mode, which neither NVVM nor ptxas fuses), those that
    feed no add included, so the PTX holds no plain float multiply to fuse.
    The tests compile every kernel to PTX for sm_90 when libNVVM is present
    and check that it equals the -fma=0 build (up to the .rn that build puts
    on adds) and has no plain multiply. What remains outside IEEE's
    guarantees is the Gaussian slow path's ``exp`` and ``log`` (libdevice,
    ≤ 1 ulp, which contract inside themselves, against the C library's on the
    CPU):
    see :func:`standard_normal`.

Importing this module imports no numba.cuda: the kernels are built on first
use, so importing npsim never fails on a machine without CUDA.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings

import numpy as np

from . import normal as _normal
from . import uniform as _uniform
from .normal import (
    GOLD,
    LOW8,
    LOW32,
    M1,
    M2,
    ONE,
    SIGN,
    U9,
    U11,
    U12,
    U27,
    U30,
    U31,
    U32,
    R,
)

__all__ = [
    "MAX_BLOCKS",
    "TPB",
    "adam_step",
    "available",
    "decorrelation_finish",
    "drive_activate",
    "membrane_run",
    "scale_rows",
    "simulated",
    "standard_normal",
    "standard_uniform",
]

#: threads per block of every kernel
TPB = 256
#: most blocks per launch (grid-stride loops cover the rest); see the module docstring
MAX_BLOCKS = 1024

#: numba.cuda, imported on first use. A module global on purpose: the simulator swaps the globals of a
#: kernel's module that are numba.cuda for its per-launch fake module.
cuda = None

_lock = threading.RLock()
_mix = None  # the SplitMix64 device function
_typed: dict = {}  # np.dtype -> the kernels specialised on a float dtype's IEEE multiply
_tables: dict = {}  # (device id, dtype) -> ziggurat tables on that device

U40 = np.uint64(40)
ZERO64 = np.uint64(0)
S52, S53 = 2.0 ** -52, 2.0 ** -53
S24 = np.float32(2.0 ** -24)


def simulated() -> bool:
    """Whether numba runs CUDA code in its simulator (NUMBA_ENABLE_CUDASIM=1 when numba was imported)."""
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


def _cuda():
    global cuda
    if cuda is None:
        from numba import cuda as module

        cuda = module
    return cuda


def available() -> bool:
    """Whether the kernels can run here: a CUDA GPU numba can use, or the simulator."""
    try:
        return bool(_cuda().is_available())
    except Exception:  # noqa: BLE001 - a missing or broken driver means "not available"
        return False


@contextlib.contextmanager
def _quiet():
    """Under the simulator, hide NumPy's warnings about uint64 scalar arithmetic wrapping (intended)."""
    if not simulated():
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"overflow encountered in scalar", RuntimeWarning)
        yield


def _grid(items: int) -> tuple[int, int]:
    return max(1, min(-(-items // TPB), MAX_BLOCKS)), TPB


def _multipliers():
    """(f32, f64) IEEE multiplies that no compiler turns into an FMA: libdevice's *_rn, plain * in the simulator."""
    if simulated():
        def plain(a, b):
            return a * b

        return plain, plain
    from numba.cuda import libdevice

    return libdevice.fmul_rn, libdevice.dmul_rn


# --- kernels ---------------------------------------------------------------------------------------------


def _build_mix():
    _cuda()  # sets the global ``cuda`` the kernels name (a local would escape the simulator's swap)

    @cuda.jit(device=True)
    def mix64(z):
        z = (z ^ (z >> U30)) * M1
        z = (z ^ (z >> U27)) * M2
        return z ^ (z >> U31)

    return mix64


def _build_typed(dt: np.dtype, mix64):
    """The kernels for arrays of float dtype dt; every float product through ``mul`` (dt) or ``dmul`` (float64)."""
    _cuda()
    fmul, dmul = _multipliers()
    f64 = dt == np.float64
    mul = dmul if f64 else fmul
    zero, one = dt.type(0), dt.type(1)

    @cuda.jit(device=True)
    def slow(aux, i, word, k, w, w64, f):
        """normal._slow_py / _slow_nb: draw i (int64) whose first word (uint64) the fast path rejected, float64."""
        seed = mix64(aux + np.uint64(i + 1) * GOLD)
        c = ZERO64
        while True:
            l = word & LOW8
            u = word >> U9
            if u < k[l]:  # a retry landed inside a rectangle: the fast path's value
                z = np.float64(mul(np.float32(u), w[l]))
                break
            if l == ZERO64:  # tail beyond R
                while True:
                    c += ONE
                    u1 = dmul(np.float64(mix64(seed + c * GOLD) >> U12) + 0.5, S52)
                    c += ONE
                    u2 = dmul(np.float64(mix64(seed + c * GOLD) >> U12) + 0.5, S52)
                    t = -math.log(u1) / R
                    y = -math.log(u2)
                    if y + y > dmul(t, t):
                        break
                z = R + t
                break
            z = dmul(np.float64(u), w64[l])  # wedge
            c += ONE
            y = dmul(np.float64(mix64(seed + c * GOLD) >> U11), S53)
            fl = f[l]
            if fl + dmul(y, f[l + ONE] - fl) < math.exp(dmul(dmul(-0.5, z), z)):
                break
            c += ONE
            word = mix64(seed + c * GOLD) & LOW32
        return -z if word & SIGN else z

    @cuda.jit
    def normal_kernel(base, aux, start, n, out, k, w, w64, f):
        """out[t] ← Gaussian draw start + t: one thread per draw (grid-stride)."""
        for t in range(cuda.grid(1), n, cuda.gridsize(1)):
            i = start + t
            h = mix64(base + np.uint64((i >> 1) + 1) * GOLD)
            word = (h >> U32) if i & 1 else (h & LOW32)
            l = word & LOW8
            u = word >> U9
            if u < k[l]:
                z = mul(np.float32(u), w[l])  # exact u; one IEEE multiply in the output dtype
                out[t] = -z if word & SIGN else z
            else:
                out[t] = slow(aux, i, word, k, w, w64, f)  # float64, rounded once to the output dtype

    @cuda.jit
    def uniform_kernel(base, start, n, out):
        """out[t] ← uniform draw start + t (exact conversions and scalings: see uniform.py)."""
        for t in range(cuda.grid(1), n, cuda.gridsize(1)):
            h = mix64(base + np.uint64(start + t + 1) * GOLD)
            if f64:
                out[t] = dmul(np.float64(h >> U11), S53)
            else:
                out[t] = fmul(np.float32(np.uint32(h >> U40)), S24)

    @cuda.jit
    def adam_kernel(p, g, m, v, b1, c1, b2, c2, step, eps, partial):
        """reference.adam_step per element; partial[block] ← the block's Σ u² in float64 (fixed order)."""
        acc_sh = cuda.shared.array(TPB, np.float64)
        acc = 0.0
        for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
            gi = g[i]
            mi = mul(m[i], b1) + mul(gi, c1)
            vi = mul(v[i], b2) + mul(mul(gi, gi), c2)
            m[i] = mi
            v[i] = vi
            ui = mul(mi, step) / (math.sqrt(vi) + eps)
            p[i] = p[i] - ui
            u64 = np.float64(ui)
            acc += dmul(u64, u64)
        tid = cuda.threadIdx.x
        acc_sh[tid] = acc
        cuda.syncthreads()
        s = TPB // 2
        while s > 0:
            if tid < s:
                acc_sh[tid] = acc_sh[tid] + acc_sh[tid + s]
            cuda.syncthreads()
            s //= 2
        if tid == 0:
            partial[cuda.blockIdx.x] = acc_sh[0]

    @cuda.jit
    def drive_kernel(d, bias, perturb, a, x, slope, add_bias, use_perturb, clean_rows, repeats, write_a,
                     nonlinear):
        """One thread per element (b, j) of d: d += bias; its ``repeats`` copies into a (+ perturb), x."""
        B = d.shape[0]
        n = d.shape[1]
        for e in range(cuda.grid(1), B * n, cuda.gridsize(1)):
            b = e // n
            j = e - b * n
            db = d[b, j]
            if add_bias:
                db = db + bias[j]
                d[b, j] = db
            for q in range(repeats):
                r = q * B + b
                ar = db
                if use_perturb and r >= clean_rows:
                    ar = db + perturb[r - clean_rows, j]
                if write_a:
                    a[r, j] = ar
                if nonlinear:
                    x[r, j] = ar if ar > zero else mul(ar, slope)

    @cuda.jit
    def scale_kernel(a, w):
        n = a.shape[1]
        for e in range(cuda.grid(1), a.shape[0] * n, cuda.gridsize(1)):
            r = e // n
            j = e - r * n
            a[r, j] = mul(a[r, j], w[r])

    @cuda.jit
    def decorrelation_kernel(CR, R, v, B, lr):
        """CR ← R − lr·(CR/B − v[:, None]·R), the twin's operations in its order."""
        m = CR.shape[1]
        for e in range(cuda.grid(1), CR.shape[0] * m, cuda.gridsize(1)):
            i = e // m
            j = e - i * m
            rij = R[i, j]
            CR[i, j] = rij - mul(CR[i, j] / B - mul(v[i], rij), lr)

    @cuda.jit
    def membrane_kernel(I, noise, v, refr, count, sum_i, sum_v, spikes, vrec, alpha, beta, threshold, subtract,
                        n_ref, spiking, use_noise, record):
        """One thread per (row, unit), through the chunk's steps in order; state in registers."""
        steps = spikes.shape[0]
        rows = v.shape[0]
        n = v.shape[1]
        const = I.shape[0] == 1
        for e in range(cuda.grid(1), rows * n, cuda.gridsize(1)):
            r = e // n
            j = e - r * n
            vv = v[r, j]
            rf = refr[r, j]
            cnt = count[r, j]
            si = sum_i[r, j]
            sv = sum_v[r, j]
            for t in range(steps):
                cur = I[0 if const else t, r, j]
                if use_noise:
                    cur = cur + noise[t, r, j]
                si = si + cur
                free = rf <= 0
                if not free:
                    rf -= 1
                vn = mul(alpha, vv) + mul(beta, cur)
                fired = free and spiking and vn >= threshold
                cnt = cnt + (one if fired else zero)
                if fired:
                    vn = vn - threshold if subtract else mul(vn, zero)
                    rf = n_ref
                if free:
                    vv = vn
                sv = sv + vv
                spikes[t, r, j] = one if fired else zero
                if record:
                    vrec[t, r, j] = vv
            v[r, j] = vv
            refr[r, j] = rf
            count[r, j] = cnt
            sum_i[r, j] = si
            sum_v[r, j] = sv

    return {"normal": normal_kernel, "uniform": uniform_kernel, "adam": adam_kernel, "drive": drive_kernel,
            "scale": scale_kernel, "decorrelation": decorrelation_kernel, "membrane": membrane_kernel}


def _kernels_for(dt) -> dict:
    """The kernels for float dtype dt, built (not compiled: numba compiles on first launch) on first use."""
    global _mix
    dt = np.dtype(dt)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"cuda kernels: arrays must be float32 or float64, got {dt}")
    with _lock:
        if dt not in _typed:
            if _mix is None:
                _mix = _build_mix()
            _typed[dt] = _build_typed(dt, _mix)
        return _typed[dt]


# --- arrays -----------------------------------------------------------------------------------------------


def _empty(like, shape, dtype):
    """An uninitialised array of ``like``'s library (and device)."""
    if isinstance(like, np.ndarray):
        return np.empty(shape, dtype)
    if type(like).__module__.split(".")[0] == "numba":
        return _cuda().device_array(shape, dtype)
    import array_api_compat

    xp = array_api_compat.array_namespace(like)
    return xp.empty(shape, dtype=xp.float32 if np.dtype(dtype) == np.float32 else xp.float64,
                    device=array_api_compat.device(like))


def _empty_stream(n: int, dt: np.dtype):
    if simulated():
        return np.empty(n, dt)
    try:
        import cupy
    except ImportError:
        return _cuda().device_array(n, dt)
    return cupy.empty(n, dt)


def _unused(like, ndim: int, dt):
    """A (1,)*ndim array of like's library for a parameter the kernel does not touch.

    Never an alias of another argument: numba copies each NumPy argument to the
    device and back on its own (so does the simulator), and a second, stale
    copy of an array written through its first would overwrite it on the way back.
    """
    return _empty(like, (1,) * ndim, dt)


def _interface(a):
    """(shape, dtype, C-contiguous, writeable) of a NumPy or __cuda_array_interface__ array."""
    if isinstance(a, np.ndarray):
        return a.shape, a.dtype, a.flags.c_contiguous, a.flags.writeable
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is None:
        if simulated() and hasattr(a, "copy_to_host"):  # the simulator's device arrays
            return tuple(a.shape), np.dtype(a.dtype), True, True
        return None
    dt = np.dtype(cai["typestr"])
    shape = tuple(cai["shape"])
    strides = cai.get("strides")
    contiguous = strides is None or tuple(strides) == tuple(
        int(np.prod(shape[i + 1:], dtype=np.int64)) * dt.itemsize for i in range(len(shape)))
    return shape, dt, contiguous, not cai["data"][1]


def _dtype(a) -> np.dtype:
    info = _interface(a)
    return info[1] if info is not None else np.dtype(a.dtype)


def _same_dtype(name: str, *arrays) -> np.dtype:
    dts = {_dtype(a) for a in arrays}
    if len(dts) != 1:
        raise ValueError(f"{name}: arrays must share one dtype, got {', '.join(sorted(map(str, dts)))}")
    return dts.pop()


def _stream_args(name: str, key, n, dtype, start, out):
    """A stream's checked arguments (key, n, dt, start) and its output: ``out`` once checked, else a new device array."""
    key, n, dt, start = _uniform.check_args(name, key, n, dtype, start)
    if out is None:
        return key, n, dt, start, _empty_stream(n, dt)
    info = _interface(out)
    if info is None or info[0] != (n,) or info[1] != dt or not info[2] or not info[3]:
        desc = f"{type(out).__name__} {getattr(out, 'dtype', '?')} {getattr(out, 'shape', '?')}"
        raise ValueError(f"{name}: out must be a writeable contiguous {dt} array of shape ({n},), got {desc}")
    return key, n, dt, start, out


def _device_tables(dt: np.dtype):
    """The ziggurat tables (k, w in dt, w64, f) on the current device, sent once per device and dtype."""
    cuda = _cuda()
    dev = getattr(cuda.current_context().device, "id", 0)
    key = (dev, dt)
    with _lock:
        if key not in _tables:
            w = _normal.W32 if dt == np.float32 else _normal.W64
            _tables[key] = tuple(cuda.to_device(np.ascontiguousarray(a)) for a in (_normal.K, w, _normal.W64,
                                                                                   _normal.F))
        return _tables[key]


# --- public launchers -------------------------------------------------------------------------------------


def standard_normal(key: int, n: int, dtype=np.float32, *, start: int = 0, out=None):
    """Draws start..start+n-1 of N(0, 1) on the GPU: :func:`.normal.standard_normal`'s numbers.

    One thread per draw: the word (low or high half of hash (start+t) // 2),
    the fast path's integer compare and single multiply, and for the ≈1.5 %
    of rejected draws the slow path in float64 in the same thread, with the
    same auxiliary words and the same operations in the same order. All of it
    is IEEE arithmetic (so bit for bit the CPU's) except the slow path's
    ``exp`` (wedge test) and ``log`` (tail), which on a GPU are libdevice's
    (≤ 1 ulp) rather than the C library's the CPU twins call. Under the
    simulator (Python's math module: the C library) every bit matches. On a
    GPU a wedge or tail acceptance can differ only where the two exp/log
    results straddle the test value (of order 1e-16 per slow draw), and a tail
    value (≈1 draw in 3900) can differ in its last float64 bit where the two
    logs differ (its float32 rounding almost never).

    out : optional (n,) contiguous array of ``dtype`` (device array, or NumPy); returned.
    """
    key, n, dt, start, out = _stream_args("standard_normal", key, n, dtype, start, out)
    if n == 0:
        return out
    kern = _kernels_for(dt)["normal"]
    k, w, w64, f = _device_tables(dt)
    base, aux = _normal._mix_int(key), _normal._mix_int(key ^ _normal._AUX)
    with _quiet():
        kern[_grid(n)](np.uint64(base), np.uint64(aux), np.int64(start), np.int64(n), out, k, w, w64, f)
    return out


def standard_uniform(key: int, n: int, dtype=np.float32, *, start: int = 0, out=None):
    """Draws start..start+n-1 of U[0, 1) on the GPU: :func:`.uniform.standard_uniform`'s numbers, bit for bit.

    out : optional (n,) contiguous array of ``dtype`` (device array, or NumPy); returned.
    """
    key, n, dt, start, out = _stream_args("standard_uniform", key, n, dtype, start, out)
    if n == 0:
        return out
    kern = _kernels_for(dt)["uniform"]
    with _quiet():
        kern[_grid(n)](np.uint64(_uniform.base_of(key)), np.int64(start), np.int64(n), out)
    return out


def adam_step(p, g, m, v, *, b1: float, b2: float, step_size: float, eps: float):
    """In place, as reference.adam_step: m ← b1 m + (1−b1) g; v ← b2 v + (1−b2) g²; p ← p − step_size·m/(√v + eps).

    p, g, m, v contiguous, of one shape and float dtype. The arrays come out
    bitwise equal to the twin's. Returns the squared norm of the change of p
    (a float for host arrays; a float64 0-d array on the device for CuPy
    arrays, so a step syncs once, not once per parameter): u² formed and summed in float64 (per thread in index order,
    then a fixed tree per block, then the ≤ MAX_BLOCKS block sums on the
    host), so for float32 it is more accurate than the twin's float32 sum and
    agrees with it to rtol 1e-5 (the twin's pairwise float32 error is
    ≲ log2(N)·2**-24); for float64 to rtol 1e-12. Deterministic for a given N
    (no atomics).
    """
    dt = _same_dtype("adam_step", p, g, m, v)
    for name, a in zip("pgmv", (p, g, m, v)):
        info = _interface(a)
        if info is not None and (info[0] != tuple(p.shape) or not info[2]):
            raise ValueError(f"adam_step: {name} must be a contiguous array of p's shape {tuple(p.shape)}, "
                             f"got shape {info[0]}{'' if info[2] else ', not contiguous'}")
    t = dt.type
    size = int(np.prod(p.shape))
    if size == 0:
        return 0.0
    flat = [a.reshape((size,)) for a in (p, g, m, v)]
    blocks, threads = _grid(size)
    partial = _empty(p, (blocks,), np.float64)
    with _quiet():
        _kernels_for(dt)["adam"][blocks, threads](*flat, t(b1), t(1 - b1), t(b2), t(1 - b2), t(step_size), t(eps),
                                                  partial)
    if isinstance(partial, np.ndarray):
        return float(np.sum(partial))
    if hasattr(partial, "get"):  # CuPy: summed on the device, read with the step's other scalars
        return partial.sum()
    return float(np.sum(_to_host(partial)))


def _to_host(a) -> np.ndarray:
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    if hasattr(a, "get"):  # CuPy
        return a.get()
    return np.asarray(a)


def drive_activate(d, bias, perturb, repeats: int, slope: float | None, clean_rows: int = 0):
    """Bias, tiling, perturbation and node model in one launch (see kernels.drive_activate); returns (a, x).

    d (B, n) += bias in place; a = tile(d, repeats) with perturb added from row
    ``clean_rows`` on (d itself when there is nothing to add or tile);
    x = leaky_relu(a; slope), a itself when ``slope`` is None. One thread per
    element of d, writing its ``repeats`` copies (no race on the biased d).
    New arrays are of d's library. Bitwise the twin's: additions and one
    multiply, none fusable.
    """
    B, n = d.shape
    rows = B * repeats
    if perturb is not None and perturb.shape != (rows - clean_rows, n):
        raise ValueError(f"drive_activate: perturb has shape {tuple(perturb.shape)}, expected "
                         f"{(rows - clean_rows, n)}")
    arrays = (d,) + ((bias,) if bias is not None else ()) + ((perturb,) if perturb is not None else ())
    dt = _same_dtype("drive_activate", *arrays)
    a_is_d = perturb is None and repeats == 1
    a = d if a_is_d else _empty(d, (rows, n), dt)
    x = a if slope is None else _empty(d, (rows, n), dt)
    if B * n:
        kern = _kernels_for(dt)["drive"]
        # unused parameters get small arrays of their own, never an alias of d or a (see _unused)
        with _quiet():
            kern[_grid(B * n)](d, _unused(d, 1, dt) if bias is None else bias,
                               _unused(d, 2, dt) if perturb is None else perturb,
                               _unused(d, 2, dt) if a_is_d else a, _unused(d, 2, dt) if slope is None else x,
                               dt.type(0 if slope is None else slope), bias is not None, perturb is not None,
                               np.int64(clean_rows), np.int64(repeats), not a_is_d, slope is not None)
    return a, x


def scale_rows(a, w):
    """In place a[r, :] *= w[r] for a (N, n), w (N,); returns a."""
    dt = _same_dtype("scale_rows", a, w)
    if a.shape[0] * a.shape[1]:
        with _quiet():
            _kernels_for(dt)["scale"][_grid(a.shape[0] * a.shape[1])](a, w)
    return a


def decorrelation_finish(CR, R, v, B: int, lr: float):
    """The new R from CR = Xᵀ X R, in place into CR: CR ← R − lr (CR / B − v[:, None] R). Returns CR.

    The twin's operations in its order (CR/B, − v·R, · lr, R −), both products
    through IEEE multiplies that are never fused, so the result is bitwise the
    twin's (which returns a new array; this writes CR, as the Numba kernel does).
    """
    dt = _same_dtype("decorrelation_finish", CR, R, v)
    size = CR.shape[0] * CR.shape[1]
    if size:
        with _quiet():
            _kernels_for(dt)["decorrelation"][_grid(size)](CR, R, v, dt.type(B), dt.type(lr))
    return CR


def membrane_run(I, noise, v, refr, count, sum_i, sum_v, spikes, vrec, *, alpha: float, beta: float,
                 threshold: float, subtract: bool, n_ref: int, spiking: bool, record: bool) -> None:
    """Advance leaky membranes through ``spikes.shape[0]`` steps in place (see kernels.membrane_run).

    One thread per (row, unit), through the steps in order, with the twin's
    arithmetic: i = I (+ noise); sum_i += i; refractory units count down;
    v' = alpha·v + beta·i (two IEEE products, never fused, then the add);
    a spike when v' >= threshold resets v' to v' − threshold (``subtract``) or
    v'·0; count, sum_v, spikes and vrec (when ``record``) as the twin. The
    state lives in registers during the chunk and is written back at its end.
    """
    use_noise = noise is not None
    arrays = (I, v, count, sum_i, sum_v, spikes) + ((noise,) if use_noise else ()) + ((vrec,) if record else ())
    dt = _same_dtype("membrane_run", *arrays)
    rows, n = v.shape
    if rows * n == 0 or spikes.shape[0] == 0:
        return
    t = dt.type
    with _quiet():
        _kernels_for(dt)["membrane"][_grid(rows * n)](
            I, noise if use_noise else _unused(v, 3, dt), v, refr, count, sum_i, sum_v, spikes,
            vrec if record else _unused(v, 3, dt),
            t(alpha), t(beta), t(threshold), bool(subtract), np.int32(n_ref), bool(spiking), use_noise, bool(record))
