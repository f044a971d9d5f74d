"""Spiking and other time-stepped node models, and the time loop that runs them.

A *temporal* layer is simulated over ``steps`` time steps of ``dt``
milliseconds (a :class:`Simulation`, one per network). Its input current at
step t is ``W s(t) + b + ε``: s(t) is the layer below's spike vector at t (or a
constant, for the first temporal layer fed by data or by a non-temporal
layer), ε the constant per-sample perturbation a learning rule injects. Per
layer and sample the loop keeps only the membrane state and running sums, so
memory does not grow with T; steps are simulated in chunks of at most
``Simulation.chunk`` steps, each chunk one matrix product per layer and one
Numba kernel call (:func:`npsim.backend.kernels.membrane_run`).

What the learning rules see (a :class:`npsim.network.Trace`) are time
averages: the layer input is the mean spike rate of the layer below (spikes
per step), the activity is the mean input current (perturbation and membrane
noise included), and the output is the readout (spike rate or count; for the
non-spiking :class:`LeakyIntegrator`, the mean or final potential). Because
the current is linear in the spikes, mean current = W·(mean rate) + b + ε
exactly, so the node-perturbation update G = δℓ ε rateᵀ/σ² keeps its form.

Units: time in ms, currents and potentials in units of the threshold's
(threshold 1 by default); the membrane follows τ dv/dt = −v + i, integrated
exactly over each step for a current held constant within it:
v ← α v + (1 − α) i, α = exp(−dt/τ).
"""

from __future__ import annotations

import math
import typing
from typing import ClassVar, Literal

import numpy as np
from pydantic import model_validator

from ..backend import kernels
from ..backend.arrays import add_into, device_of, host_dtype, namespace, to_host
from ..params import NonNegativeFloat, Params, PositiveFloat, PositiveInt
from .nodes import NodeModel

__all__ = ["Simulation", "TemporalNode", "LIF", "LeakyIntegrator", "Monitor", "lif_rate", "ENCODINGS"]

CHUNK_BYTES = 64 * 2**20  # bound on the time loop's per-chunk buffers


class Simulation(Params):
    """How a network's temporal layers are simulated.

    steps : T, time steps per sample.
    dt : step length in ms.
    encoding : how data enter the first temporal layer when it is layer 0:
        "current" — x itself as a constant input current;
        "poisson" — spike trains, P(spike in a step) = clip(x, 0, 1)·max_rate·dt/1000;
        "bernoulli" — spike trains, P(spike in a step) = clip(x, 0, 1).
        Spike trains are seeded per batch: the clean and every perturbed pass
        of one update see the same trains, so the loss difference measures
        the perturbation, not the encoding noise.
    max_rate : firing rate in Hz of an input of 1 under "poisson".
    chunk : at most this many steps are simulated per kernel call (fewer
        when the chunk's buffers would exceed ``CHUNK_BYTES``); memory grows
        with ``chunk``, never with ``steps``, and results do not depend on it.
    parallel : run the membrane kernel on all cores (Numba ``prange`` over
        samples). Off by default: the kernel interleaves with multi-threaded
        matrix products, and on few cores the two thread pools wait for each
        other; see scripts/bench_spiking.py.
    """

    steps: PositiveInt = 25
    dt: PositiveFloat = 1.0
    encoding: Literal["current", "poisson", "bernoulli"] = "current"
    max_rate: PositiveFloat = 200.0
    chunk: PositiveInt = 16
    parallel: bool = False
    component: ClassVar[str] = "simulation"

    @model_validator(mode="after")
    def _one_spike_per_step(self):
        if self.max_rate * self.dt / 1000 > 1:
            raise ValueError(f"max_rate must be at most one spike per step (1000/dt = {1000 / self.dt:g} Hz), "
                             f"got {self.max_rate!r}")
        return self

    @property
    def duration(self) -> float:
        """Simulated time per sample, ms."""
        return self.steps * self.dt

    @property
    def stochastic_input(self) -> bool:
        return self.encoding != "current"

    def spike_probability(self, x):
        """P(input spike per step) for data x, same shape and dtype."""
        xp = namespace(x)
        p = xp.clip(x, 0.0, 1.0)
        if self.encoding == "poisson":
            p = p * (self.max_rate * self.dt / 1000)
        return p


#: input encodings of a :class:`Simulation`
ENCODINGS = typing.get_args(Simulation.model_fields["encoding"].annotation)


class TemporalNode(NodeModel):
    """A node model with membrane dynamics, run by the network's time loop."""

    temporal: ClassVar[bool] = True
    spiking: ClassVar[bool] = True

    def __call__(self, a, rng=None):
        raise TypeError(
            f"node model {self.name!r} has time dynamics and runs only inside a Network's time loop "
            f"(Network(..., simulation=Simulation(...)))"
        )

    def constants(self, dt: float) -> dict:
        """Kernel constants for steps of ``dt`` ms."""
        alpha = math.exp(-dt / self.tau)
        return {"alpha": alpha, "beta": 1.0 - alpha}


