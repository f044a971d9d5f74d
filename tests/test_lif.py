"""Leaky integrate-and-fire layers: analytic rates, the kernel against its NumPy twin, memory flat in T."""

import tracemalloc

import numpy as np
import pytest

from npsim.backend import get_backend, kernels
from npsim.backend.kernels import reference
from npsim.learn.rules import make_rule
from npsim.model import Dense, Network, make_node
from npsim.model.losses import make_loss
from npsim.model.spiking import (
    LIF,
    LeakyIntegrator,
    Monitor,
    Simulation,
    lif_rate,
    simulate,
)


def _rates(node, currents, *, dt, duration_ms):
    """Firing rate (Hz) of one unit per current, simulated for ``duration_ms``."""
    cur = np.asarray(currents, dtype=np.float64)[:, None]
    sim = Simulation(steps=int(round(duration_ms / dt)), dt=dt, chunk=20000)
    states, _, _ = simulate([node], [None], [cur], None, sim, None)
    return states[0].count[:, 0] / (duration_ms / 1000)


@pytest.mark.parametrize("refractory", [0.0, 2.0])
def test_lif_fires_at_the_analytic_rate(refractory):
    currents = [1.1, 1.3, 1.6, 2.0, 3.0, 5.0]
    node = LIF(tau=20.0, threshold=1.0, refractory=refractory)
    got = _rates(node, currents, dt=0.02, duration_ms=10_000)
    want = lif_rate(currents, tau=20.0, threshold=1.0, refractory=refractory)
    assert want.min() > 10  # every current is above threshold
    np.testing.assert_allclose(got, want, rtol=0.02)


def test_lif_is_silent_without_input_or_below_threshold():
    got = _rates(LIF(tau=10.0), [0.0, -1.0, 0.5, 0.999], dt=0.1, duration_ms=5_000)
    assert np.all(got == 0)


def test_refractory_period_caps_the_rate():
    t_ref = 2.0
    got = _rates(LIF(tau=10.0, refractory=t_ref), [2.0, 10.0, 100.0, 1e4], dt=0.01, duration_ms=2_000)
    cap = 1000.0 / t_ref
    assert np.all(got <= cap)
    assert got[-1] >= 0.99 * cap  # a huge current fires as soon as the neuron is free
    free = _rates(LIF(tau=10.0), [1e4], dt=0.01, duration_ms=2_000)
    assert free[0] > 10 * cap  # without the refractory period the same current fires far faster


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_membrane_follows_the_discrete_lif_equation(reset):
    """Recorded potentials obey v_t = α v_{t-1} + (1-α) i, spike iff that reaches threshold, then reset."""
    node = LIF(tau=10.0, threshold=1.0, reset=reset)
    i = np.array([[1.05], [1.5], [3.0], [12.0]])
    sim = Simulation(steps=80, dt=1.0)
    _, _, rec = simulate([node], [None], [i], None, sim, None, monitor=Monitor(layers=(0,)))
    v, s = rec[0]["v"][:, :, 0], rec[0]["spikes"][:, :, 0].astype(bool)
    alpha = np.exp(-0.1)
    pre = alpha * np.concatenate([np.zeros((4, 1)), v[:, :-1]], axis=1) + (1 - alpha) * i
    np.testing.assert_array_equal(s, pre >= 1.0)
    np.testing.assert_allclose(v, np.where(s, pre - 1.0 if reset == "subtract" else 0.0, pre), atol=1e-12)
    assert s[-1].sum() > 40 and s.sum(axis=1).min() > 0


def _spiking_net(encoding="poisson", noise=0.0, out="linear", decorrelate=True, steps=12):
    lif = LIF(tau=8.0, threshold=0.3, refractory=1.0, membrane_noise=noise)
    out_node = LeakyIntegrator(tau=5.0) if out == "li" else make_node(out)
    layers = [Dense(12, 16, lif, decorrelate), Dense(16, 10, lif, decorrelate), Dense(10, 3, out_node, decorrelate)]
    return Network(layers, make_loss("cross_entropy"), simulation=Simulation(steps=steps, dt=1.0, encoding=encoding))


