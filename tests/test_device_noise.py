"""Device-noise node models: telegraph, Bernoulli and replayed-trace activity noise, and their config."""

import h5py
import numpy as np
import pytest

from npsim.config import ConfigError, load_config, parse_toml
from npsim.losses import make_loss
from npsim.network import Dense, Network
from npsim.nodes import (
    ActivityNoise, BernoulliNoise, GaussianNoise, Linear, ReplayNoise, TelegraphNoise, make_node,
)
from npsim.rules import alignment, make_rule
from npsim.tasks import teacher_student
from npsim.train import build_network


def noise_of(node, a, rng):
    """The noise a node model adds to the activity ``a``."""
    return node.activity(a, rng) - a


# --- telegraph -----------------------------------------------------------------


@pytest.mark.parametrize("p_up,p_down", [(0.1, 0.3), (0.05, 0.05), (0.7, 0.6), (1.0, 0.5)])
def test_telegraph_stationary_mean_and_autocorrelation(be64, p_up, p_down):
    rows, units = 2000, 400
    node = TelegraphNoise(Linear(), p_up=p_up, p_down=p_down, amplitude=1.0)
    s = noise_of(node, np.zeros((rows, units)), be64.stream(0))
    assert set(np.unique(s)) <= {-1.0, 1.0}
    pi = p_up / (p_up + p_down)
    mean, var, rho = 2 * pi - 1, 1 - (2 * pi - 1) ** 2, 1 - p_up - p_down
    # units are independent chains: the spread of per-unit estimates gives the standard error
    per_unit_mean = s.mean(axis=0)
    se = per_unit_mean.std(ddof=1) / np.sqrt(units)
    assert abs(per_unit_mean.mean() - mean) < 5 * se, (per_unit_mean.mean(), mean, se)
    per_unit_rho = ((s[:-1] - mean) * (s[1:] - mean)).mean(axis=0) / var
    se = per_unit_rho.std(ddof=1) / np.sqrt(units)
    assert abs(per_unit_rho.mean() - rho) < 5 * se + 1e-12, (per_unit_rho.mean(), rho, se)
    # every pass starts from the stationary distribution
    first = s[0]
    assert abs(first.mean() - mean) < 5 * np.sqrt(var / units) + 1e-12


def test_telegraph_transition_probabilities(be64):
    node = TelegraphNoise(p_up=0.15, p_down=0.35, amplitude=1.0)
    s = node.states((3000, 300), be64.stream(1))
    prev, nxt = s[:-1], s[1:]
    for frm, to, p in ((False, True, 0.15), (True, False, 0.35)):
        n = (prev == frm).sum()
        est = ((prev == frm) & (nxt == to)).sum() / n
        assert abs(est - p) < 5 * np.sqrt(p * (1 - p) / n), (frm, est, p)


def test_telegraph_nonzero_mean_levels_and_read_noise(be64):
    p_up, p_down, amp, off = 0.2, 0.05, 0.3, -0.1
    node = make_node("tanh", noise={"kind": "telegraph", "p_up": p_up, "p_down": p_down, "amplitude": amp,
                                    "offset": off})
    assert isinstance(node, TelegraphNoise) and isinstance(node, ActivityNoise)
    assert node.noisy and node.differentiable and not node.stochastic
    a = np.full((1000, 300), 1.5)
    noise = noise_of(node, a, be64.stream(2))
    np.testing.assert_allclose(np.unique(noise), [off - amp, off + amp], rtol=1e-12)
    expected = off + amp * (p_up - p_down) / (p_up + p_down)
    per_unit = noise.mean(axis=0)
    assert abs(per_unit.mean() - expected) < 5 * per_unit.std(ddof=1) / np.sqrt(300)
    # read noise adds a Gaussian of std read_std on top of the two levels
    noisy = TelegraphNoise(Linear(), p_up=p_up, p_down=p_down, amplitude=amp, offset=off, read_std=0.02)
    n2 = noise_of(noisy, a, be64.stream(2))
    level = np.where(n2 > off, off + amp, off - amp)
    assert abs((n2 - level).std() - 0.02) < 0.001 and abs((n2 - level).mean()) < 0.001
    # the forward is the wrapped model's, at the noisy activity
    np.testing.assert_allclose(node(a + noise), np.tanh(a + noise))


def test_telegraph_seeded_and_passes_independent(be64):
    node = TelegraphNoise(p_up=0.01, p_down=0.01, amplitude=1.0)
    a = np.zeros((50, 200))
    np.testing.assert_array_equal(node.activity(a, be64.stream(5)), node.activity(a, be64.stream(5)))
    rng = be64.stream(5)
    first, second = node.activity(a, rng), node.activity(a, rng)
    assert not np.array_equal(first, second)  # each pass draws afresh from the stationary distribution


