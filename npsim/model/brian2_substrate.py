"""A Brian2 substrate: the network's LIF layers simulated by Brian2 (docs/design.md §10a).

Brian2 runs the leading stack of LIF layers with its own equations, integrator
and noise; npsim sets the synaptic weights and the constant currents, reads
what each layer did after the run, and computes any non-spiking read-out
layers above the stack itself. Every copy of every sample of a pass is its
own set of neurons, so one ``run`` simulates a whole (stacked) batch.

The model of one LIF layer, in Brian2's notation (v in threshold units)::

    dv/dt = (I - v) / tau + s * xi_m * tau**-0.5 : 1  (unless refractory)
    dn/dt = s * xi_m * tau**-0.5 : 1                   # the same noise, integrated: what it added
    I : 1                                            # b + ε, plus W x for layer 0 (current input)
    isyn : 1                                         # synaptic current received, summed over steps
    count : 1                                        # spikes
    threshold: v >= threshold; reset: v = 0 (or v -= threshold); count += 1

and each synapse ``on_pre: v_post += k * w; isyn_post += w`` with
k = 1 − exp(−dt/τ), so a spike moves the membrane as a current w held for one
step would (npsim's own scheme). Noise: s = membrane_noise · √(dt/τ) gives
npsim's per-step noise current of std ``membrane_noise``. Brian2's schedule
delivers a spike to the layer above after that layer's threshold test, so a
spike reaches layer l + 1 one step after it was fired (npsim: the same step);
the upper layers of a stack therefore see up to one step fewer per layer.

What the rules see: the input of layer l is the spike rate of layer l − 1 (the
data for layer 0), its activity the mean input current
I + isyn / T + τ n(T) / (T dt) (noise included).
"""

from __future__ import annotations

import contextlib
import gc
import math
import types

import numpy as np

from ..errors import IncompatibleSettings
from .capabilities import Capabilities
from .layers import Dense
from .network import Network, param_key
from .spiking import LIF
from .substrate import Measurement, Substrate

__all__ = ["Brian2Substrate", "import_brian2"]


def import_brian2():
    """The brian2 module, or a one-line error naming the extra to install."""
    try:
        import brian2
    except ImportError as e:
        raise IncompatibleSettings(f"substrate 'brian2' needs Brian2: pip install 'npsim[brian2]' ({e})") from None
    except AttributeError as e:  # Brian2 2.9 with NumPy 2.4, which removed ndarray.ptp
        import numpy

        raise IncompatibleSettings(f"substrate 'brian2': Brian2 cannot be imported with NumPy {numpy.__version__} "
                                   f"({e}); pip install 'npsim[brian2]' installs versions that work together") from None
    return brian2


@contextlib.contextmanager
def _young_garbage_collection(b2):
    """Let Brian2's ``Network.run`` collect only the youngest generation of garbage.

    It starts with a full ``gc.collect()``, only to warn of objects left out of
    a network; the substrate builds its networks explicitly and needs no such
    warning, and in a process that holds a training run a full collection took
    60 % of each pass (scripts/bench_brian2.py).
    """
    module = b2.core.network
    module.gc = types.SimpleNamespace(collect=lambda: gc.collect(0))
    try:
        yield
    finally:
        module.gc = gc


