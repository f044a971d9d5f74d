"""NIR: export npsim networks to, and build them from, the Neuromorphic Intermediate Representation.

NIR (https://neuroir.org, PyPI ``nir``, the optional extra ``npsim[nir]``) is
how spiking networks move between simulators and hardware (snnTorch, Norse,
Lava, SpiNNaker2, ...). A NIR graph is a set of nodes with continuous-time
semantics, times in seconds. The README section "Export to and import from
NIR" holds the parameter table; in short:

npsim -> NIR (:func:`network_to_nir`)

* Dense layer -> ``Affine(weight = W R, bias = b)``: the layer computes
  W (R x) + b = (W R) x + b, so the decorrelation matrix R is folded in.
* Conv2D -> ``Conv2d(weight = W R as (C_out, C_in, k, k), bias = b, stride,
  padding, dilation 1, groups 1)``; average pooling -> ``AvgPool2d(q, q, 0)``;
  a dense layer after a convolution is preceded by ``Flatten`` (channel-major,
  as npsim orders images).
* node models: ``lif`` -> ``LIF(tau = tau_ms / 1000, r = 1, v_leak = 0,
  v_threshold = threshold, v_reset = 0)``; ``li`` -> ``LI(tau_ms / 1000, r = 1,
  v_leak = 0)``; ``heaviside`` -> ``Threshold(threshold)``; ``linear`` -> no node.
* the simulation (dt, steps, input encoding, readout, integration scheme)
  -> the graph's metadata; each neuron node's metadata names its npsim layer
  and readout.

What NIR cannot express is refused with one line naming the layer
(:class:`~npsim.errors.IncompatibleSettings`): node models without a NIR node
(relu, leaky_relu, tanh, sigmoid, sign, quantize, stochastic_binary), max
pooling, subtract reset, refractory periods, and non-linear layers that read
the time average of spiking layers (npsim reads rates there; NIR streams
signals). Intrinsic noise (activity noise, LIF membrane noise) is refused too
unless ``drop_noise``: then the noiseless network is exported and the noise
is described in the graph's metadata (``dropped_noise``).

NIR -> npsim (:func:`network_from_nir`, the config key ``network.from_nir``)

A chain Input -> [Affine | Linear | Conv2d] -> [LIF | LI | Threshold]? ->
[AvgPool2d | SumPool2d]? -> ... -> Output becomes npsim layers. Parameters
npsim has no field for are folded exactly into the layer's weights: per unit,
NIR's ``tau dv/dt = v_leak - v + r I`` with threshold θ_i equals npsim's
``tau dv'/dt = -v' + i'`` for v' = c_i v, c_i = θ/θ_i, i' = c_i (r_i (W x + b) +
v_leak_i); a per-unit Threshold is folded into the bias, ``Scale`` into the
weights, and sum pooling into the next layer's weights (q² times the average).
What cannot be folded (unequal time constants in a layer, v_reset ≠ 0, IF,
CubaLIF, Delay, recurrence, branches, LIF after Conv2d) is refused.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import (
    ConfigError,
    IncompatibleSettings,
    NoCheckpoint,
    OutputError,
    TrajectoryCorrupt,
    TrajectoryError,
    UsageError,
)
from ..io.outputs import check_output_file
from ..io.trajectory import read_attrs, read_checkpoint, read_trajectory
from ..model.layers import Conv2D, Dense
from ..model.network import Network, param_key
from ..model.nodes import Heaviside, Linear
from ..model.spiking import LIF, LeakyIntegrator, Simulation
from .config import Config, parse_toml

__all__ = ["INSTALL_HINT", "require_nir", "network_to_nir", "write_nir", "read_nir", "network_from_nir",
           "ImportedNetwork", "PretrainedNetwork", "pretrained_network", "stored_network", "run_weights",
           "export_trained"]

INSTALL_HINT = 'pip install "npsim[nir]"'
SECONDS_PER_MS = 1e-3

#: npsim node models that have a NIR node (see the module docstring)
EXPORTABLE_NODES = (Linear, Heaviside, LIF, LeakyIntegrator)


def require_nir():
    """The ``nir`` package, imported on first use; UsageError naming the extra when it is missing."""
    try:
        import nir  # noqa: PLC0415 - optional dependency, imported lazily
    except ImportError as exc:
        raise UsageError(f"NIR files need the Python package 'nir' ({exc}); install it with {INSTALL_HINT}") from None
    return nir


def _host(a) -> np.ndarray:
    """A parameter array as a host NumPy array."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


# --- npsim -> NIR ----------------------------------------------------------------


def _layer_kind(layer) -> str:
    return "Conv2D" if isinstance(layer, Conv2D) else "Dense"


