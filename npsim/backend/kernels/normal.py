"""Counter-based standard normal draws: a Numba ziggurat kernel and its NumPy twin.

``standard_normal(key, n, dtype)`` returns n draws of N(0, 1). Draw i is a
function of (key, i) only, so the numbers do not depend on n, on how the work
is split, or on which implementation made them: the Numba kernel and the NumPy
twin (``use_numba=False``) give bitwise identical arrays.

Bits
    mix is SplitMix64's finalizer (a bijection of 64-bit integers), G =
    0x9E3779B97F4A7C15 and arithmetic is mod 2**64. Hash j (j = 0, 1, ...) is
    ``mix(mix(key) + (j + 1)·G)``; mixing the key first keeps the streams of
    related keys (consecutive, or differing by multiples of G) unrelated.
    Draw 2j uses its low 32-bit word, draw 2j+1 its high word. A word is read
    as::

        bits 0-7   layer index l of the ziggurat (256 layers)
        bit  8     sign
        bits 9-31  23-bit uniform integer u

Distribution
    Marsaglia & Tsang's ziggurat (J. Stat. Softw. 5(8), 2000) with N = 256
    layers of equal area v. Fast path (98.5 % of draws): accept when
    u < k[l] and return ±u·w[l], w[l] = x[l]/2**23 — an integer compare and
    one IEEE multiply in the output dtype. Otherwise the slow path runs in
    float64: the base strip's tail (l = 0, Marsaglia's exponential method) or
    the wedge test y < exp(−x²/2) (l > 0); a rejection starts a new ziggurat
    attempt with a new word. Slow-path bits come from an auxiliary stream,
    word c = 1, 2, ... of draw i being ``mix(seed_i + c·G)`` with
    ``seed_i = mix(mix(key ^ 0x5851F42D4C957F2D) + (i + 1)·G)``: fresh bits,
    still a function of (key, i, c) alone. Slow-path values are rounded
    once to the output dtype. Both twins use the same IEEE operations in the
    same order (no fastmath, no FMA contraction) and the C library's exp/log,
    hence the same bits.

float32 and float64
    Both dtypes use the same words and make the same decisions; float64
    forms u·w[l] (and the slow path) without the final rounding to float32.
    So the float64 draws are the float32 draws to within float32 rounding
    (one noise realisation for both precisions), with the ziggurat's 23-bit
    resolution per layer (≈31 random bits per draw), not 53 bits.

Speed
    The kernel is serial. SplitMix64 and the candidate/flag loop vectorise;
    the 512-entry table lookups run in a separate scalar copy loop (gathers are
    slow on this CPU and LLVM does not emit them); rejected draws are compacted
    and settled branch-free where possible (see the Numba section).

Tables
    Built at import in float64 from f(x) = exp(−x²/2), r = x[1] =
    3.6541528853610088, v = 4.92867323399e-3: x[0] = v/f(r) (width of the base
    strip, its tail included), x[l+1] = f⁻¹(f(x[l]) + v/x[l]) for
    l = 1..254, x[256] = 0; k[l] = ⌈2**23·x[l+1]/x[l]⌉, w[l] = x[l]·2**−23
    (rounded to float32 for float32 output), f[l] = f(x[l]).
"""

from __future__ import annotations

import math
import operator
import sys

import numba as nb
import numpy as np

__all__ = ["standard_normal"]

# --- tables -------------------------------------------------------------------------------------------

N_LAYERS = 256
R = 3.6541528853610088  # right edge of the base rectangle = start of the tail
V = 4.92867323399e-3  # area of each layer (unnormalised density exp(-x²/2))
_U_BITS = 23
_U_SCALE = 2.0 ** -_U_BITS


