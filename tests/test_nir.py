"""NIR export and import: npsim.experiment.nir, ``npsim export`` and ``network.from_nir``.

The snnTorch tests (skipped without snntorch, nirtorch and torch) compare npsim
with snnTorch on the same inputs, in both directions. snnTorch's NIR importer
steps a LIF node by forward Euler at dt = 1e-4 s: v <- (1 - dt/tau) v + (dt/tau)
r I. npsim integrates the same equation exactly per step: v <- a v + (1 - a) r I,
a = exp(-dt/tau). Euler is therefore npsim's step with the time constant
tau_E = -dt / ln(1 - dt/tau) (= tau - dt/2 - dt²/(12 tau) - ...), the same fixed
point and the same gain, so

* npsim run with tau_E gives snnTorch's spikes step for step (asserted exactly),
  and outputs equal to float32 rounding;
* npsim run with tau itself differs by the integration scheme alone: under the
  constant current u of the first layer both are periodic, the exact step fires
  every n = ceil(ln(1 - θ/u) / ln a) steps and Euler every n_E = floor(ln(1 - θ/u)
  / ln(1 - dt/tau)) + 1 steps, so their spike counts over T steps are exactly
  floor(T/n) and floor(T/n_E) (asserted); beyond it the spike trains differ by
  as much as those differences propagate, and the output difference is
  exactly W_out (rate_npsim - rate_snnTorch) (asserted).
"""

from __future__ import annotations

import contextlib
import io
import math
import sys

import numpy as np
import pytest

from npsim.cli import main
from npsim.errors import ConfigError, IncompatibleSettings, UsageError
from npsim.model.layers import Conv2D, Dense
from npsim.model.losses import make_loss
from npsim.model.network import Network, param_key
from npsim.model.noise import GaussianNoise
from npsim.model.nodes import Heaviside, Linear, Quantizer, StochasticBinary, Tanh
from npsim.model.spiking import LIF, LeakyIntegrator, Monitor, Simulation

from conftest import three_class_npz

DT = 0.1  # ms: the step snnTorch's NIR importer uses (1e-4 s)
T = 100


@pytest.fixture
def nir():
    return pytest.importorskip("nir")


def _lif_net(tau1=5.0, tau2=5.0, *, decorrelate=True, steps=T, dt=DT, out=None):
    layers = [Dense(12, 20, LIF(tau=tau1, threshold=1.0), decorrelate=decorrelate),
              Dense(20, 12, LIF(tau=tau2, threshold=0.5)),
              Dense(12, 3, out if out is not None else Linear())]
    return Network(layers, make_loss("mse"), simulation=Simulation(steps=steps, dt=dt))


def _params(net, seed=0, gains=(10.0, 60.0, 1.0)):
    rng = np.random.default_rng(seed)
    p = {}
    for i, layer in enumerate(net.layers):
        shapes = layer.param_shapes()
        p[param_key(i, "W")] = rng.normal(0, gains[min(i, len(gains) - 1)] / math.sqrt(layer.fan_in), shapes["W"])
        p[param_key(i, "b")] = rng.normal(0, 0.5, shapes["b"])
        if layer.decorrelate:
            p[param_key(i, "R")] = np.eye(shapes["R"][0]) + 0.1 * rng.normal(size=shapes["R"])
    return p


def _forward(net, params, x, be):
    temporal = tuple(i for i, layer in enumerate(net.layers) if layer.node.temporal)
    tr = net.forward(params, x, np.zeros((x.shape[0], net.sizes[-1])), rng=be.stream(0),
                     monitor=Monitor(layers=temporal) if temporal else None)
    spikes = {i: tr.records[i]["spikes"] for i in temporal} if temporal else {}
    return spikes, tr.post[-1]


def _with_taus(net, taus):
    """``net`` with the LIF time constants replaced, layer by layer."""
    layers, it = [], iter(taus)
    for layer in net.layers:
        layers.append(layer.replace(node=layer.node.replace(tau=next(it))) if isinstance(layer.node, LIF) else layer)
    return Network(layers, net.loss, simulation=net.simulation)


def _one_line(exc) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


# --- npsim -> NIR -> npsim ------------------------------------------------------------