def check_exportable(net: Network, *, drop_noise: bool = False) -> None:
    """Raise IncompatibleSettings (one line, naming the layer) if ``net`` has something NIR cannot express."""
    L = net.n_layers
    temporal = [i for i, layer in enumerate(net.layers) if layer.node.temporal]
    for i, layer in enumerate(net.layers):
        node, where = layer.node, f"layer {i} ({_layer_kind(layer)}, node model '{layer.node.name}')"
        if type(node) not in EXPORTABLE_NODES:
            raise IncompatibleSettings(
                f"{where}: NIR has no node for '{node.name}'; npsim exports linear, heaviside, lif and li units "
                f"(NIR's neurons are LIF, LI, IF, CubaLIF and Threshold)")
        if isinstance(layer, Conv2D) and layer.pool > 1 and layer.pooling == "max":
            raise IncompatibleSettings(f"{where}: max pooling has no NIR node (NIR pools by sum or average); train "
                                       f"with pooling = 'avg' to export this network")
        if isinstance(node, LIF):
            if node.reset == "subtract":
                raise IncompatibleSettings(f"{where}: reset = 'subtract' cannot be expressed in NIR, whose LIF "
                                           f"resets to v_reset; only reset = 'zero' exports")
            if node.refractory > 0:
                raise IncompatibleSettings(f"{where}: refractory = {node.refractory:g} ms cannot be expressed in "
                                           f"NIR (its LIF has no refractory period); only refractory = 0 exports")
        noise = _noise_text(layer)
        if noise and not drop_noise:
            raise IncompatibleSettings(f"{where}: intrinsic noise ({noise}) has no NIR node; pass --drop-noise "
                                       f"(drop_noise=True) to export the network without it, described in the "
                                       f"graph's metadata")
        if isinstance(node, LeakyIntegrator) and i < L - 1:
            raise IncompatibleSettings(f"{where}: an 'li' layer passes no spikes on, so it exports only as the "
                                       f"last layer")
        if temporal and i > temporal[0] and not node.temporal and not (i == L - 1 and isinstance(node, Linear)):
            raise IncompatibleSettings(
                f"{where}: it reads the time-averaged output of the spiking layers below it, which a NIR graph "
                f"(signals streamed in time) cannot express; only a linear read-out may follow spiking layers, "
                f"as the last layer")


def _noise_text(layer) -> str:
    parts = []
    if layer.noise is not None:
        parts.append(layer.noise.describe())
    if isinstance(layer.node, LIF) and layer.node.membrane_noise > 0:
        parts.append(f"membrane_noise = {layer.node.membrane_noise:g}")
    return ", ".join(parts)


def _neuron_node(nir, node, shape, dtype, meta: dict):
    """The NIR neuron node of npsim node model ``node`` for units of ``shape`` (None for linear units)."""
    full = lambda v: np.full(shape, v, dtype=dtype)  # noqa: E731
    if isinstance(node, Linear):
        return None
    if isinstance(node, Heaviside):
        return nir.Threshold(threshold=full(node.threshold), metadata=meta)
    if isinstance(node, LIF):
        return nir.LIF(tau=full(node.tau * SECONDS_PER_MS), r=full(1.0), v_leak=full(0.0),
                       v_threshold=full(node.threshold), v_reset=full(0.0),
                       metadata=meta | {"npsim_readout": node.readout})
    if isinstance(node, LeakyIntegrator):
        return nir.LI(tau=full(node.tau * SECONDS_PER_MS), r=full(1.0), v_leak=full(0.0),
                      metadata=meta | {"npsim_readout": node.readout})
    raise AssertionError(node)  # check_exportable refused it


def _node_suffix(node) -> str:
    return {Heaviside: "threshold", LIF: "lif", LeakyIntegrator: "li"}[type(node)]


