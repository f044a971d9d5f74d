"""Device noise on the activity: telegraph, kick (Bernoulli) and replayed-trace noise, and their config."""

import h5py
import numpy as np
import pytest

from npsim.experiment.assemble import build_network
from npsim.experiment.config import ConfigError, load_config, parse_toml
from npsim.io.data.synthetic import teacher_student
from npsim.learn import alignment, make_rule
from npsim.model import (
    ActivityNoise,
    Dense,
    GaussianNoise,
    KickNoise,
    Network,
    ReplayNoise,
    TelegraphNoise,
    make_node,
    make_noise,
)
from npsim.model.losses import make_loss
from npsim.model.nodes import Tanh


def noise_of(noise, a, rng):
    """The noise a noise model adds to the activity ``a``."""
    return noise(a, rng) - a


# --- telegraph -----------------------------------------------------------------


@pytest.mark.parametrize("p_up,p_down", [(0.1, 0.3), (0.05, 0.05), (0.7, 0.6), (1.0, 0.5)])
def test_telegraph_stationary_mean_and_autocorrelation(be64, p_up, p_down):
    rows, units = 2000, 400
    node = TelegraphNoise(p_up=p_up, p_down=p_down, amplitude=1.0)
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
    node = make_noise({"kind": "telegraph", "p_up": p_up, "p_down": p_down, "amplitude": amp, "offset": off})
    assert isinstance(node, TelegraphNoise) and isinstance(node, ActivityNoise)
    a = np.full((1000, 300), 1.5)
    noise = noise_of(node, a, be64.stream(2))
    np.testing.assert_allclose(np.unique(noise), [off - amp, off + amp], rtol=1e-12)
    expected = off + amp * (p_up - p_down) / (p_up + p_down)
    per_unit = noise.mean(axis=0)
    assert abs(per_unit.mean() - expected) < 5 * per_unit.std(ddof=1) / np.sqrt(300)
    # read noise adds a Gaussian of std read_std on top of the two levels
    noisy = TelegraphNoise(p_up=p_up, p_down=p_down, amplitude=amp, offset=off, read_std=0.02)
    n2 = noise_of(noisy, a, be64.stream(2))
    level = np.where(n2 > off, off + amp, off - amp)
    assert abs((n2 - level).std() - 0.02) < 0.001 and abs((n2 - level).mean()) < 0.001


def test_telegraph_seeded_and_passes_independent(be64):
    node = TelegraphNoise(p_up=0.01, p_down=0.01, amplitude=1.0)
    a = np.zeros((50, 200))
    np.testing.assert_array_equal(node(a, be64.stream(5)), node(a, be64.stream(5)))
    rng = be64.stream(5)
    first, second = node(a, rng), node(a, rng)
    assert not np.array_equal(first, second)  # each pass draws afresh from the stationary distribution


# --- kicks (Bernoulli noise) ----------------------------------------------------


def test_kick_noise_values_and_mean(be64):
    p, amp = 0.3, 0.25
    node = make_noise({"kind": "kick", "p": p, "amplitude": amp})
    assert isinstance(node, KickNoise)
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
    node = make_noise({"kind": "replay", "path": str(path), "scale": 2.0})
    assert isinstance(node, ReplayNoise)
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
    node = ReplayNoise(path=path, dataset="mtj/trace")
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


def test_replay_hashing_repr_and_describe(tmp_path):
    path = _trace_file(tmp_path, np.ones(5))
    one, two = (make_noise({"kind": "replay", "path": str(path)}) for _ in range(2))
    assert one == two and hash(one) == hash(two)
    assert "trace=" not in repr(one) and "array" not in repr(one)
    text = one.describe_around("tanh()")
    assert text.startswith("replay_noise(tanh(), ") and str(path) in text and "length=5" in text
    assert one != ReplayNoise(path=str(path), scale=2.0)