def test_spiking_network_round_trips_through_a_nir_file(tmp_path, nir, be64):
    from npsim.experiment.nir import network_from_nir, network_to_nir, write_nir

    net = _lif_net()
    params = _params(net)
    path = write_nir(network_to_nir(net, params, metadata={"note": "test"}), tmp_path / "net.nir")
    g = nir.read(path)  # nir's own reader, with its type check, accepts the file
    g.infer_types()
    g.check_types()
    assert [type(g.nodes[k]).__name__ for k in ("input", "layer0_affine", "layer0_lif", "layer1_affine",
                                                "layer1_lif", "layer2_affine", "output")] == [
        "Input", "Affine", "LIF", "Affine", "LIF", "Affine", "Output"]
    lif = g.nodes["layer0_lif"]
    np.testing.assert_allclose(lif.tau, 5e-3)  # ms -> s
    assert np.all(lif.r == 1) and np.all(lif.v_leak == 0) and np.all(lif.v_reset == 0)
    np.testing.assert_array_equal(g.nodes["layer1_lif"].v_threshold, 0.5)
    np.testing.assert_allclose(g.nodes["layer0_affine"].weight, params["layer0/W"] @ params["layer0/R"])  # R folded
    md = g.metadata
    assert md["dt"] == pytest.approx(1e-4) and int(md["steps"]) == T and md["duration"] == pytest.approx(1e-2)
    assert md["input_encoding"] == "current" and md["time_unit"] == "s" and md["note"] == "test"
    assert "averaged over the steps" in md["readout"] and "exp(-dt/tau)" in md["integration"]
    assert g.nodes["layer1_lif"].metadata["npsim_readout"] == "rate"

    imp = network_from_nir(path)
    assert [layer.node for layer in imp.layers] == [layer.node for layer in net.layers]
    assert imp.simulation == net.simulation  # recorded in the metadata
    back = Network(imp.layers, make_loss("mse"), simulation=imp.simulation)
    x = np.random.default_rng(5).uniform(0, 1, (8, 12))
    s0, o0 = _forward(net, params, x, be64)
    s1, o1 = _forward(back, imp.params, x, be64)
    for i in s0:
        np.testing.assert_array_equal(s0[i], s1[i])
    np.testing.assert_allclose(o1, o0, rtol=0, atol=1e-12)
    assert sum(s.sum() for s in s0.values()) > 500  # the layers do fire


def test_li_readout_and_count_readouts_are_recorded(tmp_path, nir):
    from npsim.experiment.nir import network_from_nir, network_to_nir, write_nir

    net = Network([Dense(4, 6, LIF(tau=3.0, readout="count")), Dense(6, 2, LeakyIntegrator(tau=4.0, readout="final"))],
                  make_loss("mse"), simulation=Simulation(steps=10, dt=0.5, encoding="poisson", max_rate=100.0))
    g = nir.read(write_nir(network_to_nir(net, _params(net)), tmp_path / "li.nir"))
    assert isinstance(g.nodes["layer1_li"], nir.LI)
    np.testing.assert_allclose(g.nodes["layer1_li"].tau, 4e-3)
    assert "after the last step" in g.metadata["readout"]
    assert g.metadata["input_encoding"] == "poisson" and g.metadata["max_rate"] == 100.0
    assert "probability clip(x, 0, 1) * max_rate * dt" in g.metadata["input"]
    imp = network_from_nir(g)
    assert [layer.node for layer in imp.layers] == [layer.node for layer in net.layers]
    assert imp.simulation == net.simulation


def _conv_net():
    conv = Conv2D(in_shape=(2, 8, 8), channels=3, kernel=3, padding=1, stride=1, pool=2, pooling="avg",
                  node=Heaviside(threshold=0.1), decorrelate=True)
    return Network([conv, Dense(conv.n_out, 10, Heaviside(threshold=0.0), decorrelate=True), Dense(10, 3, Linear())],
                   make_loss("cross_entropy"))


