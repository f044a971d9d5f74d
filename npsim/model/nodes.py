"""Node models: the dynamics f that turn a layer's activity a into its output x.

A node model is a small frozen parameter set (:class:`~npsim.params.Params`) with

* ``__call__(a, rng=None) -> x`` — vectorised forward, ``a`` of shape (B, n);
* ``differentiable`` — whether ``grad`` exists (BP refuses a network where it does not);
* ``grad(a, x) -> f'(a)`` — elementwise derivative, only when differentiable;
* ``stochastic`` — whether the forward draws from ``rng``;
* ``noisy`` — whether the node adds intrinsic noise of its own (spiking
  membranes can; activity noise on any node is a separate
  :mod:`npsim.model.noise` model that the layer applies before the node);
* ``temporal`` — whether it runs in time steps (:mod:`npsim.model.spiking`).

Node models know nothing of learning rules. Names for configs are in
:mod:`npsim.model.catalog`. The equations are in docs/design.md §3.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from ..backend.arrays import array_module as _xp
from ..backend.kernels import leaky_backprop
from ..params import FiniteFloat, Fraction, Params, PositiveFloat

__all__ = ["NodeModel", "Linear", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Heaviside", "Sign", "Quantizer",
           "StochasticBinary", "fused_slope"]


class NodeModel(Params):
    """Base class: a noiseless, deterministic node model."""

    name: ClassVar[str] = "node"
    differentiable: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False
    temporal: ClassVar[bool] = False  # runs in time steps inside the network's time loop

    @property
    def noisy(self) -> bool:
        """Whether the node adds intrinsic noise of its own (the learner sees only its effect)."""
        return False

    def __call__(self, a, rng=None):
        raise NotImplementedError

    def grad(self, a, x):
        raise TypeError(f"node model {self.name!r} has no derivative")

    def backprop(self, dout, a, x):
        """dout · node'(a): the gradient w.r.t. the activity a from the gradient w.r.t. the output x."""
        return dout * self.grad(a, x)


# --- continuous ----------------------------------------------------------------


class Linear(NodeModel):
    name: ClassVar[str] = "linear"
    differentiable: ClassVar[bool] = True

    def __call__(self, a, rng=None):
        return a

    def grad(self, a, x):
        return _xp(a).ones_like(a)

    def backprop(self, dout, a, x):
        return dout


class ReLU(NodeModel):
    name: ClassVar[str] = "relu"
    differentiable: ClassVar[bool] = True

    def __call__(self, a, rng=None):
        return _xp(a).maximum(a, 0)

    def grad(self, a, x):
        return _xp(a).astype(a > 0, a.dtype)

    def backprop(self, dout, a, x):  # dout · 0 below the kink, as dout · grad gives
        return leaky_backprop(dout, a, 0.0)


class LeakyReLU(NodeModel):
    """max(a, slope·a), slope in [0, 1); the reference MLP uses slope 0.01."""

    slope: Fraction = 0.01
    name: ClassVar[str] = "leaky_relu"
    differentiable: ClassVar[bool] = True

    def __call__(self, a, rng=None):
        return _xp(a).where(a > 0, a, a * self.slope)

    def grad(self, a, x):
        xp = _xp(a)
        return xp.where(a > 0, xp.ones_like(a), xp.full_like(a, self.slope))

    def backprop(self, dout, a, x):  # one pass, the same numbers as dout · grad
        return leaky_backprop(dout, a, self.slope)


class Tanh(NodeModel):
    name: ClassVar[str] = "tanh"
    differentiable: ClassVar[bool] = True

    def __call__(self, a, rng=None):
        return _xp(a).tanh(a)

    def grad(self, a, x):
        return 1 - x * x


class Sigmoid(NodeModel):
    name: ClassVar[str] = "sigmoid"
    differentiable: ClassVar[bool] = True

    def __call__(self, a, rng=None):
        xp = _xp(a)
        # 0.5 (1 + tanh(a/2)) is the overflow-free form of 1 / (1 + e^-a)
        return 0.5 * (1 + xp.tanh(0.5 * a))

    def grad(self, a, x):
        return x * (1 - x)


# --- discontinuous / non-differentiable ---------------------------------------


class Heaviside(NodeModel):
    """Step unit: 1 where a > threshold, else 0. No derivative exists."""

    threshold: FiniteFloat = 0.0
    name: ClassVar[str] = "heaviside"

    def __call__(self, a, rng=None):
        return _xp(a).astype(a > self.threshold, a.dtype)


class Sign(NodeModel):
    """+1 where a > 0, -1 elsewhere (0 maps to -1, so outputs are strictly binary)."""

    name: ClassVar[str] = "sign"

    def __call__(self, a, rng=None):
        xp = _xp(a)
        return xp.where(a > 0, xp.ones_like(a), -xp.ones_like(a))


class Quantizer(NodeModel):
    """k-level quantiser: clip a to [low, high] and round to k evenly spaced levels."""

    levels: int = Field(default=4, ge=2)
    low: FiniteFloat = 0.0
    high: FiniteFloat = 1.0
    name: ClassVar[str] = "quantize"

    @model_validator(mode="after")
    def _range(self):
        if not self.high > self.low:
            raise ValueError(f"high must exceed low, got low={self.low}, high={self.high}")
        return self

    def __call__(self, a, rng=None):
        xp = _xp(a)
        step = (self.high - self.low) / (self.levels - 1)
        q = xp.round((xp.clip(a, self.low, self.high) - self.low) / step)
        return q * step + self.low


# --- stochastic ----------------------------------------------------------------


class StochasticBinary(NodeModel):
    """Stochastic binary (Bernoulli) unit: x = 1 with probability sigmoid(a / temperature), else 0."""

    temperature: PositiveFloat = 1.0
    name: ClassVar[str] = "stochastic_binary"
    stochastic: ClassVar[bool] = True

    def __call__(self, a, rng=None):
        if rng is None:
            raise ValueError("stochastic_binary node model needs a random stream (rng)")
        xp = _xp(a)
        p = 0.5 * (1 + xp.tanh(a * (0.5 / self.temperature)))
        return xp.astype(rng.uniform(a.shape, dtype=a.dtype) < p, a.dtype)


def fused_slope(node: NodeModel):
    """The leak of a node model the fused bias+perturbation+node kernel computes (None: linear), or False."""
    if type(node) is LeakyReLU:
        return node.slope
    if type(node) is ReLU:
        return 0.0
    if type(node) is Linear:
        return None
    return False
