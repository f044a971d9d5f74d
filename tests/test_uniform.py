"""Counter-based uniform draws: Numba kernel == NumPy twin, the definition, stream splitting, distribution.

The statistical checks run on several keys, each with a threshold set from
the test's null distribution (p-values > 1e-4, correlations within 5 standard
errors), not tuned to the keys: a correct generator fails one of them with
probability ~1e-4 per check.
"""

import numpy as np
import pytest
from scipy import stats

from npsim.backend.kernels import normal, uniform
from npsim.backend.kernels.normal import standard_normal
from npsim.backend.kernels.uniform import standard_uniform

KEYS = [0, 1, 12345, 2**63, 2**64 - 1]
STAT_KEYS = [3, 2024, 987654321, 2**64 - 2]
N_STAT = 1_000_000
DTYPES = [np.float32, np.float64]


def bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def definition(key: int, i: int, dtype) -> float:
    """Draw i from the module docstring, with Python integers."""
    h = normal._mix_int((normal._mix_int(key ^ 0xD1B54A32D192ED03) + (i + 1) * 0x9E3779B97F4A7C15) % 2**64)
    return (h >> 40) * 2.0 ** -24 if dtype == np.float32 else (h >> 11) * 2.0 ** -53


# --- the two twins and the definition -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("n, start", [(0, 0), (1, 0), (2, 1), (3, 7), (1000, 0), (1001, 12345), (777, 2**62 - 777),
                                      (uniform._NP_CHUNK + 5, 3), (100_003, 2**40 + 1)])
def test_twins_identical(dtype, key, n, start):
    a = standard_uniform(key, n, dtype, start=start)
    b = standard_uniform(key, n, dtype, start=start, use_numba=False)
    assert a.dtype == b.dtype == dtype and a.shape == b.shape == (n,) and a.flags.c_contiguous
    np.testing.assert_array_equal(bits(a), bits(b))


