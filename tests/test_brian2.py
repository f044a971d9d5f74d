"""The Brian2 substrate: the same LIF dynamics as npsim's, measured activities the rules can use,
reproducible training through the run loop, and clear refusals (docs/design.md §10a)."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("brian2", reason="the Brian2 substrate is the optional extra npsim[brian2]")

from conftest import three_class_npz  # noqa: E402

from npsim.backend import get_backend  # noqa: E402
from npsim.errors import ConfigError, IncompatibleSettings  # noqa: E402
from npsim.experiment.config import load_config  # noqa: E402
from npsim.experiment.loop import resume, run  # noqa: E402
from npsim.io.trajectory import read_trajectory  # noqa: E402
from npsim.model import LIF, Dense, Network, Simulation, SubstrateNetwork, make_loss, make_node  # noqa: E402
from npsim.model.brian2_substrate import Brian2Substrate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def crosscheck():
    spec = importlib.util.spec_from_file_location("brian2_crosscheck", ROOT / "scripts" / "brian2_crosscheck.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_spike_counts_are_those_each_integration_scheme_predicts(crosscheck):
    rows = crosscheck.table(steps=400, dt=1.0)
    assert sum(r["npsim"] > 0 for r in rows) >= 15  # the table covers firing units, not only silent ones
    for r in rows:
        slack = 1 if r["tie"] else 0
        assert r["npsim"] == r["predicted_exact"], r
        assert abs(r["brian2_exact"] - r["npsim"]) <= slack, r  # the same map: the same spikes
        assert abs(r["brian2_euler"] - r["predicted_euler"]) <= slack, r
    assert any(r["brian2_euler"] != r["npsim"] for r in rows)  # at dt/τ ≥ 0.05 the schemes do differ


def test_with_membrane_noise_mean_counts_agree_within_the_derived_bound(crosscheck):
    for r in crosscheck.noisy_rows(n=200, steps=300):
        assert abs(r["brian2_mean"] - r["npsim_mean"]) <= r["bound"], r


def _net(decorrelate=False, noise=0.0, hidden=(9, 7)):
    lif = LIF(tau=5.0, threshold=0.3, membrane_noise=noise)
    sizes = (4, *hidden)
    layers = [Dense(sizes[i], sizes[i + 1], lif, decorrelate=decorrelate) for i in range(len(hidden))]
    layers.append(Dense(sizes[-1], 3, make_node("linear"), decorrelate=decorrelate))
    return Network(layers, make_loss("cross_entropy"), simulation=Simulation(steps=15))


def test_measured_current_is_weights_times_measured_rate_plus_bias_and_perturbation():
    # the identity node perturbation relies on: mean current = W R (mean rate) + b + ε
    net = _net(decorrelate=True)
    be = get_backend("numpy", "float64")
    params = net.init(be.stream(0), be)
    params = {k: v + 0.1 * be.stream(3).normal(v.shape) if k.endswith("/R") else v for k, v in params.items()}
    x = np.random.default_rng(1).uniform(0, 2, (5, 4))
    eps = [be.stream(i).normal((10, n), scale=0.2) for i, n in enumerate((9, 7, 3))]
    m = Brian2Substrate(net).run(params, x, perturb=eps, repeats=2)
    assert [a.shape for a in m.pre] == [(10, 9), (10, 7), (10, 3)] and m.output.shape == (10, 3)
    assert 0 < m.inputs[1].mean() < 1 and 0 < m.inputs[2].mean() < 1  # both layers fire
    for l in range(3):
        inp = np.tile(x, (2, 1)) if l == 0 else m.inputs[l]
        W = params[f"layer{l}/W"] @ params[f"layer{l}/R"]
        np.testing.assert_allclose(m.pre[l], inp @ W.T + params[f"layer{l}/b"] + eps[l], rtol=1e-9, atol=1e-9)
    # the clean copy and a perturbed one differ only through the perturbation
    clean = Brian2Substrate(net).run(params, x)
    np.testing.assert_allclose(clean.pre[0], x @ (params["layer0/W"] @ params["layer0/R"]).T + params["layer0/b"])


def test_first_layer_spikes_equal_npsims_own(be64):
    # one-step synaptic delay aside (upper layers), Brian2's layer 0 under constant current is npsim's
    net = _net()
    params = net.init(be64.stream(0), be64)
    x = np.random.default_rng(2).uniform(0, 3, (6, 4))
    m = Brian2Substrate(net).run(params, x)
    own = net.forward(params, x, np.zeros(6, np.int64))
    assert np.array_equal(m.inputs[1], own.inputs[1])


CONFIG = """
name = "b2"
seed = 3
[data]
name = "tiny"
path = "{data}"
[network]
hidden = [12]
node = "lif"
node_params = {{ tau = 5.0, threshold = 0.2{noise} }}
[network.simulation]
steps = 10
[substrate]
name = "brian2"
perturbation = "{perturbation}"
[rule]
name = "danp"
sigma = 0.1
noise = "{rule_noise}"
decorrelation_lr = 1e-3
[optimizer]
lr = 1e-2
[train]
epochs = {epochs}
batch_size = 20
diagnostics_every = 0
checkpoint_steps = 4
"""


def _config(tmp_path, *, epochs=4, intrinsic=False, **extra):
    data = three_class_npz(tmp_path / "tiny.npz", 240, 90, n_features=6)
    text = CONFIG.format(data=data, epochs=epochs, noise=", membrane_noise = 0.4" if intrinsic else "",
                         perturbation="intrinsic" if intrinsic else "injected",
                         rule_noise="intrinsic" if intrinsic else "injected")
    for k, v in extra.items():
        text = text.replace(f"{k} = ", f"{k} = {v}  # ", 1)
    p = tmp_path / f"c{len(list(tmp_path.glob('c*.toml')))}.toml"
    p.write_text(text)
    return load_config(p)


@pytest.mark.parametrize("intrinsic", [False, True], ids=["injected", "intrinsic"])
def test_danp_trains_brian2_reproducibly_and_resumes_exactly(tmp_path, intrinsic):
    cfg = _config(tmp_path, intrinsic=intrinsic)
    a = read_trajectory(run(cfg, tmp_path / "a.h5", progress=False).path)
    assert a.status == "finished" and "substrate brian2" in a.attrs["network"]
    acc = a.epochs["test_accuracy"]
    assert acc[-1] > 0.6  # three classes: chance is 1/3
    b = read_trajectory(run(cfg, tmp_path / "b.h5", progress=False).path)
    assert all(np.array_equal(a.steps[k], b.steps[k], equal_nan=True) for k in a.steps if k != "wall_time")
    part = run(cfg, tmp_path / "c.h5", progress=False, stop_after_steps=22)  # inside epoch 2, after a checkpoint
    c = read_trajectory(resume(part.path, progress=False).path)
    assert all(np.array_equal(a.steps[k], c.steps[k], equal_nan=True) for k in a.steps if k != "wall_time")
    assert np.array_equal(a.epochs["test_accuracy"], c.epochs["test_accuracy"])


def test_training_beats_the_frozen_hidden_layer_control(tmp_path):
    cfg = _config(tmp_path, epochs=4)
    trained = read_trajectory(run(cfg, tmp_path / "t.h5", progress=False).path).epochs["test_accuracy"][-1]
    frozen_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"freeze": [0]})})
    frozen = read_trajectory(run(frozen_cfg, tmp_path / "f.h5", progress=False).path).epochs["test_accuracy"][-1]
    assert trained > frozen + 0.05, (trained, frozen)


def test_settings_brian2_cannot_take_are_refused_in_one_line(tmp_path):
    cfg = _config(tmp_path)
    bad = [
        ({"rule": cfg.rule.model_copy(update={"name": "bp"})}, "BP needs the derivative"),
        ({"substrate": cfg.substrate.model_copy(update={"perturbation": "intrinsic"})},
         "needs LIF units with membrane noise"),
        ({"substrate": cfg.substrate.model_copy(update={"perturbation": "intrinsic"}),
          "rule": cfg.rule.model_copy(update={"noise": "intrinsic"})}, "needs LIF units with membrane noise"),
        ({"backend": "array-api-strict"}, "substrate 'brian2' runs on the host: set backend = 'numpy'"),
        ({"network": cfg.network.model_copy(update={"node": "li", "node_params": {"tau": 5.0}})},
         "simulates a stack of LIF layers from layer 0 up (non-spiking layers may follow it); this network has "
         "layer 0 out of place"),
    ]
    for update, message in bad:
        with pytest.raises(IncompatibleSettings) as e:
            run(cfg.model_copy(update=update), tmp_path / "x.h5", progress=False)
        assert message in str(e.value) and "\n" not in str(e.value)
    noisy = _config(tmp_path, intrinsic=True)
    with pytest.raises(IncompatibleSettings, match="rule 'dnp' injects a perturbation into the layers' activities, "
                                                   "but substrate 'brian2' takes none; use 'anp' or 'danp' with "
                                                   "rule.noise = 'intrinsic'"):
        run(noisy.model_copy(update={"rule": noisy.rule.model_copy(update={"name": "dnp", "noise": "injected"})}),
            tmp_path / "y.h5", progress=False)
    with pytest.raises(ConfigError, match="substrate.name"):
        load_config_text(tmp_path, "[substrate]\nname = 'loihi'\n")


def load_config_text(tmp_path, text):
    p = tmp_path / "s.toml"
    p.write_text(text)
    return load_config(p)


def test_a_missing_brian2_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "brian2", None)
    with pytest.raises(IncompatibleSettings, match=r"pip install 'npsim\[brian2\]'"):
        Brian2Substrate(_net())


def test_the_wrapper_runs_passes_in_brian2(be64):
    net = _net()
    b2net = SubstrateNetwork(net, Brian2Substrate(net))
    params = net.init(be64.stream(0), be64)
    x, y = np.random.default_rng(0).uniform(0, 2, (4, 4)), np.array([0, 1, 2, 0])
    clean, noisy = b2net.forward_pair(params, x, y, perturb=[np.full((8, n), 0.5) for n in (9, 7, 3)], repeats=2)
    assert clean.loss.shape == (4,) and noisy.loss.shape == (8,)
    assert math.isfinite(float(clean.loss.mean()))
    assert (noisy.pre[0] - np.tile(clean.pre[0], (2, 1)) == pytest.approx(0.5))


def test_several_substrates_live_side_by_side_in_one_process(be64):
    # a sweep's local worker builds one per run; Brian2 names must not collide
    net = _net()
    params = net.init(be64.stream(0), be64)
    x = np.random.default_rng(0).uniform(0, 2, (3, 4))
    first, second = Brian2Substrate(net), Brian2Substrate(net)
    a, b = first.run(params, x), second.run(params, x)
    assert np.array_equal(a.output, b.output) and np.array_equal(first.run(params, x).output, a.output)


def test_a_brian2_that_fails_on_this_numpy_is_named(monkeypatch):
    import builtins

    real = builtins.__import__

    def numpy_too_new(name, *args, **kwargs):
        if name == "brian2":
            raise AttributeError("type object 'numpy.ndarray' has no attribute 'ptp'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", numpy_too_new)
    with pytest.raises(IncompatibleSettings, match=r"Brian2 cannot be imported with NumPy .*pip install 'npsim\[brian2\]'"):
        Brian2Substrate(_net())