@pytest.mark.parametrize("encoding", ["current", "poisson", "bernoulli"])
@pytest.mark.parametrize("out", ["linear", "li"])
def test_numba_and_numpy_time_loops_are_identical(encoding, out, monkeypatch):
    """Whole perturbed passes (membrane noise, spike-train input, K=2) agree bit for bit."""
    if not kernels.use_numba():
        pytest.skip("Numba kernels disabled (NPSIM_KERNELS=numpy)")
    be = get_backend("numpy", "float32")
    net = _spiking_net(encoding, noise=0.2, out=out)
    params = net.init(be.stream(0), be)
    x = np.abs(be.stream(1).normal((9, 12)))
    y = np.arange(9) % 3
    traces = []
    for mode in ("numba", "numpy"):
        monkeypatch.setenv("NPSIM_KERNELS", mode)
        rng = be.stream(2)
        clean = net.forward(params, x, y, rng=rng)
        eps = [rng.normal((18, n), scale=0.1) for n in (16, 10, 3)]
        traces.append((clean, net.forward(params, x, y, rng=rng, perturb=eps, base=clean, repeats=2)))
    for a, b in zip(traces[0], traces[1]):
        for name in ("inputs", "drive", "pre", "post"):
            for u, v in zip(getattr(a, name), getattr(b, name)):
                np.testing.assert_array_equal(u, v)
        np.testing.assert_array_equal(a.loss, b.loss)
    assert traces[0][0].post[0].max() > 0  # the net is not silent


@pytest.mark.parametrize("threshold", [1.0, -0.5])
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_membrane_kernel_matches_numpy_exactly(dtype, parallel, threshold):
    """Bit for bit, the sign of a reset to zero included (v·0 is −0 for a negative v above a negative threshold)."""
    rng = np.random.default_rng(0)
    rows, n, T = 33, 21, 40
    for const in (True, False):
        I = (rng.standard_normal((1 if const else T, rows, n)) * 1.5 + 1).astype(dtype)
        noise = (rng.standard_normal((T, rows, n)) * 0.3).astype(dtype)
        outs = []
        for fn in (kernels.membrane_run, reference.membrane_run):
            st = [np.zeros((rows, n), dtype), np.zeros((rows, n), np.int32)] + [np.zeros((rows, n), dtype)
                                                                                for _ in range(3)]
            spikes, vrec = np.zeros((T, rows, n), dtype), np.zeros((T, rows, n), dtype)
            if fn is kernels.membrane_run:
                fn(I, noise, *st, spikes, vrec, alpha=np.exp(-0.1), beta=1 - np.exp(-0.1), threshold=threshold,
                   subtract=not const, n_ref=3, spiking=True, record=True, parallel=parallel)
            else:
                t = np.dtype(dtype).type
                fn(I, noise, *st, spikes, vrec, t(np.exp(-0.1)), t(1 - np.exp(-0.1)), t(threshold), not const, 3,
                   True, True, True)
            outs.append(st + [spikes, vrec])
        for a, b in zip(*outs):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(np.signbit(a), np.signbit(b))
        assert outs[0][2].sum() > 0


