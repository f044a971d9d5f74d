"""What every learning rule returns, and the BP-alignment diagnostic."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..network import Network, Trace, param_key

__all__ = ["Rule", "RuleOutput", "alignment", "check_sigma"]


@dataclass
class RuleOutput:
    """One update direction.

    grads : update direction G per "layerI/W" and "layerI/b" key (an optimizer
        descends along it; for BP it is the exact gradient).
    trace : the clean pass of the batch (reused for diagnostics).
    delta_loss : mean per-sample loss change of the perturbed passes (None for BP).
    assign : parameters the rule sets directly, not through the optimizer
        (the decorrelation matrices R), as their new values.
    """

    grads: dict
    trace: Trace
    delta_loss: float | None = None
    assign: dict = field(default_factory=dict)


class Rule:
    """A learning rule: ``rule(net, params, x, y, rng) -> RuleOutput``.

    Rules hold hyper-parameters only, no state, and see the network only
    through ``Network.forward`` and ``Network.backward``.
    """

    name = "rule"

    def check(self, net: Network) -> None:
        """Raise ``ValueError`` if this rule cannot train ``net``."""

    def __call__(self, net: Network, params: dict, x, y, rng) -> RuleOutput:
        raise NotImplementedError


def check_sigma(sigma, rule: str) -> float:
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        raise TypeError(f"{rule}: sigma must be a number, got {sigma!r}") from None
    if not (s > 0 and math.isfinite(s)):
        raise ValueError(f"{rule}: sigma (perturbation scale) must be a finite number > 0, got {sigma!r}")
    return s


def check_samples(samples, rule: str) -> int:
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"{rule}: samples (noisy passes per clean pass) must be an integer >= 1, got {samples!r}")
    return samples


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
