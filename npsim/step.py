"""One training update, and a plain loop over in-memory arrays.

``train_step`` is the whole update every training path shares: the rule gives
a direction (and new R for decorrelating layers), R is set first, then the
optimizer steps W and b. :func:`fit` is the minimal loop used by examples,
tests and benchmarks; the full experiment loop with evaluation and HDF5
trajectories is :mod:`npsim.train`.
"""

from __future__ import annotations

import numpy as np

from .backend import Backend
from .losses import accuracy
from .network import Network
from .optim import Optimizer, apply_updates
from .rules import Rule, RuleOutput

__all__ = ["train_step", "trainable", "fit", "evaluate"]


def trainable(params: dict) -> dict:
    """The parameters an optimizer updates: every W and b (R is learned by decorrelation)."""
    return {k: v for k, v in params.items() if not k.endswith("/R")}


def train_step(net: Network, rule: Rule, opt: Optimizer, params: dict, opt_state: dict, x, y, rng,
               frozen: tuple[str, ...] = (), return_updates: bool = False):
    """One update on batch (x, y). Returns (params, opt_state, rule output[, optimizer updates]).

    frozen : parameter keys left unchanged (e.g. hidden layers in a control run).
    """
    out = rule(net, params, x, y, rng)
    params = dict(params)
    params.update(out.assign)
    grads = {k: g for k, g in out.grads.items() if k not in frozen}
    updates, opt_state = opt.update(grads, opt_state, params)
    new = apply_updates(params, updates)
    return (new, opt_state, out, updates) if return_updates else (new, opt_state, out)


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


def fit(net: Network, rule: Rule, opt: Optimizer, params: dict, x, y, *, backend: Backend, seed: int,
        steps: int, batch_size: int | None = None, frozen: tuple[str, ...] = ()) -> tuple[dict, list[float]]:
    """Train for ``steps`` updates on minibatches drawn in shuffled epochs; returns (params, batch losses)."""
    rng = backend.stream(seed)
    rule.check(net)
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
