"""Node models: values, derivatives against finite differences, noise statistics, errors."""

import warnings

import numpy as np
import pytest

from npsim.backend import get_backend
from npsim.model import NODE_MODELS, GaussianNoise, make_node, make_noise
from npsim.model.nodes import StochasticBinary

A = np.linspace(-3, 3, 601).reshape(1, -1)


@pytest.mark.parametrize("name", ["linear", "relu", "leaky_relu", "tanh", "sigmoid"])
def test_derivative_matches_finite_differences(name):
    node = make_node(name)
    assert node.differentiable
    a = A[np.abs(A) > 1e-3].reshape(1, -1)  # away from the ReLU kink
    h = 1e-6
    fd = (node(a + h) - node(a - h)) / (2 * h)
    np.testing.assert_allclose(node.grad(a, node(a)), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["linear", "relu", "leaky_relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backprop_is_the_gradient_times_its_derivative_bit_for_bit(name, dtype):
    """backprop(dout, a, x) (BP's one-pass form) gives exactly dout · grad(a, x), zeros and signs included."""
    node = make_node(name, slope=0.2) if name == "leaky_relu" else make_node(name)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 33)).astype(dtype)
    a[0, :5] = [0.0, -0.0, 1e-30, -1e-30, 3.0]
    dout = rng.standard_normal(a.shape).astype(dtype)
    dout[1, :3] = [0.0, -0.0, np.inf]
    x = node(a)
    got, want = node.backprop(dout, a, x), dout * node.grad(a, x)
    assert got.dtype == want.dtype == dtype
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))


def test_reference_values():
    np.testing.assert_allclose(make_node("sigmoid")(A), 1 / (1 + np.exp(-A)), rtol=1e-12)
    np.testing.assert_allclose(make_node("leaky_relu", slope=0.1)(A), np.where(A > 0, A, 0.1 * A))
    assert set(np.unique(make_node("heaviside")(A))) == {0.0, 1.0}
    assert make_node("heaviside", threshold=1.0)(np.array([[0.9, 1.1]])).tolist() == [[0.0, 1.0]]
    assert set(np.unique(make_node("sign")(A))) == {-1.0, 1.0}
    q = make_node("quantize", levels=3, low=-1, high=1)(np.array([[-5, -0.6, -0.4, 0.4, 0.6, 5.0]]))
    assert q.tolist() == [[-1, -1, 0, 0, 1, 1]]


@pytest.mark.parametrize("name", ["heaviside", "sign", "quantize", "stochastic_binary"])
def test_non_differentiable_declare_it(name):
    node = make_node(name)
    assert not node.differentiable
    with pytest.raises(TypeError, match="no derivative"):
        node.grad(A, A)


def test_stochastic_binary_firing_probability():
    be = get_backend("numpy", "float64")
    rng = be.stream(0)
    a = np.full((200000, 1), 0.7)
    x = make_node("stochastic_binary")(a, rng)
    assert set(np.unique(x)) == {0.0, 1.0}
    assert abs(x.mean() - 1 / (1 + np.exp(-0.7))) < 0.005
    with pytest.raises(ValueError, match="random stream"):
        make_node("stochastic_binary")(a)


def test_old_node_name_still_builds_with_a_warning():
    with pytest.warns(FutureWarning, match="'bernoulli' is now called 'stochastic_binary'"):
        node = make_node("bernoulli", temperature=2.0)
    assert node == StochasticBinary(temperature=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_node("step")  # an alias, not an old name: no warning


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_gaussian_noise_statistics(kind):
    be = get_backend("numpy", "float64")
    noise = make_noise({"std": 0.2, "kind": kind})
    assert isinstance(noise, GaussianNoise) and noise.kind == kind
    a = np.full((100000, 1), 2.0)
    noisy = noise(a, be.stream(1))
    expected_std = 0.2 if kind == "additive" else 0.4
    assert abs(noisy.mean() - 2.0) < 0.01 and abs(noisy.std() - expected_std) < 0.01


def test_float32_preserved():
    a = A.astype(np.float32)
    for name in ("linear", "relu", "leaky_relu", "tanh", "sigmoid", "heaviside", "sign", "quantize"):
        assert make_node(name)(a).dtype == np.float32, name


@pytest.mark.parametrize("bad,match", [
    (lambda: make_node("relux"), "node model: name must be one of .*leaky_relu.* \\(got 'relux'\\)"),
    (lambda: make_node("tanh", slope=0.1), "tanh: slope is not a parameter; tanh takes no parameters"),
    (lambda: make_node("leaky_relu", slope=2.0), "leaky_relu: slope must be less than 1 \\(got 2.0\\)"),
    (lambda: make_node("leaky_relu", slope=True), "leaky_relu: slope must be a valid number \\(got True\\)"),
    (lambda: make_node("quantize", levels=1), "quantize: levels must be greater than or equal to 2"),
    (lambda: make_node("quantize", levels=2.0), "quantize: levels must be a valid integer"),
    (lambda: make_noise({"std": -1}), "gaussian_noise: std must be greater than or equal to 0"),
    (lambda: make_noise({"sd": 1}), "gaussian_noise: sd is not a parameter; gaussian_noise takes kind, std"),
])
def test_bad_node_parameters(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_registry_names_build():
    for name in NODE_MODELS:
        make_node(name)
