"""The engine on a strict device: array-api-strict arrays on its non-default Device("device1").

There, any NumPy-only call on an engine array and any implicit host/device transfer raises, as
it would with CuPy on a GPU. Every rule, node model, noise kind, layer type and optimizer takes
training steps there and must give what the NumPy backend gives (the draws are the same
counter-based streams on both, so results agree to float rounding: the strict backend runs the
array-API twins where NumPy runs the Numba kernels).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import three_class_npz
from npsim.backend import get_backend
from npsim.experiment.config import load_config
from npsim.experiment.loop import resume, run
from npsim.io.trajectory import read_trajectory
from npsim.learn import adam, evaluate, make_rule, sgd, train_step, trainable
from npsim.model import (
    LIF, Conv2D, Dense, GaussianNoise, KickNoise, LeakyIntegrator, Network, ReplayNoise, Simulation,
    TelegraphNoise, make_loss, make_node,
)

strict = pytest.importorskip("array_api_strict")

RTOL, ATOL = 2e-5, 2e-6  # float32 rounding: the twins and the kernels order some sums differently


def _pair():
    return get_backend("numpy", "float32"), get_backend("array-api-strict", "float32")


def _steps(net, rule, opt, be, x, y, n=2, seed=0):
    """n training steps on backend ``be`` from the same initial parameters; host results."""
    ref = get_backend("numpy", be.host_dtype)
    initial = {**net.init(ref.stream(seed), ref), **rule.init_params(net, ref.stream(seed + 7), ref)}
    params = {k: be.asarray(v) for k, v in initial.items()}
    state = opt.init(trainable(params))
    rng = be.stream(seed + 1)
    xs, ys = be.asarray(x), be.asarray(y, dtype=y.dtype)
    stats = []
    for _ in range(n):
        params, state, out, st = train_step(net, rule, opt, params, state, xs, ys, rng, stats=True,
                                            align=net.differentiable)
        stats.append(st)
    assert all(be.name == "numpy" or type(v).__module__.startswith("array_api_strict") for v in params.values())
    loss, acc = evaluate(net, params, xs, ys, rng=be.stream(9))
    return {k: be.to_numpy(v) for k, v in params.items()}, stats, (loss, acc)


def _same(net, rule, opt, x, y, n=2):
    be_np, be_st = _pair()
    a, sa, ea = _steps(net, rule, opt, be_np, x, y, n)
    b, sb, eb = _steps(net, rule, opt, be_st, x, y, n)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=RTOL, atol=ATOL, err_msg=k)
    for u, v in zip(sa, sb):
        np.testing.assert_allclose(v.update_norm, u.update_norm, rtol=1e-4, atol=1e-7)
        assert np.isclose(v.loss, u.loss, rtol=1e-5) and (np.isnan(u.delta_loss) or np.isclose(
            v.delta_loss, u.delta_loss, rtol=1e-3, atol=1e-6))
        if u.alignment is not None:
            np.testing.assert_allclose(v.alignment, u.alignment, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(eb, ea, rtol=1e-5)


def _data(n=24, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, classes, n)


def _dense(node="tanh", decorrelate=False, noise=None, out_noise=None, **params):
    return Network([Dense(6, 9, make_node(node, **params), decorrelate, noise),
                    Dense(9, 3, make_node("linear"), decorrelate, out_noise)], make_loss("cross_entropy"))


@pytest.mark.parametrize("rule", ["bp", "np", "inp", "anp", "wp", "dbp", "dnp", "dinp", "danp", "dwp"])
def test_every_rule(rule):
    x, y = _data()
    kw = {} if rule.endswith("bp") else {"sigma": 1e-2, "perturbations": 2}
    _same(_dense(decorrelate=rule.startswith("d")), make_rule(rule, **kw), adam(1e-2), x, y)


@pytest.mark.parametrize("rule", ["dnp", "dinp", "danp"])
def test_local_losses_and_per_layer_sigma(rule):
    """The heads live on the device with the weights; their read-out and delta rule mix nothing from the host."""
    x, y = _data()
    net = _dense(decorrelate=True)
    _same(net, make_rule(rule, sigma=[1e-2, 2e-2], perturbations=2, local_losses=True),
          adam(1e-2), x, y)


@pytest.mark.parametrize("node,params", [("linear", {}), ("relu", {}), ("leaky_relu", {"slope": 0.1}), ("tanh", {}),
                                         ("sigmoid", {}), ("heaviside", {}), ("sign", {}), ("quantize", {"levels": 3}),
                                         ("stochastic_binary", {})])
def test_every_node_model(node, params):
    x, y = _data()
    _same(_dense(node, **params), make_rule("anp", sigma=0.05, perturbations=3), sgd(0.05, momentum=0.5), x, y)


@pytest.fixture
def trace_file(tmp_path):
    path = tmp_path / "trace.npy"
    np.save(path, np.sin(np.arange(50) * 0.3))
    return path


@pytest.mark.parametrize("kind", ["additive", "multiplicative", "telegraph", "telegraph-flip", "kick", "replay"])
def test_every_noise_kind_and_intrinsic_learning(kind, trace_file):
    noise = {"additive": GaussianNoise(std=0.05), "multiplicative": GaussianNoise(kind="multiplicative", std=0.05),
             "telegraph": TelegraphNoise(p_up=0.2, p_down=0.3, amplitude=0.05, read_std=0.01),
             "telegraph-flip": TelegraphNoise(p_up=0.8, p_down=0.7, amplitude=0.05),
             "kick": KickNoise(p=0.3, amplitude=0.05), "replay": ReplayNoise(path=trace_file, scale=0.05)}[kind]
    x, y = _data()
    _same(_dense(noise=noise, out_noise=noise), make_rule("danp", noise="intrinsic", perturbations=3), adam(1e-2), x, y)


def test_conv_network():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((10, 2 * 7 * 6)).astype(np.float32), rng.integers(0, 3, 10)
    c1 = Conv2D((2, 7, 6), channels=3, kernel=3, node=make_node("tanh"), padding=1, pool=2, decorrelate=True)
    c2 = Conv2D(c1.out_shape, channels=4, kernel=2, node=make_node("relu"), pooling="avg", pool=1, decorrelate=True)
    net = Network([c1, c2, Dense(c2.n_out, 3, make_node("linear"), decorrelate=True)], make_loss("cross_entropy"))
    for rule in ("dbp", "danp", "dinp"):
        kw = {} if rule == "dbp" else {"sigma": 1e-2, "perturbations": 2}
        _same(net, make_rule(rule, **kw), adam(1e-2), x, y)


@pytest.mark.parametrize("encoding", ["current", "poisson", "bernoulli"])
def test_spiking_network_with_membrane_noise(encoding):
    lif = LIF(tau=8.0, threshold=0.3, refractory=1.0, membrane_noise=0.1, reset="subtract")
    net = Network([Dense(6, 10, lif, True), Dense(10, 8, LIF(tau=5.0, threshold=0.2), True),
                   Dense(8, 3, LeakyIntegrator(tau=6.0), True)], make_loss("cross_entropy"),
                  simulation=Simulation(steps=9, chunk=4, encoding=encoding))
    x, y = _data()
    x = np.abs(x) / np.abs(x).max()
    _same(net, make_rule("danp", sigma=0.05, perturbations=2), adam(1e-2), x, y)


def test_a_numpy_call_on_a_strict_array_raises():
    """The stand-in catches what a GPU would: host NumPy on device arrays and mixed devices."""
    _, be = _pair()
    a = be.asarray(np.ones((2, 3), np.float32))
    with pytest.raises((RuntimeError, TypeError, ValueError)):
        np.asarray(a)
    with pytest.raises(ValueError):
        a + strict.asarray(np.ones((2, 3), np.float32))  # the default device


CONFIG = """
name = "strict"
seed = 4
backend = "{backend}"
[data]
name = "tiny"
path = "{data}"
[network]
hidden = [12]
node = "tanh"
[rule]
name = "danp"
sigma = 1e-2
perturbations = 2
[optimizer]
lr = 3e-3
[train]
epochs = 3
batch_size = 20
diagnostics_every = 3
checkpoint_steps = 4
"""


@pytest.fixture
def configs(tmp_path):
    data = three_class_npz(tmp_path / "tiny.npz", 120, 40)
    out = {}
    for backend in ("numpy", "array-api-strict"):
        p = tmp_path / f"{backend}.toml"
        p.write_text(CONFIG.format(backend=backend, data=data))
        out[backend] = p
    return out


def _series(path):
    t = read_trajectory(path)
    return {k: v for k, v in t.steps.items() if k != "wall_time"}, t


def _close(a, b):
    sa, ta = _series(a)
    sb, tb = _series(b)
    for k in sa:
        np.testing.assert_allclose(sb[k], sa[k], rtol=1e-3, atol=1e-5, err_msg=k)
    for k in ("test_loss", "test_accuracy"):
        np.testing.assert_allclose(tb.epochs[k], ta.epochs[k], rtol=1e-3, atol=1e-4, err_msg=k)


def test_a_whole_run_on_the_strict_device(configs, tmp_path):
    a = run(load_config(configs["numpy"]), tmp_path / "np.h5", progress=False)
    b = run(load_config(configs["array-api-strict"]), tmp_path / "st.h5", progress=False)
    assert b.status == "finished" and read_trajectory(b.path).attrs["backend"] == "array-api-strict"
    _close(a.path, b.path)


@pytest.mark.parametrize("first,then", [("numpy", "array-api-strict"), ("array-api-strict", "numpy")])
def test_a_run_checkpointed_on_one_library_resumes_on_another(configs, tmp_path, first, then):
    """Checkpoints are host arrays: a run continues on another array library within float tolerance."""
    import h5py

    full = run(load_config(configs[first]), tmp_path / "full.h5", progress=False)
    part = run(load_config(configs[first]), tmp_path / "part.h5", progress=False, stop_after_steps=10)
    with h5py.File(part.path, "r+") as f:  # the same run, to be continued on the other library
        f.attrs["config"] = f.attrs["config"].replace(f'backend = "{first}"', f'backend = "{then}"')
    res = resume(part.path, progress=False)
    assert res.status == "finished"
    _close(full.path, part.path)
