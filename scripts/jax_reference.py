"""The benchmark step of ``scripts/bench_rules.py`` in JAX: BP, NP, INP, ANP and their D-variants.

Written as a JAX user would write a training step: parameters and Adam's
moments in one pytree, the whole step (forward passes, update direction,
decorrelation update, Adam) one function under ``jax.jit`` with its state
buffers donated, the perturbations drawn from ``jax.random`` inside it. It does
the same arithmetic as npsim's step (``docs/design.md`` §2, §9a): the clean
and the K = 1 noisy rows stacked through one product per layer above the first
(layer 0's noisy drive is its clean drive plus the noise), R folded into W
for a stacked layer where that is cheaper (``folds``), the decorrelation
update from ``rows`` rows spread over the batch as Xᵀ(X R) when there are
fewer rows than inputs, and Adam with bias correction.

``JaxNet(params, sizes, rule).step(x, y, eps=None)`` does one step and returns
the update direction under npsim's keys; ``eps`` replays given perturbations
(a list in npsim's draw order) instead of drawing them, which is how the tests
check the step against npsim's.
"""

from __future__ import annotations

import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ImportError:  # optional: pip install -e ".[bench]"
    jax = jnp = None

__all__ = ["JaxNet", "folds", "jax"]


def folds(n_out: int, rows: int, clean_rows: int) -> bool:
    """npsim's choice (``Dense.folds``): multiply the stacked rows by W R when n_out + clean_rows < rows."""
    return n_out + clean_rows < rows


