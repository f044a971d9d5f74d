"""Layers: what a layer computes from its input, and how its parameter updates are formed.

A layer has *units* (the nodes a rule perturbs, whose activity a = W x + b it
records) and an *output* (what the next layer reads). For :class:`Dense` they
are the same; :class:`Conv2D` has one unit per output position and channel,
and its output may be pooled.

Every layer answers the same few questions, so the network and the rules
need no per-layer-type code:

* ``param_shapes()`` — shapes of W, b (and R when it decorrelates);
* ``layer_input(h, R)`` — what W multiplies, rows = samples (Dense: R h; Conv2D:
  the image patches, each decorrelated by R), recorded as the update's x;
* ``drive(inp, W, b)`` — W x + b per unit, (B, n_units) (W x alone without b,
  when the caller adds ``unit_bias(b)``, the bias of every unit, itself);
* ``output(u)`` — the layer output from the units' node output (Conv2D: pooling);
* ``weight_grad(signal, inp, n)`` — Σ_b signal_b x_bᵀ / n for W and b, the form
  every rule's update takes (BP, NP, INP and ANP differ only in the signal);
* ``decorrelation_rows(inp)`` — the rows R is decorrelated over (Conv2D: patches);
* ``unit_outputs(pre, post)`` — the units' node outputs of a recorded pass (Conv2D: before pooling);
* ``output_grad``/``input_grad`` — the backward pass, for BP.

A layer's units are its ``node`` model, with the optional intrinsic activity
``noise`` (:mod:`npsim.model.noise`) applied to the activity before the node.

Images are rows of C·H·W values in channel-major order (as CIFAR-10 and
MNIST store them); a convolution's units are ordered (position, channel).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import field_validator, model_validator

from ..backend.arrays import contiguous, device_of, is_numpy
from ..backend.arrays import namespace as _xp
from ..params import NonNegativeInt, Params, PositiveInt
from .nodes import NodeModel
from .noise import ActivityNoise

__all__ = ["Layer", "Dense", "Conv2D", "ConvSpec"]


class Layer(Params):
    """What every layer holds besides its shape: the units' node model, activity noise and decorrelation."""

    @property
    def noisy(self) -> bool:
        """Whether the layer's units add intrinsic noise (activity noise, or the node model's own)."""
        return self.noise is not None or self.node.noisy

    @model_validator(mode="after")
    def _no_noise_around_time_steps(self):
        if self.noise is not None and self.node.temporal:
            raise ValueError(f"the time-stepped node model {self.node.name!r} takes no activity noise; give it "
                             f"noise with its own 'membrane_noise' parameter")
        return self

    def folds(self, rows: int, clean_rows: int) -> bool:
        """Whether a stacked pass of ``rows`` rows, of which the first ``clean_rows`` need their
        decorrelated input, is cheaper as h (W R)ᵀ than as (h Rᵀ) Wᵀ (docs/design.md §9a)."""
        return False

    def describe_units(self) -> str:
        text = self.node.describe()
        return text if self.noise is None else self.noise.describe_around(text)


