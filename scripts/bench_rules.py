"""Time one training step of BP, NP, INP, ANP and DANP: npsim, plain PyTorch, and the GEMM floor.

The network is the paper's MLP 784-1000-1000-1000-10: leaky ReLU (slope 0.01)
hidden units, linear output, softmax cross-entropy, He init, Adam (lr 1e-4),
perturbation scale sigma = 1e-3, one noisy pass per clean pass, float32. DANP
decorrelates every layer's input (the network input included) with
decorrelation lr 1e-3. The data are random: inputs N(0, 1), random labels.
One step is the whole update: the forward passes, the rule's direction, the
decorrelation update where the rule has one, and the Adam step.

Four implementations of the same step, on the same shapes and the same
initial weights, doing the same arithmetic (the same products, in the same
association, as npsim's step; they differ in how they are written):

(a) npsim: ``npsim.learn.train_step`` on a network built with the public
    constructors (``npsim.model.mlp``, make_rule, adam), so
    whatever npsim does inside is what gets timed.
(b) PyTorch on the CPU, written the straightforward way (``TorchNet`` below):
    ``torch.no_grad()``, float32; NP, ANP and DANP compute layer 0 once (its
    noisy drive is the clean one plus the noise) and run the clean and the
    noisy rows concatenated (2B rows) through the layers above, with R folded
    into W where npsim folds it (``jax_reference.folds``); INP runs one clean
    pass, then one pass per layer that starts from the clean drive of the
    perturbed layer; BP uses autograd (``loss.backward()``); all use
    ``torch.optim.Adam`` (the perturbation rules set ``.grad`` by hand with
    npsim's formulas); DANP's decorrelation update is
    R <- R - eta (X^T (X R) / S - diag(var) R) from the S rows npsim uses.
(c) JAX (``scripts/jax_reference.py``): the whole step one ``jax.jit``-compiled
    function (XLA on the CPU), noise from ``jax.random`` inside it, the same
    arithmetic as (b).
(d) the GEMM floor: only the matrix products the npsim step needs, in numpy
    float32, each ``np.matmul(a, b, out=c)`` on preallocated operands. Nothing
    else (activations, losses, noise draws, Adam, copies) is counted, so the
    floor is an upper bound on the speed any implementation of the step can
    reach with this BLAS. With PyTorch installed, the same products in
    PyTorch (``TorchGemmStep``) are timed too: the floor of PyTorch's own
    BLAS (MKL in its CPU wheels), which on some CPUs runs these shapes faster
    than numpy's OpenBLAS.

The GEMM floor, for layers l = 0..L-1 of widths n_l -> n_{l+1} and batch B
(a product is written (m, k, n): an (m x k) times (k x n) matrix):

* BP: forward x_l W_l^T, (B, n_l, n_{l+1}) for every layer; weight
  gradients delta_l^T x_l, (n_{l+1}, B, n_l) for every layer; input gradients
  delta_l W_l, (B, n_{l+1}, n_l) for layers 1..L-1. 3L - 1 products.
* NP and ANP: layer 0 on the clean batch, (B, n_0, n_1) (layer 0's noisy
  activity is the clean drive plus the noise, no product); the clean and the
  noisy rows stacked through layers 1..L-1, (2B, n_l, n_{l+1}), as npsim runs
  them; update s_l^T x_l, (n_{l+1}, B, n_l) for every layer. 2L products.
* INP: clean forward (B, n_l, n_{l+1}) for every layer; for each perturbed
  layer i, the pass from layer i up: (B, n_l, n_{l+1}) for layers i+1..L-1
  (the perturbed layer reuses its clean drive), L(L-1)/2 products in all;
  update (n_{l+1}, B, n_l) for every layer. 2L + L(L-1)/2 products.
* DANP (and any D-rule): the products of the base rule, plus the input
  decorrelation x_l R_l^T, (B, n_l, n_l), in the clean pass for every layer
  and in every noisy pass for each layer that pass recomputes (layers 1..L-1
  for NP/ANP, stacked with the clean rows as (2B, n_l, n_l), or, where
  n_{l+1} + B < 2B, R folded into W: W_l R_l, (n_{l+1}, n_l, n_l), and the
  clean rows' x_l R_l^T, (B, n_l, n_l); layers i+1..L-1 for INP's pass i),
  for DBP the backward product through R, (B, n_l, n_l), for layers
  1..L-1, plus the decorrelation update of every layer from its S rows (the
  rule's decorrelation_rows, at most B): for S < n_l, X R, (S, n_l, n_l),
  then X^T (X R), (n_l, S, n_l); for S >= n_l, X^T X, (n_l, S, n_l), then
  C R, (n_l, n_l, n_l) (whichever is cheaper, as npsim does).

For the default network at batch 64 that is 11 products for BP, 8 for NP and
ANP, 14 for INP and 8 + 4 + 8 + 1 = 21 for DANP (layer 3 folds R into W).

Timing: ``--warmup`` steps of each implementation first (they include any
Numba compilation or cache loading), then ``--repeats`` timed rounds; a round
times ``--steps`` steps of npsim, then of PyTorch, then of the floor, so the
three are measured interleaved and a passing disturbance of the machine hits
them alike. The reported time is the median per-step time over the rounds. Throughput is
batch size / time per step. The scaling check prints, for consecutive batch
sizes, the time ratio per doubling of the batch, (t(B2)/t(B1))**(1/log2(B2/B1)),
and flags any above 2.1: linear cost gives 2.0 per doubling (less while
fixed per-step costs still matter), so more than that means work that grows
faster than the batch (hidden O(B^2) work).

Usage:

    python scripts/bench_rules.py                              # all rules, batches 64 256 1024
    python scripts/bench_rules.py --batch 256 --rules np danp --repeats 3
    python scripts/bench_rules.py --threads 1 --no-torch --markdown ''   # one thread, no file

PyTorch is optional (``pip install -e ".[bench]"``, a CPU build); without it
the script times npsim and the GEMM floor only.
"""

