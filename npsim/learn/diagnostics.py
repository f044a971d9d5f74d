"""The BP-alignment diagnostic: how well a rule's direction points along the true gradient."""

from __future__ import annotations

import math

import numpy as np

from ..model.network import Network, param_key
from .rules.base import RuleOutput

__all__ = ["alignment"]


def alignment(net: Network, params: dict, y, out: RuleOutput, bp_grads: dict | None = None) -> np.ndarray:
    """Cosine between the rule's direction and the BP gradient, per layer (W and b together).

    Returns a float64 array of shape (L,). Needs a differentiable network.
    """
    if bp_grads is None:
        bp_grads = net.backward(params, out.trace, y)
    cos = np.empty(net.n_layers)
    for i in range(net.n_layers):
        g = [out.grads[param_key(i, n)].ravel() for n in ("W", "b")]
        h = [bp_grads[param_key(i, n)].ravel() for n in ("W", "b")]
        dot = sum(float((a.astype("float64") * b).sum()) for a, b in zip(g, h))
        ng = math.sqrt(sum(float((a.astype("float64") ** 2).sum()) for a in g))
        nh = math.sqrt(sum(float((b.astype("float64") ** 2).sum()) for b in h))
        cos[i] = dot / (ng * nh) if ng > 0 and nh > 0 else float("nan")
    return cos