class LIF(TemporalNode):
    """Leaky integrate-and-fire unit.

    tau : membrane time constant, ms.
    threshold : spike when v >= threshold (potential units; rest is 0).
    reset : "zero" (v ← 0) or "subtract" (v ← v − threshold) after a spike.
    refractory : ms after a spike during which v is held and input ignored
        (rounded to whole steps); it caps the rate below 1/refractory.
    membrane_noise : std of a Gaussian noise current, fresh per step, unit,
        sample and pass (intrinsic noise: the learner sees only its effect).
    readout : "rate" — spikes per step (count / T, in [0, 1]); "count" — spikes.

    Under a constant current i > threshold (continuous time), the rate is
    :func:`lif_rate`; the discrete loop fires at most one step later per
    interval.
    """

    tau: PositiveFloat = 10.0
    threshold: PositiveFloat = 1.0
    reset: Literal["zero", "subtract"] = "zero"
    refractory: NonNegativeFloat = 0.0
    membrane_noise: NonNegativeFloat = 0.0
    readout: Literal["rate", "count"] = "rate"
    name: ClassVar[str] = "lif"

    @property
    def noisy(self) -> bool:
        return self.membrane_noise > 0

    def constants(self, dt: float) -> dict:
        return super().constants(dt) | {"threshold": self.threshold, "subtract": self.reset == "subtract",
                                        "n_ref": int(round(self.refractory / dt)), "spiking": True}

    def output(self, count, sum_v, v, steps: int):
        return count if self.readout == "count" else count * (1.0 / steps)


class LeakyIntegrator(TemporalNode):
    """Non-spiking leaky membrane (a read-out layer): τ dv/dt = −v + i.

    readout : "mean" — the potential averaged over the T steps; "final" — at step T.
    """

    tau: PositiveFloat = 10.0
    readout: Literal["mean", "final"] = "mean"
    name: ClassVar[str] = "li"
    spiking: ClassVar[bool] = False

    def constants(self, dt: float) -> dict:
        return super().constants(dt) | {"threshold": 0.0, "subtract": False, "n_ref": 0, "spiking": False}

    def output(self, count, sum_v, v, steps: int):
        return sum_v * (1.0 / steps) if self.readout == "mean" else namespace(v).asarray(v, copy=True)


def lif_rate(current, *, tau: float, threshold: float = 1.0, refractory: float = 0.0):
    """Analytic firing rate (Hz) of a LIF unit (reset to 0) under constant ``current``.

    rate = 1 / (refractory + τ ln(i / (i − threshold))) for i > threshold, else 0;
    times in ms. Array in, float64 array out.
    """
    i = np.asarray(current, dtype=np.float64)
    out = np.zeros_like(i)
    above = i > threshold
    isi = refractory + tau * np.log(i[above] / (i[above] - threshold))
    out[above] = 1000.0 / isi
    return out


class Monitor(Params):
    """What to record during a pass: membrane potential (and spikes) of some units.

    layers : indices of temporal layers to record.
    rows : sample rows of the batch to record (default: all).
    units : record units 0 .. units-1 of each layer (default: all).
    Recording keeps (rows, T, units) per layer, the one place memory grows with T.
    """

    layers: tuple[int, ...]
    rows: tuple[int, ...] | None = None
    units: PositiveInt | None = None
    component: ClassVar[str] = "monitor"


class _Membranes:
    """State and running sums of one temporal layer over a pass."""

    def __init__(self, node: TemporalNode, rows: int, n: int, xp, dtype, device, dt: float):
        self.node = node
        self.k = node.constants(dt)
        self.v = xp.zeros((rows, n), dtype=dtype, device=device)
        self.refr = xp.zeros((rows, n), dtype=xp.int32, device=device)
        self.count = xp.zeros((rows, n), dtype=dtype, device=device)
        self.sum_i = xp.zeros((rows, n), dtype=dtype, device=device)
        self.sum_v = xp.zeros((rows, n), dtype=dtype, device=device)


