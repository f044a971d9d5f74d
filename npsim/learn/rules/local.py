"""Block-local losses: each hidden layer learns against a linear read-out of its own (docs/design.md §2).

With ``local_losses = true`` a perturbation rule gives every hidden layer l < L − 1 an auxiliary
head, a linear map of the layer's output x_l to the network's output space,

    z_l = x_l H_lᵀ + c_l,    ℓ^{(l)}_b = loss(z_{l,b}, y_b)           H_l (n_L, n_l), c_l (n_L,)

and correlates layer l's perturbation with the change of ℓ^{(l)} instead of the network's loss;
the output layer keeps the network's loss. Layer l's estimate then carries the noise of layer
l's own units only — not that of every unit above it — which is the lever the per-layer
variance measurement points to (docs/spiking.md). It is the node-perturbation form of the
local losses of Ren et al., "Scaling Forward Gradient with Local Losses" (ICLR 2023).

The heads are parameters of the run (``"head{l}/W"``, ``"head{l}/b"``: checkpointed,
optimised, resumed like W and b) and only a training aid: predictions come from the
network's output layer. A head is linear, so its exact gradient is the local delta rule
(dℓ/dz_l) x_lᵀ, which needs no derivative of any node model; the heads learn by it.
"""

from __future__ import annotations

import math

from ...backend.arrays import namespace, tile_rows

__all__ = ["head_key", "init_heads", "Heads"]


def head_key(layer: int, name: str) -> str:
    """Name of parameter ``name`` ("W" or "b") of hidden layer ``layer``'s read-out head."""
    return f"head{layer}/{name}"


def init_heads(net, rng, backend) -> dict:
    """Fresh heads for the hidden layers of ``net``: H_l ~ N(0, 1/n_l) (LeCun), c_l = 0."""
    out, n_out = {}, net.sizes[-1]
    for i in range(net.n_layers - 1):
        n = net.layers[i].n_out
        out[head_key(i, "W")] = rng.normal((n_out, n), scale=1.0 / math.sqrt(n))
        out[head_key(i, "b")] = backend.zeros((n_out,))
    return out


class Heads:
    """The heads' read-out of one batch's clean pass, and what a rule takes from it.

    clean : the clean :class:`~npsim.model.network.Trace` (B rows); y : its targets.
    """

    def __init__(self, net, params, clean, y):
        self.net, self.y = net, y
        self.hidden = range(net.n_layers - 1)
        missing = [head_key(i, n) for i in self.hidden for n in ("W", "b") if head_key(i, n) not in params]
        if missing:
            raise ValueError(f"local losses need the hidden layers' read-out heads, but params lack {missing}; "
                             f"add rule.init_params(net, rng, backend) to the network's parameters")
        self.W = [params[head_key(i, "W")] for i in self.hidden]
        self.b = [params[head_key(i, "b")] for i in self.hidden]
        self.inputs = [clean.post[i] for i in self.hidden]
        self.logits = [self._read(i, x) for i, x in zip(self.hidden, self.inputs)]
        self.loss = [net.loss(z, y) for z in self.logits]
        self.clean_loss = clean.loss

    def _read(self, layer: int, x):
        return x @ self.W[layer].T + self.b[layer]

    def loss_change(self, layer: int, noisy):
        """(K·B,) δℓ^{(l)}: the change of layer ``layer``'s loss in the perturbed pass ``noisy``
        (its rows K copies of the batch); the network's own loss change for the output layer."""
        K = noisy.repeats
        if layer == self.net.n_layers - 1:
            return noisy.loss - tile_rows(self.clean_loss, K)
        z = self._read(layer, noisy.post[layer])
        return self.net.loss(z, tile_rows(self.y, K)) - tile_rows(self.loss[layer], K)

    def grads(self) -> dict:
        """The heads' exact gradients of their batch-mean losses: G_H = gᵀ x_l / B and G_c = Σ_b g_b / B,
        g = dℓ/dz_l."""
        out = {}
        for i, x, z in zip(self.hidden, self.inputs, self.logits):
            g = self.net.loss.grad(z, self.y) * (1.0 / x.shape[0])
            out[head_key(i, "W")] = g.T @ x
            out[head_key(i, "b")] = namespace(g).sum(g, axis=0)
        return out
