"""Optimizers against their textbook formulas; random streams restore exactly."""

import math

import numpy as np
import pytest

from npsim.backend import BackendUnavailable, get_backend
from npsim.learn.optim import adam, apply_updates, make_optimizer, sgd


def test_adam_matches_reference():
    rng = np.random.default_rng(0)
    p = {"w": rng.standard_normal(5)}
    opt = adam(0.01, b1=0.9, b2=0.99, eps=1e-8)
    st = opt.init(p)
    m = v = np.zeros(5)
    ref = p["w"].copy()
    for t in range(1, 6):
        g = rng.standard_normal(5)
        upd, st = opt.update({"w": g}, st, p)
        p = apply_updates(p, upd)
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        ref = ref - 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.99**t)) + 1e-8)
        np.testing.assert_allclose(p["w"], ref, rtol=1e-10)
    assert int(st["count"]) == 5


def test_sgd_momentum_matches_reference():
    p = {"w": np.ones(3)}
    opt = sgd(0.1, momentum=0.5)
    st = opt.init(p)
    v = np.zeros(3)
    ref = p["w"].copy()
    for g in (np.array([1.0, 2, 3]), np.array([-1.0, 0, 1])):
        upd, st = opt.update({"w": g}, st, p)
        p = apply_updates(p, upd)
        v = 0.5 * v + g
        ref = ref - 0.1 * v
    np.testing.assert_allclose(p["w"], ref)


@pytest.mark.parametrize("bad", [lambda: adam(-1), lambda: sgd(0.0), lambda: sgd(math.nan),
                                 lambda: make_optimizer("rmsprop", lr=1), lambda: make_optimizer("adam", lr=1, beta=3)])
def test_bad_optimizer(bad):
    with pytest.raises(ValueError):
        bad()


def test_random_stream_state_roundtrip():
    be = get_backend("numpy", "float32")
    s = be.stream(42)
    s.normal((3, 3))
    st = s.state()
    a = s.normal((4, 5)), s.uniform((7,)), s.permutation(10)
    s2 = be.stream(0)
    s2.set_state(st)
    b = s2.normal((4, 5)), s2.uniform((7,)), s2.permutation(10)
    for u, w in zip(a, b):
        np.testing.assert_array_equal(u, w)
    assert a[0].dtype == np.float32


def test_backend_errors():
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        get_backend("jax")
    with pytest.raises(ValueError, match="dtype"):
        get_backend("numpy", "int32")
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="npsim\\[cuda12\\]"):
            get_backend("cupy")
