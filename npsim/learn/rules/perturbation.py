"""Node perturbation: NP, INP and ANP.

Notation (docs/design.md §2): B batch size, K perturbations (noisy passes) per clean pass, σ the
perturbation scale, δℓ_b the per-sample loss change, x_{l-1} the clean pass's
(decorrelated) input of layer l. Each rule returns an update direction G_l
whose expectation, for small σ, points along the gradient of the batch loss.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator

from ...backend.arrays import namespace, tile_rows
from ...backend.kernels import scale_rows
from ...errors import IncompatibleSettings
from ...model.network import param_key
from ...params import PositiveInt
from .base import Rule, RuleOutput, require_capabilities
from .local import Heads, init_heads

__all__ = ["Perturbation", "NP", "INP", "ANP", "Sigma", "Perturbations", "NoiseSource"]


def _positive(v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("must be a valid number")  # pydantic's words, as for every other number
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    if v <= 0:
        raise ValueError("must be greater than 0")
    return float(v)


def _sigma_setting(v):
    if isinstance(v, (list, tuple)):
        if not v:
            raise ValueError("must be a number, or a list of one number per layer, not an empty list")
        return [_positive(s) for s in v]
    return _positive(v)


#: σ, the perturbation scale in activity units (for WP: in weight units): one for every layer, or a
#: list of one per layer (input layer first)
Sigma = Annotated[object, AfterValidator(_sigma_setting), Field(description="perturbation scale")]
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

    sigma : the perturbation scale σ, or a list of one per layer (σ_l; each layer's noise, and for NP
        and WP its update's 1/σ_l², at its own scale).
    antithetic : the K perturbations come in pairs (+ε, −ε) — copy k + K/2 of a stacked pass is copy k
        negated (WP: perturbation 2j + 1 is 2j negated) — so each pair's estimate is the central
        difference (δℓ₊ − δℓ₋) ε / 2σ², whose even-order terms in ε (the curvature's bias and noise) cancel
        and which needs no clean loss; K must be even.
    local_losses : every hidden layer learns against its own linear read-out head
        (:mod:`npsim.learn.rules.local`) instead of the network's loss; the heads are
        parameters, made by :meth:`init_params`.
    """

    sigma: Sigma = 1e-3
    perturbations: Perturbations = 1
    antithetic: bool = False
    local_losses: bool = False

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
        if isinstance(self.sigma, list) and len(self.sigma) != net.n_layers:
            raise IncompatibleSettings(f"rule.sigma lists {len(self.sigma)} values, but the network has "
                                       f"{net.n_layers} layers: give one per layer (input layer first), or one "
                                       f"number for all")

    def layer_sigma(self, layer: int) -> float:
        """σ_l, the perturbation scale of layer ``layer``."""
        return self.sigma[layer] if isinstance(self.sigma, list) else self.sigma

    def init_params(self, net, rng, backend) -> dict:
        return init_heads(net, rng, backend) if self.local_losses else {}

    def _clean(self, net, params, x, y, rng):
        return net.forward(params, x, y, rng=rng)

    def _loss_changes(self, net, params, clean, noisy, y) -> tuple[list, dict]:
        """Per layer, the loss change its update correlates with (the network's, or with local losses
        its own head's), and the heads' gradients ({} without local losses)."""
        if not self.local_losses:
            dl = noisy.loss - tile_rows(clean.loss, noisy.repeats)
            return [dl] * net.n_layers, {}
        heads = Heads(net, params, clean, y)
        return [heads.loss_change(i, noisy) for i in range(net.n_layers)], heads.grads()

    def _noise(self, net, rng, rows: int, layers):
        """(rows, n_l) perturbations of the layers in ``layers``; antithetic: the second half negates the first."""
        drawn = rows // 2 if self.antithetic else rows
        out = []
        for i in range(net.n_layers):
            e = rng.normal((drawn, net.layers[i].n_units), scale=self.layer_sigma(i)) if i in layers else None
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
        dls, grads = self._loss_changes(net, params, clean, noisy, y)
        for i in range(net.n_layers):
            _layer_grads(net, grads, i, eps[i], dls[i] * (1.0 / self.layer_sigma(i)**2), clean.inputs[i], K)
        dl = dls[-1]
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
        heads = Heads(net, params, clean, y) if self.local_losses else None
        grads, dls = ({} if heads is None else heads.grads()), []
        base_loss = tile_rows(clean.loss, K)
        for i in range(net.n_layers):
            eps = self._noise(net, rng, K * x.shape[0], (i,))
            noisy = net.forward(params, x, y, rng=rng, perturb=eps, base=clean, start=i, repeats=K)
            dl = noisy.loss - base_loss if heads is None else heads.loss_change(i, noisy)
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

    local_losses: layer l's update uses its own head's loss change and its own activity change,
    δℓ^{(l)}_b n_l δa_{l,b} x_{l-1,b}ᵀ / ‖δa_{l,b}‖², the head loss depending on layer l's activity only.
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
        dls, grads = self._loss_changes(net, params, clean, noisy, y)
        da = [noisy.pre[i] - tile_rows(clean.pre[i], K) for i in range(net.n_layers)]
        sq = [namespace(d).sum(d * d, axis=1) for d in da]
        if self.local_losses:  # layer l's loss sees layer l's activity change only: normalise by that
            ws = [dl * (layer.n_units / (s + _TINY)) for dl, s, layer in zip(dls, sq, net.layers)]
        else:
            ws = [dls[0] * net.n_units / (sum(sq) + _TINY)] * net.n_layers
        for i in range(net.n_layers):
            _layer_grads(net, grads, i, da[i], ws[i], clean.inputs[i], K)
        dl = dls[-1]
        return RuleOutput(grads, clean, namespace(dl).mean(dl))
