"""The Network: a stack of layers (:mod:`npsim.model.layers`) that runs passes.

A network is static structure (layers, node models, loss); its parameters
are a separate flat dict of named arrays, for a dense layer::

    "layer0/W"  (n_1, n_0)   weights, a_1 = x_0 W^T + b
    "layer0/b"  (n_1,)       bias
    "layer0/R"  (n_0, n_0)   decorrelation matrix (only if that layer decorrelates)

(a convolution's W is (channels, patch size), its R (patch size, patch size)).

Flat names make the optimizer state and the checkpoint plain named arrays.

Rules see the network only through :meth:`Network.forward` (a clean or
perturbed pass that returns a :class:`Trace` of what it computed) and
:meth:`Network.backward` (the exact gradient, for BP and alignment).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..backend.arrays import namespace as _xp
from ..backend.arrays import tile_rows
from ..backend.kernels import drive_activate
from ..errors import IncompatibleSettings
from .capabilities import Capabilities
from .catalog import make_node
from .layers import Dense, Layer
from .losses import Loss, make_loss
from .nodes import fused_slope
from .spiking import Monitor, Simulation, simulate

__all__ = ["Network", "Trace", "param_key", "mlp", "check_pass"]


def param_key(layer: int, name: str) -> str:
    """Name of parameter ``name`` ("W", "b" or "R") of layer ``layer``."""
    return f"layer{layer}/{name}"


@dataclass
class Trace:
    """What one pass computed, per layer l = 0..L-1 (rows = samples).

    inputs[l] : (N, ·)     what W multiplies, after decorrelation (x_{l-1} in docs/design.md §2;
                for a convolution the image patches, (N, positions · patch size))
    drive[l]  : (N, n_units) W x + b, before perturbation and intrinsic noise (at layer
                ``start`` of a stacked pass: the base's B rows, not tiled)
    pre[l]    : (N, n_units) the activity a_l: drive + perturbation + intrinsic noise
    post[l]   : (N, n_out) the layer output x_l (node output; pooled for a convolution)
    loss      : (N,)       per-sample loss
    start     : first layer this pass computed; entries below it are shared with
                the pass it was built from (they have that pass's row count).
    repeats   : rows of computed layers = repeats × rows of the clean batch.
    seed      : seed of the input spike trains (spike-encoded temporal networks),
                reused by every pass built on this one.
    records   : monitor recordings per layer (see :func:`npsim.model.spiking.simulate`).
    source    : the substrate measurement the trace was built from (passes a
                :class:`~npsim.model.substrate.SubstrateNetwork` runs), else None.

    For temporal (spiking) layers the entries are time averages: inputs the
    mean rate of the layer below, pre the mean input current, post the readout.
    """

    inputs: list
    drive: list
    pre: list
    post: list
    loss: object
    start: int = 0
    repeats: int = 1
    seed: int | None = None
    records: dict | None = None
    source: object = None

    @property
    def output(self):
        return self.post[-1]


class Network:
    """A feed-forward stack of layers (:class:`~npsim.model.layers.Dense`,
    :class:`~npsim.model.layers.Conv2D`) with a per-sample loss.

    simulation : how temporal (spiking) layers are simulated (time steps, dt,
        input encoding); defaults to ``Simulation()`` when any layer is temporal.
    """

    def __init__(self, layers: Sequence[Layer], loss: Loss, simulation: Simulation | None = None):
        layers = list(layers)
        if not layers:
            raise ValueError("Network: needs at least one layer")
        for i in range(1, len(layers)):
            if layers[i].n_in != layers[i - 1].n_out:
                raise ValueError(
                    f"Network: layer {i} expects {layers[i].n_in} inputs but layer {i - 1} "
                    f"has {layers[i - 1].n_out} outputs"
                )
        if not isinstance(loss, Loss):
            raise TypeError(f"Network: loss must be a Loss, got {type(loss).__name__}")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Network: layer {i} must be a layer (Dense, Conv2D), got {type(layer).__name__}")
        for i in range(1, len(layers)):
            below, node = layers[i - 1].node, layers[i].node
            if node.temporal and below.temporal and not below.spiking:
                raise IncompatibleSettings(
                    f"Network: layer {i} ('{node.name}') would get no input: the layer below it has "
                    f"non-spiking '{below.name}' units, which pass no spikes on; make '{below.name}' the last "
                    f"layer, or give layer {i} non-temporal units")
        if simulation is not None and not isinstance(simulation, Simulation):
            raise TypeError(f"Network: simulation must be a Simulation, got {type(simulation).__name__}")
        self.layers = tuple(layers)
        self.loss = loss
        self.temporal = any(layer.node.temporal for layer in layers)
        self.simulation = simulation if simulation is not None or not self.temporal else Simulation()

    # -- structure --------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.layers[0].n_in,) + tuple(layer.n_out for layer in self.layers)

    @property
    def n_units(self) -> int:
        """Units in all layers, output layer included (N of ANP)."""
        return sum(layer.n_units for layer in self.layers)

    @property
    def differentiable(self) -> bool:
        return all(layer.node.differentiable for layer in self.layers)

    @property
    def noisy(self) -> bool:
        """Whether any layer's units add intrinsic noise (activity noise or their node model's own)."""
        return any(layer.noisy for layer in self.layers)

    #: samples per pass when evaluating (a substrate may run fewer at once)
    eval_batch_size: int = 10000

    @property
    def capabilities(self) -> Capabilities:
        """What the system running this network's passes can do: npsim's own simulation can do everything."""
        return Capabilities(perturbation=True, hidden=True, noisy=self.noisy)

    @property
    def substrate_name(self) -> str:
        return "npsim"

    @property
    def decorrelated(self) -> list[int]:
        return [i for i, layer in enumerate(self.layers) if layer.decorrelate]

    def require_differentiable(self, why: str = "BP") -> None:
        """Raise :class:`~npsim.errors.IncompatibleSettings` naming the first layer whose node model has no derivative."""
        for i, layer in enumerate(self.layers):
            if not layer.node.differentiable:
                raise IncompatibleSettings(
                    f"{why} needs the derivative of every node model, but layer {i} uses "
                    f"'{layer.node.name}', which has none; train it with a perturbation rule "
                    f"(np, inp, anp or their decorrelated variants)"
                )

    def describe(self) -> str:
        parts = [str(self.sizes[0])]
        for layer in self.layers:
            parts.append(layer.describe())
        sim = ""
        if self.temporal:
            s = self.simulation
            sim = f" | T={s.steps} x {s.dt:g} ms, {s.encoding} input"
        return " -> ".join(parts) + f" | loss {self.loss.name}" + sim

    # -- parameters -------------------------------------------------------
    def init(self, rng, backend, scheme: str = "he") -> dict:
        """Fresh parameters: weights N(0, gain/n_in) ("he": gain 2, "lecun": 1, "xavier": 2 n_in/(n_in+n_out)), zero biases, R = I."""
        params = {}
        for i, layer in enumerate(self.layers):
            if scheme == "he":
                std = math.sqrt(2.0 / layer.fan_in)
            elif scheme == "lecun":
                std = math.sqrt(1.0 / layer.fan_in)
            elif scheme == "xavier":
                std = math.sqrt(2.0 / (layer.fan_in + layer.fan_out))
            else:
                raise ValueError(f"unknown init scheme {scheme!r}; choose he, lecun or xavier")
            shapes = layer.param_shapes()
            params[param_key(i, "W")] = rng.normal(shapes["W"], scale=std)
            params[param_key(i, "b")] = backend.zeros(shapes["b"])
            if layer.decorrelate:
                params[param_key(i, "R")] = backend.eye(shapes["R"][0])
        return params

    def check_params(self, params: dict) -> None:
        """Raise ``ValueError`` if ``params`` does not fit this network's shapes."""
        for i, layer in enumerate(self.layers):
            for name, shape in layer.param_shapes().items():
                k = param_key(i, name)
                if k not in params:
                    raise ValueError(f"parameters lack {k!r}")
                if tuple(params[k].shape) != shape:
                    raise ValueError(f"parameter {k!r} has shape {tuple(params[k].shape)}, expected {shape}")

    # -- passes -----------------------------------------------------------
    def forward(self, params, x, y, *, rng=None, perturb=None, base: Trace | None = None,
                start: int = 0, repeats: int = 1, monitor: Monitor | None = None) -> Trace:
        """Run a pass and record what the rules need.

        x : (B, n_0) inputs; y : targets (B,) int labels or (B, n_L) floats.
        rng : random stream for stochastic or noisy node models.
        perturb : optional list of length L; entry l is None or an array
            (repeats·B, n_l) added to layer l's activity.
        base : a clean trace of the same batch. With ``base``, layers below
            ``start`` are not recomputed but shared with it, and layer
            ``start`` reuses its W x + b product (only the perturbation and
            fresh intrinsic noise are added), so a perturbed pass costs only
            the layers from ``start`` up.
        start : first layer to compute (needs ``base`` if > 0).
        repeats : with ``base``, stack this many perturbed copies of the
            batch (rows k·B .. (k+1)·B-1 are copy k): K noisy passes in one
            set of matrix products.
        monitor : record membrane potentials and spikes of temporal layers
            into ``Trace.records``.

        A network with temporal layers recomputes every layer on each pass
        (only the spike-train seed is shared with ``base``), so ``start``
        saves nothing there.
        """
        L = self.n_layers
        check_pass(L, perturb, base, start, repeats)
        if self.temporal:
            return self._forward_timed(params, x, y, rng, perturb, base, repeats, monitor)
        if monitor is not None:
            raise ValueError("monitor: this network has no temporal (spiking) layers to record")
        inputs, drive, pre, post = [None] * L, [None] * L, [None] * L, [None] * L
        if base is not None:
            inputs[:start], drive[:start] = base.inputs[:start], base.drive[:start]
            pre[:start], post[:start] = base.pre[:start], base.post[:start]

        h = None
        for i in range(start, L):
            layer = self.layers[i]
            reps, bias = 1, None
            if base is not None and i == start:
                inp, d, reps = base.inputs[i], base.drive[i], repeats
            else:
                R = params[param_key(i, "R")] if layer.decorrelate else None
                inp = layer.layer_input(x if i == 0 else h, R)
                d, bias = layer.drive(inp, params[param_key(i, "W")]), layer.unit_bias(params[param_key(i, "b")])
            eps = perturb[i] if perturb is not None else None
            a, h = _activate(layer, d, bias, eps, reps, rng)
            h = layer.output(h)
            inputs[i], drive[i], pre[i], post[i] = inp, d, a, h
        yy = tile_rows(y, repeats)
        loss = self.loss(h, yy)
        return Trace(inputs, drive, pre, post, loss, start=start, repeats=repeats)

    def forward_pair(self, params, x, y, *, rng=None, perturb=None, repeats: int = 1) -> tuple[Trace, Trace]:
        """The clean pass and ``repeats`` perturbed copies of it, as one stacked pass.

        Equivalent to ``clean = forward(params, x, y, rng=rng)`` followed by
        ``forward(params, x, y, rng=rng, perturb=perturb, base=clean, repeats=repeats)``,
        but every layer above the first runs the clean and the perturbed rows
        through one matrix product ((1 + K)·B rows: rows 0..B-1 clean, then
        copy k at rows (1 + k)·B ..), which a BLAS runs faster than two
        products. perturb : list of length L of (K·B, n_l) arrays or None.
        Returns (clean, noisy); their arrays are row views of the stacked ones,
        and the noisy trace shares layer 0's input and drive with the clean one.
        Where a decorrelating layer above the first is cheaper with R folded into W
        (``Layer.folds``), the stacked rows are multiplied by W R and only the clean rows'
        decorrelated input is formed: the noisy trace's ``inputs`` entry is then None.
        Networks with temporal layers run the two passes one after the other.
        """
        L = self.n_layers
        check_pass(L, perturb, None, 0, 1)
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        if self.temporal:
            clean = self.forward(params, x, y, rng=rng)
            return clean, self.forward(params, x, y, rng=rng, perturb=perturb, base=clean, repeats=repeats)
        B = x.shape[0]
        c = [[None] * L for _ in range(4)]  # clean and noisy traces' inputs, drive, pre, post
        n = [[None] * L for _ in range(4)]
        h = None
        for i, layer in enumerate(self.layers):
            R = params[param_key(i, "R")] if layer.decorrelate else None
            W, b = params[param_key(i, "W")], params[param_key(i, "b")]
            eps = perturb[i] if perturb is not None else None
            reps = 1 + repeats if i == 0 else 1  # layer 0: one product on the B clean rows, then tiled
            folded = i > 0 and R is not None and layer.folds(h.shape[0], B)
            if folded:
                # (h Rᵀ) Wᵀ = h (W R)ᵀ: R is folded into W for every stacked row; only the clean rows'
                # decorrelated input, which the update needs, is formed (docs/design.md §9a)
                inp = layer.layer_input(h[:B, ...], R)
                d = layer.drive(h, layer.folded_weight(W, R))
            else:
                inp = layer.layer_input(x if i == 0 else h, R)
                d = layer.drive(inp, W)
            a, h = _activate(layer, d, layer.unit_bias(b), eps, reps, rng, clean_rows=B)
            h = layer.output(h)
            if i == 0:
                c[0][i] = n[0][i] = inp
                c[1][i] = n[1][i] = d
            elif folded:  # the noisy rows' decorrelated input was not formed
                c[0][i] = inp
                c[1][i], n[1][i] = d[:B, ...], d[B:, ...]
            else:
                c[0][i], n[0][i] = inp[:B, ...], inp[B:, ...]
                c[1][i], n[1][i] = d[:B, ...], d[B:, ...]
            c[2][i], n[2][i] = a[:B, ...], a[B:, ...]
            c[3][i], n[3][i] = h[:B, ...], h[B:, ...]
        loss = self.loss(h, tile_rows(y, 1 + repeats))
        return (Trace(*c, loss[:B], start=0, repeats=1),
                Trace(*n, loss[B:], start=0, repeats=repeats))

    def _forward_timed(self, params, x, y, rng, perturb, base, repeats, monitor) -> Trace:
        """forward() for a network with temporal layers: every layer, K·B rows from layer 0 on."""
        sim, L = self.simulation, self.n_layers
        K = repeats if base is not None else 1
        B = x.shape[0]
        rows = K * B
        seed = None
        if sim.stochastic_input and self.layers[0].node.temporal:
            if base is not None:
                seed = base.seed
            elif rng is None:
                raise ValueError(f"{sim.encoding} input encoding needs a random stream (rng)")
            else:
                seed = int(rng.integers(0, 2**63 - 1))
        inputs, drive, pre, post = [None] * L, [None] * L, [None] * L, [None] * L
        records = {}
        h, i = x, 0
        while i < L:
            layer = self.layers[i]
            W, b = params[param_key(i, "W")], params[param_key(i, "b")]
            eps = perturb[i] if perturb is not None else None
            if not layer.node.temporal:
                inp = layer.layer_input(h, params[param_key(i, "R")] if layer.decorrelate else None)
                d = layer.drive(inp, W)
                a, h = _activate(layer, d, layer.unit_bias(b), eps, rows // d.shape[0], rng)
                h = layer.output(h)
                inputs[i], drive[i], pre[i], post[i] = inp, d, a, h
                i += 1
                continue
            j = i
            while j < L and self.layers[j].node.temporal:
                j += 1
            weights, consts, source = [], [], None
            for l in range(i, j):
                W, b = params[param_key(l, "W")], params[param_key(l, "b")]
                R = params[param_key(l, "R")] if self.layers[l].decorrelate else None
                weights.append(W if R is None else W @ R)
                if l == i and not (l == 0 and seed is not None):
                    inputs[l] = h @ R.T if R is not None else h
                    drive[l] = inputs[l] @ W.T + b
                    c = _rows(drive[l], rows)
                else:
                    c = _broadcast_rows(b, rows)
                if perturb is not None and perturb[l] is not None:
                    c = c + perturb[l]
                consts.append(c)
            if seed is not None and i == 0:
                source = _spike_source(sim, x, rng, seed)
            states, src_sum, recs = simulate([self.layers[l].node for l in range(i, j)], weights, consts, source,
                                             sim, rng, repeats=K, monitor=monitor, first=i)
            records.update(recs)
            inv_t = 1.0 / sim.steps
            for s, l in enumerate(range(i, j)):
                layer, st = self.layers[l], states[s]
                R = params[param_key(l, "R")] if layer.decorrelate else None
                if s > 0 or src_sum is not None:
                    rate = (states[s - 1].count if s > 0 else src_sum) * inv_t
                    inputs[l] = rate @ R.T if R is not None else rate
                if drive[l] is None:  # the mean current before perturbation: W · (mean rate) + b
                    drive[l] = inputs[l] @ params[param_key(l, "W")].T + params[param_key(l, "b")]
                pre[l] = st.sum_i * inv_t
                post[l] = layer.node.output(st.count, st.sum_v, st.v, sim.steps)
            h, i = post[j - 1], j
        yy = tile_rows(y, K)
        return Trace(inputs, drive, pre, post, self.loss(h, yy), start=0, repeats=K, seed=seed,
                     records=records or None)

    def backward(self, params, trace: Trace, y) -> dict:
        """Exact gradient of the batch-mean loss w.r.t. every W and b (BP), from a full pass.

        R is treated as fixed (it is learned by decorrelation, not by gradient).
        Returns a dict with the keys of the W and b parameters.
        """
        self.require_differentiable("BP")
        if trace.start != 0 or trace.repeats != 1:
            raise ValueError("backward needs a full single pass (start=0, repeats=1)")
        n = trace.loss.shape[0]
        grads = {}
        dx = self.loss.grad(trace.output, y) / n
        for i in range(self.n_layers - 1, -1, -1):
            layer = self.layers[i]
            u = layer.unit_outputs(trace.pre[i], trace.post[i])
            da = layer.node.backprop(layer.output_grad(dx, u), trace.pre[i], u)
            grads[param_key(i, "W")], grads[param_key(i, "b")] = layer.weight_grad(da, trace.inputs[i], 1)
            if i > 0:
                R = params[param_key(i, "R")] if layer.decorrelate else None
                dx = layer.input_grad(da, params[param_key(i, "W")], R)
        return grads


def check_pass(n_layers: int, perturb, base, start: int, repeats: int) -> None:
    """ValueError unless the arguments describe a pass of a network of ``n_layers`` layers
    (see :meth:`Network.forward`)."""
    if perturb is not None and len(perturb) != n_layers:
        raise ValueError(f"perturb must have one entry per layer ({n_layers}), got {len(perturb)}")
    if base is None and (start != 0 or repeats != 1):
        raise ValueError("start > 0 or repeats > 1 needs a base trace to build on")
    if not 0 <= start < n_layers:
        raise ValueError(f"start must be in [0, {n_layers}), got {start}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")


def _activate(layer: Layer, d, bias, perturb, repeats: int, rng, clean_rows: int = 0):
    """A layer's activity and unit outputs from its drive: (a, x).

    d (B, n) : W x, plus b already when ``bias`` is None; with ``bias``
        (n_units,), d += bias in place (d is then the layer's drive W x + b).
    a = tile(d, repeats) with ``perturb`` ((repeats·B − clean_rows, n) or None)
    added from row ``clean_rows`` on, then the layer's activity noise; x =
    node(a). Noiseless (leaky) ReLU and linear units take one fused pass
    (:func:`npsim.backend.kernels.drive_activate`).
    """
    node, noise = layer.node, layer.noise
    slope = fused_slope(node) if noise is None else False
    if slope is not False:
        return drive_activate(d, bias, perturb, repeats, slope, clean_rows)
    if bias is not None:
        d += bias
    a = tile_rows(d, repeats)
    if perturb is not None:
        if clean_rows:
            a = _xp(a).asarray(a, copy=True) if a is d else a
            a[clean_rows:, ...] += perturb
        else:
            a = a + perturb
    if noise is not None:
        a = noise(a, rng)
    return a, node(a, rng)


def _rows(a, rows: int):
    """``a`` (B, n) tiled to ``rows`` rows (a multiple of B)."""
    return tile_rows(a, rows // a.shape[0])


def _broadcast_rows(b, rows: int):
    """Bias (n,) as a writable (rows, n) array."""
    return _xp(b).repeat(b[None, :], rows, axis=0)


def _spike_source(sim: Simulation, x, rng, seed: int):
    """Input spike trains of the B samples in ``x``, drawn chunk by chunk from a stream seeded by ``seed``."""
    p = sim.spike_probability(x)
    enc = type(rng)(rng.backend, seed)

    def source(t0, steps):
        return _xp(p).astype(enc.uniform((steps,) + tuple(p.shape), dtype=p.dtype) < p, p.dtype)

    return source


def mlp(sizes, node: str = "tanh", output: str = "linear", loss: str = "mse", *, decorrelate: bool = False,
        simulation: Simulation | None = None, **node_params) -> Network:
    """A fully connected network of layer widths ``sizes`` = (n_0, n_1, ..., n_L).

    node : node model of the hidden layers (``node_params`` go to it);
    output : node model of the output layer; loss : "mse" or "cross_entropy";
    decorrelate : every layer learns an input decorrelation R.
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"mlp: sizes must name at least an input and an output width, got {sizes}")
    layers = [Dense(sizes[i], sizes[i + 1], make_node(node, **node_params) if i < len(sizes) - 2
                    else make_node(output), decorrelate=decorrelate)
              for i in range(len(sizes) - 1)]
    return Network(layers, make_loss(loss), simulation=simulation)