class Brian2Substrate(Substrate):
    """Runs ``net``'s leading LIF layers in Brian2's runtime mode.

    perturbation : "injected" — npsim's perturbations are added as constant
        currents (NP, INP, ANP); "intrinsic" — none is accepted and only the
        units' own membrane noise (``membrane_noise`` > 0, Brian2's ``xi``)
        perturbs them (ANP with noise = "intrinsic").
    method : Brian2's integration method; None picks "exact" for noiseless
        layers (the exact step npsim uses too) and "euler" with noise.
    target : Brian2's code generation target ("numpy" needs no compiler,
        "cython" compiles each code object once and runs faster per step).
    eval_batch_size : samples per evaluation pass (each copy of a sample is
        its own neurons and synapses, so passes are kept small).
    """

    name = "brian2"

    def __init__(self, net: Network, *, perturbation: str = "injected", method: str | None = None,
                 target: str = "numpy", eval_batch_size: int = 256):
        b2 = import_brian2()
        if perturbation not in ("injected", "intrinsic"):
            raise ValueError(f"substrate.perturbation must be 'injected' or 'intrinsic', got {perturbation!r}")
        stack = 0
        while stack < net.n_layers and net.layers[stack].node.temporal:
            stack += 1
        bad = [i for i, layer in enumerate(net.layers) if layer.node.temporal and
               (i >= stack or not isinstance(layer.node, LIF))]
        if stack == 0 or bad:
            raise IncompatibleSettings(
                "substrate 'brian2' simulates a stack of LIF layers from layer 0 up (non-spiking layers may "
                f"follow it); this network has {'no LIF layer 0' if stack == 0 else f'layer {bad[0]} out of place'}")
        if any(not isinstance(layer, Dense) for layer in net.layers):
            raise IncompatibleSettings("substrate 'brian2' runs dense layers only (no network.conv)")
        if net.simulation.encoding != "current":
            raise IncompatibleSettings(f"substrate 'brian2' feeds the data as input currents; set "
                                       f"network.simulation.encoding = 'current' (got "
                                       f"'{net.simulation.encoding}')")
        noisy = any(net.layers[i].node.noisy for i in range(stack))
        if perturbation == "intrinsic" and not noisy:
            raise IncompatibleSettings("substrate.perturbation = 'intrinsic' needs LIF units with membrane noise "
                                       "(network.node_params.membrane_noise > 0)")
        if any(layer.noise is not None for layer in net.layers):
            raise IncompatibleSettings("substrate 'brian2': activity noise (network.noise) is not simulated; "
                                       "give the LIF units membrane_noise instead")
        self.b2, self.net, self.stack = b2, net, stack
        self.target, self.method, self.eval_batch_size = target, method, int(eval_batch_size)
        self.capabilities = Capabilities(perturbation=perturbation == "injected", hidden=True, noisy=noisy)
        self._built: dict[int, tuple] = {}
        b2.prefs.logging.std_redirection = False  # its output stays its own

    # -- building --------------------------------------------------------------------------------
    def _build(self, rows: int):
        """The Brian2 network for passes of ``rows`` rows (cached per row count)."""
        if rows in self._built:
            return self._built[rows]
        b2, sim = self.b2, self.net.simulation
        dt = sim.dt * b2.ms
        groups, synapses = [], []
        for l in range(self.stack):
            node, n = self.net.layers[l].node, self.net.layers[l].n_units
            s = node.membrane_noise * math.sqrt(sim.dt / node.tau)
            noise = " + s * xi_m * tau**-0.5" if s > 0 else ""
            eqs = (f"dv/dt = (I - v) / tau{noise} : 1 (unless refractory)\n"
                   f"{'dn/dt = s * xi_m * tau**-0.5 : 1' if s > 0 else 'n : 1'}\n"
                   "I : 1\nisyn : 1\ncount : 1")
            reset = "v = 0" if node.reset == "zero" else "v -= threshold"
            method = self.method or ("euler" if s > 0 else "exact")
            g = b2.NeuronGroup(rows * n, eqs, threshold="v >= threshold", reset=reset + "\ncount += 1",
                               refractory=node.refractory * b2.ms, method=method, dt=dt,
                               namespace={"tau": node.tau * b2.ms, "s": s, "threshold": node.threshold},
                               name=f"layer{l}_{rows}*")  # "*": Brian2 makes the name unique
            groups.append(g)
            if l > 0:
                n_in = self.net.layers[l].n_in
                r, a, c = np.meshgrid(np.arange(rows), np.arange(n_in), np.arange(n), indexing="ij")
                syn = b2.Synapses(groups[l - 1], g, "w : 1",
                                  on_pre="v_post += k * w * int(not_refractory_post)\nisyn_post += w",
                                  namespace={"k": 1.0 - math.exp(-sim.dt / node.tau)}, dt=dt,
                                  name=f"synapses{l}_{rows}*")
                syn.connect(i=(r * n_in + a).ravel(), j=(r * n + c).ravel())  # copy r: full n_in x n
                synapses.append(syn)
        built = (b2.Network(*groups, *synapses), groups, synapses)
        self._built[rows] = built
        return built

    # -- a pass ----------------------------------------------------------------------------------
    def run(self, params, x, *, perturb=None, repeats=1, rng=None):
        b2, sim, L = self.b2, self.net.simulation, self.net.n_layers
        if not isinstance(x, np.ndarray):
            raise IncompatibleSettings("substrate 'brian2' runs on the host: set backend = 'numpy'")
        if perturb is not None and not self.capabilities.perturbation and any(p is not None for p in perturb):
            raise IncompatibleSettings("substrate 'brian2' was set up with intrinsic noise only "
                                       "(substrate.perturbation = 'intrinsic') and injects no perturbation")
        B = x.shape[0]
        rows = repeats * B
        network, groups, synapses = self._build(rows)
        eps = lambda l: 0.0 if perturb is None or perturb[l] is None else perturb[l]  # noqa: E731
        weights = []
        for l in range(self.stack):
            layer = self.net.layers[l]
            W, b = params[param_key(l, "W")], params[param_key(l, "b")]
            R = params[param_key(l, "R")] if layer.decorrelate else None
            Weff = W if R is None else W @ R
            weights.append(Weff)
            const = np.tile(x @ Weff.T + b, (repeats, 1)) if l == 0 else np.broadcast_to(b, (rows, layer.n_units))
            g = groups[l]
            g.I[:] = np.asarray(const + eps(l), dtype=np.float64).ravel()
            g.v[:] = 0.0
            g.n[:] = 0.0
            g.isyn[:] = 0.0
            g.count[:] = 0.0
            g.lastspike[:] = -1e4 * b2.second  # not refractory at the start
            g.not_refractory[:] = True
            if l > 0:
                synapses[l - 1].w[:] = np.tile(np.asarray(Weff, np.float64).T.ravel(), rows)
        if rng is not None and self.capabilities.noisy:
            b2.seed(int(rng.integers(0, 2**31 - 1)))
        b2.prefs.codegen.target = self.target  # a global preference, read as each run generates its code
        with _young_garbage_collection(b2):
            network.run(sim.duration * b2.ms)
        dtype = x.dtype
        T = sim.steps
        inputs, pre = [x], []
        h = None
        for l in range(self.stack):
            node, n, g = self.net.layers[l].node, self.net.layers[l].n_units, groups[l]
            shape = (rows, n)
            count = np.asarray(g.count[:]).reshape(shape)
            current = (np.asarray(g.I[:]) + np.asarray(g.isyn[:]) / T
                       + node.tau * np.asarray(g.n[:]) / (T * sim.dt)).reshape(shape)
            pre.append(current.astype(dtype))
            h = node.output(count, None, None, T).astype(dtype)
            if l + 1 < L:
                inputs.append(count.astype(dtype) / T if l + 1 < self.stack else h)
        for l in range(self.stack, L):  # non-spiking layers above the stack: npsim computes them
            layer = self.net.layers[l]
            R = params[param_key(l, "R")] if layer.decorrelate else None
            a = layer.drive(layer.layer_input(h, R), params[param_key(l, "W")], params[param_key(l, "b")]) + eps(l)
            pre.append(a)
            h = layer.output(layer.node(a, rng))
            if l + 1 < L:
                inputs.append(h)
        return Measurement(inputs, pre, h)
