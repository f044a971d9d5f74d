"""Node perturbation: NP, INP and ANP.

Notation (docs/design.md §2): B batch size, K perturbations (noisy passes) per clean pass, σ the
perturbation scale, δℓ_b the per-sample loss change, x_{l-1} the clean pass's
(decorrelated) input of layer l. Each rule returns an update direction G_l
whose expectation, for small σ, points along the gradient of the batch loss.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from ...backend.arrays import namespace, tile_rows
from ...backend.kernels import scale_rows
from ...errors import IncompatibleSettings
from ...model.network import param_key
from ...params import PositiveFloat, PositiveInt
from .base import Rule, RuleOutput, require_capabilities

__all__ = ["Perturbation", "NP", "INP", "ANP", "Sigma", "Perturbations", "NoiseSource"]

#: σ, the perturbation scale in activity units (for WP: in weight units)
Sigma = Annotated[PositiveFloat, Field(description="perturbation scale")]
#: K, noisy passes per clean pass; their updates are averaged (resampling)
Perturbations = Annotated[PositiveInt, Field(description="noisy passes per clean pass")]
#: where ANP's perturbation comes from: injected noise, or the network's own intrinsic noise
NoiseSource = Literal["injected", "intrinsic"]

_TINY = 1e-30


def _direction(layer, perturbation, weight, inputs, repeats: int):
    """G_W = (1/(K B)) Σ_{k,b} w_{kb} p_{kb} x_bᵀ and G_b = (1/(K B)) Σ w_{kb} p_{kb}.

    perturbation : (K·B, n_units) per-sample perturbation p (ε or δa), scaled
        in place into the signal w p (the rule's own array, not needed after)
    weight : (K·B,) per-sample weight w (the loss-difference scaling)
    inputs : (B, ·) clean layer input (what W multiplies)
    """
    n = perturbation.shape[0]
    xp = namespace(perturbation)
    signal = scale_rows(perturbation, weight * (1.0 / n))
    if repeats > 1:  # sum the K copies first: one (n_units × B) @ (B × n_in) product
        signal = xp.sum(xp.reshape(signal, (repeats, n // repeats, signal.shape[1])), axis=0)
    return layer.weight_grad(signal, inputs)


class Perturbation(Rule):
    """Shared parts of the perturbation rules: σ, K, antithetic pairs, noise draws, the clean pass.

    antithetic : the K perturbations come in pairs (+ε, −ε) — copy k + K/2 of a stacked pass is copy k
        negated (WP: perturbation 2j + 1 is 2j negated) — so each pair's estimate is the central
        difference (δℓ₊ − δℓ₋) ε / 2σ², whose even-order terms in ε (the curvature's bias and noise) cancel
        and which needs no clean loss; K must be even.
    """

    sigma: Sigma = 1e-3
    perturbations: Perturbations = 1
    antithetic: bool = False

    @field_validator("antithetic")
    @classmethod
    def _in_pairs(cls, v, info):
        k = info.data.get("perturbations")
        if v and k is not None and k % 2:
            raise ValueError(f"antithetic perturbations come in pairs (+ε, −ε): perturbations must be even, got {k}")
        return v
    #: whether the rule injects a perturbation into the activities, and reads every layer's input
    injects: ClassVar[bool] = True
    reads_layers: ClassVar[bool] = True

    def check(self, net):
        require_capabilities(net, self.name, perturbation=self.injects, hidden=self.reads_layers)

    def _clean(self, net, params, x, y, rng):
        return net.forward(params, x, y, rng=rng)

    def _noise(self, net, rng, rows: int, layers):
        """(rows, n_l) perturbations of the layers in ``layers``; antithetic: the second half negates the first."""
        drawn = rows // 2 if self.antithetic else rows
        out = []
        for i in range(net.n_layers):
            e = rng.normal((drawn, net.layers[i].n_units), scale=self.sigma) if i in layers else None
            out.append(namespace(e).concat([e, -e], axis=0) if self.antithetic and e is not None else e)
        return out


def _layer_grads(net, grads: dict, layer: int, perturbation, weight, inputs, repeats: int) -> None:
    grads[param_key(layer, "W")], grads[param_key(layer, "b")] = _direction(net.layers[layer], perturbation,
                                                                            weight, inputs, repeats)


class NP(Perturbation):
    """Classic node perturbation: every layer perturbed at once, noise propagates.

    G_l = (1/B) Σ_b (δℓ_b / σ²) ε_{l,b} x_{l-1,b}ᵀ, averaged over K perturbations.
    Passes: 1 clean + K noisy, stacked into one pass of (1 + K)·B rows.
    """

    name: ClassVar[str] = "np"

    def __call__(self, net, params, x, y, rng):
        K = self.perturbations
        eps = self._noise(net, rng, K * x.shape[0], range(net.n_layers))
        clean, noisy = net.forward_pair(params, x, y, rng=rng, perturb=eps, repeats=K)
        dl = noisy.loss - tile_rows(clean.loss, K)
        w = dl * (1.0 / self.sigma**2)
        grads = {}
        for i in range(net.n_layers):
            _layer_grads(net, grads, i, eps[i], w, clean.inputs[i], K)
        return RuleOutput(grads, clean, namespace(dl).mean(dl))


class INP(Perturbation):
    """Iterative node perturbation: one pass per layer, noise in that layer only.

    G_l = (1/B) Σ_b δℓ^{(l)}_b N_l ε_{l,b} x_{l-1,b}ᵀ / ‖ε_{l,b}‖², N_l the layer width.
    Passes: 1 + K·L; the pass for layer l starts at layer l (reusing the clean pass below).
    """

    name: ClassVar[str] = "inp"

    def __call__(self, net, params, x, y, rng):
        K = self.perturbations
        clean = self._clean(net, params, x, y, rng)
        grads, dls = {}, []
        base_loss = tile_rows(clean.loss, K)
        for i in range(net.n_layers):
            eps = self._noise(net, rng, K * x.shape[0], (i,))
            noisy = net.forward(params, x, y, rng=rng, perturb=eps, base=clean, start=i, repeats=K)
            dl = noisy.loss - base_loss
            e = eps[i]
            norm2 = namespace(e).sum(e * e, axis=1)
            w = dl * e.shape[1] / (norm2 + _TINY)
            _layer_grads(net, grads, i, e, w, clean.inputs[i], K)
            dls.append(namespace(dl).mean(dl))
        return RuleOutput(grads, clean, tuple(dls))


class ANP(Perturbation):
    """Activity-based node perturbation: uses only measured activity differences.

    δa_l = ã_l − a_l (own plus propagated noise);
    G_l = (1/B) Σ_b δℓ_b N δa_{l,b} x_{l-1,b}ᵀ / ‖δa_b‖², with ‖δa_b‖² over
    the units of all layers and N the number of units in all layers (npsim
    uses N, not √N: with N the expected update for isotropic δa equals the
    directional-derivative estimate of the gradient, as for INP).

    noise="injected": the perturbed pass adds ε ~ N(0, σ²) to every layer.
    noise="intrinsic": nothing is injected; both passes carry the network's
    own intrinsic noise (its node models must be noisy) and the rule sees
    only their difference. Passes: 1 + K.
    """

    noise: NoiseSource = "injected"
    name: ClassVar[str] = "anp"

    @property
    def injects(self) -> bool:  # type: ignore[override]
        return self.noise == "injected"

    def check(self, net):
        super().check(net)
        if self.noise == "intrinsic" and self.antithetic:
            raise IncompatibleSettings("anp with noise='intrinsic' cannot pair its perturbations antithetically: "
                                       "it does not choose them (set antithetic = false)")
        if self.noise == "intrinsic" and not net.noisy:
            raise IncompatibleSettings(
                "anp with noise='intrinsic' needs units with intrinsic noise "
                "(e.g. gaussian activity noise); this network has none, so both passes would be identical"
            )

    def __call__(self, net, params, x, y, rng):
        K = self.perturbations
        eps = None
        if self.noise == "injected":
            eps = self._noise(net, rng, K * x.shape[0], range(net.n_layers))
        clean, noisy = net.forward_pair(params, x, y, rng=rng, perturb=eps, repeats=K)
        dl = noisy.loss - tile_rows(clean.loss, K)
        da = [noisy.pre[i] - tile_rows(clean.pre[i], K) for i in range(net.n_layers)]
        norm2 = sum(namespace(d).sum(d * d, axis=1) for d in da)
        w = dl * net.n_units / (norm2 + _TINY)
        grads = {}
        for i in range(net.n_layers):
            _layer_grads(net, grads, i, da[i], w, clean.inputs[i], K)
        return RuleOutput(grads, clean, namespace(dl).mean(dl))
