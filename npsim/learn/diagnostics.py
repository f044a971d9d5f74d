"""The BP-alignment diagnostic: how well a rule's direction points along the true gradient."""

from __future__ import annotations

import math

import numpy as np

from ..backend.arrays import host_floats, namespace
from ..model.network import Network, param_key
from .rules.base import RuleOutput

__all__ = ["alignment"]


def alignment(net: Network, params: dict, y, out: RuleOutput, bp_grads: dict | None = None) -> np.ndarray:
    """Cosine between the rule's direction and the BP gradient, per layer (W and b together).

    Returns a float64 array of shape (L,). Needs a differentiable network.
    """
    if bp_grads is None:
        bp_grads = net.backward(params, out.trace, y)
    parts = []  # per layer, for W then b: g·h, g·g, h·h (float64, on the device), gathered in one transfer
    for i in range(net.n_layers):
        for n in ("W", "b"):
            g, h = out.grads[param_key(i, n)], bp_grads[param_key(i, n)]
            xp = namespace(g)
            g, h = xp.reshape(xp.astype(g, xp.float64), (-1,)), xp.reshape(h, (-1,))
            parts += [xp.sum(g * h), xp.sum(g**2), xp.sum(xp.astype(h, xp.float64) ** 2)]
    values = host_floats(parts)
    cos = np.empty(net.n_layers)
    for i in range(net.n_layers):
        (dw, gw, hw), (db, gb, hb) = values[6 * i:6 * i + 3], values[6 * i + 3:6 * i + 6]
        dot, ng, nh = dw + db, math.sqrt(gw + gb), math.sqrt(hw + hb)
        cos[i] = dot / (ng * nh) if ng > 0 and nh > 0 else float("nan")
    return cos