class Dense(Layer):
    """A fully connected layer: a = (R x) Wᵀ + b, output = node(a).

    n_in, n_out : input and output widths.
    node : the node model of the layer's units.
    decorrelate : whether the layer sees its input through a learned square matrix R.
    noise : intrinsic activity noise of the units (:mod:`npsim.model.noise`), or None.
    """

    n_in: PositiveInt
    n_out: PositiveInt
    node: NodeModel
    decorrelate: bool = False
    noise: ActivityNoise | None = None
    component: ClassVar[str] = "Dense"

    @property
    def n_units(self) -> int:
        return self.n_out

    @property
    def fan_in(self) -> int:
        return self.n_in

    @property
    def fan_out(self) -> int:
        return self.n_out

    def param_shapes(self) -> dict:
        shapes = {"W": (self.n_out, self.n_in), "b": (self.n_out,)}
        if self.decorrelate:
            shapes["R"] = (self.n_in, self.n_in)
        return shapes

    def describe(self) -> str:
        return f"{'D' if self.decorrelate else ''}{self.n_out}:{self.describe_units()}"

    def layer_input(self, h, R=None):
        return h if R is None else h @ R.T

    def folds(self, rows: int, clean_rows: int) -> bool:
        # W R costs n_out·n², the clean rows' h Rᵀ clean_rows·n²; h Rᵀ for every row costs rows·n²
        return self.decorrelate and self.n_out + clean_rows < rows

    def folded_weight(self, W, R):
        """W R, (n_out, n_in): the weight that acts on the input before decorrelation."""
        return W @ R

    def drive(self, inp, W, b=None):
        """W x (+ b when given): (N, n_units)."""
        d = inp @ W.T
        if b is not None:
            d += b
        return d

    def unit_bias(self, b):
        """The bias of every unit, (n_units,)."""
        return b

    def output(self, u):
        return u

    def weight_grad(self, signal, inp, n: int = 1):
        """G_W = signalᵀ inp / n, G_b = Σ signal / n; signal (B, n_out), inp (B, n_in)."""
        return _divided(signal.T @ inp, n), _divided(_xp(signal).sum(signal, axis=0), n)

    def decorrelation_rows(self, inp):
        return inp

    def unit_outputs(self, pre, post):
        return post

    def output_grad(self, dout, u):
        """Gradient w.r.t. the units' node output from the gradient w.r.t. the layer output."""
        return dout

    def input_grad(self, da, W, R=None):
        dx = da @ W
        return dx if R is None else dx @ R


class ConvSpec(Params):
    """The geometry of one convolution layer, as a config's ``network.conv`` entries give it.

    channels : output channels.
    kernel, stride, padding : square kernel size, stride and zero padding (pixels).
    pool : pooling window and stride (1: none); the output is pooled over
        non-overlapping pool × pool windows (the last rows/columns that do
        not fill a window are dropped).
    pooling : "max" or "avg".
    """

    channels: PositiveInt
    kernel: PositiveInt
    stride: PositiveInt = 1
    padding: NonNegativeInt = 0
    pool: PositiveInt = 1
    pooling: Literal["max", "avg"] = "max"
    component: ClassVar[str] = "conv"


