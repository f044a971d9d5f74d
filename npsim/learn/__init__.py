"""Learning: the rules that turn passes into update directions, the optimizers, and the update itself.

Rules see the network only through its passes (docs/design.md §2); nothing
here reads files or configs.
"""

from .diagnostics import alignment
from .optim import (
    OPTIMIZERS,
    Optimizer,
    adam,
    apply_updates,
    constant,
    cosine_decay,
    make_optimizer,
    sgd,
)
from .rules import RULES, Rule, RuleOutput, decorrelate, make_rule, split_name
from .step import StepStats, evaluate, fit, train_step, trainable

__all__ = [
    "alignment", "OPTIMIZERS", "Optimizer", "adam", "apply_updates", "constant", "cosine_decay", "make_optimizer",
    "sgd", "RULES", "Rule", "RuleOutput", "decorrelate", "make_rule", "split_name", "StepStats", "evaluate", "fit",
    "train_step", "trainable",
]