from __future__ import annotations

import os
import sys


def _threads_from_argv(argv) -> int:
    """The --threads value (default: every core this process may use), read before numpy loads."""
    n = None
    for i, a in enumerate(argv):
        v = None
        if a == "--threads" and i + 1 < len(argv):
            v = argv[i + 1]
        elif a.startswith("--threads="):
            v = a.split("=", 1)[1]
        if v is not None:
            try:
                n = int(v)
            except ValueError:
                n = None  # argparse reports it
    if n is None or n < 1:
        n = _usable_cores()
    return n


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")

if __name__ == "__main__":  # the BLAS libraries read these when they load, so set them before numpy/torch
    _n = _threads_from_argv(sys.argv[1:])
    for _v in _THREAD_VARS:
        os.environ[_v] = str(_n)
    if _n <= (os.cpu_count() or 1):
        os.environ["NUMBA_NUM_THREADS"] = str(_n)
    if hasattr(os, "sched_setaffinity") and _n < _usable_cores():
        # XLA sizes its CPU thread pool by the cores the process may use: pin every implementation to _n
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:_n])

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from npsim.backend import get_backend  # noqa: E402
from npsim.backend.memory import keep_freed_memory  # noqa: E402
from npsim.learn.optim import adam  # noqa: E402
from npsim.learn.rules import (
    DEFAULT_ROWS,  # noqa: E402
    make_rule,  # noqa: E402
    split_name,  # noqa: E402
)
from npsim.learn.step import train_step, trainable  # noqa: E402
from npsim.model import mlp  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jax_reference import JaxNet, folds, jax  # noqa: E402

jnp = jax.numpy if jax is not None else None

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # optional: pip install -e ".[bench]"
    torch = None
    F = None

try:
    import threadpoolctl
except ImportError:
    threadpoolctl = None

RULES = ("bp", "np", "inp", "anp", "danp")
ALL_RULES = RULES + ("dbp", "dnp", "dinp")
SIZES = (784, 1000, 1000, 1000, 10)
SLOPE = 0.01
LR = 1e-4
SIGMA = 1e-3
DECORRELATION_LR = 1e-3
FLAG_PER_DOUBLING = 2.1
TORCH_MISSING = ('torch not installed: pip install -e ".[bench]"  (a CPU build, torch==2.13.0); '
                 "no PyTorch column")
JAX_MISSING = 'jax not installed: pip install -e ".[bench]"  (jax[cpu]); no JAX column'
DEFAULT_MARKDOWN = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def dense_rows(rule) -> int | None:
    """The rows each of the MLP's R updates uses under ``rule`` (None: the whole batch; no D-rule: None)."""
    rows = getattr(rule, "rows", None)
    return {"auto": DEFAULT_ROWS, "all": None}.get(rows, rows)


def split_rule(name: str) -> tuple[str, bool]:
    """"danp" -> ("anp", True): the base rule and whether every layer decorrelates its input."""
    base, dec = split_name(name)
    if name not in ALL_RULES:
        raise ValueError(f"rule {name!r} has no benchmark implementation; choose from {', '.join(ALL_RULES)}")
    return base, dec


# --- (a) npsim -------------------------------------------------------------------


def build_npsim(sizes, rule: str, dtype="float32", seed: int = 0, sigma: float = SIGMA,
                decorrelation_lr: float = DECORRELATION_LR, backend: str = "numpy", **rule_kw):
    """The benchmark MLP and rule in npsim. Returns (backend, net, rule, params).

    rule_kw : further settings of ``make_rule`` (perturbations, decorrelation_rows)."""
    base, dec = split_rule(rule)
    be = get_backend(backend, dtype)
    net = mlp(sizes, "leaky_relu", "linear", "cross_entropy", decorrelate=dec, slope=SLOPE)
    kw = {} if base == "bp" else {"sigma": sigma}
    r = make_rule(rule, decorrelation_lr=decorrelation_lr, **kw, **rule_kw)
    r.check(net)
    params = net.init(be.stream(seed), be, scheme="he")
    return be, net, r, params


