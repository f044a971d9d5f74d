"""Intrinsic (device) noise on a layer's activity: the noise a learner cannot see.

An activity-noise model is applied by a layer to its activity a before the
node model: ``a_noisy = noise(a, rng)``, same shape and dtype. The network
records the noisy activity, which is what an activity-based rule (ANP) can
measure, and everything else about the noise stays hidden from the learner.
Each model draws its noise fresh from the pass's random stream:

* :class:`GaussianNoise` — additive a + std·ξ or multiplicative a·(1 + std·ξ);
* :class:`TelegraphNoise` — two-state random switching along the samples of a
  pass (stochastic magnetic tunnel junctions), offset + amplitude·s + read noise;
* :class:`KickNoise` — random kicks amplitude·z, z ∈ {0, 1}, P(z = 1) = p;
* :class:`ReplayNoise` — a measured trace (.npy or HDF5) replayed from a random
  offset per pass.

``kind`` names the model in configs (``[network.noise]``); :data:`Noise` is
the tagged union a config validates against and :func:`make_noise` builds
one from such a table. See docs/design.md §3.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Union

import numpy as np
from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from ..backend.arrays import cumulative_max, device_of
from ..backend.arrays import namespace as _xp
from ..errors import ParameterError
from ..params import FiniteFloat, NonNegativeFloat, Params, Probability

__all__ = ["ActivityNoise", "GaussianNoise", "TelegraphNoise", "KickNoise", "ReplayNoise", "Noise", "NOISE_KINDS",
           "make_noise"]


class ActivityNoise(Params):
    """Base class: intrinsic noise on the activity, ``noise(a, rng) -> a`` of ``a``'s shape and dtype."""

    name: ClassVar[str] = "activity_noise"

    def __call__(self, a, rng):
        if rng is None:
            raise ValueError(f"{self.name} needs a random stream (rng)")
        return self._apply(a, rng)

    def _apply(self, a, rng):
        raise NotImplementedError

    def describe_around(self, node_text: str) -> str:
        """``name(<node>, params...)``: the noise around the node model it perturbs, for network descriptions."""
        params = "".join(f", {k}={getattr(self, k)!r}" for k in type(self).model_fields if k != "kind")
        return f"{self.name}({node_text}{params})"


