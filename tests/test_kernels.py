"""Numba kernels equal their NumPy twins, alone and inside whole training steps."""

import numpy as np
import pytest
from conftest import mlp

from npsim.backend import get_backend, kernels
from npsim.backend.kernels import reference
from npsim.learn.optim import adam
from npsim.learn.rules import make_rule
from npsim.learn.step import train_step, trainable

pytestmark = pytest.mark.skipif(not kernels.use_numba(), reason="Numba kernels disabled (NPSIM_KERNELS=numpy)")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_kernel_matches_numpy(dtype):
    rng = np.random.default_rng(0)
    p, g = (rng.standard_normal(10007).astype(dtype) for _ in range(2))
    m, v = np.zeros_like(p), np.zeros_like(p)
    P, M, V = p.copy(), m.copy(), v.copy()
    for t in range(1, 4):
        kw = dict(b1=0.9, b2=0.999, step_size=1e-3 * t, eps=1e-8)
        s1 = kernels.adam_step(p, g * t, m, v, **kw)
        s2 = reference.adam_step(P, g * t, M, V, **kw)
        np.testing.assert_array_equal(p, P)
        np.testing.assert_array_equal(m, M)
        np.testing.assert_array_equal(v, V)
        assert s1 == pytest.approx(s2, rel=1e-5)


@pytest.mark.parametrize("slope", [None, 0.0, 0.01])
@pytest.mark.parametrize("case", ["clean", "bias+perturb", "tile+perturb", "tile", "bias+tile+stacked",
                                  "stacked"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_drive_activate_matches_numpy(slope, case, dtype):
    rng = np.random.default_rng(1)
    B = 17
    repeats = 3 if "tile" in case else 1
    rows = 3 * B if case == "stacked" else B
    clean_rows = B if "stacked" in case else 0
    d = rng.standard_normal((rows, 9)).astype(dtype)
    bias = rng.standard_normal(9).astype(dtype) if "bias" in case or case == "clean" else None
    e = (rng.standard_normal((rows * repeats - clean_rows, 9)).astype(dtype)
         if "perturb" in case or "stacked" in case else None)
    d1, d2 = d.copy(), d.copy()
    got = kernels.drive_activate(d1, bias, e, repeats, slope, clean_rows)
    want = reference.drive_activate(d2, bias, e, repeats, slope, clean_rows)
    np.testing.assert_array_equal(d1, d2)  # the bias went into the drive in place
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.shape == (rows * repeats, 9)
        np.testing.assert_array_equal(g, w)
    if case == "clean":
        assert got[0] is d1  # the activity is the drive itself: no copy
    if clean_rows:  # the clean rows carry the drive alone
        np.testing.assert_array_equal(got[0][:B], d1[:B])


def test_drive_activate_checks_the_perturbation_rows():
    d = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="perturb has 4 rows, expected 2"):
        kernels.drive_activate(d, None, np.zeros((4, 3), np.float32), 2, 0.0, clean_rows=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_rows_and_decorrelation_finish_match_numpy(dtype):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((13, 7)).astype(dtype)
    w = rng.standard_normal(13).astype(dtype)
    np.testing.assert_array_equal(kernels.scale_rows(a.copy(), w), reference.scale_rows(a.copy(), w))
    CR, R = (rng.standard_normal((7, 7)).astype(dtype) for _ in range(2))
    v = rng.random(7).astype(dtype)
    np.testing.assert_array_equal(kernels.decorrelation_finish(CR.copy(), R, v, 13, 1e-2),
                                  reference.decorrelation_finish(CR.copy(), R, v, 13, 1e-2))


@pytest.mark.parametrize("rule", ["np", "inp", "anp", "danp", "bp"])
def test_training_steps_equal_with_and_without_kernels(rule, monkeypatch):
    """Same random stream, same data: five updates with the kernels and with the NumPy path."""
    be = get_backend("numpy", "float32")
    net = mlp((30, 40, 40, 10), node="leaky_relu", loss="cross_entropy", decorrelate=rule.startswith("d"))
    x = be.stream(9).normal((64, 30))
    y = np.arange(64) % 10
    results = []
    for mode in ("numba", "numpy"):
        monkeypatch.setenv("NPSIM_KERNELS", mode)
        params = net.init(be.stream(0), be)
        r = make_rule(rule, **({} if rule == "bp" else {"sigma": 1e-2, "perturbations": 2}))
        opt = adam(1e-3)
        st, rng = opt.init(trainable(params)), be.stream(1)
        for _ in range(5):
            params, st, out = train_step(net, r, opt, params, st, x, y, rng)
        results.append(params)
    for k in results[0]:
        a, b = results[0][k], results[1][k]
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max(), k


def test_kernels_are_cached():
    from npsim.backend.kernels import cpu, normal

    for f in (cpu.adam_step, cpu.drive_activate, cpu.scale_rows, cpu.decorrelation_finish, cpu.membrane_run,
              normal._fill_nb):
        assert f._cache is not None and type(f._cache).__name__ == "FunctionCache"