def _tables():
    """Ziggurat tables: x (257,) f64 layer edges, k (256,) u32, w32/w64 (256,), f (257,) f64 = exp(-x²/2)."""
    x = np.empty(N_LAYERS + 1)
    x[0] = V / math.exp(-0.5 * R * R)
    x[1] = R
    for l in range(1, N_LAYERS - 1):
        x[l + 1] = math.sqrt(-2.0 * math.log(V / x[l] + math.exp(-0.5 * x[l] * x[l])))
    x[N_LAYERS] = 0.0
    k = np.ceil(x[1:] / x[:-1] * 2.0 ** _U_BITS).astype(np.uint32)
    w64 = x[:-1] * _U_SCALE
    f = np.exp(-0.5 * x * x)
    return x, k, w64.astype(np.float32), w64, f


X, K, W32, W64, F = _tables()


def _entries(w: np.ndarray) -> np.ndarray:
    """(1024,) in w's dtype: (±w[l], k[l]) at 2j, 2j+1 for j = sign·256 + l (k < 2**23 is exact)."""
    e = np.empty((2, N_LAYERS, 2), w.dtype)
    e[0, :, 0], e[1, :, 0] = w, -w
    e[:, :, 1] = K
    return e.reshape(-1)


ENTRY32, ENTRY64 = _entries(W32), _entries(W64)

# --- bits ---------------------------------------------------------------------------------------------

_MASK = (1 << 64) - 1
_GOLD = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_AUX = 0x5851F42D4C957F2D  # mix(key ^ _AUX) is the base of the slow-path streams
_LITTLE_ENDIAN = sys.byteorder == "little"  # the kernel reads a hash's words through a uint32 view
_CHUNK = 2048  # draws per Numba chunk (multiple of 8): scratch stays in L1

GOLD, M1, M2 = (np.uint64(c) for c in (_GOLD, _M1, _M2))
U30, U27, U31, U32, U12, U11, U9 = (np.uint64(s) for s in (30, 27, 31, 32, 12, 11, 9))
LOW32, LOW8, SIGN, ONE = np.uint64(0xFFFFFFFF), np.uint64(0xFF), np.uint64(0x100), np.uint64(1)
M9, W9 = np.uint32(0x1FF), np.uint32(9)  # on 32-bit words: sign+layer index, u shift
BYTE_INDEX, U56 = np.uint64(0x0001020304050607), np.uint64(56)  # (2**(8b) · BYTE_INDEX) >> 56 == b


def _mix_int(z: int) -> int:
    """SplitMix64 finalizer on a Python int in [0, 2**64)."""
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