def test_conv_network_exports_with_the_patch_decorrelation_folded_in(tmp_path, nir, be64):
    from npsim.experiment.nir import network_from_nir, network_to_nir, write_nir

    net = _conv_net()
    params = _params(net, gains=(1.0,))
    path = write_nir(network_to_nir(net, params), tmp_path / "conv.nir")
    g = nir.read(path)
    order = ["input", "layer0_conv", "layer0_threshold", "layer0_pool", "layer1_flatten", "layer1_affine",
             "layer1_threshold", "layer2_affine", "output"]
    assert [e for e in g.edges] == list(zip(order, order[1:]))
    conv = g.nodes["layer0_conv"]
    assert conv.weight.shape == (3, 2, 3, 3) and tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (1, 1)
    np.testing.assert_allclose(conv.weight.reshape(3, -1), params["layer0/W"] @ params["layer0/R"])
    assert list(g.nodes["layer0_threshold"].threshold.shape) == [3, 8, 8]
    assert list(g.nodes["layer0_pool"].kernel_size) == [2, 2] and list(g.output_type["output"]) == [3]
    assert g.metadata["simulation"].startswith("static")
    imp = network_from_nir(path)
    assert [layer.describe() for layer in imp.layers] == [layer.replace(decorrelate=False).describe()
                                                          for layer in net.layers]
    x = np.random.default_rng(1).normal(size=(16, 128))
    _, o0 = _forward(net, params, x, be64)
    _, o1 = _forward(Network(imp.layers, net.loss), imp.params, x, be64)
    np.testing.assert_allclose(o1, o0, rtol=0, atol=1e-12)


def test_conv_network_runs_the_same_in_torch(nir, be64):
    torch = pytest.importorskip("torch")
    nirtorch = pytest.importorskip("nirtorch")
    from npsim.experiment.nir import network_to_nir

    net = _conv_net()
    params = _params(net, gains=(1.0,))
    g = network_to_nir(net, params)

    class Step(torch.nn.Module):
        def __init__(self, threshold):
            super().__init__()
            self.register_buffer("threshold", torch.as_tensor(threshold, dtype=torch.float64))

        def forward(self, v):
            return (v > self.threshold).to(v.dtype)

    def affine(n):
        m = torch.nn.Linear(n.weight.shape[1], n.weight.shape[0]).double()
        m.weight.data, m.bias.data = torch.from_numpy(n.weight), torch.from_numpy(n.bias)
        return m

    node_map = {nir.Affine: affine, nir.Threshold: lambda n: Step(n.threshold),
                nir.Flatten: lambda n: torch.nn.Flatten(start_dim=n.start_dim + 1)}  # NIR shapes have no batch axis
    module = nirtorch.nir_to_torch(g, node_map, dtype=torch.float64).double()
    x = np.random.default_rng(1).normal(size=(16, 128))
    with torch.no_grad():
        out, _ = module(torch.from_numpy(x.reshape(16, 2, 8, 8)))
    _, ref = _forward(net, params, x, be64)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-12)


# --- what NIR cannot express ------------------------------------------------------------


def _dense(node, **kw):
    return Network([Dense(4, 5, node, **kw), Dense(5, 2, Linear())], make_loss("mse"))


REFUSED = [
    (lambda: _dense(Tanh()), "layer 0 (Dense, node model 'tanh'): NIR has no node for 'tanh'"),
    (lambda: _dense(StochasticBinary()), "NIR has no node for 'stochastic_binary'"),
    (lambda: _dense(Quantizer(levels=3)), "NIR has no node for 'quantize'"),
    (lambda: Network([Conv2D(in_shape=(1, 6, 6), channels=2, kernel=3, pool=2, node=Linear()), Dense(8, 2, Linear())],
                     make_loss("mse")), "layer 0 (Conv2D, node model 'linear'): max pooling has no NIR node"),
    (lambda: _dense(LIF(reset="subtract")), "reset = 'subtract' cannot be expressed in NIR"),
    (lambda: _dense(LIF(refractory=2.0)), "refractory = 2 ms cannot be expressed in NIR"),
    (lambda: _dense(Heaviside(), noise=GaussianNoise(std=0.1)), "layer 0 (Dense, node model 'heaviside'): intrinsic "
                                                                "noise (gaussian_noise("),
    (lambda: _dense(LIF(membrane_noise=0.2)), "intrinsic noise (membrane_noise = 0.2) has no NIR node; pass "
                                              "--drop-noise"),
    (lambda: Network([Dense(4, 5, LIF()), Dense(5, 3, Heaviside()), Dense(3, 2, Linear())], make_loss("mse")),
     "layer 1 (Dense, node model 'heaviside'): it reads the time-averaged output of the spiking layers"),
    (lambda: Network([Dense(4, 5, LeakyIntegrator()), Dense(5, 2, Linear())], make_loss("mse")),
     "layer 0 (Dense, node model 'li'): an 'li' layer passes no spikes on"),
]