class Conv2D(ConvSpec, Layer):
    """A 2-D convolution (cross-correlation) with optional pooling.

    in_shape : (C, H, W) of the input image.
    channels, kernel, stride, padding, pool, pooling : the geometry (:class:`ConvSpec`).
    node : node model of the units (one per output position and channel).
    decorrelate : learn an R (k × k, k = C·kernel²) that decorrelates the
        image patches, as the reference method does for convolutions.
    noise : intrinsic activity noise of the units, or None.

    Parameters: W (channels, k), b (channels,), R (k, k); a patch is ordered
    (channel, row, column) within the kernel window.
    """

    in_shape: tuple[PositiveInt, PositiveInt, PositiveInt]
    node: NodeModel
    decorrelate: bool = False
    noise: ActivityNoise | None = None
    component: ClassVar[str] = "Conv2D"
    positional: ClassVar[tuple[str, ...]] = ("in_shape", "channels", "kernel", "node")

    @field_validator("in_shape", mode="before")
    @classmethod
    def _shape_tuple(cls, v):
        return tuple(v) if isinstance(v, list) else v

    @classmethod
    def from_spec(cls, in_shape, spec: ConvSpec, node: NodeModel, *, decorrelate: bool = False,
                  noise: ActivityNoise | None = None) -> "Conv2D":
        """The layer of geometry ``spec`` on images of ``in_shape``."""
        return cls(in_shape=tuple(in_shape), node=node, decorrelate=decorrelate, noise=noise, **dict(spec))

    @model_validator(mode="after")
    def _fits(self):
        _, H, W = self.in_shape
        if self.node.temporal:
            raise ValueError("time-stepped node models run in Dense layers only")
        if H + 2 * self.padding < self.kernel or W + 2 * self.padding < self.kernel:
            raise ValueError(f"kernel {self.kernel} exceeds the padded input {H}x{W} (+{self.padding})")
        if self.out_hw[0] < self.pool or self.out_hw[1] < self.pool:
            raise ValueError(f"pool {self.pool} exceeds the {self.out_hw[0]}x{self.out_hw[1]} feature map")
        return self

    # -- shapes -----------------------------------------------------------
    @property
    def out_hw(self) -> tuple[int, int]:
        """Height and width of the feature map before pooling."""
        _, H, W = self.in_shape
        k, s, p = self.kernel, self.stride, self.padding
        return (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the layer output, after pooling."""
        h, w = self.out_hw
        return self.channels, h // self.pool, w // self.pool

    @property
    def patch_size(self) -> int:
        return self.in_shape[0] * self.kernel**2

    @property
    def n_in(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def n_out(self) -> int:
        return int(np.prod(self.out_shape))

    @property
    def n_units(self) -> int:
        h, w = self.out_hw
        return h * w * self.channels

    @property
    def fan_in(self) -> int:
        return self.patch_size

    @property
    def fan_out(self) -> int:
        return self.channels * self.kernel**2

    def param_shapes(self) -> dict:
        k = self.patch_size
        shapes = {"W": (self.channels, k), "b": (self.channels,)}
        if self.decorrelate:
            shapes["R"] = (k, k)
        return shapes

    def describe(self) -> str:
        pool = f"/{self.pooling}pool{self.pool}" if self.pool > 1 else ""
        d = "D" if self.decorrelate else ""
        return (f"{d}conv{self.kernel}x{self.kernel}s{self.stride}p{self.padding}"
                f"x{self.channels}{pool}:{self.describe_units()}")

    # -- forward ------------------------------------------------------------
    def _patches(self, h):
        """(B, C·H·W) images -> (B, P, k) patches, P = out positions, k = C·kernel²."""
        xp = _xp(h)
        C, H, W = self.in_shape
        k, s, p = self.kernel, self.stride, self.padding
        (oh, ow), B = self.out_hw, h.shape[0]
        img = xp.reshape(h, (B, C, H, W))
        if p:
            padded = xp.zeros((B, C, H + 2 * p, W + 2 * p), dtype=h.dtype, device=device_of(h))
            padded[:, :, p:p + H, p:p + W] = img
            img = padded
        if is_numpy(img):  # NumPy: one strided view, one copy
            win = np.lib.stride_tricks.sliding_window_view(img, (k, k), axis=(2, 3))[:, :, ::s, ::s]
            win = win[:, :, :oh, :ow]  # (B, C, oh, ow, k, k)
            return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(B, -1, self.patch_size)
        win = xp.stack([img[:, :, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s]
                        for i in range(k) for j in range(k)], axis=-1)  # (B, C, oh, ow, k·k)
        return xp.reshape(xp.permute_dims(win, (0, 2, 3, 1, 4)), (B, oh * ow, self.patch_size))

    def layer_input(self, h, R=None):
        """Patches as rows (B, P·k), each decorrelated by R."""
        pat = self._patches(h)
        if R is not None:
            pat = pat @ R.T
        return _xp(pat).reshape(pat, (pat.shape[0], -1))

    def drive(self, inp, W, b=None):
        """W · patch (+ b when given) at every position: (N, positions · channels)."""
        xp, B = _xp(inp), inp.shape[0]
        d = xp.reshape(inp, (-1, self.patch_size)) @ W.T
        if b is not None:
            d += b
        return xp.reshape(d, (B, self.n_units))

    def unit_bias(self, b):
        """The bias of every unit (position-major), (n_units,)."""
        return _xp(b).tile(b, (self.out_hw[0] * self.out_hw[1],))

    def output(self, u):
        """(B, P·C) unit outputs (position-major) -> pooled (B, C·H''·W'') channel-major."""
        xp = _xp(u)
        h, w = self.out_hw
        f = xp.reshape(u, (-1, h, w, self.channels))
        if self.pool > 1:
            q = self.pool
            f = xp.reshape(f[:, : h // q * q, : w // q * q, :], (-1, h // q, q, w // q, q, self.channels))
            f = xp.max(f, axis=(2, 4)) if self.pooling == "max" else xp.mean(f, axis=(2, 4))
        return xp.reshape(contiguous(xp.permute_dims(f, (0, 3, 1, 2))), (f.shape[0], -1))

    # -- updates ------------------------------------------------------------
    def weight_grad(self, signal, inp, n: int = 1):
        """Σ over samples and positions of signal ⊗ patch, divided by n (the sample count)."""
        xp = _xp(signal)
        s = xp.reshape(signal, (-1, self.channels))
        return _divided(s.T @ xp.reshape(inp, (-1, self.patch_size)), n), _divided(xp.sum(s, axis=0), n)

    def decorrelation_rows(self, inp):
        return _xp(inp).reshape(inp, (-1, self.patch_size))

    def unit_outputs(self, pre, post):
        """The units' node outputs (B, P·C): the pooled layer output does not hold them, so they are recomputed."""
        return self.node(pre)

    # -- backward (BP) --------------------------------------------------------
    def output_grad(self, dout, u):
        """d loss / d(unit outputs) (B, P·C) from d loss / d(layer output) (B, n_out)."""
        xp = _xp(u)
        h, w = self.out_hw
        C, q = self.channels, self.pool
        g = xp.permute_dims(xp.reshape(dout, (-1, C, h // q, w // q)), (0, 2, 3, 1))  # (B, h'', w'', C)
        if q == 1:
            return xp.reshape(contiguous(g), (-1, self.n_units))
        B, hq, wq = g.shape[0], h // q * q, w // q * q
        full = xp.zeros((B, h, w, C), dtype=u.dtype, device=device_of(u))
        f = xp.reshape(xp.reshape(u, (B, h, w, C))[:, :hq, :wq, :], (B, h // q, q, w // q, q, C))
        if self.pooling == "max":
            # the gradient goes to the first maximum of each window
            win = xp.reshape(xp.permute_dims(f, (0, 1, 3, 5, 2, 4)), (B, h // q, w // q, C, q * q))
            first = xp.argmax(win, axis=-1)
            mask = xp.astype(xp.arange(q * q, device=device_of(u)) == first[..., None], win.dtype)
            spread = xp.permute_dims(xp.reshape(mask * g[..., None], (B, h // q, w // q, C, q, q)),
                                     (0, 1, 4, 2, 5, 3))
        else:
            spread = xp.broadcast_to((g / (q * q))[:, :, None, :, None, :], f.shape)
        full[:, :hq, :wq, :] = xp.reshape(spread, (B, hq, wq, C))
        return xp.reshape(full, (B, self.n_units))

    def input_grad(self, da, W, R=None):
        """d loss / d(input image) (B, C·H·W) from d loss / d(activity) (B, P·C) — col2im."""
        xp = _xp(da)
        C, H, Wd = self.in_shape
        k, s, p = self.kernel, self.stride, self.padding
        h, w = self.out_hw
        B = da.shape[0]
        dpat = xp.reshape(da, (-1, self.channels)) @ W
        if R is not None:
            dpat = dpat @ R
        dpat = contiguous(xp.permute_dims(xp.reshape(dpat, (B, h, w, C, k, k)), (0, 3, 4, 5, 1, 2)))  # (B, C, k, k, h, w)
        img = xp.zeros((B, C, H + 2 * p, Wd + 2 * p), dtype=da.dtype, device=device_of(da))
        for i in range(k):
            for j in range(k):
                img[:, :, i: i + s * (h - 1) + 1: s, j: j + s * (w - 1) + 1: s] += dpat[:, :, i, j, :, :]
        return xp.reshape(img[:, :, p: p + H, p: p + Wd], (B, -1))


def _divided(a, n: int):
    """``a / n``, in place (``a`` is a fresh product or sum)."""
    if n != 1:
        a /= n
    return a