@pytest.mark.parametrize("use_numba", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_the_definition(use_numba, dtype):
    for key in KEYS:
        for start in (0, 1, 2**61 + 3):
            a = standard_uniform(key, 5, dtype, start=start, use_numba=use_numba)
            assert a.tolist() == [definition(key, start + i, dtype) for i in range(5)]


# --- reproducibility and stream splitting ----------------------------------------------------------------


@pytest.mark.parametrize("use_numba", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_streams_split_and_prefixes(use_numba, dtype):
    key = 424242
    whole = standard_uniform(key, 10_000, dtype, use_numba=use_numba)
    np.testing.assert_array_equal(bits(standard_uniform(key, 10_000, dtype, use_numba=use_numba)), bits(whole))
    for m in (0, 1, 2, 3, 999, 5000):  # the first m draws do not depend on n
        np.testing.assert_array_equal(bits(standard_uniform(key, m, dtype, use_numba=use_numba)), bits(whole[:m]))
    pieces, s = [], 0
    for size in (1, 2, 3, 5, 8, 13, 997, 4096, 4875):  # consecutive calls continue one stream (odd starts too)
        pieces.append(standard_uniform(key, size, dtype, start=s, use_numba=use_numba))
        s += size
    assert s == 10_000
    np.testing.assert_array_equal(bits(np.concatenate(pieces)), bits(whole))


def test_float32_is_float64_truncated_to_24_bits():
    a32 = standard_uniform(99, 100_000, np.float32)
    a64 = standard_uniform(99, 100_000, np.float64)
    np.testing.assert_array_equal(a32.astype(np.float64), np.floor(a64 * 2.0 ** 24) * 2.0 ** -24)


def test_out_argument():
    out = np.full(1000, np.nan, np.float64)
    got = standard_uniform(5, 1000, np.float64, start=11, out=out)
    assert got is out
    np.testing.assert_array_equal(out, standard_uniform(5, 1000, np.float64, start=11))
    out32 = np.full(1000, np.nan, np.float32)
    assert standard_uniform(5, 1000, np.float32, use_numba=False, out=out32) is out32
    np.testing.assert_array_equal(out32, standard_uniform(5, 1000, np.float32))


# --- values and range ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, resolution", [(np.float32, 2.0 ** -24), (np.float64, 2.0 ** -53)])
def test_range_and_grid(dtype, resolution):
    for key in STAT_KEYS:
        a = standard_uniform(key, N_STAT, dtype)
        assert a.min() >= 0.0 and a.max() < 1.0 and not np.any(a == 1.0)
        k = a.astype(np.float64) / resolution  # an integer multiple of the resolution
        assert np.array_equal(k, np.floor(k))
    # the largest possible values are below 1: the exact conversions never round up
    top = np.float32((2**24 - 1) * 2.0 ** -24) if dtype == np.float32 else (2**53 - 1) * 2.0 ** -53
    assert top < 1.0


# --- distribution ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("key", STAT_KEYS)
def test_ks_and_chi_square(dtype, key):
    a = standard_uniform(key, N_STAT, dtype).astype(np.float64)
    assert stats.kstest(a, "uniform").pvalue > 1e-4
    counts = np.bincount((a * 1000).astype(np.int64), minlength=1000)
    assert counts.size == 1000
    assert stats.chisquare(counts).pvalue > 1e-4
    se_mean = np.sqrt(1 / 12 / N_STAT)
    assert abs(a.mean() - 0.5) < 5 * se_mean
    assert abs(a.var() - 1 / 12) < 5 * np.sqrt(1 / 180 / N_STAT)  # Var of (u - 1/2)² is 1/180


@pytest.mark.parametrize("key", STAT_KEYS)
def test_bits_are_balanced(key):
    """Each of the top 24 bits of the float32 draws is set with frequency 1/2 (5 standard errors)."""
    k = (standard_uniform(key, N_STAT, np.float32) * 2.0 ** 24).astype(np.uint32)
    freq = ((k[:, None] >> np.arange(24, dtype=np.uint32)) & 1).mean(axis=0)
    assert np.all(np.abs(freq - 0.5) < 5 * 0.5 / np.sqrt(N_STAT))


def _corr(x, y):
    return float(np.corrcoef(x, y)[0, 1])


@pytest.mark.parametrize("key", STAT_KEYS)
def test_no_correlations(key):
    """Lag-1 and lag-2 correlation, two related keys, and the Gaussian stream of the same key: all ~0."""
    bound = 5 / np.sqrt(N_STAT)  # 5 standard errors of a correlation of independent samples
    u = standard_uniform(key, N_STAT, np.float64)
    assert abs(_corr(u[:-1], u[1:])) < bound
    assert abs(_corr(u[:-2], u[2:])) < bound
    for other in (key + 1, key ^ 1 << 63, (key + 0x9E3779B97F4A7C15) % 2**64):
        assert abs(_corr(u, standard_uniform(other, N_STAT, np.float64))) < bound
    # against the same key's Gaussian draws (which share the counter i + 1 of draws 2i, 2i+1) and their size
    z = standard_normal(key, 2 * N_STAT, np.float64)
    for zz in (z[:N_STAT], z[0::2], z[1::2], np.abs(z[0::2]), z[1::2] ** 2):
        assert abs(_corr(u, zz)) < bound
    # and the uniform stream is not the Gaussian stream's hashes under another name
    hashes = normal._words_np(normal._mix_int(key), 2 * 1000).view(np.uint64)
    assert not np.isin((u[:1000] * 2.0 ** 53).astype(np.uint64), hashes >> np.uint64(11)).any()


def test_pairs_fill_the_square():
    """Consecutive pairs (u_2i, u_2i+1): chi-square over a 32 x 32 grid."""
    for key in STAT_KEYS:
        u = standard_uniform(key, 2 * N_STAT, np.float32)
        cells = (u[0::2] * 32).astype(np.int64) * 32 + (u[1::2] * 32).astype(np.int64)
        assert stats.chisquare(np.bincount(cells, minlength=1024)).pvalue > 1e-4


# --- argument checks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"key": -1, "n": 3}, "standard_uniform: key must be an integer in [0, 2**64), got -1"),
    ({"key": 2**64, "n": 3}, "standard_uniform: key must be an integer in [0, 2**64)"),
    ({"key": 1.0, "n": 3}, "standard_uniform: key must be an integer in [0, 2**64), got 1.0"),
    ({"key": True, "n": 3}, "standard_uniform: key must be an integer"),
    ({"key": 1, "n": -1}, "standard_uniform: n must be a non-negative integer, got -1"),
    ({"key": 1, "n": 2.0}, "standard_uniform: n must be an integer, got 2.0"),
    ({"key": 1, "n": True}, "standard_uniform: n must be an integer, got True"),
    ({"key": 1, "n": 3, "dtype": np.int32}, "standard_uniform: dtype must be float32 or float64, got int32"),
    ({"key": 1, "n": 3, "dtype": None}, "standard_uniform: dtype must be float32 or float64, got None"),
    ({"key": 1, "n": 3, "dtype": np.float16}, "standard_uniform: dtype must be float32 or float64, got float16"),
    ({"key": 1, "n": 3, "start": -1}, "standard_uniform: start must be an integer in [0, 2**62), got -1"),
    ({"key": 1, "n": 3, "start": 1.5}, "standard_uniform: start must be an integer in [0, 2**62)"),
    ({"key": 1, "n": 3, "start": 2**62}, "standard_uniform: start must be an integer in [0, 2**62)"),
    ({"key": 1, "n": 3, "out": np.empty(4, np.float32)}, "standard_uniform: out must be a writeable contiguous float32"),
    ({"key": 1, "n": 3, "out": np.empty(3, np.float64)}, "standard_uniform: out must be a writeable contiguous float32"),
    ({"key": 1, "n": 3, "out": np.empty(6, np.float32)[::2]}, "standard_uniform: out must be a writeable contiguous"),
    ({"key": 1, "n": 3, "out": [0.0, 0.0, 0.0]}, "standard_uniform: out must be a writeable contiguous"),
])
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError) as e:
        standard_uniform(**kwargs)
    assert str(e.value).startswith(message)


def test_numpy_integers_accepted():
    a = standard_uniform(np.uint64(2**64 - 1), np.int64(4), np.dtype("float64"), start=np.int32(3))
    np.testing.assert_array_equal(a, standard_uniform(2**64 - 1, 4, np.float64, start=3))
