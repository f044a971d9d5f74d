"""Node models: the dynamics f that turn a layer's activity a into its output x.

A node model is a small frozen dataclass with

* ``__call__(a, rng=None) -> x`` — vectorised forward, ``a`` of shape (B, n);
* ``differentiable`` — whether ``grad`` exists (BP refuses a network where it does not);
* ``grad(a, x) -> f'(a)`` — elementwise derivative, only when differentiable;
* ``stochastic`` — whether the forward draws from ``rng``;
* ``activity(a, rng) -> a`` — intrinsic noise on the activity, the identity for
  noiseless units. The network records the activity *after* this noise, which
  is what an activity-based rule (ANP) can measure.

Node models know nothing of learning rules. Build one by name with
:func:`make_node`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from .backend import array_module as _xp

__all__ = [
    "NodeModel", "Linear", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Heaviside", "Sign",
    "Quantizer", "Bernoulli", "GaussianNoise", "make_node", "NODE_MODELS",
]


class NodeModel:
    """Base class: a noiseless, deterministic node model."""

    name: str = "node"
    differentiable: bool = False
    stochastic: bool = False
    noisy: bool = False  # adds intrinsic noise to its activity

    def __call__(self, a, rng=None):
        raise NotImplementedError

    def grad(self, a, x):
        raise TypeError(f"node model {self.name!r} has no derivative")

    def activity(self, a, rng=None):
        return a

    def describe(self) -> str:
        params = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)) if hasattr(
            self, "__dataclass_fields__") else ""
        return f"{self.name}({params})"


# --- continuous ----------------------------------------------------------------


@dataclass(frozen=True)
class Linear(NodeModel):
    name = "linear"
    differentiable = True

    def __call__(self, a, rng=None):
        return a

    def grad(self, a, x):
        return _xp(a).ones_like(a)


@dataclass(frozen=True)
class ReLU(NodeModel):
    name = "relu"
    differentiable = True

    def __call__(self, a, rng=None):
        return _xp(a).maximum(a, 0)

    def grad(self, a, x):
        return (a > 0).astype(a.dtype)


@dataclass(frozen=True)
class LeakyReLU(NodeModel):
    """max(a, slope·a); the reference MLP uses slope 0.01."""

    slope: float = 0.01
    name = "leaky_relu"
    differentiable = True

    def __post_init__(self):
        if not 0 <= self.slope < 1:
            raise ValueError(f"leaky_relu: slope must be in [0, 1), got {self.slope}")

    def __call__(self, a, rng=None):
        return _xp(a).where(a > 0, a, a * a.dtype.type(self.slope))

    def grad(self, a, x):
        xp = _xp(a)
        return xp.where(a > 0, a.dtype.type(1), a.dtype.type(self.slope))


@dataclass(frozen=True)
class Tanh(NodeModel):
    name = "tanh"
    differentiable = True

    def __call__(self, a, rng=None):
        return _xp(a).tanh(a)

    def grad(self, a, x):
        return 1 - x * x


@dataclass(frozen=True)
class Sigmoid(NodeModel):
    name = "sigmoid"
    differentiable = True

    def __call__(self, a, rng=None):
        xp = _xp(a)
        # 0.5 (1 + tanh(a/2)) is the overflow-free form of 1 / (1 + e^-a)
        return 0.5 * (1 + xp.tanh(0.5 * a))

    def grad(self, a, x):
        return x * (1 - x)


# --- discontinuous / non-differentiable ---------------------------------------


@dataclass(frozen=True)
class Heaviside(NodeModel):
    """Step unit: 1 where a > threshold, else 0. No derivative exists."""

    threshold: float = 0.0
    name = "heaviside"

    def __call__(self, a, rng=None):
        return (a > self.threshold).astype(a.dtype)


@dataclass(frozen=True)
class Sign(NodeModel):
    """+1 where a > 0, -1 elsewhere (0 maps to -1, so outputs are strictly binary)."""

    name = "sign"

    def __call__(self, a, rng=None):
        one = a.dtype.type(1)
        return _xp(a).where(a > 0, one, -one)


@dataclass(frozen=True)
class Quantizer(NodeModel):
    """k-level quantiser: clip a to [low, high] and round to k evenly spaced levels."""

    levels: int = 4
    low: float = 0.0
    high: float = 1.0
    name = "quantize"

    def __post_init__(self):
        if self.levels < 2:
            raise ValueError(f"quantize: levels must be >= 2, got {self.levels}")
        if not self.high > self.low:
            raise ValueError(f"quantize: high must exceed low, got low={self.low}, high={self.high}")

    def __call__(self, a, rng=None):
        xp = _xp(a)
        step = (self.high - self.low) / (self.levels - 1)
        q = xp.rint((xp.clip(a, self.low, self.high) - self.low) / a.dtype.type(step))
        return (q * a.dtype.type(step) + a.dtype.type(self.low)).astype(a.dtype)


# --- stochastic ----------------------------------------------------------------


@dataclass(frozen=True)
class Bernoulli(NodeModel):
    """Stochastic binary unit: x = 1 with probability sigmoid(a / temperature), else 0."""

    temperature: float = 1.0
    name = "bernoulli"
    stochastic = True

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"bernoulli: temperature must be > 0, got {self.temperature}")

    def __call__(self, a, rng=None):
        if rng is None:
            raise ValueError("bernoulli node model needs a random stream (rng)")
        xp = _xp(a)
        p = 0.5 * (1 + xp.tanh(a * a.dtype.type(0.5 / self.temperature)))
        return (rng.uniform(a.shape, dtype=a.dtype) < p).astype(a.dtype)


@dataclass(frozen=True)
class GaussianNoise(NodeModel):
    """Intrinsic Gaussian noise on the activity of any node model.

    ``kind="additive"``: a + std·ξ; ``kind="multiplicative"``: a·(1 + std·ξ),
    ξ ~ N(0, 1) fresh per sample, unit and pass. The noise is part of the
    node's activity, which the network records, and is invisible to the learner
    otherwise. Differentiable when the wrapped model is (the derivative is taken
    at the noisy activity).
    """

    inner: NodeModel = field(default_factory=lambda: Linear())
    std: float = 0.1
    kind: str = "additive"
    name = "gaussian_noise"
    noisy = True

    def __post_init__(self):
        if not isinstance(self.inner, NodeModel):
            raise TypeError(f"gaussian_noise: inner must be a node model, got {type(self.inner).__name__}")
        if not self.std >= 0 or not math.isfinite(self.std):
            raise ValueError(f"gaussian_noise: std must be finite and >= 0, got {self.std}")
        if self.kind not in ("additive", "multiplicative"):
            raise ValueError(f"gaussian_noise: kind must be 'additive' or 'multiplicative', got {self.kind!r}")

    @property
    def differentiable(self):  # type: ignore[override]
        return self.inner.differentiable

    @property
    def stochastic(self):  # type: ignore[override]
        return self.inner.stochastic

    def activity(self, a, rng=None):
        if rng is None:
            raise ValueError("gaussian_noise node model needs a random stream (rng)")
        a = self.inner.activity(a, rng)
        xi = rng.normal(a.shape, scale=self.std, dtype=a.dtype)
        return a + xi if self.kind == "additive" else a * (1 + xi)

    def __call__(self, a, rng=None):
        return self.inner(a, rng)

    def grad(self, a, x):
        return self.inner.grad(a, x)

    def describe(self) -> str:
        return f"gaussian_noise({self.inner.describe()}, std={self.std}, kind={self.kind!r})"


NODE_MODELS: dict[str, type[NodeModel]] = {
    "linear": Linear,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "tanh": Tanh,
    "sigmoid": Sigmoid,
    "heaviside": Heaviside,
    "step": Heaviside,
    "binary": Heaviside,
    "sign": Sign,
    "quantize": Quantizer,
    "bernoulli": Bernoulli,
}


def make_node(name: str, *, noise: dict | None = None, **params) -> NodeModel:
    """Build a node model by name, e.g. ``make_node("leaky_relu", slope=0.1)``.

    ``noise={"std": 0.1, "kind": "additive"}`` wraps it in :class:`GaussianNoise`.
    Unknown names or parameters raise ``ValueError`` naming them.
    """
    if not isinstance(name, str) or name.lower() not in NODE_MODELS:
        known = ", ".join(sorted(NODE_MODELS))
        raise ValueError(f"unknown node model {name!r}; known node models: {known}")
    cls = NODE_MODELS[name.lower()]
    allowed = {f.name for f in fields(cls)}
    bad = sorted(set(params) - allowed)
    if bad:
        hint = f"it takes {', '.join(sorted(allowed))}" if allowed else "it takes no parameters"
        raise ValueError(f"node model {name!r}: unknown parameter(s) {', '.join(bad)}; {hint}")
    node = cls(**params)
    if noise:
        bad = sorted(set(noise) - {"std", "kind"})
        if bad:
            raise ValueError(f"node noise: unknown parameter(s) {', '.join(bad)}; it takes std, kind")
        node = GaussianNoise(node, **noise)
    return node
