"""Node models: the dynamics f that turn a layer's activity a into its output x.

A node model is a small frozen dataclass with

* ``__call__(a, rng=None) -> x`` — vectorised forward, ``a`` of shape (B, n);
* ``differentiable`` — whether ``grad`` exists (BP refuses a network where it does not);
* ``grad(a, x) -> f'(a)`` — elementwise derivative, only when differentiable;
* ``stochastic`` — whether the forward draws from ``rng``;
* ``activity(a, rng) -> a`` — intrinsic noise on the activity, the identity for
  noiseless units. The network records the activity *after* this noise, which
  is what an activity-based rule (ANP) can measure.

Intrinsic (device) noise is a wrapper around any node model, a subclass of
:class:`ActivityNoise` that sets ``noisy = True`` and adds noise in
``activity``; each draws its noise fresh from the pass's random stream and
keeps ``a``'s dtype:

* :class:`GaussianNoise` — additive a + std·ξ or multiplicative a·(1 + std·ξ);
* :class:`TelegraphNoise` — two-state random switching along the samples of a
  pass (stochastic magnetic tunnel junctions), offset + amplitude·s + read noise;
* :class:`BernoulliNoise` — random kicks amplitude·z, z ∈ {0, 1}, P(z = 1) = p;
* :class:`ReplayNoise` — a measured trace (.npy or HDF5) replayed from a random
  offset per pass.

Node models know nothing of learning rules. Build one by name with
:func:`make_node`; ``noise={"kind": ..., ...}`` wraps it (see ``NOISE_KINDS``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .backend import array_module as _xp

__all__ = [
    "NodeModel", "Linear", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Heaviside", "Sign",
    "Quantizer", "Bernoulli", "ActivityNoise", "GaussianNoise", "TelegraphNoise", "BernoulliNoise",
    "ReplayNoise", "make_node", "make_noise", "NODE_MODELS", "NOISE_KINDS",
]


class NodeModel:
    """Base class: a noiseless, deterministic node model."""

    name: str = "node"
    differentiable: bool = False
    stochastic: bool = False
    noisy: bool = False  # adds intrinsic noise to its activity
    temporal: bool = False  # runs in time steps inside the network's time loop (npsim.spiking)

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


# --- intrinsic (device) noise on the activity --------------------------------


def _real(model: str, pname: str, value, *, low=None, high=None) -> float:
    """``value`` as a finite float, else ValueError naming ``pname`` and ``model``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{model}: {pname} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{model}: {pname} must be in [{lo}, {hi}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ActivityNoise(NodeModel):
    """Base class: intrinsic noise on the activity of a wrapped node model.

    ``activity(a, rng)`` applies the wrapped model's own activity noise, then
    this model's, and returns an array of ``a``'s shape and dtype. The forward,
    the derivative (taken at the noisy activity), ``differentiable`` and
    ``stochastic`` are those of ``inner``. A subclass validates its parameters
    in ``_check()`` and applies its noise in ``_apply(a, rng)``.
    """

    inner: NodeModel = field(default_factory=lambda: Linear())
    name = "activity_noise"
    noisy = True

    def __post_init__(self):
        if not isinstance(self.inner, NodeModel):
            raise TypeError(f"{self.name}: inner must be a node model, got {type(self.inner).__name__}")
        self._check()

    def _check(self) -> None:
        """Validate the noise parameters (ValueError naming the parameter and the node model)."""

    def _apply(self, a, rng):
        """``a`` (rows, n) with this model's noise applied, in ``a``'s dtype."""
        raise NotImplementedError

    @property
    def differentiable(self):  # type: ignore[override]
        return self.inner.differentiable

    @property
    def stochastic(self):  # type: ignore[override]
        return self.inner.stochastic

    def activity(self, a, rng=None):
        if rng is None:
            raise ValueError(f"{self.name} node model needs a random stream (rng)")
        return self._apply(self.inner.activity(a, rng), rng)

    def __call__(self, a, rng=None):
        return self.inner(a, rng)

    def grad(self, a, x):
        return self.inner.grad(a, x)

    def describe(self) -> str:
        params = "".join(f", {f.name}={getattr(self, f.name)!r}" for f in fields(self)
                         if f.name != "inner" and f.repr)
        return f"{self.name}({self.inner.describe()}{params})"


@dataclass(frozen=True)
class GaussianNoise(ActivityNoise):
    """Intrinsic Gaussian noise on the activity of any node model.

    ``kind="additive"``: a + std·ξ; ``kind="multiplicative"``: a·(1 + std·ξ),
    ξ ~ N(0, 1) fresh per sample, unit and pass. The noise is part of the
    node's activity, which the network records, and is invisible to the learner
    otherwise. Differentiable when the wrapped model is (the derivative is taken
    at the noisy activity).
    """

    std: float = 0.1
    kind: str = "additive"
    name = "gaussian_noise"

    def _check(self):
        _real(self.name, "std", self.std, low=0)
        if self.kind not in ("additive", "multiplicative"):
            raise ValueError(f"gaussian_noise: kind must be 'additive' or 'multiplicative', got {self.kind!r}")

    def _apply(self, a, rng):
        xi = rng.normal(a.shape, scale=self.std, dtype=a.dtype)
        return a + xi if self.kind == "additive" else a * (1 + xi)


@dataclass(frozen=True)
class TelegraphNoise(ActivityNoise):
    """Random telegraph (two-state switching) noise, as in stochastic magnetic tunnel junctions.

    Each unit holds a state s ∈ {−1, +1} that, per sample, flips −1 → +1 with
    probability ``p_up`` and +1 → −1 with probability ``p_down``. The activity
    becomes a + offset + amplitude·s + read_std·ξ, ξ ~ N(0, 1) fresh per sample
    and unit. The noise has mean offset + amplitude·(p_up − p_down)/(p_up + p_down):
    it is not zero-mean in general.

    The chain runs along the rows of ``a`` (rows = samples, in order, so the
    K·B rows of a stacked pass form one chain per unit); units are independent.
    Every pass (call) starts from the stationary distribution
    P(s = +1) = p_up/(p_up + p_down), i.e. passes are assumed to lie further
    apart than the correlation time. Within a pass, successive samples of s
    have lag-1 autocorrelation 1 − p_up − p_down (negative when p_up + p_down > 1).

    Parameters
    ----------
    inner : the wrapped node model.
    p_up, p_down : switching probabilities per sample, each in [0, 1], p_up + p_down > 0.
    amplitude : half the distance between the two levels, in activity units.
    offset : constant added to the activity, in activity units.
    read_std : standard deviation of extra Gaussian read noise, in activity units (>= 0).
    """

    p_up: float = 0.1
    p_down: float = 0.1
    amplitude: float = 0.1
    offset: float = 0.0
    read_std: float = 0.0
    name = "telegraph_noise"

    def _check(self):
        m = self.name
        _real(m, "p_up", self.p_up, low=0, high=1)
        _real(m, "p_down", self.p_down, low=0, high=1)
        if not self.p_up + self.p_down > 0:
            raise ValueError(f"{m}: p_up + p_down must be > 0, got p_up={self.p_up}, p_down={self.p_down}")
        _real(m, "amplitude", self.amplitude)
        _real(m, "offset", self.offset)
        _real(m, "read_std", self.read_std, low=0)

    @property
    def p_plus(self) -> float:
        """Stationary probability of s = +1: p_up / (p_up + p_down)."""
        return self.p_up / (self.p_up + self.p_down)

    def states(self, shape, rng):
        """One pass of states: a bool array of ``shape`` (rows, ...), True where s = +1.

        Vectorised as a renewal process: one uniform u per sample and unit
        chooses between a *reset*, whose new state does not depend on the past,
        and a deterministic step. With λ = p_up + p_down <= 1: u < p_up sets
        s = +1, p_up <= u < λ sets s = −1, else s is kept. With λ > 1:
        u < 1 − p_down sets +1, 1 − p_down <= u < 2 − λ sets −1, else s flips.
        Either way s goes −1 → +1 with probability p_up and +1 → −1 with
        probability p_down. Row 0 is a reset to the stationary distribution; a
        row's state is the value of the last reset at or before it, flipped by
        the parity of the rows since (λ > 1 only).
        """
        u = rng.uniform(shape, dtype="float64")
        xp = _xp(u)
        lam = self.p_up + self.p_down
        flip = lam > 1
        reset_p, up_p = (2 - lam, 1 - self.p_down) if flip else (lam, self.p_up)
        reset = u < reset_p
        up = u < up_p
        reset[0] = True
        up[0] = u[0] < self.p_plus
        t = xp.arange(shape[0]).reshape((-1,) + (1,) * (len(shape) - 1))
        last = xp.where(reset, t, 0)
        xp.maximum.accumulate(last, axis=0, out=last)
        s = xp.take_along_axis(up, last, axis=0)
        if flip:
            s ^= ((t - last) & 1).astype(bool)
        return s

    def _apply(self, a, rng):
        if a.size == 0:
            return a
        dt = a.dtype.type
        s = self.states(a.shape, rng)
        out = a + _xp(a).where(s, dt(self.offset + self.amplitude), dt(self.offset - self.amplitude))
        if self.read_std > 0:
            out += rng.normal(a.shape, scale=self.read_std, dtype=a.dtype)
        return out


@dataclass(frozen=True)
class BernoulliNoise(ActivityNoise):
    """Bernoulli {0, 1}·amplitude noise: a + amplitude·z with P(z = 1) = p.

    z is drawn fresh per sample, unit and pass: a random kick of mean
    p·amplitude, not zero-mean.

    Parameters
    ----------
    inner : the wrapped node model.
    p : probability of a kick, in [0, 1].
    amplitude : size of a kick, in activity units.
    """

    p: float = 0.1
    amplitude: float = 0.1
    name = "bernoulli_noise"

    def _check(self):
        _real(self.name, "p", self.p, low=0, high=1)
        _real(self.name, "amplitude", self.amplitude)

    def _apply(self, a, rng):
        z = rng.uniform(a.shape, dtype="float64") < self.p
        dt = a.dtype.type
        return a + _xp(a).where(z, dt(self.amplitude), dt(0))


def _load_trace(path: str, dataset: str | None) -> np.ndarray:
    """The (len,) float64 read-only trace in ``path`` (.npy, or .h5/.hdf5 with ``dataset``)."""
    p = Path(path)
    where = f"replay_noise: trace {str(p)!r}" + (f" dataset {dataset!r}" if dataset is not None else "")
    suffix = p.suffix.lower()
    if suffix not in (".npy", ".h5", ".hdf5"):
        raise ValueError(f"replay_noise: trace {str(p)!r}: unsupported file type {p.suffix!r}; "
                         f"use .npy, or .h5/.hdf5 with a dataset")
    if not p.is_file():
        raise ValueError(f"replay_noise: trace file {str(p)!r} not found")
    if suffix == ".npy":
        if dataset is not None:
            raise ValueError(f"{where}: dataset applies only to HDF5 traces (.h5, .hdf5)")
        try:
            arr = np.load(p, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any parse failure means an unreadable file
            raise ValueError(f"{where}: cannot read: {exc}") from None
    else:
        import h5py  # noqa: PLC0415 - only replay traces need it here

        try:
            f = h5py.File(p, "r")
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{where}: cannot read: {exc}") from None
        with f:
            names: list[str] = []
            f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            known = f"; datasets in the file: {', '.join(names)}" if names else "; the file holds no datasets"
            if dataset is None:
                raise ValueError(f"{where}: an HDF5 trace needs a dataset name{known}")
            obj = f.get(dataset)
            if not isinstance(obj, h5py.Dataset):
                raise ValueError(f"{where}: no such dataset{known}")
            try:
                arr = obj[()]
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"{where}: cannot read: {exc}") from None
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{where}: the trace must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{where}: the trace must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{where}: the trace is empty")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{where}: the trace holds non-finite values (first at index {bad})")
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True)
class ReplayNoise(ActivityNoise):
    """Replay of a measured noise trace: a + scale·trace[(offset + k) mod len].

    The 1-D trace is loaded once, when the node model is built, from a
    ``.npy`` file or an HDF5 file (``.h5``/``.hdf5``, ``dataset`` naming the
    dataset). k = 0, 1, ... runs over the elements of the (rows, n) activity in
    C order (unit by unit within a sample, then sample by sample), and
    ``offset`` is drawn uniformly from [0, len) from the random stream once per
    pass, so a seeded run is reproducible.

    Parameters
    ----------
    inner : the wrapped node model.
    path : the trace file; a relative path is relative to the working directory.
    dataset : the HDF5 dataset holding the trace (HDF5 files only).
    scale : factor from trace units to activity units.

    Attributes
    ----------
    trace : (len,) float64, read-only; left out of equality, hashing and repr.
    """

    path: str = ""
    dataset: str | None = None
    scale: float = 1.0
    trace: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    name = "replay_noise"

    def _check(self):
        if not isinstance(self.path, (str, os.PathLike)) or not os.fspath(self.path):
            raise ValueError(f"{self.name}: path must name a trace file, got {self.path!r}")
        if self.dataset is not None and not isinstance(self.dataset, str):
            raise ValueError(f"{self.name}: dataset must be a string, got {self.dataset!r}")
        _real(self.name, "scale", self.scale)
        object.__setattr__(self, "path", os.fspath(self.path))
        object.__setattr__(self, "trace", _load_trace(self.path, self.dataset))

    def _apply(self, a, rng):
        xp = _xp(a)
        n = self.trace.shape[0]
        offset = int(rng.integers(0, n))
        vals = xp.take(xp.asarray(self.trace), xp.arange(offset, offset + a.size), mode="wrap")
        return a + (vals.reshape(a.shape) * self.scale).astype(a.dtype)

    def describe(self) -> str:
        return f"{super().describe()[:-1]}, length={self.trace.shape[0]})"


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


