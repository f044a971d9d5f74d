"""Counter-based ziggurat normals: Numba kernel == NumPy twin, reproducibility, distribution."""

import math

import numpy as np
import pytest
from scipy import stats

from npsim.backend.kernels import normal
from npsim.backend.kernels.normal import R, standard_normal

KEYS = [0, 1, 12345, 2**63, 2**64 - 1]


def bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def slow_kinds(key, n):
    """Counts of draws whose first word goes to the tail, to a wedge, and in all to the slow path."""
    words = normal._words_np(normal._mix_int(key), n)
    layer, u = words & 0xFF, words >> 9
    slow = u >= normal.K[layer]
    return int(np.sum(slow & (layer == 0))), int(np.sum(slow & (layer > 0))), int(slow.sum())


@pytest.fixture(scope="module")
def big32():
    """1e7 float32 draws (key 2024)."""
    return standard_normal(2024, 10_000_000, np.float32)


# --- the two twins -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 2047, 2048, 2049, 10_001])
def test_twins_identical_small(dtype, key, n):
    a = standard_normal(key, n, dtype)
    b = standard_normal(key, n, dtype, use_numba=False)
    assert a.dtype == b.dtype == dtype and a.shape == b.shape == (n,) and a.flags.c_contiguous
    np.testing.assert_array_equal(bits(a), bits(b))


@pytest.mark.parametrize("dtype, n", [(np.float32, 3_000_001), (np.float64, 400_003)])
def test_twins_identical_large_with_tail_and_wedges(dtype, n):
    key = 987654321
    a = standard_normal(key, n, dtype)
    b = standard_normal(key, n, dtype, use_numba=False)
    np.testing.assert_array_equal(bits(a), bits(b))
    tails, wedges, slow = slow_kinds(key, n)
    assert tails > 10 and wedges > 1000
    assert 0.012 < slow / n < 0.018  # 1.49 % expected
    assert np.sum(np.abs(a) > R) > 10  # tail values present in the compared sample


def test_rejected_draws_follow_the_reference_slow_path():
    """Every slow-path draw of the kernel equals the plain, from-scratch Python definition."""
    key, n = 77, 400_000
    base, aux = normal._mix_int(key), normal._mix_int(key ^ normal._AUX)
    words = normal._words_np(base, n)
    slow = np.flatnonzero((words >> 9) >= normal.K[words & 0xFF])
    for dtype, w in [(np.float32, normal.W32), (np.float64, normal.W64)]:
        a = standard_normal(key, n, dtype)
        want = np.array([normal._slow_py(aux, i, int(words[i]), w) for i in slow.tolist()]).astype(dtype)
        np.testing.assert_array_equal(bits(a[slow]), bits(want))


def test_float64_is_float32_to_within_rounding():
    a32 = standard_normal(5, 200_000, np.float32)
    a64 = standard_normal(5, 200_000, np.float64)
    np.testing.assert_allclose(a32, a64, rtol=2.5e-7, atol=0)


# --- reproducibility -----------------------------------------------------------------------------------