def network_to_nir(net: Network, params: dict, *, drop_noise: bool = False, metadata: dict | None = None):
    """The NIR graph (``nir.NIRGraph``) of ``net`` with parameters ``params``.

    drop_noise : export a network with intrinsic noise without it (else refused);
        the noise is described in the graph's metadata under ``dropped_noise``.
    metadata : extra entries for the graph's metadata (str, int, float or dicts of them).
    Nodes are named ``layer<l>_affine``/``_conv``/``_flatten``, ``layer<l>_lif``/``_li``/``_threshold``
    and ``layer<l>_pool``, between ``input`` and ``output``.
    """
    nir = require_nir()
    check_exportable(net, drop_noise=drop_noise)
    first = net.layers[0]
    shape = tuple(first.in_shape) if isinstance(first, Conv2D) else (first.n_in,)
    nodes = {"input": nir.Input(input_type=np.array(shape))}
    edges = []
    prev = ["input"]

    def add(name, node):
        nodes[name] = node
        edges.append((prev[0], name))
        prev[0] = name

    dropped = {}
    for i, layer in enumerate(net.layers):
        W, b = _host(params[param_key(i, "W")]), _host(params[param_key(i, "b")])
        for name, a in (("W", W), ("b", b)):
            if not np.all(np.isfinite(a)):
                raise IncompatibleSettings(f"layer {i}: parameter {name} is not finite (NaN or inf); nothing to "
                                           f"export")
        dtype = W.dtype
        if layer.decorrelate:
            R = _host(params[param_key(i, "R")])
            W = (W.astype(np.float64) @ R.astype(np.float64)).astype(dtype)  # W (R x) = (W R) x
        meta = {"npsim_layer": i, "npsim_node": layer.node.name}
        if isinstance(layer, Conv2D):
            C, H, Wd = layer.in_shape
            k = layer.kernel
            add(f"layer{i}_conv", nir.Conv2d(input_shape=(H, Wd), weight=W.reshape(layer.channels, C, k, k),
                                             stride=layer.stride, padding=layer.padding, dilation=1, groups=1,
                                             bias=b.astype(dtype, copy=True), metadata=meta))
            units = (layer.channels, *layer.out_hw)
            out_shape = tuple(layer.out_shape)
        else:
            if len(shape) == 3:
                add(f"layer{i}_flatten", nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1))
            add(f"layer{i}_affine", nir.Affine(weight=W.copy(), bias=b.astype(dtype, copy=True), metadata=meta))
            units = out_shape = (layer.n_out,)
        neuron = _neuron_node(nir, layer.node, units, np.float64, meta)  # time constants, thresholds: exact
        if neuron is not None:
            add(f"layer{i}_{_node_suffix(layer.node)}", neuron)
        if isinstance(layer, Conv2D) and layer.pool > 1:
            q = np.array([layer.pool, layer.pool])
            add(f"layer{i}_pool", nir.AvgPool2d(kernel_size=q, stride=q.copy(), padding=np.zeros(2, dtype=q.dtype)))
        noise = _noise_text(layer)
        if noise:
            dropped[f"layer{i}"] = noise
        shape = out_shape
    nodes["output"] = nir.Output(output_type=np.array(shape))
    edges.append((prev[0], "output"))
    md = graph_metadata(net)
    if dropped:
        md["dropped_noise"] = dropped
    md.update(metadata or {})
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=md, type_check=True)


def graph_metadata(net: Network) -> dict:
    """What a NIR graph of ``net`` cannot say in its nodes: how npsim simulates and reads it."""
    md = {"generator": f"npsim {__version__}", "time_unit": "s", "network": net.describe(), "loss": net.loss.name}
    L = net.n_layers
    last, last_name = net.layers[-1], f"layer{L - 1}"
    if not net.temporal:
        md["simulation"] = "static: every node is evaluated once per input; no time dynamics"
        md["readout"] = "the output of the last node"
        return md
    s = net.simulation
    md.update(dt=s.dt * SECONDS_PER_MS, steps=s.steps, duration=s.duration * SECONDS_PER_MS)
    md["npsim_simulation"] = {"steps": s.steps, "dt_ms": s.dt, "encoding": s.encoding, "max_rate_hz": s.max_rate}
    if net.layers[0].node.temporal and s.encoding != "current":
        p = "clip(x, 0, 1)" + (f" * max_rate * dt, max_rate = {s.max_rate:g} Hz" if s.encoding == "poisson" else "")
        md["input_encoding"] = s.encoding
        md["input"] = f"spike trains: at every step input unit j spikes with probability {p}"
        if s.encoding == "poisson":
            md["max_rate"] = s.max_rate
    else:
        md["input_encoding"] = "current"
        md["input"] = "the input x is held constant over all steps"
    md["integration"] = ("per step of dt, the input current I is held constant and tau dv/dt = v_leak - v + r I "
                         "is integrated exactly: v <- a v + (1 - a) (v_leak + r I), a = exp(-dt/tau); a LIF unit "
                         "spikes when v >= v_threshold after the step and v is then set to v_reset; a spike is a "
                         "pulse of height 1 lasting the step, the next layer's input in the same step")
    md["initial_state"] = "v = 0 at the start of every sample"
    if isinstance(last.node, LIF):
        md["readout"] = (f"the spike {'rate (spikes per step)' if last.node.readout == 'rate' else 'count'} of "
                         f"node {last_name}_lif over the steps")
    elif isinstance(last.node, LeakyIntegrator):
        md["readout"] = (f"the potential of node {last_name}_li " +
                         ("averaged over the steps" if last.node.readout == "mean" else "after the last step"))
    else:  # a linear read-out of the last spiking layer (check_exportable allows nothing else)
        below = net.layers[-2].node if L > 1 else None
        if isinstance(below, LIF) and below.readout == "count":
            md["readout"] = (f"W count + b of node {last_name}_affine, count = spikes of layer {L - 2} over the "
                             f"steps (the time sum of W s(t), plus b once)")
        else:
            md["readout"] = (f"the output of node {last_name}_affine averaged over the steps (= W rate + b, rate = "
                             f"spikes per step of layer {L - 2})")
    return md