@pytest.mark.parametrize("build, message", REFUSED, ids=range(len(REFUSED)))
def test_what_nir_cannot_express_is_refused_naming_the_layer(nir, build, message):
    from npsim.experiment.nir import network_to_nir

    net = build()
    with pytest.raises(IncompatibleSettings) as e:
        network_to_nir(net, _params(net))
    assert message in _one_line(e.value)


def test_drop_noise_exports_the_noiseless_network_and_records_the_noise(nir):
    from npsim.experiment.nir import network_to_nir

    net = Network([Dense(4, 5, LIF(membrane_noise=0.2)), Dense(5, 2, Linear())], make_loss("mse"))
    g = network_to_nir(net, _params(net), drop_noise=True)
    assert g.metadata["dropped_noise"] == {"layer0": "membrane_noise = 0.2"}
    assert isinstance(g.nodes["layer0_lif"], nir.LIF)


def test_graphs_npsim_cannot_build_are_refused(tmp_path, nir):
    from npsim.experiment.nir import network_from_nir, read_nir

    n = 3
    lif = dict(tau=np.full(n, 1e-2), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n))
    aff = lambda: nir.Affine(weight=np.ones((n, n)), bias=np.zeros(n))  # noqa: E731

    def graph(*nodes, edges=None):
        return nir.NIRGraph.from_list(*nodes) if edges is None else nir.NIRGraph(
            nodes=dict(nodes), edges=edges, type_check=False)

    cases = [
        (graph(aff(), nir.CubaLIF(tau_syn=np.full(n, 1e-3), tau_mem=np.full(n, 1e-2), r=np.ones(n),
                                  v_leak=np.zeros(n), v_threshold=np.ones(n))), "node 'cubalif' (CubaLIF): has no npsim"),
        (graph(aff(), nir.IF(r=np.ones(n), v_threshold=np.ones(n))), "(IF): has no npsim equivalent"),
        (graph(aff(), nir.LIF(**(lif | {"tau": np.array([1e-2, 2e-2, 1e-2])}))), "tau differs between units"),
        (graph(aff(), nir.LIF(**lif, v_reset=np.full(n, 0.3))), "v_reset = 0.3; npsim's LIF resets to 0"),
        (graph(nir.LIF(**lif)), "node 'lif' (LIF): follows no Affine, Linear or Conv2d node"),
        (graph(("input", nir.Input(np.array([n]))), ("a", aff()), ("b", aff()), ("output", nir.Output(np.array([n]))),
               edges=[("input", "a"), ("input", "b"), ("a", "output"), ("b", "output")]), "without branches"),
        (graph(("input", nir.Input(np.array([n]))), ("a", aff()), ("l", nir.LIF(**lif)),
               ("output", nir.Output(np.array([n]))), edges=[("input", "a"), ("a", "l"), ("l", "a"), ("l", "output")]),
         "has 2 inputs"),
    ]
    for g, message in cases:
        with pytest.raises(IncompatibleSettings) as e:
            network_from_nir(g)
        assert message in _one_line(e.value), str(e.value)
    (tmp_path / "junk.nir").write_bytes(b"not hdf5")
    with pytest.raises(ConfigError, match="not a readable NIR file"):
        read_nir(tmp_path / "junk.nir")
    with pytest.raises(ConfigError, match="NIR file not found"):
        network_from_nir(tmp_path / "missing.nir")