def test_results_do_not_depend_on_the_chunk_size(be32):
    """The draws (input spikes, membrane noise) are the same whatever the chunking, by construction: exact.
    The products of a chunk have as many rows as the chunk has steps, and a BLAS may round a product
    differently with its shape (seen: 1.1e-7 relative on an AVX2 machine), so currents agree to float32
    rounding and a spike may move where a membrane sits within rounding of the threshold: at most one
    spike per 200 unit-samples, of one step's worth."""
    net = _spiking_net("poisson", noise=0.1, steps=30)
    params = net.init(be32.stream(0), be32)
    x, y = np.abs(be32.stream(1).normal((5, 12))), np.arange(5) % 3
    outs = []
    for chunk in (1, 7, 64):
        net.simulation = Simulation(steps=30, dt=1.0, encoding="poisson", chunk=chunk)
        outs.append(net.forward(params, x, y, rng=be32.stream(3)))
    for o in outs[1:]:
        np.testing.assert_array_equal(outs[0].inputs[0], o.inputs[0])  # the input spike trains
        for u, v in zip(outs[0].pre, o.pre):
            np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-5)
        for u, v in zip(outs[0].post[:-1], o.post[:-1]):  # spike rates
            moved = np.abs(u - v) > 1e-6
            assert moved.mean() <= 1 / 200 and np.all(np.abs(u - v)[moved] <= 1 / 30 + 1e-6)
        np.testing.assert_allclose(outs[0].loss, o.loss, rtol=1e-3, atol=1e-4)


def test_perturbed_pass_sees_the_same_input_spikes(be32):
    """With a zero perturbation and no membrane noise the perturbed pass reproduces the clean one exactly."""
    net = _spiking_net("poisson")
    params = net.init(be32.stream(0), be32)
    x, y = np.abs(be32.stream(1).normal((6, 12))), np.arange(6) % 3
    rng = be32.stream(2)
    clean = net.forward(params, x, y, rng=rng)
    zero = [np.zeros((12, n), np.float32) for n in (16, 10, 3)]
    noisy = net.forward(params, x, y, rng=rng, perturb=zero, base=clean, repeats=2)
    # the stacked pass multiplies twice the rows: equal to the rounding a BLAS may do with the shape
    np.testing.assert_allclose(noisy.loss, np.tile(clean.loss, 2), rtol=1e-6, atol=1e-7)
    other = net.forward(params, x, y, rng=rng)  # a new clean pass draws new spike trains
    assert other.seed != clean.seed and not np.array_equal(other.post[0], clean.post[0])


def test_time_averages_are_consistent(be64):
    """Mean current = W · (mean rate of the layer below) + b + ε, exactly up to rounding."""
    net = _spiking_net("bernoulli", decorrelate=False)
    params = net.init(be64.stream(0), be64)
    x, y = np.abs(be64.stream(1).normal((7, 12))), np.arange(7) % 3
    rng = be64.stream(2)
    clean = net.forward(params, x, y, rng=rng)
    eps = [rng.normal((7, n), scale=0.2) for n in (16, 10, 3)]
    tr = net.forward(params, x, y, rng=rng, perturb=eps, base=clean, repeats=1)
    for l in range(2):
        want = tr.inputs[l] @ params[f"layer{l}/W"].T + params[f"layer{l}/b"] + eps[l]
        np.testing.assert_allclose(tr.pre[l], want, atol=1e-12)
    np.testing.assert_allclose(tr.inputs[1], tr.post[0])  # readout "rate" is the next layer's mean input
    assert np.all((tr.inputs[0] >= 0) & (tr.inputs[0] <= 1))


def test_monitor_records_potentials_and_spikes(be32):
    net = _spiking_net("current", out="li", steps=40)
    params = net.init(be32.stream(0), be32)
    x, y = np.abs(be32.stream(1).normal((6, 12))) * 3, np.arange(6) % 3
    tr = net.forward(params, x, y, rng=be32.stream(2), monitor=Monitor(layers=(0, 2), rows=(1, 4), units=5))
    r0, r2 = tr.records[0], tr.records[2]
    assert r0["v"].shape == (2, 40, 5) and r0["spikes"].shape == (2, 40, 5) and "spikes" not in r2
    np.testing.assert_allclose(r0["spikes"].sum(axis=1), tr.post[0][[1, 4], :5] * 40, rtol=1e-6)
    assert np.all(r0["v"] < 0.3)  # after each step's reset the potential is below threshold
    assert np.all(r0["v"][r0["spikes"] == 1] == 0)  # reset to zero on the spike step
    np.testing.assert_allclose(r2["v"].mean(axis=1), tr.post[2][[1, 4], :3], rtol=1e-5)  # li readout "mean"