def write_nir(graph, path) -> Path:
    """Write ``graph`` to ``path`` (HDF5, ``nir.write``) atomically: a kill leaves no half-written file."""
    nir = require_nir()
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent if str(p.parent) else ".", prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        nir.write(tmp, graph)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


# --- a run's trained network -> NIR ----------------------------------------------------


def stored_network(run) -> tuple[Config, int, int]:
    """What rebuilds the network of trajectory file ``run``: its stored config, input width and classes.

    (The caller builds it with :func:`npsim.experiment.assemble.build_network`.)
    """
    attrs = read_attrs(run)
    config, sizes = attrs.get("config"), attrs.get("sizes")
    if not isinstance(config, str) or sizes is None or len(np.atleast_1d(sizes)) < 2:
        raise TrajectoryCorrupt(f"{run}: the root attributes 'config' and 'sizes' are missing or unreadable")
    sizes = np.atleast_1d(sizes)
    return parse_toml(config, f"{run} (stored config)"), int(sizes[0]), int(sizes[-1])


def run_weights(run, epoch: int | None = None) -> tuple[dict, str]:
    """A run's weights and where they come from: the newest (its checkpoint, else its last snapshot), or the
    snapshot taken after ``epoch``."""
    if epoch is None:
        try:
            arrays, meta = read_checkpoint(run)
        except (NoCheckpoint, TrajectoryCorrupt):
            pass  # the snapshots may still hold weights
        else:
            params = {k.removeprefix("params/"): v for k, v in arrays.items() if k.startswith("params/")}
            if params:
                return params, (f"checkpoint after update {meta.get('step')} (epoch {meta.get('epoch')}, batch "
                                f"{meta.get('batch')})")
    snaps = read_trajectory(run, monitors=False).snapshots
    epochs = np.asarray(snaps.get("epoch", ()), dtype=np.int64)
    if epoch is None:
        if not epochs.size:
            raise TrajectoryError(f"{run}: holds no weights to export (no checkpoint and no snapshot)")
        row = epochs.size - 1
    else:
        rows = np.flatnonzero(epochs == epoch)
        if not rows.size:
            have = ", ".join(str(e) for e in epochs) or "none"
            raise UsageError(f"--epoch {epoch}: {run} has no weight snapshot after epoch {epoch} (snapshots after "
                             f"epochs: {have})")
        row = int(rows[-1])
    params = {k.removeprefix("params/"): v[row] for k, v in snaps.items() if k.startswith("params/")}
    return params, f"snapshot after epoch {int(epochs[row])}"


def export_trained(net: Network, run, out, *, epoch: int | None = None, drop_noise: bool = False,
                   overwrite: bool = False) -> tuple[Path, str]:
    """Write the NIR graph of ``net`` (the network of trajectory file ``run``) with the run's weights to ``out``.

    Returns (the file written, where the weights came from). Everything is
    checked before anything is written; an existing ``out`` is replaced only with ``overwrite``.
    """
    require_nir()
    out = check_output_file(out, what="NIR file")
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: exists; pass --overwrite to replace it")
    params, source = run_weights(run, epoch)
    try:
        net.check_params(params)
    except ValueError as exc:
        raise TrajectoryError(f"{run}: its weights do not fit the network of its stored config: {exc}") from None
    attrs = read_attrs(run)
    extra = {"source_run": os.fspath(run), "weights": source}
    for key in ("name", "seed", "rule", "data", "status"):
        if key in attrs:
            v = attrs[key]
            extra[f"run_{key}"] = int(v) if isinstance(v, (int, np.integer)) else str(v)
    try:
        graph = network_to_nir(net, params, drop_noise=drop_noise, metadata=extra)
    except IncompatibleSettings as exc:
        raise IncompatibleSettings(f"{run}: {exc}") from None
    return write_nir(graph, out), source


# --- NIR -> npsim ------------------------------------------------------------------


def read_nir(path, *, where: str = ""):
    """Read a NIR file (``nir.read``); ConfigError (one line, prefixed by ``where``) if it is missing or unreadable."""
    nir = require_nir()
    p = Path(path)
    label = f"{where}: {p}" if where else str(p)
    if not p.is_file():
        raise ConfigError(f"{label}: NIR file not found")
    try:
        return nir.read(p, type_check=False)
    except Exception as exc:  # noqa: BLE001 - nir.read raises anything (KeyError, AssertionError, OSError, ...)
        raise ConfigError(f"{label}: not a readable NIR file ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())})") from None


