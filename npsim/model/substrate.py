"""Substrates: the systems that run a network's passes (docs/design.md §10a).

Node perturbation needs nothing but forward passes and measured activities, so
npsim can train a system it can only run: another simulator, an analog circuit,
a chip. Such a system is a :class:`Substrate`. It is given, per pass,

* the parameters (per layer ``"layerI/W"``, ``"layerI/b"`` and, where that
  layer decorrelates, ``"layerI/R"``, see :mod:`npsim.model.network`),
* a batch of inputs x (B, n_0),
* optionally the perturbation to inject: per layer None or an array
  (repeats·B, n_l) added to that layer's activity (rows k·B .. (k+1)·B − 1 are
  copy k of the batch),

and returns a :class:`Measurement`: what each layer received, each layer's
activity (for time-stepped units the mean input current), and the outputs.
npsim computes the loss, the updates, decorrelation, optimizer steps and the
trajectory; rules see the substrate through :class:`SubstrateNetwork`, a
:class:`~npsim.model.network.Network` whose passes the substrate runs.

A substrate declares what it can do in :class:`Capabilities`; a rule that needs
what it lacks refuses it with one line when the run is built. npsim's own
simulation is :class:`NetworkSubstrate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..backend.arrays import device_of, namespace, tile_rows
from ..errors import IncompatibleSettings
from .capabilities import Capabilities
from .network import Network, Trace, check_pass, param_key

__all__ = ["Capabilities", "Measurement", "Substrate", "FunctionSubstrate", "NetworkSubstrate", "SubstrateNetwork"]


@dataclass
class Measurement:
    """What a substrate reports of one pass (rows: repeats·B, copy k at rows k·B ..).

    inputs[l] : (rows or B, n_{l-1}) what layer l received, time-averaged (the
        data for layer 0, else the spike rate or output of layer l−1); B rows
        where every copy received the same. None entries (or None) when the
        substrate reports only outputs.
    pre[l] : (rows, n_l) layer l's activity: its input current (time-averaged
        for time-stepped units), perturbation and intrinsic noise included.
    output : (rows, n_L) the network's outputs (the loss is computed on these).
    decorrelated : the inputs already had R applied (a substrate that applies
        R itself, as npsim's own network does); otherwise npsim applies it.
    state : anything the substrate keeps for itself (e.g. to replay a clean
        pass in :meth:`Substrate.run_from`); npsim does not read it.
    records : spike and membrane recordings, where the substrate makes them
        (see :func:`npsim.model.spiking.simulate`).
    """

    inputs: list | None
    pre: list | None
    output: object
    decorrelated: bool = False
    state: object = None
    records: dict | None = None


class Substrate:
    """Base class of substrates: override :meth:`run`; the other two methods have defaults.

    name : shown in messages and in the run's description.
    capabilities : a :class:`Capabilities`.
    eval_batch_size : samples per pass when evaluating.
    """

    name: str = "substrate"
    capabilities: Capabilities = Capabilities()
    eval_batch_size: int = 10000

    def run(self, params: dict, x, *, perturb=None, repeats: int = 1, rng=None) -> Measurement:
        """One pass of ``repeats`` copies of the batch x (B, n_0), each copy with its rows of ``perturb`` added.

        rng : npsim's random stream, to seed the substrate's own randomness
            (its noise, input spike trains) so that runs are reproducible.
        """
        raise NotImplementedError

    def run_pair(self, params: dict, x, *, perturb, repeats: int, rng=None) -> tuple[Measurement, Measurement]:
        """The clean pass and ``repeats`` perturbed copies: (clean, perturbed).

        Default: one :meth:`run` of 1 + repeats copies, the first unperturbed,
        split after; a substrate that runs the two more cheaply overrides it.
        """
        B = x.shape[0]
        if perturb is not None:
            perturb = [None if p is None else _with_clean_rows(p, B) for p in perturb]
        m = self.run(params, x, perturb=perturb, repeats=1 + repeats, rng=rng)
        return _split(m, B)

    def run_from(self, base: Measurement, start: int, params: dict, x, *, perturb, repeats: int,
                 rng=None) -> Measurement:
        """A perturbed pass that perturbs no layer below ``start``; ``base`` is the batch's clean pass.

        Default: a full :meth:`run` (a physical system cannot replay its lower
        layers); a simulator whose lower layers are deterministic may reuse
        them from ``base`` instead.
        """
        return self.run(params, x, perturb=perturb, repeats=repeats, rng=rng)

class FunctionSubstrate(Substrate):
    """A substrate from a function ``fn(params, x, perturb, repeats, rng) -> Measurement``.

    The quickest way to train a system of one's own: wrap the function that
    runs it (see the README, "Train a system you can only run forward").
    """

    def __init__(self, fn: Callable, capabilities: Capabilities = Capabilities(), name: str = "function"):
        if not callable(fn):
            raise TypeError(f"FunctionSubstrate: fn must be callable, got {type(fn).__name__}")
        if not isinstance(capabilities, Capabilities):
            raise TypeError(f"FunctionSubstrate: capabilities must be Capabilities, got {type(capabilities).__name__}")
        self.fn, self.capabilities, self.name = fn, capabilities, name

    def run(self, params, x, *, perturb=None, repeats=1, rng=None):
        m = self.fn(params, x, perturb, repeats, rng)
        if not isinstance(m, Measurement):
            raise TypeError(f"substrate {self.name!r}: the function must return a Measurement, got "
                            f"{type(m).__name__}")
        return m


class NetworkSubstrate(Substrate):
    """npsim's own simulation of ``net`` as a substrate: each hook runs the Network method of the same pass."""

    name = "npsim"

    def __init__(self, net: Network):
        if not isinstance(net, Network) or isinstance(net, SubstrateNetwork):
            raise TypeError(f"NetworkSubstrate: needs an npsim Network, got {type(net).__name__}")
        self.net = net
        self.capabilities = Capabilities(perturbation=True, hidden=True, noisy=net.noisy)

    def _dummy_targets(self, x):
        # the network computes a loss; the substrate reports only activities, so any targets do
        return namespace(x).zeros((x.shape[0],), dtype=namespace(x).int64, device=device_of(x))

    def run(self, params, x, *, perturb=None, repeats=1, rng=None, monitor=None):
        if repeats == 1:
            tr = self.net.forward(params, x, self._dummy_targets(x), rng=rng, perturb=perturb, monitor=monitor)
            return _measured(tr)
        clean = self.net.forward(params, x, self._dummy_targets(x), rng=rng)
        return self.run_from(_measured(clean), 0, params, x, perturb=perturb, repeats=repeats, rng=rng)

    def run_pair(self, params, x, *, perturb, repeats, rng=None):
        clean, noisy = self.net.forward_pair(params, x, self._dummy_targets(x), rng=rng, perturb=perturb,
                                             repeats=repeats)
        return _measured(clean), _measured(noisy)

    def run_from(self, base, start, params, x, *, perturb, repeats, rng=None):
        tr = self.net.forward(params, x, self._dummy_targets(x), rng=rng, perturb=perturb, base=base.state,
                              start=start, repeats=repeats)
        return _measured(tr)


class SubstrateNetwork(Network):
    """A network whose passes a :class:`Substrate` runs: the structure (layers, loss,
    simulation settings) of ``net``, the passes of ``substrate``.

    Rules, decorrelation, optimizers, trajectories and resume use it as any
    Network. What it cannot do it refuses: the exact gradient (BP and the
    alignment diagnostic), and what the substrate's capabilities lack.
    """

    def __init__(self, net: Network, substrate: Substrate):
        if not isinstance(substrate, Substrate):
            raise TypeError(f"SubstrateNetwork: substrate must be a Substrate, got {type(substrate).__name__}")
        super().__init__(net.layers, net.loss, simulation=net.simulation)
        self.substrate = substrate

    @property
    def capabilities(self) -> Capabilities:
        return self.substrate.capabilities

    @property
    def substrate_name(self) -> str:
        return self.substrate.name

    @property
    def eval_batch_size(self) -> int:  # type: ignore[override]
        return self.substrate.eval_batch_size

    @property
    def differentiable(self) -> bool:
        return False

    @property
    def noisy(self) -> bool:
        return self.substrate.capabilities.noisy

    def require_differentiable(self, why: str = "BP") -> None:
        raise IncompatibleSettings(f"{why} needs the derivative of every layer, but substrate "
                                   f"{self.substrate.name!r} runs forward only; train it with a perturbation rule")

    def describe(self) -> str:
        return super().describe() + f" | substrate {self.substrate.name}"

    def forward(self, params, x, y, *, rng=None, perturb=None, base: Trace | None = None, start: int = 0,
                repeats: int = 1, monitor=None) -> Trace:
        check_pass(self.n_layers, perturb, base, start, repeats)
        if base is not None and base.source is None:
            raise ValueError("base must be a trace of this substrate's clean pass")
        if monitor is not None:
            if not isinstance(self.substrate, NetworkSubstrate):
                raise IncompatibleSettings(f"substrate {self.substrate.name!r} records no spikes or potentials "
                                           f"(train.monitor)")
            m = self.substrate.run(params, x, perturb=perturb, rng=rng, monitor=monitor)
        elif base is not None:
            m = self.substrate.run_from(base.source, start, params, x, perturb=perturb, repeats=repeats, rng=rng)
        else:
            m = self.substrate.run(params, x, perturb=perturb, rng=rng)
        return self._trace(params, m, y, repeats if base is not None else 1)

    def forward_pair(self, params, x, y, *, rng=None, perturb=None, repeats: int = 1) -> tuple[Trace, Trace]:
        check_pass(self.n_layers, perturb, None, 0, 1)
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        clean, noisy = self.substrate.run_pair(params, x, perturb=perturb, repeats=repeats, rng=rng)
        return self._trace(params, clean, y, 1), self._trace(params, noisy, y, repeats)

    def backward(self, params, trace, y):
        self.require_differentiable("BP")

    def _trace(self, params, m: Measurement, y, repeats: int) -> Trace:
        """The Trace the rules read, from what the substrate measured; the loss is npsim's."""
        L = self.n_layers
        if not isinstance(m, Measurement):
            raise TypeError(f"substrate {self.substrate.name!r} returned {type(m).__name__}, not a Measurement")
        rows = repeats * y.shape[0]
        if tuple(m.output.shape) != (rows, self.layers[-1].n_units):
            raise ValueError(f"substrate {self.substrate.name!r}: output has shape {tuple(m.output.shape)}, "
                             f"expected {(rows, self.layers[-1].n_units)}")
        inputs = [None] * L
        if m.inputs is not None:
            for i, h in enumerate(m.inputs):
                if h is None or m.decorrelated or not self.layers[i].decorrelate:
                    inputs[i] = h
                else:
                    inputs[i] = self.layers[i].layer_input(h, params[param_key(i, "R")])
        pre = list(m.pre) if m.pre is not None else [None] * L
        post = [None] * (L - 1) + [m.output]
        loss = self.loss(m.output, tile_rows(y, repeats))
        return Trace(inputs, [None] * L, pre, post, loss, start=0, repeats=repeats, records=m.records, source=m)


def _measured(tr: Trace) -> Measurement:
    return Measurement(list(tr.inputs), list(tr.pre), tr.output, decorrelated=True, state=tr, records=tr.records)


def _with_clean_rows(p, B: int):
    """p (K·B, n) with B rows of zeros in front: copy 0 is the clean pass."""
    xp = namespace(p)
    return xp.concat([xp.zeros((B, p.shape[1]), dtype=p.dtype, device=device_of(p)), p], axis=0)


def _split(m: Measurement, B: int) -> tuple[Measurement, Measurement]:
    """A measurement of 1 + K copies -> (copy 0, copies 1..K)."""
    def rows(a, clean):
        if a is None or a.shape[0] == B:  # shared by every copy
            return a
        return a[:B, ...] if clean else a[B:, ...]

    parts = []
    for clean in (True, False):
        parts.append(Measurement(None if m.inputs is None else [rows(a, clean) for a in m.inputs],
                                 None if m.pre is None else [rows(a, clean) for a in m.pre],
                                 rows(m.output, clean), decorrelated=m.decorrelated, state=m.state,
                                 records=m.records if clean else None))
    return parts[0], parts[1]