def test_nir_parameters_npsim_lacks_are_folded_exactly(nir, be64):
    """r, v_leak and per-unit thresholds of a NIR LIF and a per-unit Threshold move into W and b."""
    from npsim.experiment.nir import network_from_nir

    rng = np.random.default_rng(3)
    W1, b1, W2, b2 = rng.normal(size=(5, 4)) * 3, rng.normal(size=5), rng.normal(size=(2, 5)), rng.normal(size=2)
    th = np.array([0.5, 1.0, 2.0, 1.0, 0.8])
    r, v_leak = np.array([1.0, 2.0, 0.5, 1.5, 3.0]), np.array([0.0, 0.2, -0.1, 0.3, 0.0])
    g = nir.NIRGraph.from_list(nir.Affine(weight=W1, bias=b1),
                               nir.LIF(tau=np.full(5, 4e-3), r=r, v_leak=v_leak, v_threshold=th),
                               nir.Affine(weight=W2, bias=b2))
    imp = network_from_nir(g)
    lif = imp.layers[0].node
    assert lif == LIF(tau=4.0, threshold=1.0)
    c = 1.0 / th  # v' = v / θ_i: every unit's threshold becomes 1
    np.testing.assert_allclose(imp.params["layer0/W"], (c * r)[:, None] * W1)
    np.testing.assert_allclose(imp.params["layer0/b"], c * (r * b1 + v_leak))
    g = nir.NIRGraph.from_list(nir.Affine(weight=W1, bias=b1), nir.Threshold(threshold=th), nir.Affine(weight=W2,
                                                                                                        bias=b2))
    imp = network_from_nir(g)
    assert imp.layers[0].node == Heaviside(threshold=0.0)
    x = rng.normal(size=(50, 4))
    _, out = _forward(Network(imp.layers, make_loss("mse")), imp.params, x, be64)
    np.testing.assert_allclose(out, (x @ W1.T + b1 > th) @ W2.T + b2, atol=1e-12)


# --- npsim <-> snnTorch -------------------------------------------------------------------


def _snntorch():
    pytest.importorskip("torch")
    pytest.importorskip("nirtorch")
    return pytest.importorskip("snntorch")


def _run_snntorch(module, x, steps):
    """Step an snnTorch module ``steps`` times on the constant input ``x``: ({Leaky name: spikes (B, T, n)},
    output averaged over the steps)."""
    import snntorch as snn
    import torch

    leaky = [(n, m) for n, m in module.named_modules() if isinstance(m, snn.Leaky)]
    rec = {n: [] for n, _ in leaky}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: rec[n].append(o.detach().numpy().copy()))
             for n, m in leaky]
    for _, m in leaky:
        m.mem = torch.zeros(0)  # a fresh state for this batch
    xt = torch.tensor(x, dtype=torch.float32)
    outs = []
    try:
        with torch.no_grad():
            for _ in range(steps):
                o = module(xt)
                outs.append((o[0] if isinstance(o, tuple) else o).numpy().astype(np.float64))
    finally:
        for h in hooks:
            h.remove()
    return {n: np.stack(v, axis=1) for n, v in rec.items()}, np.mean(outs, axis=0)


def _predicted_counts(u, theta, a, steps, *, strict):
    """Spike counts of reset-to-zero units under constant current u (threshold units) stepped by v <- a v + (1 - a) u:
    periodic, a spike every n steps, n the first k with u (1 - a^k) >= θ (> θ if strict)."""
    u = np.asarray(u, dtype=np.float64)
    out = np.zeros(u.shape, dtype=np.int64)
    fire = u > theta
    k = np.log1p(-theta / u[fire]) / math.log(a)
    n = np.floor(k) + 1 if strict else np.ceil(k)
    out[fire] = steps // n.astype(np.int64)
    return out


def _report(what, **values):
    print(f"\n{what}: " + ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}"
                                  for k, v in values.items()))


