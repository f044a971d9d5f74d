"""Node models: values, derivatives against finite differences, noise statistics, errors."""

import numpy as np
import pytest

from npsim.backend import get_backend
from npsim.nodes import NODE_MODELS, GaussianNoise, make_node

A = np.linspace(-3, 3, 601).reshape(1, -1)


@pytest.mark.parametrize("name", ["linear", "relu", "leaky_relu", "tanh", "sigmoid"])
def test_derivative_matches_finite_differences(name):
    node = make_node(name)
    assert node.differentiable
    a = A[np.abs(A) > 1e-3].reshape(1, -1)  # away from the ReLU kink
    h = 1e-6
    fd = (node(a + h) - node(a - h)) / (2 * h)
    np.testing.assert_allclose(node.grad(a, node(a)), fd, rtol=1e-6, atol=1e-8)


def test_reference_values():
    np.testing.assert_allclose(make_node("sigmoid")(A), 1 / (1 + np.exp(-A)), rtol=1e-12)
    np.testing.assert_allclose(make_node("leaky_relu", slope=0.1)(A), np.where(A > 0, A, 0.1 * A))
    assert set(np.unique(make_node("heaviside")(A))) == {0.0, 1.0}
    assert make_node("heaviside", threshold=1.0)(np.array([[0.9, 1.1]])).tolist() == [[0.0, 1.0]]
    assert set(np.unique(make_node("sign")(A))) == {-1.0, 1.0}
    q = make_node("quantize", levels=3, low=-1, high=1)(np.array([[-5, -0.6, -0.4, 0.4, 0.6, 5.0]]))
    assert q.tolist() == [[-1, -1, 0, 0, 1, 1]]


@pytest.mark.parametrize("name", ["heaviside", "sign", "quantize", "bernoulli"])
def test_non_differentiable_declare_it(name):
    node = make_node(name)
    assert not node.differentiable
    with pytest.raises(TypeError, match="no derivative"):
        node.grad(A, A)


def test_bernoulli_firing_probability():
    be = get_backend("numpy", "float64")
    rng = be.stream(0)
    a = np.full((200000, 1), 0.7)
    x = make_node("bernoulli")(a, rng)
    assert set(np.unique(x)) == {0.0, 1.0}
    assert abs(x.mean() - 1 / (1 + np.exp(-0.7))) < 0.005
    with pytest.raises(ValueError, match="random stream"):
        make_node("bernoulli")(a)


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_gaussian_noise_statistics(kind):
    be = get_backend("numpy", "float64")
    node = make_node("tanh", noise={"std": 0.2, "kind": kind})
    assert isinstance(node, GaussianNoise) and node.noisy and node.differentiable
    a = np.full((100000, 1), 2.0)
    noisy = node.activity(a, be.stream(1))
    expected_std = 0.2 if kind == "additive" else 0.4
    assert abs(noisy.mean() - 2.0) < 0.01 and abs(noisy.std() - expected_std) < 0.01
    np.testing.assert_allclose(node(noisy), np.tanh(noisy))
    assert not make_node("heaviside", noise={"std": 0.1}).differentiable


def test_float32_preserved():
    a = A.astype(np.float32)
    for name in ("linear", "relu", "leaky_relu", "tanh", "sigmoid", "heaviside", "sign", "quantize"):
        assert make_node(name)(a).dtype == np.float32, name


@pytest.mark.parametrize("bad,match", [
    (lambda: make_node("relux"), "unknown node model 'relux'"),
    (lambda: make_node("tanh", slope=0.1), "node model 'tanh': unknown parameter"),
    (lambda: make_node("leaky_relu", slope=2.0), "slope"),
    (lambda: make_node("quantize", levels=1), "levels"),
    (lambda: make_node("relu", noise={"std": -1}), "std"),
    (lambda: make_node("relu", noise={"sd": 1}), "unknown parameter"),
])
def test_bad_node_parameters(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_registry_names_build():
    for name in NODE_MODELS:
        make_node(name)