def _adam(p, g, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat, vhat = m / (1 - b1**t), v / (1 - b2**t)
    return p - lr * mhat / (jnp.sqrt(vhat) + eps), m, v


class JaxNet:
    """The benchmark MLP and one rule in JAX (see the module docstring).

    params : npsim-style dict of numpy arrays ("layer0/W", "layer0/b", "layer0/R"), copied.
    base, decorrelate : the rule ("anp", True for DANP); rows : rows per decorrelation update (None: all).
    """

    def __init__(self, params: dict, sizes, base: str, decorrelate: bool, *, lr: float, sigma: float,
                 decorrelation_lr: float, slope: float, rows: int | None = None, seed: int = 0):
        if jax is None:
            raise ImportError('jax is not installed: pip install -e ".[bench]"')
        self.base, self.decorrelate, self.rows = base, decorrelate, rows
        self.sizes, self.L = tuple(sizes), len(sizes) - 1
        self.lr, self.sigma, self.dec_lr, self.slope = lr, sigma, decorrelation_lr, slope
        L = self.L
        p = {"W": [jnp.asarray(params[f"layer{i}/W"]) for i in range(L)],
             "b": [jnp.asarray(params[f"layer{i}/b"]) for i in range(L)]}
        R = [jnp.asarray(params[f"layer{i}/R"]) for i in range(L)] if decorrelate else None
        zeros = jax.tree.map(jnp.zeros_like, p)
        self.state = {"p": p, "R": R, "m": zeros, "v": jax.tree.map(jnp.zeros_like, p), "t": jnp.zeros((), p["W"][0].dtype)}
        self.key = jax.random.key(seed)
        self._step = jax.jit(self._step_fn, donate_argnums=(0,))

    # -- the pieces of a step -------------------------------------------------------
    def act(self, a, i):
        return jnp.where(a > 0, a, a * self.slope) if i < self.L - 1 else a

    def loss(self, out, y):
        """Per-sample softmax cross-entropy."""
        return jax.nn.logsumexp(out, axis=1) - jnp.take_along_axis(out, y[:, None], axis=1)[:, 0]

    def noise(self, key, rows, i):
        return jax.random.normal(jax.random.fold_in(key, i), (rows, self.sizes[i + 1]),
                                 dtype=self.state["p"]["W"][0].dtype) * self.sigma

    def clean_pass(self, p, R, x):
        xs, drives, h = [], [], x
        for i in range(self.L):
            X = h @ R[i].T if R is not None else h
            d = X @ p["W"][i].T + p["b"][i]
            xs.append(X)
            drives.append(d)
            h = self.act(d, i)
        return xs, drives, h

    def stacked_pass(self, p, R, x, eps):
        """Clean rows 0..B-1 and noisy rows B..2B-1 in one product per layer above the first."""
        B = x.shape[0]
        X = x @ R[0].T if R is not None else x
        d = X @ p["W"][0].T + p["b"][0]
        a = jnp.concatenate([d, d + eps[0]])
        xs, acts = [X], [a]
        h = self.act(a, 0)
        for i in range(1, self.L):
            W = p["W"][i]
            if R is not None and folds(W.shape[0], h.shape[0], B):
                xs.append(h[:B] @ R[i].T)
                a = h @ (W @ R[i]).T + p["b"][i]
            else:
                X = h @ R[i].T if R is not None else h
                xs.append(X[:B])
                a = X @ W.T + p["b"][i]
            a = a.at[B:].add(eps[i])
            acts.append(a)
            h = self.act(a, i)
        return xs, acts, h

    def decorrelation(self, R, xs):
        """R <- R - lr (Xᵀ X / S - diag(var)) R per layer, X the clean pass's decorrelated input (S rows)."""
        new = []
        for Ri, X in zip(R, xs):
            S = X.shape[0]
            if self.rows is not None and S > self.rows:
                X = X[:: S // self.rows][: self.rows]
                S = self.rows
            var = jnp.sum(X * X, axis=0) / S
            CR = X.T @ (X @ Ri) if S < X.shape[1] else (X.T @ X) @ Ri
            new.append(Ri - self.dec_lr * (CR / S - var[:, None] * Ri))
        return new

    def direction(self, p, R, x, y, key, eps):
        """The rule's update direction (W and b lists) and the clean pass's decorrelated inputs."""
        B, L = x.shape[0], self.L
        if self.base == "bp":
            def mean_loss(q):
                xs, _, out = self.clean_pass(q, R, x)
                return jnp.mean(self.loss(out, y)), xs
            (_, xs), g = jax.value_and_grad(mean_loss, has_aux=True)(p)
            return g, xs
        if self.base == "inp":
            xs, drives, out = self.clean_pass(p, R, x)
            loss0 = self.loss(out, y)
            signals = []
            for i in range(L):
                e = eps[i] if eps is not None else self.noise(key, B, i)
                h = self.act(drives[i] + e, i)
                for j in range(i + 1, L):
                    X = h @ R[j].T if R is not None else h
                    h = self.act(X @ p["W"][j].T + p["b"][j], j)
                w = (self.loss(h, y) - loss0) * self.sizes[i + 1] / (jnp.sum(e * e, axis=1) + 1e-30)
                signals.append(w[:, None] * e)
        else:  # np, anp: one stacked pass
            e = eps if eps is not None else [self.noise(key, B, i) for i in range(L)]
            xs, acts, out = self.stacked_pass(p, R, x, e)
            loss = self.loss(out, jnp.concatenate([y, y]))
            dl = loss[B:] - loss[:B]
            if self.base == "np":
                w = dl / self.sigma**2
                signals = [w[:, None] * ei for ei in e]
            else:
                da = [a[B:] - a[:B] for a in acts]
                w = dl * sum(self.sizes[1:]) / (sum(jnp.sum(d * d, axis=1) for d in da) + 1e-30)
                signals = [w[:, None] * d for d in da]
        g = {"W": [s.T @ X / B for s, X in zip(signals, xs)], "b": [jnp.sum(s, axis=0) / B for s in signals]}
        return g, xs

    def _step_fn(self, state, x, y, key, eps):
        p, R = state["p"], state["R"]
        g, xs = self.direction(p, R, x, y, key, eps)
        t = state["t"] + 1
        upd = jax.tree.map(lambda q, gq, m, v: _adam(q, gq, m, v, t, self.lr), p, g, state["m"], state["v"])
        is_triple = lambda u: isinstance(u, tuple)  # noqa: E731
        new = {"p": jax.tree.map(lambda u: u[0], upd, is_leaf=is_triple),
               "m": jax.tree.map(lambda u: u[1], upd, is_leaf=is_triple),
               "v": jax.tree.map(lambda u: u[2], upd, is_leaf=is_triple),
               "R": self.decorrelation(R, xs) if R is not None else None, "t": t}
        return new, g

    # -- the public step ------------------------------------------------------------
    def step(self, x, y, eps=None):
        """One training step on (x, y); returns the direction as a dict of arrays under npsim's keys.

        eps : None (draw the perturbations from this net's key) or the perturbations, a list of
            (B, n_{l+1}) arrays per layer in npsim's order (INP: one per layer, in layer order).
        """
        self.key, key = jax.random.split(self.key)
        eps = None if eps is None else [jnp.asarray(e) for e in eps]
        self.state, g = self._step(self.state, x, y, key, eps)
        return {f"layer{i}/{n}": g[n][i] for i in range(self.L) for n in ("W", "b")}

    def params(self) -> dict:
        """Current parameters as numpy arrays under npsim's keys."""
        out = {}
        for i in range(self.L):
            out[f"layer{i}/W"] = np.asarray(self.state["p"]["W"][i]).copy()
            out[f"layer{i}/b"] = np.asarray(self.state["p"]["b"][i]).copy()
            if self.decorrelate:
                out[f"layer{i}/R"] = np.asarray(self.state["R"][i]).copy()
        return out

    def block(self):
        """Wait for the dispatched step (JAX runs asynchronously)."""
        jax.block_until_ready(self.state)
