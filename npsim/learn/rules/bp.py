"""BP: the exact gradient, the reference every other rule is measured against."""

from __future__ import annotations

from typing import ClassVar

from .base import Rule, RuleOutput

__all__ = ["BP"]


class BP(Rule):
    """Backpropagation, hand-written in array code. One forward and one backward pass."""

    name: ClassVar[str] = "bp"

    def check(self, net):
        net.require_differentiable("BP")

    def __call__(self, net, params, x, y, rng):
        trace = net.forward(params, x, y, rng=rng)
        return RuleOutput(net.backward(params, trace, y), trace)
