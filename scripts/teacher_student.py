"""Compare BP and the node-perturbation family on teacher-student regression.

A tanh student learns a random tanh teacher from correlated Gaussian inputs.
Every rule gets the same number of updates and the same optimizer (Adam); its
learning rate is tuned on a separate tuning seed from a small grid. Prints the
final training loss (mean ± sd over seeds) per rule.

    python scripts/teacher_student.py            # tune, then the table over 5 seeds (a few minutes)
    python scripts/teacher_student.py --no-tune  # use the learning rates found before
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from npsim.backend import get_backend
from npsim.io.data.synthetic import teacher_student
from npsim.learn.optim import adam
from npsim.learn.rules import make_rule
from npsim.learn.step import evaluate, fit
from npsim.model import mlp

RULES = ("bp", "np", "inp", "anp", "dnp", "dinp", "danp")
SIZES = (30, 60, 60, 10)
GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
#: learning rates picked by the tuning run (python scripts/teacher_student.py)
TUNED = {"bp": 1e-2, "np": 1e-3, "inp": 1e-3, "anp": 1e-3, "dnp": 3e-3, "dinp": 3e-3, "danp": 3e-3}


SIGMA = 1e-3
CORRELATION = 0.8
INIT = "he"


def run(rule: str, lr: float, seed: int, steps: int, batch: int = 64) -> float:
    """Final loss on the whole training set after ``steps`` updates."""
    be = get_backend("numpy", "float64")
    x, y = teacher_student(2048, SIZES, seed=1000 + seed, input_correlation=CORRELATION)
    dec = rule.startswith("d")
    net = mlp(SIZES, "tanh", "linear", "mse", decorrelate=dec)
    params = net.init(be.stream(seed), be, scheme=INIT)
    kw = {} if rule == "bp" else {"sigma": SIGMA}
    r = make_rule(rule, decorrelation_lr=1e-3, **kw)
    params, _ = fit(net, r, adam(lr), params, x, y, backend=be, seed=seed, steps=steps, batch_size=batch)
    loss = evaluate(net, params, be.asarray(x), be.asarray(y))[0]
    return loss if np.isfinite(loss) else float("inf")


def tune(rule: str, steps: int, seed: int = 99) -> float:
    scores = {lr: run(rule, lr, seed, steps) for lr in GRID}
    return min(scores, key=scores.get)


def table(steps: int = 3000, seeds=(0, 1, 2), tuned: dict | None = None) -> dict:
    """{rule: {"lr": lr, "loss": [per seed]}}, learning rates tuned unless ``tuned`` is given."""
    out = {}
    for rule in RULES:
        lr = tuned[rule] if tuned else tune(rule, steps)
        out[rule] = {"lr": lr, "loss": [run(rule, lr, s, steps) for s in seeds]}
    return out


def main():
    global SIZES, SIGMA, CORRELATION, INIT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--no-tune", action="store_true", help="use the learning rates in TUNED")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--sizes", default="-".join(map(str, SIZES)), help="student and teacher widths, e.g. 30-60-60-10")
    ap.add_argument("--sigma", type=float, default=SIGMA, help="perturbation scale")
    ap.add_argument("--correlation", type=float, default=CORRELATION, help="pairwise input correlation")
    ap.add_argument("--init", default=INIT, choices=["he", "lecun", "xavier"], help="student weight init")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    SIZES = tuple(int(v) for v in args.sizes.split("-"))
    SIGMA, CORRELATION, INIT = args.sigma, args.correlation, args.init
    res = table(args.steps, seeds=tuple(range(args.seeds)), tuned=TUNED if args.no_tune else None)
    print(f"teacher-student {args.sizes} tanh, inputs correlated {CORRELATION}, sigma {SIGMA}, "
          f"init {INIT}, {args.steps} Adam updates, batch 64, {args.seeds} seeds")
    print(f"{'rule':6s} {'lr':>8s} {'final loss (mean ± sd)':>26s}")
    for rule, r in res.items():
        l = np.array(r["loss"])
        print(f"{rule:6s} {r['lr']:8.0e} {l.mean():14.4f} ± {l.std(ddof=1):.4f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
