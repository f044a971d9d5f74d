"""Per-sample losses and their derivatives with respect to the network output.

Every loss returns one value per sample, shape (B,): node-perturbation rules
correlate the *per-sample* loss change with the per-sample activity change.
The batch loss is the mean of these values.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backend.arrays import device_of
from ..backend.arrays import namespace as _xp
from ..registry import Registry

__all__ = ["Loss", "SoftmaxCrossEntropy", "MeanSquaredError", "make_loss", "accuracy", "LOSSES"]


class Loss:
    name = "loss"

    def __call__(self, out, y):
        """Per-sample loss, shape (B,), for outputs ``out`` (B, C) and targets ``y``."""
        raise NotImplementedError

    def grad(self, out, y):
        """d loss_b / d out_b, shape (B, C) (not divided by B)."""
        raise NotImplementedError


def _one_hot(y, n, dtype):
    xp = _xp(y)
    return xp.astype(y[:, None] == xp.arange(n, dtype=y.dtype, device=device_of(y))[None, :], dtype)


def _labels(y) -> bool:
    """Whether ``y`` holds integer class labels (B,), not targets (B, C)."""
    return y.ndim == 1 and _xp(y).isdtype(y.dtype, "integral")


def _targets(y, out):
    """Integer class labels become one-hot rows; float targets pass through."""
    if _labels(y):
        return _one_hot(y, out.shape[1], out.dtype)
    if y.shape != out.shape:
        raise ValueError(f"targets of shape {y.shape} do not match outputs of shape {out.shape}")
    return y


@dataclass(frozen=True)
class SoftmaxCrossEntropy(Loss):
    """ℓ_b = -log softmax(out_b)[y_b], in nats. ``y``: int labels (B,) or target distributions (B, C)."""

    name = "cross_entropy"

    def _log_softmax(self, out):
        xp = _xp(out)
        z = out - xp.max(out, axis=1, keepdims=True)
        return z - xp.log(xp.sum(xp.exp(z), axis=1, keepdims=True))

    def __call__(self, out, y):
        xp = _xp(out)
        logp = self._log_softmax(out)
        if _labels(y):
            return -xp.take_along_axis(logp, y[:, None], axis=1)[:, 0]
        return -xp.sum(_targets(y, out) * logp, axis=1)

    def grad(self, out, y):
        xp = _xp(out)
        return xp.exp(self._log_softmax(out)) - _targets(y, out)


@dataclass(frozen=True)
class MeanSquaredError(Loss):
    """ℓ_b = ½ ‖out_b − t_b‖², summed over outputs; int labels become one-hot targets."""

    name = "mse"

    def __call__(self, out, y):
        d = out - _targets(y, out)
        return 0.5 * _xp(d).sum(d * d, axis=1)

    def grad(self, out, y):
        return out - _targets(y, out)


LOSSES: Registry[type[Loss]] = Registry("loss", {"cross_entropy": SoftmaxCrossEntropy, "mse": MeanSquaredError})


def make_loss(name: str) -> Loss:
    """The loss called ``name`` ("cross_entropy" or "mse"); ValueError naming the known ones."""
    return LOSSES.lookup(name)()


def accuracy(out, y) -> float:
    """Fraction of rows whose arg-max output equals the label (int labels or one-hot/float targets)."""
    return float(correct(out, y)) / out.shape[0]


def correct(out, y):
    """How many rows' arg-max output equals the label: a 0-d integer array on the arrays' device."""
    xp = _xp(out)
    pred = xp.argmax(out, axis=1)
    if y.ndim == 2:
        y = xp.argmax(y, axis=1)
    return xp.sum(xp.astype(pred == y, xp.int64))