def test_npsim_network_exported_to_snntorch_gives_the_same_spikes_and_outputs(tmp_path, nir, be64):
    _snntorch()
    from snntorch.import_nir import import_from_nir

    from npsim.experiment.nir import network_to_nir, write_nir

    net = _lif_net(5.0, 5.0)
    params = _params(net)
    path = write_nir(network_to_nir(net, params), tmp_path / "net.nir")
    with contextlib.redirect_stdout(io.StringIO()):  # snnTorch prints its weight rescaling
        module = import_from_nir(nir.read(path))
    x = np.random.default_rng(7).uniform(0, 1, (16, 12))
    snn_spikes, snn_out = _run_snntorch(module, x, T)
    names = ["layer0_lif", "layer1_lif"]
    betas = [float(dict(module.named_modules())[n].beta.reshape(-1)[0]) for n in names]
    assert betas == pytest.approx([1 - 1e-4 / 5e-3] * 2)  # forward Euler at snnTorch's dt = 0.1 ms

    # the same dynamics: npsim's exact step with tau_E is snnTorch's Euler step with tau
    same, out_same = _forward(_with_taus(net, [-DT / math.log(b) for b in betas]), params, x, be64)
    for i, n in enumerate(names):
        np.testing.assert_array_equal(same[i], snn_spikes[n])  # step for step
    d_same = float(np.abs(out_same - snn_out).max())
    assert d_same < 1e-6  # snnTorch's float32 rounding of per-step outputs of order 1

    # npsim's own scheme with tau: the first layer's counts are each scheme's closed form, the rest follows
    own, out_own = _forward(net, params, x, be64)
    u = x @ (params["layer0/W"] @ params["layer0/R"]).T + params["layer0/b"]
    a = math.exp(-DT / 5.0)
    np.testing.assert_array_equal(own[0].sum(axis=1), _predicted_counts(u, 1.0, a, T, strict=False))
    np.testing.assert_array_equal(snn_spikes[names[0]].sum(axis=1), _predicted_counts(u, 1.0, betas[0], T, strict=True))
    rate_diff = (own[1].sum(axis=1) - snn_spikes[names[1]].sum(axis=1)) / T
    np.testing.assert_allclose(out_own - snn_out, rate_diff @ params["layer2/W"].T, atol=1e-5)
    dc = [int(np.abs(own[i].sum(axis=1).astype(int) - snn_spikes[n].sum(axis=1)).max()) for i, n in enumerate(names)]
    _report("npsim -> NIR -> snnTorch", same_dynamics_max_output_diff=d_same,
            own_scheme_max_count_diff_per_layer=dc, own_scheme_max_output_diff=float(np.abs(out_own - snn_out).max()),
            spikes_per_unit=float(np.mean([s.sum(axis=1).mean() for s in own.values()])))


@pytest.mark.filterwarnings("ignore:nirtorch.extract_nir_graph is being deprecated:DeprecationWarning")
def test_snntorch_network_exported_to_nir_runs_the_same_in_npsim(tmp_path, nir, be64):
    _snntorch()
    import snntorch as snn
    import torch
    from snntorch.export_nir import export_to_nir

    from npsim.experiment.nir import network_from_nir

    torch.manual_seed(0)

    def leaky(n, beta, threshold):  # per-unit tensors: snnTorch exports scalars as 0-d arrays NIR cannot type
        return snn.Leaky(beta=torch.full((n,), beta), threshold=torch.full((n,), threshold), init_hidden=True,
                         reset_mechanism="zero", reset_delay=False)

    model = torch.nn.Sequential(torch.nn.Linear(12, 20), leaky(20, 0.95, 1.0), torch.nn.Linear(20, 12),
                                leaky(12, 0.9, 0.5), torch.nn.Linear(12, 3))
    with torch.no_grad():
        model[0].weight.mul_(0.3)  # about 5 spikes per unit in 100 steps
        model[0].bias.mul_(0.3)
    with contextlib.redirect_stdout(io.StringIO()):
        graph = export_to_nir(model, torch.zeros(1, 12), ignore_dims=[0])
    nir.write(tmp_path / "snn.nir", graph)
    imp = network_from_nir(tmp_path / "snn.nir")
    assert [type(layer.node) for layer in imp.layers] == [LIF, LIF, Linear]
    betas = [float(model[1].beta[0]), float(model[3].beta[0])]
    assert [layer.node.tau for layer in imp.layers[:2]] == pytest.approx([DT / (1 - b) for b in betas])
    assert [layer.node.threshold for layer in imp.layers[:2]] == pytest.approx([1.0, 0.5])
    x = np.random.default_rng(8).uniform(0, 1, (16, 12))
    snn_spikes, snn_out = _run_snntorch(model, x, T)
    names = ["1", "3"]
    net = Network(imp.layers, make_loss("mse"), simulation=Simulation(steps=T, dt=DT))

    same, out_same = _forward(_with_taus(net, [-DT / math.log(b) for b in betas]), imp.params, x, be64)
    for i, n in enumerate(names):
        np.testing.assert_array_equal(same[i], snn_spikes[n])
    d_same = float(np.abs(out_same - snn_out).max())
    assert d_same < 1e-6

    own, out_own = _forward(net, imp.params, x, be64)
    u = x @ imp.params["layer0/W"].T + imp.params["layer0/b"]  # r = tau/dt folded in: npsim's threshold units
    np.testing.assert_array_equal(own[0].sum(axis=1),
                                  _predicted_counts(u, 1.0, math.exp(-DT / imp.layers[0].node.tau), T, strict=False))
    np.testing.assert_array_equal(snn_spikes["1"].sum(axis=1), _predicted_counts(u, 1.0, betas[0], T, strict=True))
    rate_diff = (own[1].sum(axis=1) - snn_spikes["3"].sum(axis=1)) / T
    np.testing.assert_allclose(out_own - snn_out, rate_diff @ imp.params["layer2/W"].T, atol=1e-5)
    dc = [int(np.abs(own[i].sum(axis=1).astype(int) - snn_spikes[n].sum(axis=1)).max()) for i, n in enumerate(names)]
    _report("snnTorch -> NIR -> npsim", same_dynamics_max_output_diff=d_same,
            own_scheme_max_count_diff_per_layer=dc, own_scheme_max_output_diff=float(np.abs(out_own - snn_out).max()),
            spikes_per_unit=float(np.mean([s.sum(axis=1).mean() for s in own.values()])))
    assert sum(s.sum() for s in own.values()) > 500