class NpsimStep:
    """One npsim training step per call, carrying parameters and optimizer state along."""

    def __init__(self, sizes, rule, x, y, seed: int = 0, backend: str = "numpy", **rule_kw):
        self.be, self.net, self.rule, self.params = build_npsim(sizes, rule, seed=seed, backend=backend, **rule_kw)
        self.opt = adam(LR)
        self.opt_state = self.opt.init(trainable(self.params))
        self.rng = self.be.stream(seed + 1)
        self.x, self.y = self.be.asarray(x), self.be.asarray(y, dtype=np.int64)

    def __call__(self):
        self.params, self.opt_state, _ = train_step(self.net, self.rule, self.opt, self.params,
                                                    self.opt_state, self.x, self.y, self.rng)

    def sync(self):
        """Wait for the device (a GPU runs asynchronously)."""
        if self.be.name == "cupy":
            import cupy

            cupy.cuda.Device().synchronize()


# --- (b) plain PyTorch -------------------------------------------------------------


class TorchNet:
    """The benchmark MLP and one rule in plain PyTorch on the CPU.

    params : npsim-style dict of numpy arrays ("layer0/W", "layer0/b", "layer0/R"),
        copied, so both implementations start from the same weights.
    noise : optional ``noise(rows, n) -> tensor`` of N(0, sigma^2) draws, called in
        the order npsim draws its noise (layer by layer); default ``torch.randn``.
    ``step(x, y)`` does one training step and returns the update direction as a
    dict of tensors under npsim's keys (for BP: the gradient autograd computed).
    """

    def __init__(self, params: dict, sizes, rule: str, *, lr: float = LR, sigma: float = SIGMA,
                 decorrelation_lr: float = DECORRELATION_LR, slope: float = SLOPE, noise=None, device="cpu",
                 rows: int | None = None):
        self.base, self.decorrelate = split_rule(rule)
        self.rows = rows
        self.L = len(sizes) - 1
        self.sizes = tuple(sizes)
        self.sigma, self.dec_lr, self.slope = sigma, decorrelation_lr, slope
        self.device = device
        t = lambda a: torch.from_numpy(np.array(a, copy=True)).to(device)  # noqa: E731
        self.W = [torch.nn.Parameter(t(params[f"layer{i}/W"])) for i in range(self.L)]
        self.b = [torch.nn.Parameter(t(params[f"layer{i}/b"])) for i in range(self.L)]
        self.R = [t(params[f"layer{i}/R"]) for i in range(self.L)] if self.decorrelate else None
        self.opt = torch.optim.Adam(self.W + self.b, lr=lr)
        dtype = self.W[0].dtype
        self.noise = noise or (lambda rows, n: torch.randn(rows, n, dtype=dtype, device=device) * sigma)
        self.n_units = sum(self.sizes[1:])

    def act(self, a, layer):
        return F.leaky_relu(a, self.slope) if layer < self.L - 1 else a

    def step(self, x, y):
        if self.base == "bp":
            return self._bp(x, y)
        with torch.no_grad():
            return {"np": self._np, "anp": self._anp, "inp": self._inp}[self.base](x, y)

    # one step of each rule

    def _bp(self, x, y):
        xs = []
        h = x
        for i in range(self.L):
            if self.decorrelate:
                h = h @ self.R[i].T
            xs.append(h.detach())
            h = self.act(h @ self.W[i].T + self.b[i], i)
        loss = F.cross_entropy(h, y)
        self.opt.zero_grad()
        loss.backward()
        grads = self._grads()
        self.opt.step()
        with torch.no_grad():
            self._decorrelation(xs)
        return grads

    def _two_passes(self, x, y):
        """Clean and noisy batch stacked (2B rows) above layer 0, whose noisy drive is its clean one
        plus the noise; R folded into W where npsim folds it. Clean inputs, activities, eps, δℓ."""
        B = x.shape[0]
        eps = [self.noise(B, n) for n in self.sizes[1:]]  # npsim draws every layer's noise first
        X = x @ self.R[0].T if self.decorrelate else x
        d = X @ self.W[0].T + self.b[0]
        a = torch.cat([d, d + eps[0]])
        xs, acts = [X], [a]
        h = self.act(a, 0)
        for i in range(1, self.L):
            W = self.W[i]
            if self.decorrelate and folds(W.shape[0], h.shape[0], B):
                xs.append(h[:B] @ self.R[i].T)
                a = h @ (W @ self.R[i]).T + self.b[i]
            else:
                X = h @ self.R[i].T if self.decorrelate else h
                xs.append(X[:B])
                a = X @ W.T + self.b[i]
            a[B:] += eps[i]
            acts.append(a)
            h = self.act(a, i)
        loss = F.cross_entropy(h, torch.cat([y, y]), reduction="none")
        return xs, acts, eps, loss[B:] - loss[:B]

    def _np(self, x, y):
        B = x.shape[0]
        xs, _, eps, dl = self._two_passes(x, y)
        w = dl / self.sigma**2
        return self._step_from_signals(xs, [w[:, None] * e for e in eps], B)

    def _anp(self, x, y):
        B = x.shape[0]
        xs, acts, _, dl = self._two_passes(x, y)
        da = [a[B:] - a[:B] for a in acts]
        norm2 = sum((d * d).sum(1) for d in da)
        w = dl * self.n_units / (norm2 + 1e-30)
        return self._step_from_signals(xs, [w[:, None] * d for d in da], B)

    def _step_from_signals(self, xs, signals, B):
        """G_W = sᵀ x / B and G_b = Σ s / B per layer, then the Adam step and the decorrelation update."""
        for i, s in enumerate(signals):
            self.W[i].grad = s.T @ xs[i] / B
            self.b[i].grad = s.sum(0) / B
        grads = self._grads()
        self.opt.step()
        self._decorrelation(xs)
        return grads

    def _inp(self, x, y):
        B = x.shape[0]
        h = x
        xs, drives = [], []
        for i in range(self.L):
            if self.decorrelate:
                h = h @ self.R[i].T
            xs.append(h)
            d = h @ self.W[i].T + self.b[i]
            drives.append(d)
            h = self.act(d, i)
        loss0 = F.cross_entropy(h, y, reduction="none")
        signals = []
        for i in range(self.L):  # pass i: noise in layer i only, the clean pass below it reused
            e = self.noise(B, self.sizes[i + 1])
            h = self.act(drives[i] + e, i)
            for j in range(i + 1, self.L):
                if self.decorrelate:
                    h = h @ self.R[j].T
                h = self.act(h @ self.W[j].T + self.b[j], j)
            dl = F.cross_entropy(h, y, reduction="none") - loss0
            w = dl * self.sizes[i + 1] / ((e * e).sum(1) + 1e-30)
            signals.append(w[:, None] * e)
        return self._step_from_signals(xs, signals, B)

    def _decorrelation(self, xs):
        """R <- R - eta offdiag(X^T X / S) R for every layer, X the clean pass's decorrelated input
        (S rows spread over the batch when ``rows`` subsamples it), as Xᵀ(X R) below the width."""
        if not self.decorrelate:
            return
        for i in range(self.L):
            X, R = xs[i], self.R[i]
            if self.rows is not None and X.shape[0] > self.rows:
                X = X[:: X.shape[0] // self.rows][: self.rows]
            S = X.shape[0]
            CR = X.T @ (X @ R) if S < X.shape[1] else (X.T @ X) @ R
            R -= self.dec_lr * (CR / S - (X * X).sum(0)[:, None] / S * R)

    def _grads(self):
        g = {}
        for i in range(self.L):
            g[f"layer{i}/W"], g[f"layer{i}/b"] = self.W[i].grad, self.b[i].grad
        return g

    def params(self) -> dict:
        """Current parameters as numpy arrays under npsim's keys."""
        p = {}
        for i in range(self.L):
            p[f"layer{i}/W"] = self.W[i].detach().cpu().numpy().copy()
            p[f"layer{i}/b"] = self.b[i].detach().cpu().numpy().copy()
            if self.decorrelate:
                p[f"layer{i}/R"] = self.R[i].cpu().numpy().copy()
        return p


class TorchStep:
    """One PyTorch training step per call."""

    def __init__(self, sizes, rule, x, y, seed: int = 0, device="cpu"):
        _, _, r, params = build_npsim(sizes, rule, seed=seed)  # the same initial weights (and rows) as npsim
        torch.manual_seed(seed)
        self.model = TorchNet(params, sizes, rule, device=device, rows=dense_rows(r))
        self.x, self.y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        self.device = device

    def __call__(self):
        self.model.step(self.x, self.y)

    def sync(self):
        if self.device != "cpu":
            torch.cuda.synchronize()


class JaxStep:
    """One jit-compiled JAX training step per call (``scripts/jax_reference.py``)."""

    def __init__(self, sizes, rule, x, y, seed: int = 0):
        _, _, r, params = build_npsim(sizes, rule, seed=seed)
        base, dec = split_rule(rule)
        self.model = JaxNet(params, sizes, base, dec, lr=LR, sigma=SIGMA, decorrelation_lr=DECORRELATION_LR,
                            slope=SLOPE, rows=dense_rows(r), seed=seed)
        self.x, self.y = jnp.asarray(x), jnp.asarray(y)

    def __call__(self):
        self.model.step(self.x, self.y)

    def sync(self):
        self.model.block()


# --- (d) the GEMM floor -----------------------------------------------------------


def _forward(sizes, rows, layers, decorrelate, label):
    """Products of a pass through ``layers`` with ``rows`` rows (R first where decorrelating)."""
    out = []
    for i in layers:
        if decorrelate:
            out.append((rows, sizes[i], sizes[i], f"{label} R{i}"))
        out.append((rows, sizes[i], sizes[i + 1], f"{label} W{i}"))
    return out


def _update(sizes, B):
    return [(sizes[i + 1], B, sizes[i], f"update W{i}") for i in range(len(sizes) - 1)]


def _stacked(sizes, B, rows, layers, decorrelate, label):
    """Products of ``rows`` stacked rows (the first B clean) through ``layers``, R folded into W where
    npsim folds it."""
    out = []
    for i in layers:
        n, m = sizes[i], sizes[i + 1]
        if decorrelate and folds(m, rows, B):
            out += [(m, n, n, f"fold W{i}R{i}"), (B, n, n, f"clean R{i}"), (rows, n, m, f"{label} W{i}R{i}")]
        else:
            out += _forward(sizes, rows, [i], decorrelate, label)
    return out


def _decorrelation(sizes, B, rows=None):
    """The R updates from S = min(rows, B) rows."""
    S = B if rows is None else min(rows, B)
    out = []
    for i in range(len(sizes) - 1):
        n = sizes[i]
        if S < n:
            out += [(S, n, n, f"decorrelation XR{i}"), (n, S, n, f"decorrelation Xt(XR){i}")]
        else:
            out += [(n, S, n, f"decorrelation XtX{i}"), (n, n, n, f"decorrelation CR{i}")]
    return out


def gemm_bp(sizes, B, decorrelate=False, rows=None):
    """BP: forward, weight gradients, input gradients of layers 1..L-1 (+ R and decorrelation for DBP)."""
    L = len(sizes) - 1
    out = _forward(sizes, B, range(L), decorrelate, "clean")
    out += [(sizes[i + 1], B, sizes[i], f"grad W{i}") for i in range(L)]
    out += [(B, sizes[i + 1], sizes[i], f"grad x{i}") for i in range(1, L)]
    if decorrelate:
        out += [(B, sizes[i], sizes[i], f"grad x{i} R") for i in range(1, L)]
        out += _decorrelation(sizes, B, rows)
    return out


def gemm_np(sizes, B, decorrelate=False, rows=None, samples=1):
    """NP: layer 0 on the clean rows (the noisy copies reuse its drive), then the clean and the noisy
    rows stacked through layers 1..L-1 (as npsim's Network.forward_pair does), update."""
    L = len(sizes) - 1
    out = _forward(sizes, B, range(1), decorrelate, "clean")
    out += _stacked(sizes, B, (1 + samples) * B, range(1, L), decorrelate, "clean+noisy")
    out += _update(sizes, B)
    return out + (_decorrelation(sizes, B, rows) if decorrelate else [])


def gemm_anp(sizes, B, decorrelate=False, rows=None, samples=1):
    """ANP: the same products as NP (it differs only in elementwise work)."""
    return gemm_np(sizes, B, decorrelate, rows, samples)


def gemm_inp(sizes, B, decorrelate=False, rows=None, samples=1):
    """INP: clean pass, pass i from layer i+1 up for each layer i, update."""
    L = len(sizes) - 1
    out = _forward(sizes, B, range(L), decorrelate, "clean")
    for i in range(L):
        out += _forward(sizes, samples * B, range(i + 1, L), decorrelate, f"pass{i}")
    out += _update(sizes, B)
    return out + (_decorrelation(sizes, B, rows) if decorrelate else [])


GEMM = {"bp": gemm_bp, "np": gemm_np, "inp": gemm_inp, "anp": gemm_anp}


def gemm_shapes(rule: str, sizes, B, rows=None) -> list[tuple[int, int, int, str]]:
    """The (m, k, n, what) matrix products of one npsim step of ``rule`` (rows: its decorrelation_rows)."""
    base, dec = split_rule(rule)
    return GEMM[base](tuple(sizes), B, dec, rows)


def gemm_flops(shapes) -> int:
    return sum(2 * m * k * n for m, k, n, _ in shapes)


class GemmStep:
    """All of a rule's products once per call, on preallocated float32 operands."""

    def __init__(self, shapes, seed: int = 0, xp=np):
        rng = np.random.default_rng(seed)
        self.xp = xp
        self.ops = [(xp.asarray(rng.standard_normal((m, k), dtype=np.float32)),
                     xp.asarray(rng.standard_normal((k, n), dtype=np.float32)),
                     xp.empty((m, n), dtype=np.float32)) for m, k, n, _ in shapes]

    def __call__(self):
        for a, b, c in self.ops:
            self.xp.matmul(a, b, out=c)

    def sync(self):
        if self.xp is not np:
            self.xp.cuda.Device().synchronize()


class TorchGemmStep:
    """The same products in PyTorch (its BLAS: MKL in the CPU wheels): PyTorch's own GEMM floor."""

    def __init__(self, shapes, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.ops = [(torch.randn(m, k, generator=g), torch.randn(k, n, generator=g), torch.empty(m, n))
                    for m, k, n, _ in shapes]

    def __call__(self):
        for a, b, c in self.ops:
            torch.matmul(a, b, out=c)


# --- timing and reporting ----------------------------------------------------------


def time_steps(impls: dict, warmup: int, repeats: int, steps: int) -> tuple[dict, dict]:
    """Median per-step time of each implementation (name -> step callable), and the cores it kept busy.

    After ``warmup`` calls of each, the ``repeats`` timed rounds interleave
    the implementations (round r times ``steps`` calls of each in turn), so a
    disturbance of the machine hits all of them alike instead of one
    implementation's whole measurement. Cores busy: the process's CPU time
    over the wall time of all its timed rounds (2.0: two cores all along).
    """
    for step in impls.values():
        for _ in range(warmup):
            step()
        sync = getattr(step, "sync", None)
        if sync:
            sync()
    times = {name: [] for name in impls}
    cpu = dict.fromkeys(impls, 0.0)
    for _ in range(repeats):
        for name, step in impls.items():
            gc.collect()
            sync = getattr(step, "sync", None) or (lambda: None)
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                step()
            sync()  # a GPU (or JAX) runs asynchronously: the round ends when its work has
            times[name].append((time.perf_counter() - t0) / steps)
            cpu[name] += time.process_time() - c0
    cores = {name: cpu[name] / (sum(t) * steps) for name, t in times.items()}
    return {name: statistics.median(t) for name, t in times.items()}, cores


def machine_info(threads: int, use_torch: bool, kept_memory: bool = False, use_jax: bool = False) -> list[str]:
    lines = []
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    lines.append(f"CPU: {cpu}; {os.cpu_count()} logical cores, {_usable_cores()} usable by this process")
    lines.append(f"Python {platform.python_version()}, numpy {np.__version__}, BLAS: {numpy_blas()}")
    try:
        import numba

        lines.append(f"numba {numba.__version__}")
    except ImportError:
        pass
    if use_torch:
        lines.append(f"torch {torch.__version__}, BLAS: {torch_blas()}")
    if use_jax:
        lines.append(f"jax {jax.__version__} (XLA on the CPU, {jax.devices()[0].platform})")
    lines.append(f"threads: {threads} (numpy BLAS and torch.set_num_threads; JAX's XLA sizes its pool by the "
                 f"{_usable_cores()} cores the process may use)")
    lines.append("malloc keeps freed memory (npsim.backend.memory.keep_freed_memory), for all: "
                 + ("yes" if kept_memory else "no"))
    lines.append(f"date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    return lines


def numpy_blas() -> str:
    if threadpoolctl is not None:
        info = [f"{d.get('internal_api')} {d.get('version')} ({d.get('architecture')}, "
                f"{d.get('num_threads')} threads)"
                for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas"]
        if info:
            return "; ".join(info)
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        extra = blas.get("openblas configuration", "")
        return f"{blas.get('name')} {blas.get('version')}" + (f" ({extra})" if extra else "")
    except Exception:  # older numpy: no dicts mode
        return "unknown"


def torch_blas() -> str:
    cfg = torch.__config__.show()
    m = re.search(r"BLAS_INFO=(\w+)", cfg)
    name = m.group(1) if m else "unknown"
    mkl = re.search(r"Math Kernel Library Version ([\w.\-]+)", cfg)
    return name + (f" {mkl.group(1)}" if name == "mkl" and mkl else "")


def fmt_rate(t):
    return "-" if t is None else f"{1 / t:,.0f}" if t > 0 else "inf"


def table_rows(B, res, rules, refs, cores=None):
    """Throughput of npsim and of each reference in ``refs`` ("torch", "jax"), the GEMM floor, and
    (with ``cores``) the cores each kept busy."""
    head = ["rule", "npsim samples/s"]
    for ref in refs:
        head += [f"{ref} samples/s", f"npsim/{ref}"]
    head += ["GEMM floor samples/s", "npsim/floor"]
    if "torch" in refs:
        head += ["torch GEMM floor samples/s"]
    impls = ["npsim", *refs]
    if cores is not None:
        head += ["cores busy (" + ", ".join(impls) + ")"]
    rows = []
    for r in rules:
        t = res[B][r]
        row = [r.upper(), fmt_rate(t["npsim"] / B)]
        for ref in refs:
            row += [fmt_rate(t[ref] / B), f"{t[ref] / t['npsim']:.2f}"]
        row += [fmt_rate(t["floor"] / B), f"{t['floor'] / t['npsim']:.2f}"]
        if "torch" in refs:
            row += [fmt_rate(t["torch floor"] / B) if "torch floor" in t else "-"]
        if cores is not None:
            row += [" / ".join(f"{cores[B][r][i]:.1f}" for i in impls)]
        rows.append(row)
    return head, rows


def print_table(head, rows):
    w = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    print("  ".join(h.rjust(w[i]) if i else h.ljust(w[i]) for i, h in enumerate(head)))
    for row in rows:
        print("  ".join(c.rjust(w[i]) if i else c.ljust(w[i]) for i, c in enumerate(row)))


def md_table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def scaling(res, batches, rules, impls):
    """Rows (rule, impl, [(ratio, per doubling)...]) over consecutive batch sizes, and whether any is flagged."""
    rows, flagged = [], False
    pairs = list(zip(batches[:-1], batches[1:]))
    for r in rules:
        for impl in impls:
            cells = []
            for b1, b2 in pairs:
                ratio = res[b2][r][impl] / res[b1][r][impl]
                per = ratio ** (1 / math.log2(b2 / b1))
                flag = per > FLAG_PER_DOUBLING
                flagged |= flag
                cells.append(f"{ratio:.2f} ({per:.2f}/2x){' FLAG' if flag else ''}")
            rows.append([r.upper(), impl] + cells)
    head = ["rule", "impl"] + [f"t({b2})/t({b1})" for b1, b2 in pairs]
    return head, rows, flagged


def parse_sizes(s: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in s.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must look like 784-1000-10, got {s!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes need at least two positive widths, got {s!r}")
    return sizes


def positive(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {s}")
    return v


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Time one training step per rule: npsim, PyTorch, GEMM floor.")
    p.add_argument("--batch", type=positive, nargs="+", default=[64, 256, 1024], help="batch sizes (default 64 256 1024)")
    p.add_argument("--rules", nargs="+", choices=ALL_RULES, default=list(RULES),
                   help="rules to time (default bp np inp anp danp)")
    p.add_argument("--threads", type=positive, default=None,
                   help="threads for numpy's BLAS and torch (default: every usable core)")
    p.add_argument("--repeats", type=positive, default=7, help="timed repeats; the median is reported (default 7)")
    p.add_argument("--steps", type=positive, default=3, help="steps per timed repeat (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
    p.add_argument("--no-jax", action="store_true", help="skip the JAX column")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cpu: npsim on NumPy, torch and the floor on the CPU; cuda: npsim on CuPy, torch and "
                        "the floor (CuPy products) on the GPU")
    p.add_argument("--markdown", default=str(DEFAULT_MARKDOWN),
                   help="write the tables here (default docs/benchmarks.md; '' writes nothing)")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--sizes", type=parse_sizes, default=SIZES, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    threads = args.threads or _usable_cores()
    if threadpoolctl is not None:
        threadpoolctl.threadpool_limits(threads)
    use_torch = not args.no_torch
    if use_torch and torch is None:
        print(TORCH_MISSING, flush=True)
        use_torch = False
    if use_torch:
        torch.set_num_threads(threads)
    use_jax = not args.no_jax and args.device == "cpu"
    if use_jax and jax is None:
        print(JAX_MISSING, flush=True)
        use_jax = False
    refs = (["torch"] if use_torch else []) + (["jax"] if use_jax else [])
    kept = keep_freed_memory()  # as npsim's training step does; set here so every implementation runs with it
    if args.device == "cuda" and args.markdown == str(DEFAULT_MARKDOWN):
        args.markdown = str(DEFAULT_MARKDOWN.with_name("benchmarks-gpu.md"))
    batches = sorted(set(args.batch))
    rules = list(dict.fromkeys(args.rules))
    sizes = args.sizes
    info = machine_info(threads, use_torch, kept, use_jax)
    if args.device == "cuda":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        info.append(f"GPU: {name}; cupy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}"
                    + (f"; torch CUDA {torch.version.cuda}" if use_torch else ""))
    arch = "-".join(map(str, sizes))
    print(f"npsim step benchmark: MLP {arch}, float32, Adam lr {LR:g}, sigma {SIGMA:g}, "
          f"warmup {args.warmup}, median of {args.repeats} x {args.steps} steps")
    for line in info:
        print("  " + line)

    res, cores, flops = {}, {}, {}
    tables = {}
    data_rng = np.random.default_rng(args.seed)
    for B in batches:
        x = data_rng.standard_normal((B, sizes[0]), dtype=np.float32)
        y = data_rng.integers(0, sizes[-1], size=B).astype(np.int64)
        res[B], cores[B], flops[B] = {}, {}, {}
        for r in rules:
            gpu = args.device == "cuda"
            impls = {"npsim": NpsimStep(sizes, r, x, y, args.seed, backend="cupy" if gpu else "numpy")}
            if use_torch:
                impls["torch"] = TorchStep(sizes, r, x, y, args.seed, device=args.device)
            if use_jax:
                impls["jax"] = JaxStep(sizes, r, x, y, args.seed)
            shapes = gemm_shapes(r, sizes, B, dense_rows(impls["npsim"].rule))
            flops[B][r] = gemm_flops(shapes)
            impls["floor"] = GemmStep(shapes, args.seed, xp=__import__("cupy") if gpu else np)
            if use_torch and not gpu:
                impls["torch floor"] = TorchGemmStep(shapes, args.seed)
            res[B][r], cores[B][r] = time_steps(impls, args.warmup, args.repeats, args.steps)
        head, rows = table_rows(B, res, rules, refs, cores)
        tables[B] = (head, rows)
        print(f"\nbatch {B}:")
        print_table(head, rows)

    impls = ["npsim", *refs, "floor"] + (["torch floor"] if use_torch and args.device == "cpu" else [])
    scale = None
    print()
    if len(batches) > 1:
        scale = scaling(res, batches, rules, impls)
        print(f"scaling: step-time ratio between consecutive batch sizes (per doubling of the batch); "
              f"FLAG: more than {FLAG_PER_DOUBLING}x per doubling")
        print_table(scale[0], scale[1])
        print("some step time grows faster than the batch: see FLAG" if scale[2] else "no rule flagged")
    else:
        print("scaling check: needs at least two batch sizes")

    if args.markdown:
        cmd = "python scripts/bench_rules.py" + ("" if not argv else " " + shlex.join(argv))
        write_markdown(Path(args.markdown), cmd, info, sizes, args, tables, scale, rules, batches, flops)
        print(f"\nwrote {args.markdown}")
    return 0


NOTES_MARK = "<!-- notes -->"


def _rows_text() -> str:
    rows = dense_rows(build_npsim((4, 3, 2), "danp")[2])
    return "the whole batch" if rows is None else f"{rows} rows of the batch (npsim's default decorrelation_rows)"


def write_markdown(path: Path, cmd, info, sizes, args, tables, scale, rules, batches, flops):
    """Write the tables to ``path``; text below ``<!-- notes -->`` of an existing file is kept."""
    keep = ""
    if path.is_file() and NOTES_MARK in path.read_text():
        keep = path.read_text().split(NOTES_MARK, 1)[1]
    arch = "-".join(map(str, sizes))
    out = ["# Training-step benchmark", "",
           "Throughput of one training step (forward passes, update direction, decorrelation where the rule "
           "has it, Adam step) of npsim, of plain PyTorch and jit-compiled JAX CPU implementations of the same "
           "rule, and of the GEMM floor (the matrix products the npsim step needs, alone). Generated by "
           "`scripts/bench_rules.py`; its docstring lists the products of each floor.", "",
           f"Command: `{cmd}`", ""]
    out += [f"- {line}" for line in info]
    out += [f"- network: MLP {arch}, leaky ReLU (slope {SLOPE}) hidden units, linear output, softmax "
            f"cross-entropy, He init, float32; Adam lr {LR:g}; sigma {SIGMA:g}, one noisy pass per clean pass; "
            f"DANP decorrelates every layer's input, decorrelation lr {DECORRELATION_LR:g}, each R update "
            f"from {_rows_text()}; random data",
            f"- timing: {args.warmup} warm-up steps, then the median of {args.repeats} rounds of "
            f"{args.steps} steps, the implementations interleaved within each round; "
            "samples/s = batch / time per step",
            "- npsim/torch, npsim/jax: npsim throughput over PyTorch's or JAX's (> 1: npsim is faster); "
            "cores busy: CPU time over wall time of each implementation's timed rounds; "
            "npsim/floor: npsim throughput as a fraction of the GEMM floor's (numpy's BLAS); torch GEMM floor: "
            "the same products in PyTorch (its BLAS), the floor PyTorch's implementation runs against", ""]
    for B in batches:
        head, rows = tables[B]
        out += [f"## Batch {B}", ""] + md_table(head, rows) + [""]
        text = ", ".join(f"{r.upper()} {flops[B][r] / 1e9:.2f}" for r in rules)
        out += [f"GEMM floor GFLOP per step: {text}.", ""]
    if scale is not None:
        out += ["## Scaling with the batch", "",
                f"Step-time ratio between consecutive batch sizes, and in brackets per doubling of the batch; "
                f"FLAG marks more than {FLAG_PER_DOUBLING}x per doubling.", ""]
        out += md_table(scale[0], scale[1]) + [""]
    out += [NOTES_MARK + (keep if keep else "\n")]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
