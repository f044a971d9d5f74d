"""Learning rules: BP, NP, INP, ANP, WP, and decorrelation as a wrapper of any of them.

Build one by name with :func:`make_rule`: ``make_rule("danp", sigma=1e-3)`` is
``decorrelate(ANP(sigma=1e-3))``. The update equations are in docs/design.md §2.
"""

from __future__ import annotations

import warnings

from ...errors import IncompatibleSettings, ParameterError
from ...registry import Registry
from .base import Rule, RuleOutput
from .bp import BP
from .decorrelation import DEFAULT_ROWS, Decorrelate, decorrelate, decorrelation_step
from .local import Heads, head_key, init_heads
from .perturbation import ANP, INP, NP, Perturbation
from .wp import WP

__all__ = [
    "Rule", "RuleOutput", "BP", "NP", "INP", "ANP", "WP", "Perturbation", "Decorrelate", "decorrelate",
    "decorrelation_step", "DEFAULT_ROWS", "Heads", "head_key", "init_heads", "make_rule", "split_name", "RULES",
    "RULE_NAMES",
]

RULES: Registry[type[Rule]] = Registry("rule", {"bp": BP, "np": NP, "inp": INP, "anp": ANP, "wp": WP})

#: every name make_rule accepts: the base rules and their decorrelated ("d"-prefixed) variants
RULE_NAMES = tuple(sorted(list(RULES) + ["d" + r for r in RULES]))


def split_name(name: str) -> tuple[str, bool]:
    """"danp" -> ("anp", True); "np" -> ("np", False). ValueError for unknown names."""
    n = name.lower() if isinstance(name, str) else name
    if n in RULES:
        return n, False
    if isinstance(n, str) and n.startswith("d") and n[1:] in RULES:
        return n[1:], True
    raise ValueError(f"unknown rule {name!r}; known rules: {', '.join(RULE_NAMES)}")


def make_rule(name: str, *, decorrelation_lr: float = 1e-3, decorrelation_kappa: float = 0.0,
              decorrelation_rows: int | str | None = "auto", **params) -> Rule:
    """Build a rule by name ("bp", "np", "inp", "anp", "wp", or a "d"-prefixed variant).

    ``params`` go to the base rule (sigma, perturbations, noise); the
    decorrelation settings to the D-variants' :class:`Decorrelate`. A setting
    the rule does not take raises ParameterError naming it; a rule that cannot
    learn from intrinsic noise refuses ``noise="intrinsic"``
    (:class:`~npsim.errors.IncompatibleSettings`).
    """
    try:
        base, dec = split_name(name)
    except ValueError:
        raise ParameterError("rule", "name", f"must be one of {', '.join(RULE_NAMES)}", name) from None
    if "samples" in params:  # the old name of perturbations
        warnings.warn("rule parameter 'samples' is now called 'perturbations'; the old name will be removed in "
                      "the next release", FutureWarning, stacklevel=2)
        params["perturbations"] = params.pop("samples")
    cls = RULES[base]
    if params.get("noise", "injected") != "injected" and "noise" not in cls.model_fields:
        raise IncompatibleSettings(
            f"rule {name!r} needs the injected perturbation itself and cannot learn from "
            f"inaccessible intrinsic noise; use 'anp' or 'danp' with noise = 'intrinsic'"
        )
    if "noise" not in cls.model_fields:
        params.pop("noise", None)
    if params.get("local_losses") and base == "bp":
        raise IncompatibleSettings("rule 'bp' trains every layer on the network's loss: it has no block-local "
                                   "losses (set local_losses = false)")
    rule = cls(**params)
    return decorrelate(rule, decorrelation_lr, decorrelation_kappa, decorrelation_rows) if dec else rule