@pytest.mark.parametrize("kind,params", [
    ("additive", {"std": 0.1}),
    ("multiplicative", {"std": 0.1}),
    ("telegraph", {"p_up": 0.3, "p_down": 0.9, "amplitude": 0.1, "read_std": 0.01}),
    ("kick", {"p": 0.5, "amplitude": 0.1}),
    ("replay", {"scale": 0.5}),
])
def test_dtype_preserved(be32, tmp_path, kind, params):
    if kind == "replay":
        params = {**params, "path": str(_trace_file(tmp_path, np.linspace(-1, 1, 11)))}
    node = make_noise({"kind": kind, **params})
    for dt in (np.float32, np.float64):
        a = np.linspace(-1, 1, 60, dtype=dt).reshape(6, 10)
        out = node(a, be32.stream(0))
        assert out.dtype == dt and out.shape == a.shape and not np.array_equal(out, a), kind


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


TELEGRAPH = {"kind": "telegraph", "p_up": 0.1, "p_down": 0.1, "amplitude": 0.1}


@pytest.mark.parametrize("params,match", [
    ({**TELEGRAPH, "p_up": 1.5}, r"telegraph_noise: p_up must be less than or equal to 1 \(got 1.5\)"),
    ({**TELEGRAPH, "p_down": -0.1}, r"telegraph_noise: p_down must be greater than or equal to 0 \(got -0.1\)"),
    ({**TELEGRAPH, "p_up": 0.0, "p_down": 0.0}, r"telegraph_noise: p_up \+ p_down must be > 0"),
    ({**TELEGRAPH, "amplitude": float("inf")}, "telegraph_noise: amplitude must be a finite number"),
    ({**TELEGRAPH, "offset": "big"}, "telegraph_noise: offset must be a valid number"),
    ({**TELEGRAPH, "offset": True}, "telegraph_noise: offset must be a valid number"),
    ({**TELEGRAPH, "read_std": -0.1}, "telegraph_noise: read_std must be greater than or equal to 0"),
    ({**TELEGRAPH, "read_std": float("nan")}, "telegraph_noise: read_std must be a finite"),
    ({"kind": "telegraph", "p_up": 0.1, "p_down": 0.1}, "telegraph_noise: amplitude is required"),
    ({"kind": "kick", "p": 2.0, "amplitude": 0.1}, "kick_noise: p must be less than or equal to 1"),
    ({"kind": "kick", "p": 0.1, "amplitude": float("nan")}, "kick_noise: amplitude must be a finite"),
    ({"kind": "replay", "path": "x.npy", "scale": float("inf")}, "replay_noise: scale"),
    ({"kind": "replay", "path": ""}, "replay_noise: path must have at least 1 character"),
    ({"kind": "replay"}, "replay_noise: path is required"),
    ({"kind": "pink"}, r"noise: kind must be one of additive, multiplicative, telegraph, kick, replay \(got 'pink'\)"),
    ({**TELEGRAPH, "std": 0.1}, "telegraph_noise: std is not a parameter; telegraph_noise takes kind, p_up, p_down, "
                                "amplitude, offset, read_std"),
    ({"kind": "kick", "p_up": 0.1}, "kick_noise: p_up is not a parameter; kick_noise takes kind, p, amplitude"),
    ({"kind": "additive", "amplitude": 0.1}, "gaussian_noise: amplitude is not a parameter; gaussian_noise takes "
                                             "kind, std"),
])
def test_bad_noise_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        make_noise(params)


def test_old_noise_kind_still_builds_with_a_warning():
    with pytest.warns(FutureWarning, match="noise kind 'bernoulli' is now called 'kick'"):
        noise = make_noise({"kind": "bernoulli", "p": 0.2, "amplitude": 0.1})
    assert noise == KickNoise(p=0.2, amplitude=0.1)
    with pytest.warns(FutureWarning, match="noise kind 'bernoulli' is now called 'kick'"):
        cfg = parse_toml('[network.noise]\nkind = "bernoulli"\np = 0.2\namplitude = 0.1\n', "t.toml")
    assert cfg.network.noise == noise


def test_replay_file_errors(tmp_path):
    def replay(path, dataset=None):
        return ReplayNoise(path=path, dataset=dataset)

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
    for noise in (TelegraphNoise(p_up=0.1, p_down=0.1, amplitude=1.0), KickNoise(p=0.1, amplitude=1.0),
                  GaussianNoise(std=0.1)):
        with pytest.raises(ValueError, match=f"{noise.name} needs a random stream"):
            noise(np.zeros((2, 2)), None)


