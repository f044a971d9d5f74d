"""WP: weight perturbation, the classic baseline that perturbs parameters directly."""

from __future__ import annotations

from typing import ClassVar

from ...backend.arrays import namespace
from ...model.network import param_key
from .base import RuleOutput
from .perturbation import Perturbation

__all__ = ["WP"]


class WP(Perturbation):
    """G = (δL / σ²) ξ with ξ ~ N(0, σ²) on every W and b, δL the batch-mean loss change.

    Averaged over K perturbations; passes 1 + K (each a full pass, since every layer changes).
    """

    name: ClassVar[str] = "wp"
    injects: ClassVar[bool] = False  # it perturbs the weights, which every substrate is given
    reads_layers: ClassVar[bool] = False  # and needs only the loss

    def __call__(self, net, params, x, y, rng):
        clean = net.forward(params, x, y, rng=rng)
        xp = namespace(clean.loss)
        keys = [param_key(i, n) for i in range(net.n_layers) for n in ("W", "b")]
        grads = {k: None for k in keys}
        dls = []
        xi = {}
        for j in range(self.perturbations):
            if self.antithetic and j % 2:  # the pair's second half: the first negated
                xi = {k: -v for k, v in xi.items()}
            else:
                xi = {k: rng.normal(params[k].shape, scale=self.sigma) for k in keys}
            perturbed = dict(params)
            for k in keys:
                perturbed[k] = params[k] + xi[k]
            noisy = net.forward(perturbed, x, y, rng=rng)
            dl = xp.mean(noisy.loss - clean.loss)
            dls.append(dl)
            for k in keys:
                g = xi[k] * (dl / (self.sigma**2 * self.perturbations))
                grads[k] = g if grads[k] is None else grads[k] + g
        return RuleOutput(grads, clean, tuple(dls))