def _mix_array(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on a uint64 array, in place (array ops wrap mod 2**64)."""
    z ^= z >> U30
    z *= M1
    z ^= z >> U27
    z *= M2
    z ^= z >> U31
    return z


@nb.njit(cache=True)
def _mix64(z):
    z = (z ^ (z >> U30)) * M1
    z = (z ^ (z >> U27)) * M2
    return z ^ (z >> U31)


# --- Numba kernel -------------------------------------------------------------------------------------
#
# Per chunk of _CHUNK draws (scratch stays in L1):
#   1. _hash_block     SIMD: the chunk's 64-bit hashes (its 32-bit words, little-endian view)
#   2. _candidates     scalar loop: copy each word's (±w, k) table entry (the CPU's gathers are slow and
#                      LLVM will not emit them); SIMD loop: candidate ±u·w and the reject flag
#   3. _rejected       branch-free compaction of the ≈1.5 % rejected positions
#   4. _first_retry    branch-free over those: first wedge test, else the retry word's rectangle
#   5. _slow_nb        the ≈0.04 % left (tails, second rejections), from scratch
# Steps 4-5 give exactly _slow_nb's result for every rejected draw.


@nb.njit(cache=True)
def _hash_block(ctr, buf):
    """buf[t] ← mix(ctr + t·GOLD), buf (m,) uint64."""
    for t in range(buf.shape[0]):
        buf[t] = _mix64(ctr + np.uint64(t) * GOLD)


@nb.njit(cache=True)
def _candidates(words, table, table_u, tb, tb_u, o, rej):
    """o[t] ← ±u·w[l] and rej[t] ← (u >= k[l]) for the words (m,) uint32; o (m,), rej (≥ m,) uint8.

    table (1024,) in o's dtype holds (±w[l], k[l]) at 2j, 2j+1 for j = word & 0x1FF (sign, layer);
    table_u and tb_u are uint64 views of table and of the scratch tb (2·_CHUNK,).
    """
    m = words.shape[0]
    if table_u.shape[0] == 512:  # float32: one 8-byte entry
        for t in range(m):
            tb_u[t] = table_u[words[t] & M9]
    else:  # float64: two 8-byte words
        for t in range(m):
            j = np.intp(words[t] & M9)
            tb_u[2 * t] = table_u[2 * j]
            tb_u[2 * t + 1] = table_u[2 * j + 1]
    for t in range(m):
        uf = np.float32(words[t] >> W9)  # exact: u < 2**23
        o[t] = uf * tb[2 * t]
        rej[t] = uf >= tb[2 * t + 1]


@nb.njit(cache=True)
def _rejected(rej, groups, idx):
    """Positions of the nonzero bytes of rej (len multiple of 8) into idx, ascending; returns their count."""
    r8 = rej.view(np.uint64)
    ng = 0
    for g in range(r8.shape[0]):
        groups[ng] = g
        ng += r8[g] != 0
    c = 0
    for q in range(ng):
        g = groups[q]
        r = r8[g]
        while r:  # bytes are 0 or 1: the lowest set bit is 2**(8·b)
            idx[c] = 8 * g + np.intp(((r & (~r + ONE)) * BYTE_INDEX) >> U56)
            c += 1
            r &= r - ONE
    return c


@nb.njit(cache=True)
def _first_retry(aux, start, idx, nr, words, o, k, w, w64, f, left):
    """Rejected draws o[idx[:nr]] (chunk offset start): the wedge test, else the next word's rectangle.

    Branch-free; same numbers as _slow_nb where it decides. Positions it cannot settle (tail, or
    both rejected) go to left; returns their count.
    """
    nl = 0
    for q in range(nr):
        t = idx[q]
        word = np.uint64(words[t])
        l = word & LOW8
        z = np.float64(word >> U9) * w64[l]
        seed = _mix64(aux + np.uint64(start + t + 1) * GOLD)
        y = np.float64(_mix64(seed + GOLD) >> U11) * 2.0 ** -53
        wedge = (l != 0) & (f[l] + y * (f[l + 1] - f[l]) < math.exp(-0.5 * z * z))
        z = -z if word & SIGN else z
        word1 = _mix64(seed + GOLD + GOLD) & LOW32
        l1 = word1 & LOW8
        u1 = word1 >> U9
        z1 = np.float64(np.float32(u1) * w[l1])
        z1 = -z1 if word1 & SIGN else z1
        o[t] = z if wedge else z1
        left[nl] = t
        nl += not (wedge | ((l != 0) & (u1 < k[l1])))
    return nl


@nb.njit(cache=True)
def _slow_nb(aux, i, word, k, w, w64, f):
    """Draw i, whose first word (uint64 < 2**32) the fast path rejected, as float64 (twin of _slow_py).

    aux = mix(key ^ AUX); k (256,) uint32; w (256,) in the output dtype; w64 (256,), f (257,) float64.
    """
    seed = _mix64(aux + np.uint64(i + 1) * GOLD)
    c = np.uint64(0)
    while True:
        l = word & LOW8
        u = word >> U9
        if u < k[l]:  # a retry landed inside a rectangle: the fast path's value
            z = np.float64(np.float32(u) * w[l])
            break
        if l == 0:  # tail beyond R (Marsaglia 1964)
            while True:
                c += ONE
                u1 = (np.float64(_mix64(seed + c * GOLD) >> U12) + 0.5) * 2.0 ** -52
                c += ONE
                u2 = (np.float64(_mix64(seed + c * GOLD) >> U12) + 0.5) * 2.0 ** -52
                t = -math.log(u1) / R
                y = -math.log(u2)
                if y + y > t * t:
                    break
            z = R + t
            break
        z = np.float64(u) * w64[l]  # wedge
        c += ONE
        y = np.float64(_mix64(seed + c * GOLD) >> U11) * 2.0 ** -53
        if f[l] + y * (f[l + 1] - f[l]) < math.exp(-0.5 * z * z):
            break
        c += ONE
        word = _mix64(seed + c * GOLD) & LOW32
    return -z if word & SIGN else z


@nb.njit(cache=True)
def _fill_nb(base, aux, first, out, table, table_u, k, w, w64, f):
    """out (n,) float32/float64 ← draws first..first+n-1 (first even); base = mix(key), aux = mix(key ^ AUX) (uint64).

    table, table_u: see _candidates; k, w (out's dtype), w64, f: see _slow_nb.
    """
    n = out.shape[0]
    buf = np.empty(_CHUNK // 2, np.uint64)
    words = buf.view(np.uint32)
    tb = np.empty(2 * _CHUNK, out.dtype)
    tb_u = tb.view(np.uint64)
    rej = np.zeros(_CHUNK, np.uint8)
    groups = np.empty(_CHUNK // 8, np.intp)
    idx = np.empty(_CHUNK, np.intp)
    left = np.empty(_CHUNK, np.intp)
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        o = out[start:start + m]
        g = first + start  # index of draw o[0]: even
        _hash_block(base + np.uint64(g // 2 + 1) * GOLD, buf[:(m + 1) // 2])
        _candidates(words[:m], table, table_u, tb, tb_u, o, rej)
        rej[m:] = 0
        nr = _rejected(rej, groups, idx)
        nl = _first_retry(aux, g, idx, nr, words, o, k, w, w64, f, left)
        for q in range(nl):
            t = left[q]
            o[t] = _slow_nb(aux, g + t, np.uint64(words[t]), k, w, w64, f)


# --- NumPy twin ---------------------------------------------------------------------------------------


def _slow_py(aux: int, i: int, word: int, w: np.ndarray) -> float:
    """Python twin of _slow_nb (same operations, same order, IEEE float64)."""
    seed = _mix_int((aux + (i + 1) * _GOLD) & _MASK)
    c = 0
    while True:
        l = word & 0xFF
        u = word >> 9
        if u < K[l]:
            z = float(np.float32(u) * w[l])
            break
        if l == 0:
            while True:
                c += 1
                u1 = (float(_mix_int((seed + c * _GOLD) & _MASK) >> 12) + 0.5) * 2.0 ** -52
                c += 1
                u2 = (float(_mix_int((seed + c * _GOLD) & _MASK) >> 12) + 0.5) * 2.0 ** -52
                t = -math.log(u1) / R
                y = -math.log(u2)
                if y + y > t * t:
                    break
            z = R + t
            break
        z = float(u) * float(W64[l])
        c += 1
        y = float(_mix_int((seed + c * _GOLD) & _MASK) >> 11) * 2.0 ** -53
        fl, fl1 = float(F[l]), float(F[l + 1])
        if fl + y * (fl1 - fl) < math.exp(-0.5 * z * z):
            break
        c += 1
        word = _mix_int((seed + c * _GOLD) & _MASK) & 0xFFFFFFFF
    return -z if word & 0x100 else z


def _words_np(base: int, n: int, first: int = 0) -> np.ndarray:
    """The 32-bit words of draws first..first+n-1 (first even), (n,) uint32; base = mix(key)."""
    z = np.arange(first // 2 + 1, first // 2 + (n + 1) // 2 + 1, dtype=np.uint64)
    z *= GOLD
    z += np.uint64(base)
    _mix_array(z)
    words = np.empty((z.size, 2), np.uint32)
    words[:, 0] = z & LOW32
    words[:, 1] = z >> U32
    return words.reshape(-1)[:n]


def _fill_np(base: int, aux: int, first: int, out: np.ndarray) -> None:
    """NumPy twin of _fill_nb: vectorised fast path, Python loop over the rejected draws."""
    w = W32 if out.dtype == np.float32 else W64
    words = _words_np(base, out.size, first)
    l = words & np.uint32(0xFF)
    u = words >> np.uint32(9)
    c = u.astype(np.float32) * w[l]
    np.negative(c, out=c, where=(words & np.uint32(0x100)) != 0)
    out[...] = c
    for i in np.flatnonzero(u >= K[l]).tolist():
        out[i] = _slow_py(aux, first + i, int(words[i]), w)


# --- public API ---------------------------------------------------------------------------------------


def check_args(name: str, key, n, dtype, start, out=None):
    """Validated (key: int, n: int, dtype: np.dtype, start: int) for the counter-based draws of ``name``
    (this module's and :mod:`.uniform`'s); ``out``, when given, must be a writeable contiguous (n,) array of
    that dtype. ValueError naming the argument.
    """
    try:
        if isinstance(n, bool):
            raise TypeError
        n = operator.index(n)
    except TypeError:
        raise ValueError(f"{name}: n must be an integer, got {n!r}") from None
    if n < 0:
        raise ValueError(f"{name}: n must be a non-negative integer, got {n!r}")
    try:
        if dtype is None:
            raise TypeError
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"{name}: dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise ValueError(f"{name}: dtype must be float32 or float64, got {dt}")
    try:
        if isinstance(key, bool):
            raise TypeError
        key = operator.index(key)
    except TypeError:
        raise ValueError(f"{name}: key must be an integer in [0, 2**64), got {key!r}") from None
    if not 0 <= key < 2 ** 64:
        raise ValueError(f"{name}: key must be an integer in [0, 2**64), got {key!r}")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start < 2 ** 62:
        raise ValueError(f"{name}: start must be an integer in [0, 2**62), got {start!r}")
    if out is not None and not (isinstance(out, np.ndarray) and out.dtype == dt and out.shape == (n,)
                                and out.flags.c_contiguous and out.flags.writeable):
        desc = f"{type(out).__name__} {getattr(out, 'dtype', '?')} {getattr(out, 'shape', '?')}"
        raise ValueError(f"{name}: out must be a writeable contiguous {dt} array of shape ({n},), "
                         f"got {desc}")
    return key, n, dt, int(start)


def standard_normal(key: int, n: int, dtype=np.float32, *, start: int = 0, use_numba: bool = True,
                    out=None) -> np.ndarray:
    """Draws start..start+n-1 of N(0, 1): (n,) C-contiguous array of ``dtype`` (float32 or float64).

    Draw i depends only on (key, i): the same key gives the same numbers, the
    first m draws do not depend on n, consecutive calls with ``start``
    advanced by n continue one stream, and ``use_numba=False`` (the NumPy
    twin) gives the same bits as the Numba kernel. float64 draws are the
    float32 draws to within float32 rounding (see the module docstring).

    key : integer in [0, 2**64).
    start : index of the first draw, an integer >= 0.
    out : optional (n,) contiguous array of ``dtype`` to write into; returned.
    """
    key, n, dt, start = check_args("standard_normal", key, n, dtype, start, out)
    if out is None:
        out = np.empty(n, dt)
    if n == 0:
        return out
    if start % 2:  # the kernels start at even draws: the high word of hash start // 2 on its own
        out[0] = standard_normal(key, 2, dt, start=start - 1, use_numba=use_numba)[1]
        if n > 1:
            standard_normal(key, n - 1, dt, start=start + 1, use_numba=use_numba, out=out[1:])
        return out
    base, aux = _mix_int(key), _mix_int(key ^ _AUX)
    if use_numba and _LITTLE_ENDIAN:
        table, w = (ENTRY32, W32) if dt == np.float32 else (ENTRY64, W64)
        _fill_nb(np.uint64(base), np.uint64(aux), np.int64(start), out, table, table.view(np.uint64), K, w, W64, F)
    else:
        _fill_np(base, aux, start, out)
    return out