# --- npsim export and network.from_nir ------------------------------------------------------

RUN = """
name = "tiny-nir"
seed = 1

[data]
name = "tiny"
path = "{data}"

[network]
{network}

[network.simulation]
steps = 12
dt = 0.5

[rule]
name = "danp"
sigma = 0.05

[optimizer]
lr = 1e-2

[train]
epochs = 1
batch_size = 50
diagnostics_every = 0
"""

SPIKING = 'hidden = [20, 12]\nnode = "lif"\nnode_params = { tau = 4.0, threshold = 0.3 }'


def _config(tmp_path, name, network):
    data = three_class_npz(tmp_path / "tiny.npz", 200, 60)
    p = tmp_path / f"{name}.toml"
    p.write_text(RUN.format(data=data, network=network))
    return p


def test_export_command_writes_the_trained_network(tmp_path, nir, capsys):
    from npsim.experiment.config import load_config
    from npsim.experiment.loop import run
    from npsim.io.trajectory import read_checkpoint

    cfg = load_config(_config(tmp_path, "snn", SPIKING))
    run(cfg, tmp_path / "run.h5", progress=False)
    out = tmp_path / "net.nir"
    assert main(["export", str(tmp_path / "run.h5"), "--nir", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    g = nir.read(out)
    arrays, _ = read_checkpoint(tmp_path / "run.h5")
    np.testing.assert_allclose(g.nodes["layer0_affine"].weight,
                               arrays["params/layer0/W"] @ arrays["params/layer0/R"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(g.nodes["layer2_affine"].bias, arrays["params/layer2/b"])
    assert g.metadata["run_name"] == "tiny-nir" and g.metadata["weights"].startswith("checkpoint after update 4")
    assert g.metadata["dt"] == pytest.approx(5e-4)

    assert main(["export", str(tmp_path / "run.h5"), "--nir", str(out)]) == 2  # exists
    err = capsys.readouterr().err
    assert err.startswith("npsim: error: ") and "pass --overwrite" in err and err.count("\n") == 1
    assert main(["export", str(tmp_path / "run.h5"), "--nir", str(out), "--overwrite", "--epoch", "1"]) == 0
    assert nir.read(out).metadata["weights"] == "snapshot after epoch 1"
    assert main(["export", str(tmp_path / "run.h5"), "--nir", str(out), "--overwrite", "--epoch", "7"]) == 2
    assert "no weight snapshot after epoch 7 (snapshots after epochs: 1)" in capsys.readouterr().err


def test_export_command_refuses_what_nir_cannot_express(tmp_path, nir, capsys):
    from npsim.experiment.config import load_config
    from npsim.experiment.loop import run

    cfg = load_config(_config(tmp_path, "mlp", 'hidden = [8]\nnode = "tanh"'))
    run(cfg, tmp_path / "mlp.h5", progress=False)
    assert main(["export", str(tmp_path / "mlp.h5"), "--nir", str(tmp_path / "mlp.nir")]) == 2
    err = capsys.readouterr().err
    assert "layer 0 (Dense, node model 'tanh'): NIR has no node for 'tanh'" in err and err.count("\n") == 1
    assert not (tmp_path / "mlp.nir").exists()


def test_from_nir_builds_the_network_and_starts_from_its_weights(tmp_path, nir, capsys):
    from npsim.experiment.assemble import build
    from npsim.experiment.config import load_config, parse_toml
    from npsim.experiment.loop import run
    from npsim.experiment.nir import network_from_nir, network_to_nir, write_nir

    net = _lif_net(4.0, 4.0, decorrelate=False, steps=12, dt=0.5)
    params = _params(net, seed=2, gains=(2.0, 3.0, 1.0))
    (tmp_path / "graphs").mkdir()
    write_nir(network_to_nir(net, params), tmp_path / "graphs" / "net.nir")
    p = _config(tmp_path, "fromnir", 'from_nir = "graphs/net.nir"')
    cfg = load_config(p)
    assert cfg.network.from_nir == str((tmp_path / "graphs" / "net.nir").resolve())  # relative to the config file
    ex = build(cfg)
    assert [layer.node for layer in ex.net.layers] == [layer.node for layer in net.layers]
    assert all(layer.decorrelate for layer in ex.net.layers)  # danp: R learned on top, from R = I
    init = ex.net.init(ex.backend.stream(0), ex.backend)
    for k, v in params.items():
        np.testing.assert_allclose(init[k], v, rtol=1e-6)  # float32
    np.testing.assert_array_equal(init["layer1/R"], np.eye(20))
    assert ex.net.simulation == net.simulation

    res = run(cfg, tmp_path / "fromnir.h5", progress=False)
    assert res.status == "finished"
    stored = parse_toml(cfg.to_toml(), "stored")  # the stored config gives no layer keys of its own
    assert stored == cfg and "hidden" not in cfg.to_toml()
    assert main(["export", str(tmp_path / "fromnir.h5"), "--nir", str(tmp_path / "again.nir")]) == 0
    assert [layer.node for layer in network_from_nir(tmp_path / "again.nir").layers] == [layer.node for layer in
                                                                                          net.layers]

    p.write_text(p.read_text().replace('from_nir = "graphs/net.nir"', 'from_nir = "graphs/net.nir"\nhidden = [4]'))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "network.from_nir takes the layers, node models and initial weights from the NIR graph; remove " \
           "network.hidden" in _one_line(e.value)
    with pytest.raises(ConfigError, match="--set.*remove network.node"):
        cfg.with_overrides({"network.node": "tanh"})
    p.write_text(RUN.format(data=tmp_path / "tiny.npz", network='from_nir = "graphs/missing.nir"'))
    with pytest.raises(ConfigError, match=r"network.from_nir: .*missing.nir: NIR file not found"):
        build(load_config(p))
    write_nir(nir.NIRGraph.from_list(nir.Affine(weight=np.ones((3, 5)), bias=np.zeros(3))),
              tmp_path / "graphs" / "five.nir")
    p.write_text(RUN.format(data=tmp_path / "tiny.npz", network='from_nir = "graphs/five.nir"'))
    with pytest.raises(IncompatibleSettings, match="the graph takes 5 inputs but the data have 12 features"):
        build(load_config(p))


def test_a_missing_nir_package_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nir", None)  # import nir now raises ImportError
    from npsim.experiment.nir import require_nir

    with pytest.raises(UsageError, match=r'pip install "npsim\[nir\]"'):
        require_nir()
    assert main(["export", str(tmp_path / "run.h5"), "--nir", str(tmp_path / "x.nir")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npsim: error: NIR files need the Python package 'nir'") and err.count("\n") == 1
    assert 'pip install "npsim[nir]"' in err