class GaussianNoise(ActivityNoise):
    """Intrinsic Gaussian noise on the activity.

    ``kind="additive"``: a + std·ξ; ``kind="multiplicative"``: a·(1 + std·ξ),
    ξ ~ N(0, 1) fresh per sample, unit and pass. std in activity units (>= 0).
    """

    kind: Literal["additive", "multiplicative"] = "additive"
    std: NonNegativeFloat
    name: ClassVar[str] = "gaussian_noise"

    def _apply(self, a, rng):
        xi = rng.normal(a.shape, scale=self.std, dtype=a.dtype)
        return a + xi if self.kind == "additive" else a * (1 + xi)

    def describe_around(self, node_text: str) -> str:
        return f"{self.name}({node_text}, std={self.std!r}, kind={self.kind!r})"


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
    p_up, p_down : switching probabilities per sample, each in [0, 1], p_up + p_down > 0.
    amplitude : half the distance between the two levels, in activity units.
    offset : constant added to the activity, in activity units.
    read_std : standard deviation of extra Gaussian read noise, in activity units (>= 0).
    """

    kind: Literal["telegraph"] = "telegraph"
    p_up: Probability
    p_down: Probability
    amplitude: FiniteFloat
    offset: FiniteFloat = 0.0
    read_std: NonNegativeFloat = 0.0
    name: ClassVar[str] = "telegraph_noise"

    @model_validator(mode="after")
    def _switches(self):
        if not self.p_up + self.p_down > 0:
            raise ValueError(f"p_up + p_down must be > 0, got p_up={self.p_up}, p_down={self.p_down}")
        return self

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
        reset[0, ...] = True
        up[0, ...] = u[0, ...] < self.p_plus
        t = xp.reshape(xp.arange(shape[0], device=device_of(u)), (-1,) + (1,) * (len(shape) - 1))
        last = cumulative_max(xp.where(reset, t, 0), axis=0)
        s = xp.take_along_axis(up, last, axis=0)
        if flip:
            s = s ^ xp.astype((t - last) & 1, xp.bool)
        return s

    def _apply(self, a, rng):
        if a.size == 0:
            return a
        s = self.states(a.shape, rng)
        out = a + _xp(a).where(s, _scalar(a, self.offset + self.amplitude), _scalar(a, self.offset - self.amplitude))
        if self.read_std > 0:
            out += rng.normal(a.shape, scale=self.read_std, dtype=a.dtype)
        return out


class KickNoise(ActivityNoise):
    """Random kicks: a + amplitude·z with z ∈ {0, 1}, P(z = 1) = p (Bernoulli noise).

    z is drawn fresh per sample, unit and pass: a kick of mean p·amplitude,
    not zero-mean. p in [0, 1]; amplitude in activity units.
    """

    kind: Literal["kick"] = "kick"
    p: Probability
    amplitude: FiniteFloat
    name: ClassVar[str] = "kick_noise"

    def _apply(self, a, rng):
        z = rng.uniform(a.shape, dtype="float64") < self.p
        return a + _xp(a).where(z, _scalar(a, self.amplitude), _scalar(a, 0.0))


def _scalar(a, value: float):
    """``value`` as a 0-d array of ``a``'s dtype and device (so a ``where`` keeps ``a``'s dtype)."""
    return _xp(a).asarray(value, dtype=a.dtype, device=device_of(a))


def _load_trace(path: str, dataset: str | None) -> np.ndarray:
    """The (len,) float64 read-only trace in ``path`` (.npy, or .h5/.hdf5 with ``dataset``)."""
    p = Path(path)
    where = f"trace {str(p)!r}" + (f" dataset {dataset!r}" if dataset is not None else "")
    suffix = p.suffix.lower()
    if suffix not in (".npy", ".h5", ".hdf5"):
        raise ValueError(f"trace {str(p)!r}: unsupported file type {p.suffix!r}; "
                         f"use .npy, or .h5/.hdf5 with a dataset")
    if not p.is_file():
        raise ValueError(f"trace file {str(p)!r} not found")
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


class ReplayNoise(ActivityNoise):
    """Replay of a measured noise trace: a + scale·trace[(offset + k) mod len].

    The 1-D trace is loaded once, when the model is built, from a ``.npy``
    file or an HDF5 file (``.h5``/``.hdf5``, ``dataset`` naming the dataset).
    k = 0, 1, ... runs over the elements of the (rows, n) activity in C order
    (unit by unit within a sample, then sample by sample), and ``offset`` is
    drawn uniformly from [0, len) from the random stream once per pass, so a
    seeded run is reproducible.

    Parameters
    ----------
    path : the trace file; a relative path is relative to the working directory
        (in a config: to the config file).
    dataset : the HDF5 dataset holding the trace (HDF5 files only).
    scale : factor from trace units to activity units.

    Attributes
    ----------
    trace : (len,) float64, read-only; left out of equality and hashing.
    """

    kind: Literal["replay"] = "replay"
    path: str = Field(min_length=1)
    dataset: str | None = None
    scale: FiniteFloat = 1.0
    name: ClassVar[str] = "replay_noise"
    _trace: np.ndarray = PrivateAttr()
    _on_device: dict = PrivateAttr(default_factory=dict)

    @field_validator("path", mode="before")
    @classmethod
    def _path_text(cls, v):
        return os.fspath(v) if isinstance(v, os.PathLike) else v

    @model_validator(mode="after")
    def _load(self):
        self._trace = _load_trace(self.path, self.dataset)
        return self

    @property
    def trace(self) -> np.ndarray:
        return self._trace

    def __eq__(self, other):
        return type(other) is type(self) and all(getattr(self, k) == getattr(other, k)
                                                 for k in type(self).model_fields)

    def __hash__(self):
        return hash((type(self),) + tuple(getattr(self, k) for k in type(self).model_fields))

    def _apply(self, a, rng):
        xp = _xp(a)
        n = self._trace.shape[0]
        offset = int(rng.integers(0, n))
        dev = device_of(a)
        key = repr(dev)
        if key not in self._on_device:  # the trace goes to each device once
            self._on_device[key] = xp.asarray(self._trace, device=dev)
        trace = self._on_device[key]
        vals = xp.take(trace, (xp.arange(a.size, device=dev) + offset) % n)
        return a + xp.astype(xp.reshape(vals, a.shape) * self.scale, a.dtype)

    def describe_around(self, node_text: str) -> str:
        return (f"{self.name}({node_text}, path={self.path!r}, dataset={self.dataset!r}, scale={self.scale!r}, "
                f"length={self._trace.shape[0]})")


#: kind -> the model it selects (old names: "bernoulli" is now "kick")
NOISE_KINDS: dict[str, type[ActivityNoise]] = {
    "additive": GaussianNoise, "multiplicative": GaussianNoise, "telegraph": TelegraphNoise, "kick": KickNoise,
    "replay": ReplayNoise,
}
_RENAMED_KINDS = {"bernoulli": "kick"}


def _kind_defaults(table):
    """A noise table without ``kind`` is additive Gaussian noise; old kind names are renamed with a warning."""
    if isinstance(table, dict):
        kind = table.get("kind", "additive")
        if kind in _RENAMED_KINDS:
            warnings.warn(f"noise kind {kind!r} is now called {_RENAMED_KINDS[kind]!r}; the old name will be "
                          f"removed in the next release", FutureWarning, stacklevel=4)
            kind = _RENAMED_KINDS[kind]
        return {**table, "kind": kind}
    return table


#: What a ``[network.noise]`` table validates against: one of the models above, chosen by ``kind``.
Noise = Annotated[Union[GaussianNoise, TelegraphNoise, KickNoise, ReplayNoise], Field(discriminator="kind"),
                  BeforeValidator(_kind_defaults)]


def make_noise(table: dict) -> ActivityNoise:
    """The noise model a table ``{"kind": ..., **parameters}`` describes (kind defaults to "additive").

    ParameterError naming the parameter for an unknown kind, an unknown or
    missing parameter, or a bad value.
    """
    if isinstance(table, ActivityNoise):
        return table
    if not isinstance(table, dict):
        raise ParameterError("noise", "", "must be a table of parameters", table)
    table = _kind_defaults(table)
    cls = NOISE_KINDS.get(table["kind"])
    if cls is None:
        raise ParameterError("noise", "kind", f"must be one of {', '.join(NOISE_KINDS)}", table["kind"])
    return cls(**table)
