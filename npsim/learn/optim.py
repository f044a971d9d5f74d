"""Optimizers as pairs of pure functions, optax style.

``opt.init(params) -> state`` and ``opt.update(grads, state, params) -> (updates, state)``;
``apply_updates(params, updates)`` adds the updates. All state is a flat dict
of named arrays (``"mu/layer0/W"``, ``"count"``), so a checkpoint is just
those arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
from pydantic import TypeAdapter, ValidationError

from ..backend.arrays import namespace
from ..backend.kernels import adam_step
from ..params import (
    Fraction,
    Params,
    PositiveFloat,
    PositiveInt,
    Probability,
    parameter_error,
)
from ..registry import Registry

__all__ = ["Optimizer", "sgd", "adam", "apply_updates", "make_optimizer", "constant", "cosine_decay", "SCHEDULES",
           "OPTIMIZERS", "OPTIMIZER_SETTINGS", "LearningRate", "Beta", "Momentum", "AdamSettings", "SGDSettings"]

#: a learning rate: a finite number > 0
LearningRate = PositiveFloat
#: Adam's moment decay rates and SGD's momentum: [0, 1)
Beta = Momentum = Fraction


class AdamSettings(Params):
    """Adam's settings besides the learning rate."""

    b1: Beta = 0.9
    b2: Beta = 0.999
    eps: PositiveFloat = 1e-8
    component: ClassVar[str] = "adam"


class SGDSettings(Params):
    """SGD's settings besides the learning rate."""

    momentum: Momentum = 0.0
    nesterov: bool = False
    component: ClassVar[str] = "sgd"


class CosineSettings(Params):
    """The cosine schedule's settings besides the peak learning rate."""

    total_steps: PositiveInt
    final_fraction: Probability = 0.0
    component: ClassVar[str] = "cosine_decay"


_LR = TypeAdapter(LearningRate)


@dataclass(frozen=True)
class Optimizer:
    """``init(params) -> state``; ``update(grads, state, params) -> (updates, state)``.

    ``step(grads, state, params) -> (params, state, sq_norms)`` applies the
    update and returns the squared norm of each parameter's change (floats or
    0-d arrays on the parameters' device); it may
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
        sq = {k: namespace(u).sum(u * u) for k, u in updates.items()}
        return apply_updates(params, updates), state, sq


def constant(lr: float) -> Callable[[int], float]:
    """Schedule: the same learning rate at every update."""
    _check_lr(lr, "constant")
    return lambda t: lr


def cosine_decay(lr: float, total_steps: int, final_fraction: float = 0.0) -> Callable[[int], float]:
    """Schedule: lr · (f + (1 − f) · ½(1 + cos(π t / T))) for update t = 1..T, then lr · f."""
    _check_lr(lr, "cosine_decay")
    CosineSettings(total_steps=total_steps, final_fraction=final_fraction)

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
    try:
        _LR.validate_python(lr, strict=True)
    except ValidationError as exc:
        err = parameter_error(name, exc)
        raise type(err)(name, "lr", err.problem, lr) from None


def sgd(lr, momentum: float = 0.0, nesterov: bool = False) -> Optimizer:
    """Stochastic gradient descent, optionally with (Nesterov) momentum: v ← μ v + g, Δ = −η v.

    lr : a number, or a schedule ``t -> lr`` of the update count t = 1, 2, ...
    """
    schedule = _as_schedule(lr, "sgd")
    SGDSettings(momentum=momentum, nesterov=nesterov)

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
                v = state[f"mu/{k}"] * momentum + g
                state[f"mu/{k}"] = v
                g = g + v * momentum if nesterov else v
            out[k] = g * -eta
        return out, state

    return Optimizer("sgd", init, update, {"lr": lr, "momentum": momentum, "nesterov": nesterov})


def adam(lr, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam (Kingma & Ba) with bias correction; moments in the parameters' dtype.

    lr : a number, or a schedule ``t -> lr`` of the update count t = 1, 2, ...
    """
    schedule = _as_schedule(lr, "adam")
    AdamSettings(b1=b1, b2=b2, eps=eps)

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
            m = state[f"mu/{k}"] * b1 + g * (1 - b1)
            v = state[f"nu/{k}"] * b2 + (g * g) * (1 - b2)
            state[f"mu/{k}"], state[f"nu/{k}"] = m, v
            out[k] = m * -step / (v**0.5 + eps_hat)
        return out, state

    def fused_step(grads, state, params):
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


OPTIMIZERS: Registry[Callable[..., Optimizer]] = Registry("optimizer", {"sgd": sgd, "adam": adam})

#: optimizer name -> its settings besides the learning rate
OPTIMIZER_SETTINGS: dict[str, type[Params]] = {"sgd": SGDSettings, "adam": AdamSettings}


def make_optimizer(name: str, **hyper) -> Optimizer:
    """The optimizer called ``name`` ("adam" or "sgd") with hyper-parameters ``hyper``."""
    build = OPTIMIZERS.lookup(name)
    try:
        return build(**hyper)
    except TypeError as exc:
        raise ValueError(f"optimizer {name!r}: {exc}") from None
