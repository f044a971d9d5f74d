"""Where one npsim training step spends its time: wall time per part, and page faults.

Times the benchmark step of ``scripts/bench_rules.py`` (same network, rule
and data) with timers around its parts: the forward products (``drive``,
bias included when not fused), the decorrelation products (``layer_input``),
the fused bias + perturbation + node kernel (``drive_activate``), the update
products (``weight_grad``), the signal scaling, the Gaussian draws, the
decorrelation update and Adam. "other" is the rest of the step (losses,
Python). Also prints the minor page faults per step.

Usage:

    python scripts/profile_step.py --rule np --batch 256
    python scripts/profile_step.py --rule danp --batch 1024 --steps 20
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # BLAS reads the thread count when it loads
    for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_v, str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))

import argparse  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_rules  # noqa: E402

import npsim.learn.rules.decorrelation  # noqa: E402
import npsim.learn.rules.perturbation  # noqa: E402
import npsim.model.network  # noqa: E402
from npsim.backend import RandomStream, kernels  # noqa: E402
from npsim.model import layers  # noqa: E402

PARTS = [
    (layers.Dense, "drive", "forward products"),
    (layers.Dense, "layer_input", "decorrelation products"),
    (layers.Dense, "folded_weight", "decorrelation products"),
    (npsim.model.network, "drive_activate", "bias+perturbation+node kernel"),
    (layers.Dense, "weight_grad", "update products"),
    (npsim.learn.rules.perturbation, "scale_rows", "signal scaling"),
    (RandomStream, "normal", "Gaussian draws"),
    (npsim.learn.rules.decorrelation, "decorrelation_step", "decorrelation update"),
    (kernels, "adam_step", "Adam"),
]


def instrument(totals: dict) -> None:
    """Wrap every part in PARTS with a timer adding into ``totals``."""
    for owner, name, label in PARTS:
        fn = getattr(owner, name)

        def timed(*a, _fn=fn, _label=label, **k):
            t0 = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                totals[_label] = totals.get(_label, 0.0) + time.perf_counter() - t0

        setattr(owner, name, timed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rule", default="np", choices=bench_rules.ALL_RULES)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--sizes", type=bench_rules.parse_sizes, default=bench_rules.SIZES)
    ap.add_argument("--perturbations", type=int, default=None, help="noisy passes per clean pass (rule default)")
    ap.add_argument("--decorrelation-rows", type=int, default=None, help="rows per R update (rule default)")
    args = ap.parse_args(argv)
    kw = {k: v for k, v in (("perturbations", args.perturbations), ("decorrelation_rows", args.decorrelation_rows))
          if v is not None}
    totals: dict = {}
    instrument(totals)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.sizes[0]), dtype=np.float32)
    y = rng.integers(0, args.sizes[-1], args.batch)
    step = bench_rules.NpsimStep(args.sizes, args.rule, x, y, **kw)
    for _ in range(3):
        step()
    totals.clear()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    total = (time.perf_counter() - t0) / args.steps * 1e3
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.steps
    print(f"{args.rule} batch {args.batch}: {total:.1f} ms per step, {faults:,.0f} page faults per step")
    parts = sorted(((v / args.steps * 1e3, k) for k, v in totals.items()), reverse=True)
    for ms, label in parts:
        print(f"  {label:32s} {ms:7.1f} ms  {ms / total:6.1%}")
    other = total - sum(ms for ms, _ in parts)
    print(f"  {'other':32s} {other:7.1f} ms  {other / total:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