# --- Bernoulli -----------------------------------------------------------------


def test_bernoulli_noise_values_and_mean(be64):
    p, amp = 0.3, 0.25
    node = make_node("relu", noise={"kind": "bernoulli", "p": p, "amplitude": amp})
    assert isinstance(node, BernoulliNoise) and node.noisy
    a = np.full((400, 500), 0.5)
    noise = noise_of(node, a, be64.stream(3))
    np.testing.assert_allclose(np.unique(noise), [0.0, amp], atol=1e-15)
    n = noise.size
    assert abs(noise.mean() - p * amp) < 5 * amp * np.sqrt(p * (1 - p) / n)
    # fresh per sample: no correlation between successive rows
    z = noise / amp - p
    assert abs((z[:-1] * z[1:]).mean() / (p * (1 - p))) < 5 / np.sqrt(n)


# --- replay --------------------------------------------------------------------


def _trace_file(tmp_path, values, name="trace.npy"):
    path = tmp_path / name
    np.save(path, np.asarray(values))
    return path


def test_replay_reproduces_the_trace_from_the_drawn_offset(be64, tmp_path):
    trace = np.arange(7) * 1.5 - 2.0
    path = _trace_file(tmp_path, trace)
    node = make_node("linear", noise={"kind": "replay", "path": str(path), "scale": 2.0})
    assert isinstance(node, ReplayNoise) and node.noisy
    a = be64.stream(9).normal((4, 5))
    noise = noise_of(node, a, be64.stream(3))
    offset = int(be64.stream(3).integers(0, 7))  # the stream's first draw is the pass's offset
    want = 2.0 * trace[(offset + np.arange(20)) % 7].reshape(4, 5)
    np.testing.assert_allclose(noise, want, rtol=1e-12, atol=1e-12)


def test_replay_hdf5_and_seeds(be64, tmp_path):
    trace = np.sin(np.arange(1000) * 0.37)
    path = tmp_path / "device.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("mtj/trace", data=trace.astype(np.float32))
    node = ReplayNoise(Linear(), path=path, dataset="mtj/trace")
    assert node.trace.shape == (1000,) and node.trace.dtype == np.float64
    a = np.zeros((3, 8))
    n0, n0b, n1 = (noise_of(node, a, be64.stream(s)) for s in (0, 0, 1))
    np.testing.assert_array_equal(n0, n0b)
    offsets = []
    for n in (n0, n1):
        off = [o for o in range(1000) if np.allclose(n.ravel(), trace.astype(np.float32)[(o + np.arange(24)) % 1000])]
        assert len(off) == 1
        offsets.append(off[0])
    assert offsets[0] != offsets[1]


def test_replay_dataclass_hashing_repr_and_describe(tmp_path):
    path = _trace_file(tmp_path, np.ones(5))
    one, two = (make_node("tanh", noise={"kind": "replay", "path": str(path)}) for _ in range(2))
    assert one == two and hash(one) == hash(two)
    assert "trace=" not in repr(one) and "array" not in repr(one)
    assert str(path) in one.describe() and "length=5" in one.describe()
    assert one != ReplayNoise(make_node("tanh"), path=str(path), scale=2.0)


@pytest.mark.parametrize("kind,params", [
    ("additive", {"std": 0.1}),
    ("multiplicative", {"std": 0.1}),
    ("telegraph", {"p_up": 0.3, "p_down": 0.9, "amplitude": 0.1, "read_std": 0.01}),
    ("bernoulli", {"p": 0.5, "amplitude": 0.1}),
    ("replay", {"scale": 0.5}),
])
def test_dtype_preserved(be32, tmp_path, kind, params):
    if kind == "replay":
        params = {**params, "path": str(_trace_file(tmp_path, np.linspace(-1, 1, 11)))}
    node = make_node("tanh", noise={"kind": kind, **params})
    for dt in (np.float32, np.float64):
        a = np.linspace(-1, 1, 60, dtype=dt).reshape(6, 10)
        out = node.activity(a, be32.stream(0))
        assert out.dtype == dt and out.shape == a.shape and not np.array_equal(out, a), kind
        assert node(out).dtype == dt


# --- errors --------------------------------------------------------------------


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def _h5(tmp_path, **datasets):
    p = tmp_path / "t.h5"
    with h5py.File(p, "w") as f:
        f.create_group("grp")
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
    return str(p)


