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
    """Diagnostics of one update: per layer, the norm of the change of (W, b),
    and the cosine with the BP gradient (None when not measured)."""

    update_norm: np.ndarray
    alignment: np.ndarray | None = None


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
    norms = np.array([math.sqrt(sum(sq.get(param_key(i, n), 0.0) for n in ("W", "b")))
                      for i in range(net.n_layers)], dtype=np.float32)
    return params, opt_state, out, StepStats(norms, cos)


def evaluate(net: Network, params: dict, x, y, rng=None, batch_size: int = 10000) -> tuple[float, float]:
    """Mean loss and accuracy (accuracy is NaN for regression targets) over (x, y), in batches."""
    n = x.shape[0]
    total, correct = 0.0, 0.0
    classify = y.ndim == 1
    for s in range(0, n, batch_size):
        tr = net.forward(params, x[s:s + batch_size], y[s:s + batch_size], rng=rng)
        total += float(tr.loss.sum())
        if classify:
            correct += accuracy(tr.output, y[s:s + batch_size]) * tr.loss.shape[0]
    return total / n, (correct / n if classify else float("nan"))


def fit(net: Network, rule: Rule, opt: Optimizer, params: dict, x, y, *, backend, seed: int,
        steps: int, batch_size: int | None = None, frozen: tuple[str, ...] = ()) -> tuple[dict, list[float]]:
    """Train for ``steps`` updates on minibatches drawn in shuffled epochs; returns (params, batch losses)."""
    rng = backend.stream(seed)
    rule.check(net)
    params = {k: v.copy() for k, v in params.items()}  # the optimizer may work in place
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
        params, opt_state, out = train_step(net, rule, opt, params, opt_state, x[idx], y[idx], rng, frozen)
        losses.append(float(out.trace.loss.mean()))
    return params, losses