@pytest.mark.parametrize("use_numba", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_key_same_numbers_different_keys_differ(use_numba, dtype):
    a = standard_normal(3, 5000, dtype, use_numba=use_numba)
    np.testing.assert_array_equal(a, standard_normal(3, 5000, dtype, use_numba=use_numba))
    for other in (4, 3 ^ (1 << 63), 3 + normal._GOLD):
        assert np.mean(a == standard_normal(other, 5000, dtype, use_numba=use_numba)) < 0.01


@pytest.mark.parametrize("use_numba", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prefix_property(use_numba, dtype):
    full = standard_normal(11, 6001, dtype, use_numba=use_numba)
    for m in (0, 1, 2, 5, 2047, 2048, 2049, 4097, 6000):
        np.testing.assert_array_equal(bits(standard_normal(11, m, dtype, use_numba=use_numba)), bits(full[:m]))


@pytest.mark.parametrize("use_numba", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out(use_numba, dtype):
    out = np.full(3001, np.nan, dtype)
    got = standard_normal(9, 3001, dtype, use_numba=use_numba, out=out)
    assert got is out
    np.testing.assert_array_equal(out, standard_normal(9, 3001, dtype))
    empty = np.empty(0, dtype)
    assert standard_normal(9, 0, dtype, out=empty, use_numba=use_numba) is empty


# --- distribution ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ks_and_moments(dtype):
    z = standard_normal(31337, 1_000_000, dtype).astype(np.float64)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    n = z.size
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(stats.skew(z)) < 5 * math.sqrt(6 / n)
    assert abs(stats.kurtosis(z, fisher=False) - 3) < 5 * math.sqrt(24 / n)


@pytest.mark.parametrize("bins, n", [(100, 1_000_000), (1000, 10_000_000)])
def test_chi_square_equiprobable_bins(big32, bins, n):
    z = big32[:n].astype(np.float64)
    edges = stats.norm.ppf(np.linspace(0, 1, bins + 1))
    counts = np.bincount(np.searchsorted(edges, z, side="right") - 1, minlength=bins)
    assert counts.size == bins
    assert stats.chisquare(counts).pvalue > 1e-3


@pytest.mark.parametrize("c", [1.0, 2.0, R, 4.0, 4.5])
def test_tail_frequencies(big32, c):
    p = 2 * stats.norm.sf(c)
    n = big32.size
    hits = np.count_nonzero(np.abs(big32) > c)
    assert abs(hits - n * p) < 4 * math.sqrt(n * p * (1 - p))


def test_tail_shape(big32):
    """Values beyond R follow the normal tail: P(|Z| > x | |Z| > R) = sf(x) / sf(R)."""
    t = np.abs(big32[np.abs(big32) > R]).astype(np.float64)
    assert t.size > 2000
    assert stats.kstest(t, lambda x: 1 - stats.norm.sf(x) / stats.norm.sf(R)).pvalue > 1e-3
    assert t.max() > 5.0


def test_signs_balanced_and_symmetric(big32):
    z = big32[:1_000_000]
    n = z.size
    assert abs(np.mean(z > 0) - 0.5) < 5 * 0.5 / math.sqrt(n)
    assert stats.ks_2samp(z[z > 0], -z[z < 0]).pvalue > 1e-3


# --- independence ----------------------------------------------------------------------------------------


def test_pairwise_correlations(big32):
    z = big32[:2_000_000].astype(np.float64)
    lim = 5 / math.sqrt(z.size / 2)
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < lim  # neighbours
    assert abs(np.corrcoef(z[0::2], z[1::2])[0, 1]) < lim  # the two halves of one hash
    assert abs(np.corrcoef(z[1:-1:2], z[2::2])[0, 1]) < lim  # across hashes
    assert abs(np.corrcoef(z[0::2] ** 2, z[1::2] ** 2)[0, 1]) < lim  # magnitudes (shared layer bits)
    other = standard_normal(2025, z.size, np.float32).astype(np.float64)  # neighbouring key
    assert abs(np.corrcoef(z, other)[0, 1]) < lim


# --- tables and inputs -----------------------------------------------------------------------------------


def test_tables():
    x, f = normal.X, normal.F
    assert x[1] == R and x[256] == 0 and np.all(np.diff(x) < 0)
    v = normal.V
    assert x[255] * (1 - f[255]) == pytest.approx(v, rel=1e-6)  # top layer has the common area
    assert R * f[1] + math.sqrt(math.pi / 2) * math.erfc(R / math.sqrt(2)) == pytest.approx(v, rel=1e-9)
    assert np.all(normal.K[:-1] > 0) and normal.K[-1] == 0 and np.all(normal.K < 2**23)


@pytest.mark.parametrize("kwargs, match", [
    ({"key": 0, "n": -1}, "n must be a non-negative integer"),
    ({"key": 0, "n": 2.5}, "n must be an integer"),
    ({"key": 0, "n": "3"}, "n must be an integer"),
    ({"key": 0, "n": True}, "n must be an integer"),
    ({"key": -1, "n": 3}, r"key must be an integer in \[0, 2\*\*64\)"),
    ({"key": 2**64, "n": 3}, r"key must be an integer in \[0, 2\*\*64\)"),
    ({"key": 1.0, "n": 3}, r"key must be an integer"),
    ({"key": "a", "n": 3}, r"key must be an integer"),
    ({"key": 0, "n": 3, "dtype": np.int32}, "dtype must be float32 or float64"),
    ({"key": 0, "n": 3, "dtype": np.float16}, "dtype must be float32 or float64"),
    ({"key": 0, "n": 3, "dtype": "nonsense"}, "dtype must be float32 or float64"),
    ({"key": 0, "n": 3, "dtype": None}, "dtype must be float32 or float64"),
    ({"key": 0, "n": 3, "out": np.empty(3)}, "out must be"),  # float64 out, float32 asked
    ({"key": 0, "n": 3, "out": np.empty(4, np.float32)}, "out must be"),
    ({"key": 0, "n": 3, "out": np.empty(6, np.float32)[::2]}, "out must be"),
    ({"key": 0, "n": 3, "out": np.empty((3, 1), np.float32)}, "out must be"),
    ({"key": 0, "n": 3, "out": [0.0, 0.0, 0.0]}, "out must be"),
])
@pytest.mark.parametrize("use_numba", [True, False])
def test_bad_inputs(kwargs, match, use_numba):
    with pytest.raises(ValueError, match=match):
        standard_normal(**kwargs, use_numba=use_numba)


def test_accepts_numpy_integers_and_dtype_names():
    a = standard_normal(np.uint64(2**64 - 1), np.int32(5), "float32")
    np.testing.assert_array_equal(a, standard_normal(2**64 - 1, 5, np.float32))
    assert standard_normal(1, 4, "f8").dtype == np.float64


@pytest.mark.parametrize("use_numba", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_consecutive_starts_continue_one_stream(use_numba, dtype):
    """Draws taken in pieces (odd and even starts, pieces across chunk boundaries) equal one long draw."""
    key, n = 0xDEADBEEF, 9001
    whole = standard_normal(key, n, dtype)
    pieces, start = [], 0
    for size in (1, 2, 3, 2047, 2, 1, 4096, 0, 5, n):
        size = min(size, n - start)
        pieces.append(standard_normal(key, size, dtype, start=start, use_numba=use_numba))
        start += size
    np.testing.assert_array_equal(np.concatenate(pieces), whole)


@pytest.mark.parametrize("start", [-1, 1.5, True, 2**62])
def test_bad_start(start):
    with pytest.raises(ValueError, match="start"):
        standard_normal(1, 3, np.float32, start=start)