@pytest.mark.parametrize("params,match", [
    ({"kind": "telegraph", "p_up": 1.5, "p_down": 0.1}, r"telegraph_noise: p_up must be in \[0, 1\]"),
    ({"kind": "telegraph", "p_up": 0.1, "p_down": -0.1}, "telegraph_noise: p_down must be in"),
    ({"kind": "telegraph", "p_up": 0.0, "p_down": 0.0}, r"telegraph_noise: p_up \+ p_down must be > 0"),
    ({"kind": "telegraph", "amplitude": float("inf")}, "telegraph_noise: amplitude must be a finite number"),
    ({"kind": "telegraph", "offset": "big"}, "telegraph_noise: offset must be a finite number"),
    ({"kind": "telegraph", "read_std": -0.1}, "telegraph_noise: read_std must be in"),
    ({"kind": "telegraph", "read_std": float("nan")}, "telegraph_noise: read_std must be a finite"),
    ({"kind": "bernoulli", "p": 2.0}, "bernoulli_noise: p must be in"),
    ({"kind": "bernoulli", "amplitude": float("nan")}, "bernoulli_noise: amplitude must be a finite"),
    ({"kind": "replay", "path": "x.npy", "scale": float("inf")}, "replay_noise: scale"),
    ({"kind": "replay"}, "replay_noise: path must name a trace file"),
    ({"kind": "pink"}, "unknown kind 'pink'; kinds: additive, multiplicative, telegraph, bernoulli, replay"),
    ({"kind": "telegraph", "std": 0.1}, "unknown parameter.*std; it takes kind, p_up, p_down, amplitude, offset"),
    ({"kind": "bernoulli", "p_up": 0.1}, "unknown parameter.*p_up; it takes kind, p, amplitude"),
    ({"kind": "additive", "amplitude": 0.1}, "unknown parameter.*amplitude; it takes kind, std"),
])
def test_bad_noise_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        make_node("tanh", noise=params)


def test_replay_file_errors(tmp_path):
    def replay(path, dataset=None):
        return ReplayNoise(Linear(), path=path, dataset=dataset)

    missing = str(tmp_path / "nope.npy")
    with pytest.raises(ValueError, match=f"trace file '{missing}' not found"):
        replay(missing)
    with pytest.raises(ValueError, match="unsupported file type '.csv'"):
        replay(_write(tmp_path, "t.csv", b"1,2,3"))
    bad = _write(tmp_path, "bad.npy", b"not an npy file")
    with pytest.raises(ValueError, match=f"'{bad}': cannot read"):
        replay(bad)
    bad = _write(tmp_path, "bad.h5", b"not an hdf5 file")
    with pytest.raises(ValueError, match=f"'{bad}' dataset 'x': cannot read"):
        replay(bad, "x")
    h5 = _h5(tmp_path, trace=np.ones(4), words=np.array([b"a", b"b"]), flat=np.ones((2, 2)),
             nan=np.array([1.0, np.nan]), empty=np.zeros(0))
    with pytest.raises(ValueError, match="dataset 'missing': no such dataset; datasets in the file: "):
        replay(h5, "missing")
    with pytest.raises(ValueError, match="dataset 'grp': no such dataset"):
        replay(h5, "grp")
    with pytest.raises(ValueError, match=f"trace '{h5}': an HDF5 trace needs a dataset name"):
        replay(h5)
    with pytest.raises(ValueError, match="dataset 'words': the trace must hold real numbers"):
        replay(h5, "words")
    with pytest.raises(ValueError, match="dataset 'flat': the trace must be 1-D"):
        replay(h5, "flat")
    with pytest.raises(ValueError, match=r"dataset 'nan': the trace holds non-finite values \(first at index 1\)"):
        replay(h5, "nan")
    with pytest.raises(ValueError, match="dataset 'empty': the trace is empty"):
        replay(h5, "empty")
    assert replay(h5, "trace").trace.tolist() == [1.0] * 4
    npy = str(_trace_file(tmp_path, np.ones(3)))
    with pytest.raises(ValueError, match="dataset applies only to HDF5"):
        replay(npy, "trace")
    for name, values, match in (("s.npy", np.array(["a", "b"]), "real numbers"),
                                ("e.npy", np.zeros(0), "empty"),
                                ("i.npy", np.array([0.0, np.inf]), "non-finite")):
        path = str(_trace_file(tmp_path, values, name))
        with pytest.raises(ValueError, match=f"'{path}': the trace .*{match}"):
            replay(path)


def test_noise_needs_a_stream():
    for node in (TelegraphNoise(), BernoulliNoise(), GaussianNoise()):
        with pytest.raises(ValueError, match=f"{node.name} node model needs a random stream"):
            node.activity(np.zeros((2, 2)))
    with pytest.raises(TypeError, match="inner must be a node model"):
        TelegraphNoise("tanh")