@dataclass
class ImportedNetwork:
    """What a NIR graph holds, as npsim layers and parameters.

    layers : Dense / Conv2D layers (no decorrelation, no noise).
    params : float64 ``layer<l>/W`` and ``layer<l>/b`` (every NIR parameter npsim has no field for folded in).
    input_shape : (n,) or (C, H, W).
    simulation : the npsim simulation settings recorded in the graph's metadata by an npsim export, or None.
    """

    layers: list
    params: dict
    input_shape: tuple
    simulation: Simulation | None


def _chain(nir, graph, label: str) -> list:
    """The graph's nodes from Input to Output, in order, as (name, node); refused unless a plain chain."""
    nodes = graph.nodes
    for name, node in nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise IncompatibleSettings(f"{label}: node '{name}' is a subgraph (a recurrent layer?); npsim builds "
                                       f"feed-forward chains only")
    ins = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
    outs = [k for k, n in nodes.items() if isinstance(n, nir.Output)]
    if len(ins) != 1 or len(outs) != 1:
        raise IncompatibleSettings(f"{label}: npsim needs one Input and one Output node, the graph has {len(ins)} "
                                   f"and {len(outs)}")
    succ, pred = defaultdict(list), defaultdict(list)
    for a, b in graph.edges:
        if a not in nodes or b not in nodes:
            raise IncompatibleSettings(f"{label}: edge ({a!r}, {b!r}) names a node the graph lacks")
        succ[a].append(b)
        pred[b].append(a)
    for name in nodes:
        if len(succ[name]) > 1 or len(pred[name]) > 1:
            raise IncompatibleSettings(f"{label}: node '{name}' has {len(pred[name])} inputs and {len(succ[name])} "
                                       f"outputs; npsim builds feed-forward chains without branches or merges")
    chain, cur, seen = [], ins[0], {ins[0]}
    while cur != outs[0]:
        if not succ[cur]:
            raise IncompatibleSettings(f"{label}: the path from the Input ends at node '{cur}' before the Output")
        cur = succ[cur][0]
        if cur in seen:
            raise IncompatibleSettings(f"{label}: the graph has a cycle through node '{cur}' (recurrence); npsim "
                                       f"builds feed-forward chains only")
        seen.add(cur)
        if cur != outs[0]:
            chain.append((cur, nodes[cur]))
    rest = sorted(set(nodes) - seen)
    if rest:
        raise IncompatibleSettings(f"{label}: nodes {rest} are not on the path from the Input to the Output")
    return chain


def _vector(a, n: int, what: str, label: str) -> np.ndarray:
    """A neuron parameter as a float64 vector of n entries (scalars broadcast)."""
    v = np.asarray(a, dtype=np.float64)
    if v.size == 1:
        return np.full(n, float(v.reshape(-1)[0]))
    if v.size != n:
        raise IncompatibleSettings(f"{label}: {what} has {v.size} entries for {n} units")
    return v.reshape(-1)


def _uniform(v: np.ndarray, what: str, label: str) -> float:
    if not np.allclose(v, v[0], rtol=1e-6, atol=0):
        raise IncompatibleSettings(f"{label}: {what} differs between units ({v.min():g} to {v.max():g}); npsim "
                                   f"needs one value per layer")
    return float(v[0])


def _pair(v, what: str, label: str) -> int:
    """A conv/pool setting given as an int or a (height, width) pair, with both equal."""
    a = np.asarray(v).reshape(-1)
    if a.size not in (1, 2) or a.min() != a.max():
        raise IncompatibleSettings(f"{label}: {what} {a.tolist()} is not square; npsim convolutions and pools are")
    return int(a[0])


class _Spec:
    """One npsim layer being assembled from NIR nodes."""

    def __init__(self, names, kind, W, b, in_shape):
        self.names, self.kind, self.W, self.b, self.in_shape = names, kind, W, b, in_shape
        self.neuron = self.pool = None
        self.node = Linear()
        self.conv = {}
        self.pool_q, self.sum_pool = 1, False

    @property
    def label(self) -> str:
        return "/".join(self.names)


