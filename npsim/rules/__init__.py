"""Learning rules: BP, NP, INP, ANP, WP and decorrelation as a wrapper of any of them.

Build one by name with :func:`make_rule`: ``make_rule("danp", sigma=1e-3)`` is
``decorrelate(ANP(sigma=1e-3))``.
"""

from __future__ import annotations

from .base import Rule, RuleOutput, alignment
from .bp import BP
from .decorrelation import Decorrelate, decorrelate, decorrelation_step
from .perturbation import ANP, INP, NP
from .wp import WP

__all__ = [
    "Rule", "RuleOutput", "alignment", "BP", "NP", "INP", "ANP", "WP", "Decorrelate",
    "decorrelate", "decorrelation_step", "make_rule", "RULES",
]

RULES = {"bp": BP, "np": NP, "inp": INP, "anp": ANP, "wp": WP}


def split_name(name: str) -> tuple[str, bool]:
    """"danp" -> ("anp", True); "np" -> ("np", False)."""
    n = name.lower()
    if n in RULES:
        return n, False
    if n.startswith("d") and n[1:] in RULES:
        return n[1:], True
    known = ", ".join(sorted(list(RULES) + ["d" + r for r in RULES]))
    raise ValueError(f"unknown rule {name!r}; known rules: {known}")


def make_rule(name: str, *, decorrelation_lr: float = 1e-3, decorrelation_kappa: float = 0.0,
              decorrelation_samples: int | None = None, **params) -> Rule:
    """Build a rule by name ("bp", "np", "inp", "anp", "wp", or a "d"-prefixed variant).

    ``params`` go to the base rule (sigma, samples, noise); unknown ones raise ``ValueError``.
    """
    base, dec = split_name(name)
    cls = RULES[base]
    if base != "anp" and params.get("noise", "injected") != "injected":
        raise ValueError(
            f"rule {name!r} needs the injected perturbation itself and cannot learn from "
            f"inaccessible intrinsic noise; use 'anp' or 'danp' with noise = 'intrinsic'"
        )
    if base != "anp":
        params.pop("noise", None)
    import dataclasses

    allowed = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(params) - allowed)
    if bad:
        hint = ", ".join(sorted(allowed)) or "nothing"
        raise ValueError(f"rule {name!r}: unknown parameter(s) {', '.join(bad)}; it takes {hint}")
    rule = cls(**params)
    return decorrelate(rule, decorrelation_lr, decorrelation_kappa, decorrelation_samples) if dec else rule