def test_peak_memory_is_flat_in_the_number_of_steps(be32):
    net = _spiking_net("poisson", noise=0.1, steps=25)
    params = net.init(be32.stream(0), be32)
    x, y = np.abs(be32.stream(1).normal((64, 12))), np.arange(64) % 3
    peaks = []
    for T in (25, 100, 400):
        net.simulation = Simulation(steps=T, dt=1.0, encoding="poisson", chunk=8)
        tracemalloc.start()
        net.forward(params, x, y, rng=be32.stream(2))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert max(peaks) <= 1.1 * min(peaks), peaks


def test_danp_trains_a_spiking_net_and_bp_refuses_it(be32):
    """A spiking 12-16-10-3 net learns a rate-coded task; BP has no derivative to use."""
    net = _spiking_net("current", decorrelate=True, steps=10)
    rng = be32.stream(0)
    params = net.init(rng, be32)
    x = np.abs(rng.normal((240, 12)))
    y = np.argmax(x[:, :3] - x[:, 3:6], axis=1)
    from npsim.learn.optim import adam
    from npsim.learn.step import evaluate, fit

    before = evaluate(net, params, x, y, rng=be32.stream(9))[1]
    acc = {}
    for frozen in ((), ("layer0/W", "layer0/b", "layer1/W", "layer1/b")):
        trained, _ = fit(net, make_rule("danp", sigma=0.05, perturbations=4, decorrelation_lr=1e-3), adam(0.02), params,
                         x, y, backend=be32, seed=1, steps=300, batch_size=60, frozen=frozen)
        acc[frozen] = evaluate(net, trained, x, y, rng=be32.stream(9))[1]
    after, control = acc.values()
    # control: only the output layer learns, on the initial spiking features. Across init and
    # noise seeds the trained accuracy ranges 0.72-0.88 (chance 0.33), the control stays below 0.5
    assert after > 0.7 and after > before + 0.3 and control < 0.5, (before, after, control)
    with pytest.raises(ValueError, match="derivative of every node model, but layer 0 uses 'lif'"):
        net.backward(params, net.forward(params, x, y, rng=rng), y)


@pytest.mark.parametrize("bad, match", [
    (lambda: LIF(tau=0), "tau"),
    (lambda: LIF(reset="hold"), "reset"),
    (lambda: LIF(refractory=-1), "refractory"),
    (lambda: LIF(readout="voltage"), "readout"),
    (lambda: LeakyIntegrator(readout="max"), "readout"),
    (lambda: Simulation(steps=0), "steps"),
    (lambda: Simulation(encoding="rank"), "encoding"),
    (lambda: Simulation(dt=1.0, max_rate=2000), "max_rate"),
    (lambda: LIF()(np.zeros((2, 2))), "time loop"),
])
def test_bad_spiking_parameters_are_named(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bad()


def test_a_time_stepped_layer_above_leaky_integrators_is_refused():
    # li units pass no spikes on: a temporal layer above them would integrate nothing
    from npsim.errors import IncompatibleSettings
    from npsim.model import Dense, LeakyIntegrator, Network, make_loss, make_node

    for above in (LIF(), LeakyIntegrator()):
        with pytest.raises(IncompatibleSettings, match=r"layer 1 \('(lif|li)'\) would get no input: the layer "
                                                       r"below it has non-spiking 'li' units"):
            Network([Dense(3, 4, LeakyIntegrator()), Dense(4, 2, above)], make_loss("mse"))
    Network([Dense(3, 4, LeakyIntegrator()), Dense(4, 2, make_node("linear"))], make_loss("mse"))  # reads the potential