def test_noise_is_a_layer_attribute_and_not_around_time_steps():
    noisy = Dense(3, 4, Tanh(), noise=GaussianNoise(std=0.1))
    assert noisy.noisy and not Dense(3, 4, Tanh()).noisy
    assert noisy.describe() == "4:gaussian_noise(tanh(), std=0.1, kind='additive')"
    with pytest.raises(ValueError, match="Dense: the time-stepped node model 'lif' takes no activity noise"):
        Dense(3, 4, make_node("lif"), noise=GaussianNoise(std=0.1))


# --- config --------------------------------------------------------------------


def test_config_telegraph_parses_and_builds():
    cfg = parse_toml('[network]\nhidden = [4]\nnode = "tanh"\n[network.noise]\nkind = "telegraph"\n'
                     'p_up = 0.1\np_down = 0.2\namplitude = 0.05\nread_std = 0.01\n', "t.toml")
    nc = cfg.network.noise
    assert nc == TelegraphNoise(p_up=0.1, p_down=0.2, amplitude=0.05, read_std=0.01)
    net = build_network(cfg, 3, 2)
    assert net.layers[0].node == Tanh() and net.layers[0].noise == nc
    assert not net.layers[1].noisy  # injected rule: the output layer stays noiseless
    # the gaussian form keeps working, kind defaulting to additive
    cfg = parse_toml("[network]\nnoise = { std = 0.1 }\n", "t.toml")
    assert build_network(cfg, 3, 2).layers[0].noise == GaussianNoise(std=0.1)


@pytest.mark.parametrize("table,match", [
    ('kind = "telegraph"\np_up = 0.1\np_down = 0.1\namplitude = 0.1\nstd = 0.1', r"t.toml: unknown key 'network.noise.std'"),
    ('kind = "kick"\np = 0.1\namplitude = 0.1\npath = "t.npy"', "unknown key 'network.noise.path'"),
    ('std = 0.1\np = 0.2', "unknown key 'network.noise.p'"),
    ('kind = "telegraph"\np_up = 0.1\namplitude = 0.1', "missing key 'network.noise.p_down'"),
    ('kind = "telegraph"\np_up = 0.0\np_down = 0.0\namplitude = 0.1', r"key 'network.noise': p_up \+ p_down must be > 0"),
    ('kind = "telegraph"\np_up = 1.1\np_down = 0.1\namplitude = 0.1',
     r"key 'network.noise.p_up': must be less than or equal to 1 \(got 1.1\)"),
    ('kind = "kick"\np = 0.1\namplitude = inf', "key 'network.noise.amplitude': must be a finite number"),
    ('kind = "replay"', "missing key 'network.noise.path'"),
    ('kind = "brown"\nstd = 0.1', "key 'network.noise': .*tag 'brown'.*'additive', 'multiplicative', 'telegraph', 'kick', 'replay'"),
    ('std = 0.1\nwidth = 2', "unknown key 'network.noise.width'"),
    ('std = "0.1"', r"key 'network.noise.std': must be a valid number \(got '0.1'\)"),
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
    noise = build_network(cfg, 3, 2).layers[0].noise
    assert isinstance(noise, ReplayNoise) and noise.scale == 0.1 and noise.trace.tolist() == trace.tolist()
    # the dumped config (with the absolute path) loads again
    assert parse_toml(cfg.to_toml(), "again.toml").network.noise == cfg.network.noise


# --- integration -----------------------------------------------------------------


def test_anp_learns_from_telegraph_noise(be64):
    """ANP with noise='intrinsic' on a network whose only noise is a telegraph-noisy hidden layer."""
    noise = make_noise({"kind": "telegraph", "p_up": 0.5, "p_down": 0.5, "amplitude": 1e-3})
    net = Network([Dense(5, 9, make_node("tanh"), noise=noise), Dense(9, 3, make_node("linear"))], make_loss("mse"))
    params = net.init(be64.stream(0), be64)
    x, y = teacher_student(32, (5, 4, 3), seed=0)
    rule = make_rule("anp", noise="intrinsic", perturbations=500)
    rule.check(net)
    out = rule(net, params, x, y, be64.stream(1))
    assert all(np.all(np.isfinite(g)) for g in out.grads.values())
    assert np.isfinite(out.delta_loss)
    cos = alignment(net, params, y, out)
    assert cos.min() > 0.5, cos