def simulate(nodes, weights, consts, source, sim: Simulation, rng, *, repeats: int = 1,
             monitor: Monitor | None = None, first: int = 0):
    """Run a stack of temporal layers through ``sim.steps`` time steps.

    nodes : the layers' TemporalNode models (length S).
    weights : per layer the effective (n_out, n_in) matrix applied to the
        spikes of the layer below (W R for a decorrelating layer); entry 0 is
        used only for a spike-train ``source``.
    consts : per layer the constant part of the current, (rows, n_out):
        b + ε, plus W x for layer 0 when its input is a constant current.
    source : None (layer 0's current is all in consts[0]) or a function
        ``source(t0, steps) -> (steps, B, n_in)`` giving input spike trains for
        the B base rows; rows = repeats · B and copy k of the batch is rows
        k·B .. (k+1)·B − 1.
    rng : stream for membrane noise (needed only by noisy layers).
    monitor, first : record the layers ``monitor.layers`` (network indices;
        this stack starts at network layer ``first``).

    Returns (states, source_sum, records): per layer its :class:`_Membranes`
    after the run; the per-row sum over time of the source spikes (B, n_in) or
    None; per recorded network layer a dict with "v" (S, T, U), "spikes"
    (S, T, U) uint8 for spiking layers, "rows" (S,), "units" (U,) and "node".
    """
    xp, device, dtype = namespace(consts[0]), device_of(consts[0]), consts[0].dtype
    rows = consts[0].shape[0]
    T = sim.steps
    # chunk buffers: spikes and currents of every layer; draws do not depend on the chunking
    per_step = 2 * rows * sum(c.shape[1] for c in consts) * host_dtype(dtype).itemsize
    chunk = max(1, min(sim.chunk, T, CHUNK_BYTES // max(per_step, 1)))

    def empty(n):  # chunk buffers; the kernels write into row slices of them (views on NumPy and CuPy)
        return xp.empty((chunk, rows, n), dtype=dtype, device=device)

    states = [_Membranes(nd, rows, c.shape[1], xp, dtype, device, sim.dt) for nd, c in zip(nodes, consts)]
    spikes = [empty(c.shape[1]) for c in consts]
    cur = [None] + [empty(c.shape[1]) for c in consts[1:]]
    record = _record_plan(monitor, first, nodes, rows, [c.shape[1] for c in consts], T, host_dtype(dtype))
    vrec = {s: empty(consts[s].shape[1]) for s in record}
    # each noisy layer draws from its own stream, so the draws do not depend on the chunking
    noise_streams = {}
    if any(nd.noisy for nd in nodes):
        if rng is None:
            raise ValueError("membrane noise needs a random stream (rng)")
        seed = int(rng.integers(0, 2**63 - 1))
        noise_streams = {s: type(rng)(rng.backend, np.random.SeedSequence([seed, s]))
                         for s, nd in enumerate(nodes) if nd.noisy}
    source_sum = None
    if source is not None:
        B = rows // repeats
        cur[0] = empty(consts[0].shape[1])
    for t0 in range(0, T, chunk):
        steps = min(chunk, T - t0)
        for s, st in enumerate(states):
            if s == 0 and source is None:
                current = consts[0][None, ...]
            else:
                if s == 0:
                    inp = source(t0, steps)  # (steps, B, n_in)
                    total = xp.sum(inp, axis=0)
                    source_sum = total if source_sum is None else source_sum + total
                else:
                    inp = spikes[s - 1][:steps, ...]
                n = consts[s].shape[1]
                drive = xp.reshape(inp, (-1, inp.shape[-1])) @ weights[s].T
                if s == 0:  # B base rows, shared by the ``repeats`` copies of the batch
                    add_into(cur[0][:steps, ...], xp.reshape(drive, (steps, 1, B, n)),
                             xp.reshape(consts[0], (1, repeats, B, n)))
                else:
                    add_into(cur[s][:steps, ...], xp.reshape(drive, (steps, rows, n)), consts[s][None, ...])
                current = cur[s][:steps, ...]
            noise = None
            if s in noise_streams:
                noise = noise_streams[s].normal((steps, rows, consts[s].shape[1]), scale=st.node.membrane_noise, dtype=dtype)
            kernels.membrane_run(current, noise, st.v, st.refr, st.count, st.sum_i, st.sum_v,
                                 spikes[s][:steps, ...], vrec[s][:steps, ...] if s in vrec else None,
                                 record=s in vrec, parallel=sim.parallel, **st.k)
            if s in record:  # recordings are host arrays
                rec = record[s]
                rec["v"][:, t0:t0 + steps] = _pick(vrec[s][:steps, ...], rec)
                if "spikes" in rec:
                    rec["spikes"][:, t0:t0 + steps] = _pick(spikes[s][:steps, ...], rec)
    return states, source_sum, {first + s: rec for s, rec in record.items()}


def _record_plan(monitor, first, nodes, rows, widths, T, dtype) -> dict:
    if monitor is None:
        return {}
    plan = {}
    for l in monitor.layers:
        s = l - first
        if not 0 <= s < len(nodes):
            continue
        r = np.arange(rows) if monitor.rows is None else np.asarray(monitor.rows, dtype=np.int64)
        if r.size and (r.min() < 0 or r.max() >= rows):
            raise ValueError(f"monitor: sample rows must be in [0, {rows}), got {monitor.rows}")
        u = np.arange(widths[s] if monitor.units is None else min(monitor.units, widths[s]))
        rec = {"rows": r, "units": u, "v": np.empty((r.size, T, u.size), dtype), "node": nodes[s]}
        if nodes[s].spiking:
            rec["spikes"] = np.empty((r.size, T, u.size), np.uint8)
        plan[s] = rec
    return plan


def _pick(buf, rec):
    """(steps, rows, n) on any device -> (S, steps, U) host array of the recorded rows and units."""
    return np.transpose(to_host(buf)[:, rec["rows"]][:, :, rec["units"]], (1, 0, 2))