#: noise kind -> (wrapper class, the parameters it takes besides ``kind``)
NOISE_KINDS: dict[str, tuple[type[ActivityNoise], tuple[str, ...]]] = {
    "additive": (GaussianNoise, ("std",)),
    "multiplicative": (GaussianNoise, ("std",)),
    "telegraph": (TelegraphNoise, ("p_up", "p_down", "amplitude", "offset", "read_std")),
    "bernoulli": (BernoulliNoise, ("p", "amplitude")),
    "replay": (ReplayNoise, ("path", "dataset", "scale")),
}


def make_noise(inner: NodeModel, noise: dict) -> ActivityNoise:
    """Wrap ``inner`` in the intrinsic noise ``noise = {"kind": ..., **parameters}``.

    ``kind`` is one of ``NOISE_KINDS`` (default ``"additive"``); the other keys
    are that kind's parameters. Unknown kinds or parameters raise ``ValueError``
    naming them and listing the allowed ones.
    """
    if not isinstance(noise, dict):
        raise ValueError(f"node noise must be a table of parameters, got {noise!r}")
    params = dict(noise)
    kind = params.pop("kind", "additive")
    if kind not in NOISE_KINDS:
        raise ValueError(f"node noise: unknown kind {kind!r}; kinds: {', '.join(NOISE_KINDS)}")
    cls, allowed = NOISE_KINDS[kind]
    bad = sorted(set(params) - set(allowed))
    if bad:
        raise ValueError(f"node noise (kind {kind!r}): unknown parameter(s) {', '.join(bad)}; "
                         f"it takes kind, {', '.join(allowed)}")
    if cls is GaussianNoise:
        params["kind"] = kind
    return cls(inner, **params)


def make_node(name: str, *, noise: dict | None = None, **params) -> NodeModel:
    """Build a node model by name, e.g. ``make_node("leaky_relu", slope=0.1)``.

    ``noise`` wraps it in intrinsic activity noise (:func:`make_noise`), e.g.
    ``{"std": 0.1}`` (Gaussian, additive), ``{"kind": "telegraph", "p_up": 0.1,
    "p_down": 0.2, "amplitude": 0.05}`` or ``{"kind": "replay", "path": "trace.npy"}``.
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
    if noise and node.temporal:
        raise ValueError(f"node model {name!r} runs in time steps and takes no activity-noise wrapper; "
                         f"give it noise with its own 'membrane_noise' parameter")
    if noise:
        node = make_noise(node, noise)
    return node