def network_from_nir(graph, *, where: str = "") -> ImportedNetwork:
    """npsim layers and parameters of a NIR graph (a ``nir.NIRGraph`` or the path of a NIR file).

    where : prefix of error messages (e.g. "network.from_nir: net.nir").
    Refuses (IncompatibleSettings, one line naming the node) what npsim cannot
    build exactly; see the module docstring for what is folded into the weights.
    """
    nir = require_nir()
    if isinstance(graph, (str, os.PathLike)):
        label = f"{where}: {graph}" if where else str(graph)
        graph = read_nir(graph, where=where)
    else:
        label = where or "NIR graph"
    chain = _chain(nir, graph, label)
    inp = next(n for n in graph.nodes.values() if isinstance(n, nir.Input))
    in_shape = tuple(int(v) for v in np.asarray(inp.input_type["input"]).reshape(-1))
    if len(in_shape) not in (1, 3):
        raise IncompatibleSettings(f"{label}: the Input has shape {list(in_shape)}; npsim takes vectors (n) or "
                                   f"images (C, H, W) without a batch dimension")
    specs: list[_Spec] = []
    shape = in_shape
    scale_next = 1.0  # a sum pool's q², folded into the next layer's weights
    prev = "input"  # what the previous node was: input, weights, neuron, pool, flatten
    for name, node in chain:
        here = f"{label}: node '{name}' ({type(node).__name__})"
        cur = specs[-1] if specs else None
        if isinstance(node, (nir.Affine, nir.Linear)):
            W = np.asarray(node.weight, dtype=np.float64)
            if W.ndim != 2:
                raise IncompatibleSettings(f"{here}: weight has shape {list(W.shape)}; npsim needs a matrix")
            n_in = int(np.prod(shape))
            if len(shape) != 1 or W.shape[1] != n_in:
                raise IncompatibleSettings(f"{here}: takes {W.shape[1]} inputs but receives shape {list(shape)}"
                                           + ("; put a Flatten before it" if len(shape) == 3 else ""))
            b = (np.asarray(node.bias, dtype=np.float64).reshape(-1) if isinstance(node, nir.Affine)
                 else np.zeros(W.shape[0]))
            specs.append(_Spec([name], "dense", W * scale_next, b, shape))
            scale_next, shape, prev = 1.0, (W.shape[0],), "weights"
        elif isinstance(node, nir.Conv2d):
            if len(shape) != 3:
                raise IncompatibleSettings(f"{here}: needs an image input (C, H, W), receives shape {list(shape)}")
            w = np.asarray(node.weight, dtype=np.float64)
            C_out, C_in, kh, kw = w.shape
            if kh != kw:
                raise IncompatibleSettings(f"{here}: kernel {kh}x{kw} is not square; npsim convolutions are")
            if C_in != shape[0] or int(node.groups) != 1:
                raise IncompatibleSettings(f"{here}: needs groups = 1 and {shape[0]} input channels (has groups = "
                                           f"{int(node.groups)}, {C_in} channels)")
            if _pair(node.dilation, "dilation", here) != 1:
                raise IncompatibleSettings(f"{here}: dilation > 1 has no npsim equivalent")
            stride = _pair(node.stride, "stride", here)
            pad = node.padding
            if isinstance(pad, (str, bytes)):
                pad = pad.decode() if isinstance(pad, bytes) else pad
                if pad == "valid":
                    pad = 0
                elif pad == "same" and stride == 1 and kh % 2 == 1:
                    pad = (kh - 1) // 2
                else:
                    raise IncompatibleSettings(f"{here}: padding '{pad}' with stride {stride} and kernel {kh} has "
                                               f"no npsim equivalent; give it in pixels")
            pad = _pair(pad, "padding", here)
            b = np.asarray(node.bias, dtype=np.float64).reshape(-1)
            s = _Spec([name], "conv", w.reshape(C_out, -1) * scale_next, b, shape)
            s.conv = {"channels": C_out, "kernel": kh, "stride": stride, "padding": pad}
            specs.append(s)
            scale_next, prev = 1.0, "weights"
            H, Wd = shape[1:]
            shape = (C_out, (H + 2 * pad - kh) // stride + 1, (Wd + 2 * pad - kh) // stride + 1)
        elif isinstance(node, nir.Scale):
            if cur is None or cur.kind != "dense" or prev != "weights":
                raise IncompatibleSettings(f"{here}: npsim folds a Scale only directly after an Affine or Linear")
            sc = _vector(node.scale, cur.W.shape[0], "scale", here)
            cur.W, cur.b = cur.W * sc[:, None], cur.b * sc
            cur.names.append(name)
        elif isinstance(node, (nir.LIF, nir.LI, nir.Threshold)):
            if prev != "weights":
                raise IncompatibleSettings(f"{here}: follows no Affine, Linear or Conv2d node; an npsim layer is one "
                                           f"of those followed by at most one LIF, LI or Threshold node")
            _neuron(nir, cur, node, shape, here)
            cur.neuron = name
            cur.names.append(name)
            prev = "neuron"
        elif isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
            if cur is None or cur.kind != "conv" or prev not in ("weights", "neuron"):
                raise IncompatibleSettings(f"{here}: npsim pools only the units of a Conv2d layer, right after them")
            q = _pair(node.kernel_size, "kernel_size", here)
            if _pair(node.stride, "stride", here) != q or _pair(node.padding, "padding", here) != 0:
                raise IncompatibleSettings(f"{here}: npsim pools over non-overlapping windows (stride = kernel_size, "
                                           f"padding 0)")
            cur.pool, cur.pool_q, cur.sum_pool = name, q, isinstance(node, nir.SumPool2d)
            cur.names.append(name)
            if cur.sum_pool:
                scale_next = float(q * q)
            shape = (shape[0], shape[1] // q, shape[2] // q)
            prev = "pool"
        elif isinstance(node, nir.Flatten):
            if len(shape) == 3 and not (int(node.start_dim) == 0 and int(node.end_dim) in (-1, 2)):
                raise IncompatibleSettings(f"{here}: npsim flattens whole images (start_dim 0, end_dim -1)")
            shape, prev = (int(np.prod(shape)),), "flatten"
        else:
            raise IncompatibleSettings(
                f"{here}: has no npsim equivalent; npsim builds Affine, Linear or Conv2d layers, each followed by "
                f"at most one LIF, LI or Threshold node (and for Conv2d an AvgPool2d or SumPool2d), with Flatten "
                f"and Scale between them")
    if not specs:
        raise IncompatibleSettings(f"{label}: the graph has no Affine, Linear or Conv2d node, so no npsim layer")
    if scale_next != 1.0:
        raise IncompatibleSettings(f"{label}: the graph ends with a SumPool2d; npsim has average pooling only, and "
                                   f"folds a sum pool into the layer after it")
    out = _layers(specs, label)
    _check_time_structure(out, label)
    params = {}
    for i, s in enumerate(specs):
        params[param_key(i, "W")], params[param_key(i, "b")] = s.W, s.b
    return ImportedNetwork(out, params, in_shape, _simulation(graph, label))


def _neuron(nir, s: _Spec, node, shape: tuple, here: str) -> None:
    """Set the npsim node model of layer spec ``s`` (units of ``shape``) from a NIR neuron node, folding what
    npsim has no field for into W and b."""
    md = getattr(node, "metadata", None)
    readout = md.get("npsim_readout") if isinstance(md, dict) else None
    readout = readout.decode() if isinstance(readout, bytes) else readout
    n = s.W.shape[0]
    if isinstance(node, nir.Threshold):
        if s.kind == "conv":  # one threshold per channel at most: the channel's units share its bias
            try:
                per = np.broadcast_to(np.asarray(node.threshold, dtype=np.float64), shape).reshape(shape[0], -1)
            except ValueError:
                raise IncompatibleSettings(f"{here}: threshold of shape {list(np.shape(node.threshold))} does not "
                                           f"fit the units {list(shape)}") from None
            if not np.all(per == per[:, :1]):
                raise IncompatibleSettings(f"{here}: thresholds differ within a channel; npsim's convolution "
                                           f"units share their channel's bias")
            th = per[:, 0]
        else:
            th = _vector(node.threshold, n, "threshold", here)
        if np.all(th == th[0]):
            s.node = Heaviside(threshold=float(th[0]))
        else:  # H(a - θ_i) = H((a - θ_i) - 0): the per-unit threshold moves into the bias
            s.b = s.b - th
            s.node = Heaviside(threshold=0.0)
        return
    if s.kind == "conv":
        raise IncompatibleSettings(f"{here}: npsim's convolution units are not time-stepped; a LIF or LI node "
                                   f"may follow only an Affine or Linear node")
    tau = _vector(node.tau, n, "tau", here)
    r = _vector(node.r, n, "r", here)
    v_leak = _vector(node.v_leak, n, "v_leak", here)
    tau_s = _uniform(tau, "tau", here)
    if not tau_s > 0 or not math.isfinite(tau_s):
        raise IncompatibleSettings(f"{here}: tau must be positive and finite (got {tau_s:g} s)")
    scale = r.copy()
    kw = {"tau": tau_s / SECONDS_PER_MS}
    if isinstance(node, nir.LIF):
        th = _vector(node.v_threshold, n, "v_threshold", here)
        reset = _vector(node.v_reset if node.v_reset is not None else 0.0, n, "v_reset", here)
        if not np.all(th > 0):
            raise IncompatibleSettings(f"{here}: v_threshold must be positive for npsim (got {th.min():g})")
        if not np.allclose(reset, 0.0, rtol=0, atol=1e-12):
            raise IncompatibleSettings(f"{here}: v_reset = {reset[np.argmax(np.abs(reset))]:g}; npsim's LIF resets "
                                       f"to 0, the potential it starts from")
        th0 = float(th[0]) if np.all(th == th[0]) else 1.0
        c = th0 / th  # v' = c v: the unit's threshold becomes th0
        scale = scale * c
        kw["threshold"] = th0
        if readout in ("rate", "count"):
            kw["readout"] = readout
    else:
        c = np.ones(n)
        if readout in ("mean", "final"):
            kw["readout"] = readout
    s.W = s.W * scale[:, None]
    s.b = scale * s.b + c * v_leak  # tau dv'/dt = -v' + c (r (W x + b) + v_leak)
    s.node = LIF(**kw) if isinstance(node, nir.LIF) else LeakyIntegrator(**kw)


def _layers(specs: list, label: str) -> list:
    layers = []
    for s in specs:
        try:
            if s.kind == "conv":
                layers.append(Conv2D(in_shape=tuple(int(v) for v in s.in_shape), node=s.node, pool=s.pool_q,
                                     pooling="avg", **s.conv))
            else:
                layers.append(Dense(s.W.shape[1], s.W.shape[0], s.node))
        except ValueError as exc:  # a ParameterError from the layer: say which nodes
            raise IncompatibleSettings(f"{label}: nodes {s.label}: {exc}") from None
    return layers


def _check_time_structure(layers: list, label: str) -> None:
    temporal = [i for i, layer in enumerate(layers) if layer.node.temporal]
    L = len(layers)
    for i, layer in enumerate(layers):
        if isinstance(layer.node, LeakyIntegrator) and i < L - 1:
            raise IncompatibleSettings(f"{label}: layer {i} (an LI node) is not the last layer; npsim passes no "
                                       f"spikes out of a leaky integrator")
        if temporal and i > temporal[0] and not layer.node.temporal and not (
                i == L - 1 and isinstance(layer.node, Linear)):
            raise IncompatibleSettings(
                f"{label}: layer {i} ('{layer.node.name}') follows spiking layers; npsim feeds a non-spiking layer "
                f"there the spike rate, not the spikes, which matches the graph only for a linear last layer")


def _simulation(graph, label: str) -> Simulation | None:
    """The npsim simulation an npsim export recorded in the graph's metadata (None if none)."""
    md = graph.metadata if isinstance(graph.metadata, dict) else {}
    s = md.get("npsim_simulation")
    if not isinstance(s, dict):
        return None
    try:
        enc = s["encoding"]
        return Simulation(steps=int(s["steps"]), dt=float(s["dt_ms"]),
                          encoding=enc.decode() if isinstance(enc, bytes) else str(enc),
                          max_rate=float(s["max_rate_hz"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise IncompatibleSettings(f"{label}: metadata 'npsim_simulation' is unusable ({exc})") from None


class PretrainedNetwork(Network):
    """A :class:`Network` that starts from given weights: ``init`` returns them (and R = I) instead of drawing."""

    def __init__(self, layers, loss, simulation=None, *, initial: dict):
        super().__init__(layers, loss, simulation=simulation)
        self.initial = {}
        for i, layer in enumerate(self.layers):
            shapes = layer.param_shapes()
            for name in ("W", "b"):
                a = np.array(initial[param_key(i, name)], dtype=np.float64)
                if a.shape != shapes[name]:
                    raise ValueError(f"initial {param_key(i, name)} has shape {a.shape}, expected {shapes[name]}")
                self.initial[param_key(i, name)] = a

    def init(self, rng, backend, scheme: str = "he") -> dict:
        """The initial weights (rng and scheme are not used); decorrelating layers start from R = I."""
        params = {}
        for i, layer in enumerate(self.layers):
            for name in ("W", "b"):
                params[param_key(i, name)] = backend.asarray(self.initial[param_key(i, name)].copy())
            if layer.decorrelate:
                params[param_key(i, "R")] = backend.eye(layer.param_shapes()["R"][0])
        return params


def pretrained_network(path, n_in: int, n_out: int, *, loss, simulation: Simulation | None = None,
                       decorrelate: bool = False, noise=None, output_noise=None,
                       where: str = "network.from_nir") -> PretrainedNetwork:
    """The network of the NIR file ``path``, starting from its weights, for data of n_in features and n_out classes.

    simulation : how to simulate it (default: what an npsim export recorded in the graph, else Simulation()).
    decorrelate, noise, output_noise : as for a network built from config keys (R starts at I; noise goes to the
        hidden layers, ``output_noise`` to the last).
    """
    imp = network_from_nir(path, where=where)
    label = f"{where}: {path}"
    k = int(np.prod(imp.input_shape))
    if k != n_in:
        raise IncompatibleSettings(f"{label}: the graph takes {k} inputs but the data have {n_in} features")
    m = imp.layers[-1].n_out
    if m != n_out:
        raise IncompatibleSettings(f"{label}: the graph has {m} outputs but the data have {n_out} classes")
    layers = []
    L = len(imp.layers)
    for i, layer in enumerate(imp.layers):
        nz = noise if i < L - 1 else output_noise
        if nz is not None and layer.node.temporal:
            raise IncompatibleSettings(
                f"network.noise: the time-stepped node model {layer.node.name!r} (layer {i} of {path}) takes no "
                f"activity noise")
        layers.append(layer.replace(decorrelate=decorrelate, noise=nz))
    return PretrainedNetwork(layers, loss, simulation if simulation is not None else imp.simulation,
                             initial=imp.params)
