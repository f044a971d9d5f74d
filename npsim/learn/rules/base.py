"""What every learning rule is and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ...errors import IncompatibleSettings
from ...model.network import Network, Trace
from ...params import Params

__all__ = ["Rule", "RuleOutput", "require_capabilities"]


def require_capabilities(net: Network, rule: str, *, perturbation: bool = False, hidden: bool = False) -> None:
    """Raise :class:`~npsim.errors.IncompatibleSettings` (one line) if what runs ``net``'s passes cannot
    inject perturbations (``perturbation``) or report hidden activities (``hidden``) as rule ``rule`` needs."""
    caps, who = net.capabilities, f"substrate {net.substrate_name!r}"
    if hidden and not caps.hidden:
        raise IncompatibleSettings(f"rule {rule!r} needs every layer's input and activity, but {who} reports only "
                                   f"its outputs; train it with 'wp', which needs only the outputs")
    if perturbation and not caps.perturbation:
        hint = ("use 'anp' or 'danp' with rule.noise = 'intrinsic'" if caps.noisy else
                "use 'wp', which perturbs the weights it sets")
        raise IncompatibleSettings(f"rule {rule!r} injects a perturbation into the layers' activities, but {who} "
                                   f"takes none; {hint}")


@dataclass
class RuleOutput:
    """One update direction.

    grads : update direction G per "layerI/W" and "layerI/b" key (an optimizer
        descends along it; for BP it is the exact gradient).
    trace : the clean pass of the batch (reused for diagnostics).
    delta_loss : mean per-sample loss change of the perturbed passes (None for BP): a float or a 0-d array
        on the arrays' device, or a tuple of them whose mean is meant (INP: one per layer), so a step
        gathers its scalars in one transfer.
    assign : parameters the rule sets directly, not through the optimizer
        (the decorrelation matrices R), as their new values.
    """

    grads: dict
    trace: Trace
    delta_loss: float | None = None
    assign: dict = field(default_factory=dict)


class Rule(Params):
    """A learning rule: ``rule(net, params, x, y, rng) -> RuleOutput``.

    Rules hold hyper-parameters only, no state, and see the network only
    through ``Network.forward``, ``Network.forward_pair`` and
    ``Network.backward`` (docs/design.md §2).
    """

    name: ClassVar[str] = "rule"

    def check(self, net: Network) -> None:
        """Raise :class:`~npsim.errors.IncompatibleSettings` if this rule cannot train ``net``."""

    def init_params(self, net: Network, rng, backend) -> dict:
        """Parameters the rule itself adds to the network's (block-local losses' read-out heads), drawn
        from ``rng``: {} for most rules."""
        return {}

    def __call__(self, net: Network, params: dict, x, y, rng) -> RuleOutput:
        raise NotImplementedError