# --- config --------------------------------------------------------------------


def test_config_telegraph_parses_and_builds():
    cfg = parse_toml('[network]\nhidden = [4]\nnode = "tanh"\n[network.noise]\nkind = "telegraph"\n'
                     'p_up = 0.1\np_down = 0.2\namplitude = 0.05\nread_std = 0.01\n', "t.toml")
    nc = cfg.network.noise
    assert (nc.kind, nc.p_up, nc.p_down, nc.amplitude, nc.read_std, nc.std) == ("telegraph", 0.1, 0.2, 0.05, 0.01, None)
    net = build_network(cfg, 3, 2)
    node = net.layers[0].node
    assert node == TelegraphNoise(make_node("tanh"), p_up=0.1, p_down=0.2, amplitude=0.05, read_std=0.01)
    assert not net.layers[1].node.noisy  # injected rule: the output layer stays noiseless
    # the gaussian form keeps working, kind defaulting to additive
    cfg = parse_toml("[network]\nnoise = { std = 0.1 }\n", "t.toml")
    assert build_network(cfg, 3, 2).layers[0].node == GaussianNoise(make_node("leaky_relu"), std=0.1)


@pytest.mark.parametrize("table,match", [
    ('kind = "telegraph"\np_up = 0.1\np_down = 0.1\namplitude = 0.1\nstd = 0.1',
     r"key 'network.noise': noise kind 'telegraph' does not take std; it takes p_up, p_down"),
    ('kind = "bernoulli"\np = 0.1\namplitude = 0.1\npath = "t.npy"', "noise kind 'bernoulli' does not take path"),
    ('std = 0.1\np = 0.2', "noise kind 'additive' does not take p;"),
    ('kind = "telegraph"\np_up = 0.1\namplitude = 0.1', "noise kind 'telegraph' needs p_down"),
    ('kind = "telegraph"\np_up = 0.0\np_down = 0.0\namplitude = 0.1', r"p_up \+ p_down > 0"),
    ('kind = "telegraph"\np_up = 1.1\np_down = 0.1\namplitude = 0.1', "key 'network.noise.p_up'"),
    ('kind = "bernoulli"\np = 0.1\namplitude = inf', "key 'network.noise.amplitude'"),
    ('kind = "replay"', "noise kind 'replay' needs path"),
    ('kind = "brown"\nstd = 0.1', "key 'network.noise.kind'"),
    ('std = 0.1\nwidth = 2', "unknown key 'network.noise.width'"),
])
def test_config_noise_errors(table, match):
    with pytest.raises(ConfigError, match=match):
        parse_toml(f"[network.noise]\n{table}\n", "t.toml")


def test_config_replay_path_relative_to_config_file(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    (folder / "traces").mkdir(parents=True)
    trace = np.linspace(0, 1, 9)
    h5 = folder / "traces" / "mtj.h5"
    with h5py.File(h5, "w") as f:
        f["run1"] = trace
    (folder / "c.toml").write_text('[network]\nhidden = [4]\n[network.noise]\nkind = "replay"\n'
                                   'path = "traces/mtj.h5"\ndataset = "run1"\nscale = 0.1\n')
    monkeypatch.chdir(tmp_path)  # elsewhere: the path must not be taken relative to the working directory
    cfg = load_config(folder / "c.toml")
    assert cfg.network.noise.path == str(h5.resolve())
    node = build_network(cfg, 3, 2).layers[0].node
    assert isinstance(node, ReplayNoise) and node.scale == 0.1 and node.trace.tolist() == trace.tolist()
    # the dumped config (with the absolute path) loads again
    assert parse_toml(cfg.to_toml(), "again.toml").network.noise == cfg.network.noise


# --- integration -----------------------------------------------------------------


def test_anp_learns_from_telegraph_noise(be64):
    """ANP with noise='intrinsic' on a network whose only noise is a telegraph-noisy hidden layer."""
    hidden = make_node("tanh", noise={"kind": "telegraph", "p_up": 0.5, "p_down": 0.5, "amplitude": 1e-3})
    net = Network([Dense(5, 9, hidden), Dense(9, 3, make_node("linear"))], make_loss("mse"))
    params = net.init(be64.stream(0), be64)
    x, y = teacher_student(32, (5, 4, 3), seed=0)
    rule = make_rule("anp", noise="intrinsic", samples=500)
    rule.check(net)
    out = rule(net, params, x, y, be64.stream(1))
    assert all(np.all(np.isfinite(g)) for g in out.grads.values())
    assert np.isfinite(out.delta_loss)
    cos = alignment(net, params, y, out)
    assert cos.min() > 0.5, cos
