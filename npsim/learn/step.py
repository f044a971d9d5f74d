"""One training update, and a plain loop over in-memory arrays.

``train_step`` is the whole update every training path shares: the rule gives
a direction (and new R for decorrelating layers), R is set first, then the
optimizer steps W and b. :func:`fit` is the minimal loop used by examples,
tests and benchmarks; the full experiment loop with evaluation and HDF5
trajectories is :mod:`npsim.experiment.loop`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..backend.arrays import host_floats, namespace, take_rows
from ..backend.memory import keep_freed_memory
from ..model.losses import accuracy
from ..model.network import Network, param_key
from .diagnostics import alignment
from .optim import Optimizer
from .rules import Rule

__all__ = ["train_step", "StepStats", "trainable", "fit", "evaluate"]


def trainable(params: dict) -> dict:
    """The parameters an optimizer updates: every W and b (R is learned by decorrelation)."""
    return {k: v for k, v in params.items() if not k.endswith("/R")}


@dataclass
class StepStats:
    """Diagnostics of one update, on the host: per layer the norm of the change of (W, b) and the
    cosine with the BP gradient (None when not measured), the batch loss and the loss change."""

    update_norm: np.ndarray
    alignment: np.ndarray | None = None
    loss: float = float("nan")  # mean per-sample loss of the clean pass
    delta_loss: float = float("nan")  # mean loss change of the perturbed passes (NaN for BP)


def train_step(net: Network, rule: Rule, opt: Optimizer, params: dict, opt_state: dict, x, y, rng,
               frozen: tuple[str, ...] = (), stats: bool = False, align: bool = False):
    """One update on batch (x, y). Returns (params, opt_state, rule output[, StepStats]).

    The optimizer may update parameter arrays in place: use the returned dict,
    not the old one. frozen : parameter keys (W, b or R) left unchanged (e.g. hidden layers
    in a control run). stats : also return a :class:`StepStats`; align : measure
    the cosine with BP in it (needs a differentiable network).

    The first call asks malloc to keep freed arrays for the next step
    (:func:`npsim.backend.memory.keep_freed_memory`; set NPSIM_KEEP_MEMORY=0 to opt out).
    """
    keep_freed_memory()
    out = rule(net, params, x, y, rng)
    cos = alignment(net, params, y, out) if align else None  # before any parameter changes
    params = dict(params)
    params.update({k: v for k, v in out.assign.items() if k not in frozen})
    grads = {k: g for k, g in out.grads.items() if k not in frozen}
    params, opt_state, sq = opt.step(grads, opt_state, params)
    if not stats:
        return params, opt_state, out
    # every scalar of the step leaves the device in one transfer
    keys = [[param_key(i, n) for n in ("W", "b") if param_key(i, n) in sq] for i in range(net.n_layers)]
    dl = out.delta_loss
    dls = [] if dl is None else list(dl) if isinstance(dl, tuple) else [dl]
    values = host_floats([namespace(out.trace.loss).mean(out.trace.loss), *dls, *(sq[k] for ks in keys for k in ks)])
    loss, dls, sqs = values[0], values[1:1 + len(dls)], iter(values[1 + len(dls):])
    norms = np.array([math.sqrt(sum(next(sqs) for _ in ks)) for ks in keys], dtype=np.float32)
    delta = sum(dls) / len(dls) if dls else float("nan")
    return params, opt_state, out, StepStats(norms, cos, loss, delta)


def evaluate(net: Network, params: dict, x, y, rng=None, batch_size: int = 10000) -> tuple[float, float]:
    """Mean loss and accuracy (accuracy is NaN for regression targets) over (x, y), in batches."""
    n = x.shape[0]
    total, correct = 0.0, 0.0
    classify = y.ndim == 1
    xp = namespace(x)
    for s in range(0, n, batch_size):
        e = min(s + batch_size, n)
        yb = y[s:e, ...]
        tr = net.forward(params, x[s:e, ...], yb, rng=rng)
        total += float(xp.sum(tr.loss))
        if classify:
            correct += accuracy(tr.output, yb) * tr.loss.shape[0]
    return total / n, (correct / n if classify else float("nan"))


def fit(net: Network, rule: Rule, opt: Optimizer, params: dict, x, y, *, backend, seed: int,
        steps: int, batch_size: int | None = None, frozen: tuple[str, ...] = ()) -> tuple[dict, list[float]]:
    """Train for ``steps`` updates on minibatches drawn in shuffled epochs; returns (params, batch losses)."""
    rng = backend.stream(seed)
    rule.check(net)
    params = {k: namespace(v).asarray(v, copy=True) for k, v in params.items()}  # the optimizer may work in place
    x, y = backend.asarray(x), backend.asarray(y, dtype=y.dtype if y.dtype.kind in "iu" else None)
    n = x.shape[0]
    bs = n if batch_size is None else min(batch_size, n)
    opt_state = opt.init(trainable(params))
    order = np.arange(0)
    losses = []
    pos = 0
    for _ in range(steps):
        if pos + bs > order.size:
            order, pos = rng.permutation(n), 0
        idx = order[pos:pos + bs]
        pos += bs
        params, opt_state, out = train_step(net, rule, opt, params, opt_state, take_rows(x, idx), take_rows(y, idx),
                                            rng, frozen)
        losses.append(float(namespace(out.trace.loss).mean(out.trace.loss)))
    return params, losses
