"""What the system that runs a network's passes can do (see :mod:`npsim.model.substrate`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Capabilities"]


@dataclass(frozen=True)
class Capabilities:
    """What a substrate can do.

    perturbation : it adds a given perturbation to each layer's activity
        (NP, INP and ANP with injected noise need this).
    hidden : it reports every layer's input and activity, not only the
        outputs (every node-perturbation rule needs the layer inputs; ANP the
        activities too). Without it only weight perturbation (WP) can train.
    noisy : its units carry noise of their own that npsim neither sets nor
        sees (ANP with ``noise = "intrinsic"`` learns from it).
    """

    perturbation: bool = True
    hidden: bool = True
    noisy: bool = False
