"""Block-local losses (rule.local_losses): each hidden layer learns against its own read-out head.

The references are finite differences in float64 of a forward pass written here in plain NumPy,
not npsim's: the gradient of layer l's head loss with respect to W_l, and of the head loss with
respect to the head. The control: the same updates point along the head losses' gradients, not
along the network loss's, so the heads (not the network loss) did the work.
"""

import numpy as np
import pytest
from conftest import mlp, three_class_npz

from npsim.errors import IncompatibleSettings
from npsim.experiment.config import ConfigError, load_config
from npsim.experiment.loop import resume, run
from npsim.io.data.synthetic import teacher_student
from npsim.io.trajectory import read_trajectory
from npsim.learn import make_rule
from npsim.learn.rules import head_key

SIZES = (20, 30, 30, 5)


@pytest.fixture
def setup(be64):
    net = mlp(SIZES)  # tanh hidden units, linear output, mean squared error
    rule = make_rule("np", local_losses=True)
    params = net.init(be64.stream(0), be64)
    params.update(rule.init_params(net, be64.stream(7), be64))
    x, y = teacher_student(32, seed=1)
    return net, params, x, y


def _losses(params, x, y):
    """(network loss, [head loss of layer 0, of layer 1]) of the batch, by hand: tanh MLP, ½‖·‖² losses."""
    h, heads = x, []
    for i in range(len(SIZES) - 1):
        a = h @ params[f"layer{i}/W"].T + params[f"layer{i}/b"]
        h = a if i == len(SIZES) - 2 else np.tanh(a)
        if i < len(SIZES) - 2:
            z = h @ params[f"head{i}/W"].T + params[f"head{i}/b"]
            heads.append(0.5 * np.mean(np.sum((z - y) ** 2, axis=1)))
    return 0.5 * np.mean(np.sum((h - y) ** 2, axis=1)), heads


def _fd(params, x, y, key, which, h=1e-6):
    """Central finite-difference gradient of loss ``which`` (-1: the network's, l: head l's) w.r.t. ``key``."""
    def f(p):
        net_loss, heads = _losses(p, x, y)
        return net_loss if which == -1 else heads[which]
    g = np.zeros_like(params[key])
    for idx in np.ndindex(*g.shape):
        p = dict(params)
        for s in (1, -1):
            p[key] = params[key].copy()
            p[key][idx] += s * h
            g[idx] += s * f(p) / (2 * h)
    return g


def _cos(a, b):
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("name,threshold", [("np", 0.97), ("inp", 0.99), ("anp", 0.9)])
def test_mean_update_follows_each_layers_own_loss(be64, setup, name, threshold):
    net, params, x, y = setup
    out = make_rule(name, sigma=1e-5, perturbations=3000, local_losses=True)(net, params, x, y, be64.stream(2))
    for layer, which in ((0, 0), (1, 1), (2, -1)):
        own = _fd(params, x, y, f"layer{layer}/W", which)
        assert _cos(out.grads[f"layer{layer}/W"], own) >= threshold, (name, layer)
        if which >= 0:  # control: the network loss's gradient is another direction
            other = _fd(params, x, y, f"layer{layer}/W", -1)
            assert abs(_cos(out.grads[f"layer{layer}/W"], other)) < threshold - 0.3, (name, layer)


def test_heads_learn_by_their_exact_gradient(be64, setup):
    net, params, x, y = setup
    out = make_rule("anp", sigma=1e-3, local_losses=True)(net, params, x, y, be64.stream(2))
    for layer in (0, 1):
        for n in ("W", "b"):
            np.testing.assert_allclose(out.grads[head_key(layer, n)], _fd(params, x, y, head_key(layer, n), layer),
                                       rtol=1e-6, atol=1e-9)


def test_local_losses_cut_the_noise_of_the_first_layers_estimate(be64, setup):
    """NP perturbs every unit at once. For one sample a draw's update is s ε_0 x_0ᵀ, and its sign s is that of
    the loss change: with the network loss, the other layers' noise (35 more units) flips it at random; with
    layer 0's head loss, which sees layer 0's noise only, s is the sign of g_0ᵀε_0, so the draw always
    points within 90° of its target and the mean signed cosine is E|cos| ≈ √(2/(π n_0))."""
    net, params, x, y = setup
    x, y = x[:1], y[:1]
    own, full = _fd(params, x, y, "layer0/W", 0), _fd(params, x, y, "layer0/W", -1)
    rng = be64.stream(4)
    cos = {}
    for local, target in ((True, own), (False, full)):
        rule = make_rule("np", sigma=1e-5, local_losses=local)
        cos[local] = np.mean([_cos(rule(net, params, x, y, rng).grads["layer0/W"], target) for _ in range(2000)])
    assert cos[True] == pytest.approx(np.sqrt(2 / (np.pi * 30)), rel=0.1)
    assert cos[True] > 1.5 * cos[False], cos


