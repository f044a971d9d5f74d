"""Decorrelation: learn R_l so each layer's input has (nearly) uncorrelated components.

After each step, from the clean pass's decorrelated inputs X (B × n):

    C = XᵀX / B − diag(v),  v = (1 − κ) diag(XᵀX / B) + κ,
    R ← R − η C R.

κ = 0 removes only the off-diagonal (pure decorrelation, docs/design.md §2); κ > 0
also pulls each variance towards 1. C R is formed as Xᵀ(X R)/B − v ⊙ R when
B < n, which costs O(B n²) instead of the O(n³) of forming C first.

``rows = S`` estimates C from S rows spread evenly over the (shuffled) batch
— for a convolution, over its image patches — only: the update then costs
O(S n²) instead of O(B n²); ``rows = "all"`` (or None) uses every row. The default,
``"auto"``, is 32 rows for a dense layer (DEFAULT_ROWS) and every patch for a
convolution, whose k × k update is cheap beside the convolution itself and
whose patches a stride over (sample, position) rows would not sample evenly.
The trade-off: each step's estimate of the input covariance is noisier (its
variance grows as 1/S), which the small learning rate η averages out over
steps; the expected update is unchanged. On the default job and on the
reference Fashion-MNIST settings 32 rows leave the test accuracy unchanged
(docs/benchmarks.md, "Decorrelation at a fraction of its cost").
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AfterValidator, Field

from ...backend.arrays import namespace
from ...backend.kernels import decorrelation_finish
from ...errors import IncompatibleSettings
from ...model.layers import Dense
from ...model.network import param_key
from ...params import PositiveFloat, Probability
from .base import Rule, require_capabilities

__all__ = ["Decorrelate", "decorrelate", "decorrelation_step", "DecorrelationRate", "Kappa", "DecorrelationRows",
           "DEFAULT_ROWS"]

#: η_R, the decorrelation learning rate
DecorrelationRate = Annotated[PositiveFloat, Field(description="decorrelation learning rate")]
#: κ in [0, 1]: how strongly the update also pulls input variances to 1
Kappa = Annotated[Probability, Field(description="variance pull")]
def _rows_setting(v):
    if v is None or v in ("auto", "all"):
        return v
    if isinstance(v, bool) or not isinstance(v, int) or v < 2:
        raise ValueError("must be 'auto', 'all' or a whole number of rows, at least 2")
    return v


#: rows of each update's layer inputs that estimate C: a number (at least 2), "all" (or None), or "auto"
DecorrelationRows = Annotated[object, AfterValidator(_rows_setting), Field(description="rows per decorrelation update")]
#: rows per dense layer's R update unless set: a 32-row estimate of C per step learns as well as the whole batch's
DEFAULT_ROWS = 32


def decorrelation_step(R, X, lr: float, kappa: float = 0.0):
    """One update R − η C R for inputs X (B, n) already decorrelated by R (n, n); returns the new R."""
    B, n = X.shape
    xp = namespace(X)
    var = xp.sum(X * X, axis=0) / B
    v = (1 - kappa) * var + kappa
    # C R · B = Xᵀ X R − B v ⊙ R; the cheaper association of Xᵀ X R first
    CR = X.T @ (X @ R) if B < n else (X.T @ X) @ R
    return decorrelation_finish(CR, R, xp.astype(v, R.dtype, copy=False), B, lr)


class Decorrelate(Rule):
    """Wrap any rule so that every decorrelating layer's R is learned alongside.

    ``decorrelate(anp())`` is DANP. The R update uses the clean pass's inputs
    and is returned in ``RuleOutput.assign`` (applied before the optimizer's
    weight step).
    """

    inner: Rule
    lr: DecorrelationRate = 1e-3
    kappa: Kappa = 0.0
    rows: DecorrelationRows = "auto"
    component: ClassVar[str] = "decorrelate"

    @property
    def name(self):  # type: ignore[override]
        return "d" + self.inner.name

    def check(self, net):
        if not net.decorrelated:
            raise IncompatibleSettings(f"{self.name}: the network has no decorrelating layer (set decorrelate on "
                                       f"its layers)")
        # what the wrapped rule needs, named as the rule the user chose (dnp, not np)
        require_capabilities(net, self.name, perturbation=getattr(self.inner, "injects", False), hidden=True)
        self.inner.check(net)

    def init_params(self, net, rng, backend):
        return self.inner.init_params(net, rng, backend)

    def __call__(self, net, params, x, y, rng):
        out = self.inner(net, params, x, y, rng)
        for i in net.decorrelated:
            k = param_key(i, "R")
            layer = net.layers[i]
            X = layer.decorrelation_rows(out.trace.inputs[i])
            rows = {"all": None, "auto": DEFAULT_ROWS if isinstance(layer, Dense) else None}.get(self.rows, self.rows)
            if rows is not None and X.shape[0] > rows:
                X = X[:: X.shape[0] // rows, ...][:rows, ...]  # spread over the batch (and image positions)
            out.assign[k] = decorrelation_step(params[k], X, self.lr, self.kappa)
        return out


def decorrelate(rule: Rule, lr: float = 1e-3, kappa: float = 0.0, rows: int | str | None = "auto") -> Decorrelate:
    """The decorrelated variant of ``rule`` (D-prefix: DNP, DINP, DANP, DBP); rows=None: every row."""
    return Decorrelate(rule, lr, kappa, rows)
