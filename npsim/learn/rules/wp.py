"""WP: weight perturbation, the classic baseline that perturbs parameters directly."""

from __future__ import annotations

from typing import ClassVar

from ...backend.arrays import namespace
from ...errors import IncompatibleSettings
from ...model.network import param_key
from .base import RuleOutput
from .perturbation import Perturbation

__all__ = ["WP"]


class WP(Perturbation):
    """G = (δL / σ²) ξ with ξ ~ N(0, σ²) on every W and b, δL the batch-mean loss change
    (with one σ_l per layer: ξ ~ N(0, σ_l²) on layer l's W and b, and G = (δL / σ_l²) ξ there).

    Averaged over K perturbations; passes 1 + K (each a full pass, since every layer changes).
    """

    name: ClassVar[str] = "wp"
    injects: ClassVar[bool] = False  # it perturbs the weights, which every substrate is given
    reads_layers: ClassVar[bool] = False  # and needs only the loss

    def check(self, net):
        super().check(net)
        if self.local_losses:
            raise IncompatibleSettings("wp perturbs weights against the network's loss: it has no block-local "
                                       "losses (set local_losses = false, or use np, inp or anp)")

    def __call__(self, net, params, x, y, rng):
        clean = net.forward(params, x, y, rng=rng)
        xp = namespace(clean.loss)
        keys = [(i, param_key(i, n)) for i in range(net.n_layers) for n in ("W", "b")]
        grads = {k: None for _, k in keys}
        dls = []
        xi = {}
        for j in range(self.perturbations):
            if self.antithetic and j % 2:  # the pair's second half: the first negated
                xi = {k: -v for k, v in xi.items()}
            else:
                xi = {k: rng.normal(params[k].shape, scale=self.layer_sigma(i)) for i, k in keys}
            perturbed = dict(params)
            for _, k in keys:
                perturbed[k] = params[k] + xi[k]
            noisy = net.forward(perturbed, x, y, rng=rng)
            dl = xp.mean(noisy.loss - clean.loss)
            dls.append(dl)
            for i, k in keys:
                g = xi[k] * (dl / (self.layer_sigma(i)**2 * self.perturbations))
                grads[k] = g if grads[k] is None else grads[k] + g
        return RuleOutput(grads, clean, tuple(dls))