def test_missing_heads_are_named(be64, setup):
    net, params, x, y = setup
    bare = {k: v for k, v in params.items() if not k.startswith("head")}
    with pytest.raises(ValueError, match="head0/W.*init_params"):
        make_rule("anp", local_losses=True)(net, bare, x, y, be64.stream(0))


def test_rules_without_local_losses_add_no_parameters(be64):
    net = mlp(SIZES)
    for name in ("np", "danp", "bp", "wp"):
        assert make_rule(name).init_params(net, be64.stream(0), be64) == {}
    heads = make_rule("danp", local_losses=True).init_params(net, be64.stream(0), be64)
    assert {k: v.shape for k, v in heads.items()} == {"head0/W": (5, 30), "head0/b": (5,),
                                                      "head1/W": (5, 30), "head1/b": (5,)}


CONFIG = """
name = "local"
seed = 2

[data]
name = "tiny"
path = "{data}"

[network]
hidden = [24, 16]
node = "{node}"

[rule]
name = "{rule}"
sigma = {sigma}
local_losses = true

[optimizer]
name = "adam"
lr = 3e-3

[train]
epochs = 4
batch_size = 20
diagnostics_every = 0
"""


def _config(tmp_path, rule="danp", node="tanh", sigma=1e-3):
    data = three_class_npz(tmp_path / "tiny.npz", 600, 200)
    p = tmp_path / f"{rule}-{node}.toml"
    p.write_text(CONFIG.format(data=data, rule=rule, node=node, sigma=sigma))
    return load_config(p)


def test_a_run_checkpoints_its_heads_and_resumes_bit_for_bit(tmp_path):
    cfg = _config(tmp_path)
    full = run(cfg, tmp_path / "full.h5", progress=False)
    assert full.test_accuracy > 0.8
    part = run(cfg, tmp_path / "part.h5", progress=False, stop_after_steps=47)
    resumed = resume(part.path, progress=False)
    a, b = read_trajectory(full.path), read_trajectory(resumed.path)
    assert "params/head1/W" in a.snapshots
    for k in a.snapshots:
        np.testing.assert_array_equal(a.snapshots[k], b.snapshots[k], err_msg=k)
    np.testing.assert_array_equal(a.steps["loss"], b.steps["loss"])


def test_heads_do_not_change_the_networks_initial_weights(tmp_path):
    from npsim.experiment.assemble import build

    cfg = _config(tmp_path)
    with_heads = build(cfg).initial_state()[0]
    without = build(cfg.model_copy(update={"rule": cfg.rule.model_copy(update={"local_losses": False})}))
    bare = without.initial_state()[0]
    assert set(with_heads) - set(bare) == {"head0/W", "head0/b", "head1/W", "head1/b"}
    for k, v in bare.items():
        np.testing.assert_array_equal(v, with_heads[k], err_msg=k)


def test_binary_units_learn_with_local_losses(tmp_path):
    """Heaviside units have no derivative; with local losses the hidden layers still learn: the run
    beats its control, in which they stay frozen at their initial weights and only the read-out learns."""
    cfg = _config(tmp_path, node="heaviside", sigma=0.5)
    learned = run(cfg, tmp_path / "bin.h5", progress=False).test_accuracy
    frozen = cfg.model_copy(update={"train": cfg.train.model_copy(update={"freeze": [0, 1]})})
    control = run(frozen, tmp_path / "frozen.h5", progress=False).test_accuracy
    assert learned > control + 0.1, (learned, control)


@pytest.mark.parametrize("rule", ["bp", "wp", "dwp"])
def test_rules_without_local_losses_refuse_the_key(tmp_path, rule):
    from npsim.experiment.assemble import build

    with pytest.raises((ConfigError, IncompatibleSettings), match="no block-local losses"):
        build(_config(tmp_path, rule=rule))
