"""Optimizers as pairs of pure functions, optax style.

``opt.init(params) -> state`` and ``opt.update(grads, state, params) -> (updates, state)``;
``apply_updates(params, updates)`` adds the updates. All state is a flat dict
of named arrays (``"mu/layer0/W"``, ``"count"``), so a checkpoint is just
those arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Optimizer", "sgd", "adam", "apply_updates", "make_optimizer", "constant", "cosine_decay", "SCHEDULES"]


@dataclass(frozen=True)
class Optimizer:
    """``init(params) -> state``; ``update(grads, state, params) -> (updates, state)``.

    ``step(grads, state, params) -> (params, state, sq_norms)`` applies the
    update and returns the squared norm of each parameter's change; it may
    work in place (Adam uses a fused kernel), so callers must not keep the old
    parameter arrays.
    """

    name: str
    init: Callable
    update: Callable
    hyper: dict
    fused_step: Callable | None = None

    def step(self, grads: dict, state: dict, params: dict):
        if self.fused_step is not None:
            return self.fused_step(grads, state, params)
        updates, state = self.update(grads, state, params)
        sq = {k: float((u * u).sum()) for k, u in updates.items()}
        return apply_updates(params, updates), state, sq


def constant(lr: float) -> Callable[[int], float]:
    """Schedule: the same learning rate at every update."""
    _check_lr(lr, "constant")
    return lambda t: lr


def cosine_decay(lr: float, total_steps: int, final_fraction: float = 0.0) -> Callable[[int], float]:
    """Schedule: lr · (f + (1 − f) · ½(1 + cos(π t / T))) for update t = 1..T, then lr · f."""
    _check_lr(lr, "cosine_decay")
    if total_steps < 1:
        raise ValueError(f"cosine_decay: total_steps must be >= 1, got {total_steps}")
    if not 0 <= final_fraction <= 1:
        raise ValueError(f"cosine_decay: final_fraction must be in [0, 1], got {final_fraction}")

    def schedule(t: int) -> float:
        frac = min(t, total_steps) / total_steps
        return lr * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * frac)))

    return schedule


SCHEDULES = ("constant", "cosine")


def _as_schedule(lr, name) -> Callable[[int], float]:
    if callable(lr):
        return lr
    _check_lr(lr, name)
    return constant(lr)


def _check_lr(lr, name):
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"{name}: learning rate must be a finite number > 0, got {lr!r}")


def sgd(lr, momentum: float = 0.0, nesterov: bool = False) -> Optimizer:
    """Stochastic gradient descent, optionally with (Nesterov) momentum: v ← μ v + g, Δ = −η v.

    lr : a number, or a schedule ``t -> lr`` of the update count t = 1, 2, ...
    """
    schedule = _as_schedule(lr, "sgd")
    if not 0 <= momentum < 1:
        raise ValueError(f"sgd: momentum must be in [0, 1), got {momentum}")

    def init(params):
        st = {"count": np.zeros((), dtype=np.int64)}
        if momentum:
            st.update({f"mu/{k}": v * 0 for k, v in params.items()})
        return st

    def update(grads, state, params=None):
        state = dict(state)
        state["count"] = state["count"] + 1
        eta = schedule(int(state["count"]))
        out = {}
        for k, g in grads.items():
            if momentum:
                v = state[f"mu/{k}"] * g.dtype.type(momentum) + g
                state[f"mu/{k}"] = v
                g = g + v * g.dtype.type(momentum) if nesterov else v
            out[k] = g * g.dtype.type(-eta)
        return out, state

    return Optimizer("sgd", init, update, {"lr": lr, "momentum": momentum, "nesterov": nesterov})


def adam(lr, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam (Kingma & Ba) with bias correction; moments in the parameters' dtype.

    lr : a number, or a schedule ``t -> lr`` of the update count t = 1, 2, ...
    """
    schedule = _as_schedule(lr, "adam")
    for nm, b in (("b1", b1), ("b2", b2)):
        if not 0 <= b < 1:
            raise ValueError(f"adam: {nm} must be in [0, 1), got {b}")

    def init(params):
        st = {"count": np.zeros((), dtype=np.int64)}
        for k, v in params.items():
            st[f"mu/{k}"] = v * 0
            st[f"nu/{k}"] = v * 0
        return st

    def advance(state):
        """Count one more update; return the new state and the bias-corrected step size and eps.

        m̂ / (√v̂ + eps) equals m · step / (√v + eps_hat) with these two scalars.
        """
        state = dict(state)
        t = int(state["count"]) + 1
        state["count"] = np.asarray(t, dtype=np.int64)
        return state, schedule(t) * math.sqrt(1 - b2**t) / (1 - b1**t), eps * math.sqrt(1 - b2**t)

    def update(grads, state, params=None):
        state, step, eps_hat = advance(state)
        out = {}
        for k, g in grads.items():
            dt = g.dtype.type
            m = state[f"mu/{k}"] * dt(b1) + g * dt(1 - b1)
            v = state[f"nu/{k}"] * dt(b2) + (g * g) * dt(1 - b2)
            state[f"mu/{k}"], state[f"nu/{k}"] = m, v
            out[k] = m * dt(-step) / (v**0.5 + dt(eps_hat))
        return out, state

    def fused_step(grads, state, params):
        from .kernels import adam_step

        state, step, eps_hat = advance(state)
        params = dict(params)
        sq = {}
        for k, g in grads.items():
            sq[k] = adam_step(params[k], g, state[f"mu/{k}"], state[f"nu/{k}"], b1=b1, b2=b2, step_size=step,
                              eps=eps_hat)
        return params, state, sq

    return Optimizer("adam", init, update, {"lr": lr, "b1": b1, "b2": b2, "eps": eps}, fused_step)


def apply_updates(params: dict, updates: dict) -> dict:
    """New parameter dict with ``updates`` added (keys without an update are kept)."""
    new = dict(params)
    for k, u in updates.items():
        new[k] = params[k] + u
    return new


OPTIMIZERS = {"sgd": sgd, "adam": adam}


def make_optimizer(name: str, **hyper) -> Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    try:
        return OPTIMIZERS[name](**hyper)
    except TypeError as exc:
        raise ValueError(f"optimizer {name!r}: {exc}") from None
