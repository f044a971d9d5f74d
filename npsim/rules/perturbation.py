"""Node perturbation: NP, INP and ANP.

Notation (DESIGN §2): B batch size, K noisy samples per clean pass, σ the
perturbation scale, δℓ_b the per-sample loss change, x_{l-1} the clean pass's
(decorrelated) input of layer l. Each rule returns an update direction G_l
whose expectation, for small σ, points along the gradient of the batch loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..kernels import scale_rows
from ..network import _tile, param_key
from .base import Rule, RuleOutput, check_samples, check_sigma

__all__ = ["Perturbation", "NP", "INP", "ANP"]

_TINY = 1e-30


def _direction(layer, perturbation, weight, inputs, repeats: int):
    """G_W = (1/(K B)) Σ_{k,b} w_{kb} p_{kb} x_bᵀ and G_b = (1/(K B)) Σ w_{kb} p_{kb}.

    perturbation : (K·B, n_units) per-sample perturbation p (ε or δa), scaled
        in place into the signal w p (the rule's own array, not needed after)
    weight : (K·B,) per-sample weight w (the loss-difference scaling)
    inputs : (B, ·) clean layer input (what W multiplies)
    """
    n = perturbation.shape[0]
    signal = scale_rows(perturbation, weight * weight.dtype.type(1.0 / n))
    if repeats > 1:  # sum the K copies first: one (n_units × B) @ (B × n_in) product
        signal = signal.reshape(repeats, n // repeats, signal.shape[1]).sum(axis=0)
    return layer.weight_grad(signal, inputs)


class Perturbation(Rule):
    """Shared parts of the perturbation rules: σ and K validation, noise draws, the clean pass."""

    def __post_init__(self):
        check_sigma(self.sigma, self.name)
        check_samples(self.samples, self.name)

    def _clean(self, net, params, x, y, rng):
        return net.forward(params, x, y, rng=rng)

    def _noise(self, net, rng, rows: int, layers):
        return [rng.normal((rows, net.layers[i].n_units), scale=self.sigma) if i in layers else None
                for i in range(net.n_layers)]


def _layer_grads(net, grads: dict, layer: int, perturbation, weight, inputs, repeats: int) -> None:
    grads[param_key(layer, "W")], grads[param_key(layer, "b")] = _direction(net.layers[layer], perturbation,
                                                                            weight, inputs, repeats)


@dataclass(frozen=True)
class NP(Perturbation):
    """Classic node perturbation: every layer perturbed at once, noise propagates.

    G_l = (1/B) Σ_b (δℓ_b / σ²) ε_{l,b} x_{l-1,b}ᵀ, averaged over K samples.
    Passes: 1 clean + K noisy, stacked into one pass of (1 + K)·B rows.
    """

    sigma: float = 1e-3
    samples: int = 1
    name = "np"

    def __call__(self, net, params, x, y, rng):
        K = self.samples
        eps = self._noise(net, rng, K * x.shape[0], range(net.n_layers))
        clean, noisy = net.forward_pair(params, x, y, rng=rng, perturb=eps, repeats=K)
        dl = noisy.loss - (_tile_rows(clean.loss, K))
        w = dl * dl.dtype.type(1.0 / self.sigma**2)
        grads = {}
        for i in range(net.n_layers):
            _layer_grads(net, grads, i, eps[i], w, clean.inputs[i], K)
        return RuleOutput(grads, clean, float(dl.mean()))


@dataclass(frozen=True)
class INP(Perturbation):
    """Iterative node perturbation: one pass per layer, noise in that layer only.

    G_l = (1/B) Σ_b δℓ^{(l)}_b N_l ε_{l,b} x_{l-1,b}ᵀ / ‖ε_{l,b}‖², N_l the layer width.
    Passes: 1 + K·L; the pass for layer l starts at layer l (reusing the clean pass below).
    """

    sigma: float = 1e-3
    samples: int = 1
    name = "inp"

    def __call__(self, net, params, x, y, rng):
        K = self.samples
        clean = self._clean(net, params, x, y, rng)
        grads, dls = {}, []
        base_loss = _tile_rows(clean.loss, K)
        for i in range(net.n_layers):
            eps = self._noise(net, rng, K * x.shape[0], (i,))
            noisy = net.forward(params, x, y, rng=rng, perturb=eps, base=clean, start=i, repeats=K)
            dl = noisy.loss - base_loss
            e = eps[i]
            norm2 = (e * e).sum(axis=1)
            w = dl * e.shape[1] / (norm2 + _TINY)
            _layer_grads(net, grads, i, e, w, clean.inputs[i], K)
            dls.append(float(dl.mean()))
        return RuleOutput(grads, clean, sum(dls) / len(dls))


@dataclass(frozen=True)
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

    sigma: float = 1e-3
    samples: int = 1
    noise: str = "injected"
    name = "anp"

    def __post_init__(self):
        if self.noise not in ("injected", "intrinsic"):
            raise ValueError(f"anp: noise must be 'injected' or 'intrinsic', got {self.noise!r}")
        if self.noise == "injected":
            check_sigma(self.sigma, "anp")
        check_samples(self.samples, "anp")

    def check(self, net):
        if self.noise == "intrinsic" and not net.noisy:
            raise ValueError(
                "anp with noise='intrinsic' needs node models with intrinsic noise "
                "(e.g. gaussian_noise); this network has none, so both passes would be identical"
            )

    def __call__(self, net, params, x, y, rng):
        K = self.samples
        eps = None
        if self.noise == "injected":
            eps = self._noise(net, rng, K * x.shape[0], range(net.n_layers))
        clean, noisy = net.forward_pair(params, x, y, rng=rng, perturb=eps, repeats=K)
        dl = noisy.loss - _tile_rows(clean.loss, K)
        da = [noisy.pre[i] - _tile_rows(clean.pre[i], K) for i in range(net.n_layers)]
        norm2 = sum((d * d).sum(axis=1) for d in da)
        w = dl * net.n_units / (norm2 + _TINY)
        grads = {}
        for i in range(net.n_layers):
            _layer_grads(net, grads, i, da[i], w, clean.inputs[i], K)
        return RuleOutput(grads, clean, float(dl.mean()))


def _tile_rows(a, k: int):
    return a if k == 1 else _tile(a, k)
