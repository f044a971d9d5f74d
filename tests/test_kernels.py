"""Numba kernels equal their NumPy twins, alone and inside whole training steps."""

import numpy as np
import pytest

from conftest import mlp
from npsim import kernels
from npsim.backend import get_backend
from npsim.kernels import reference
from npsim.optim import adam
from npsim.rules import make_rule
from npsim.step import train_step, trainable

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
        np.testing.assert_allclose(p, P, rtol=1e-6)
        np.testing.assert_allclose(m, M, rtol=1e-6)
        np.testing.assert_allclose(v, V, rtol=1e-6)
        assert s1 == pytest.approx(s2, rel=1e-5)


@pytest.mark.parametrize("slope", [None, 0.0, 0.01])
@pytest.mark.parametrize("repeats", [1, 3])
def test_perturb_activate_matches_numpy(slope, repeats):
    rng = np.random.default_rng(1)
    d = rng.standard_normal((17, 9)).astype(np.float32)
    e = rng.standard_normal((17 * repeats, 9)).astype(np.float32)
    for got, want in zip(kernels.perturb_activate(d, e, repeats, slope), reference.perturb_activate(d, e, repeats, slope)):
        np.testing.assert_array_equal(got, want)


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
        r = make_rule(rule, **({} if rule == "bp" else {"sigma": 1e-2, "samples": 2}))
        opt = adam(1e-3)
        st, rng = opt.init(trainable(params)), be.stream(1)
        for _ in range(5):
            params, st, out = train_step(net, r, opt, params, st, x, y, rng)
        results.append(params)
    for k in results[0]:
        a, b = results[0][k], results[1][k]
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max(), k


def test_kernels_are_cached():
    from npsim.kernels import cpu

    for f in (cpu.adam_step, cpu.perturb_activate):
        assert f._cache is not None and type(f._cache).__name__ == "FunctionCache"
