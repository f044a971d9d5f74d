"""Cost of one training step of a spiking MLP against the number of time steps T.

One DANP update (clean pass, perturbed pass, decorrelation, Adam) of the
784-256-256-10 LIF network of ``models/spiking-fmnist.toml`` on a random batch,
for T = 25, 50, 100, 200 (by default). Prints, per T, the median step time,
time per time step, and the peak memory the step allocates (tracemalloc,
which sees every NumPy buffer), each as a ratio to the smallest T.

    python scripts/bench_spiking.py [--steps 25 50 100 200] [--batch 128] [--repeats 5] [--backend cupy]

Memory should be flat in T (the time loop keeps only membrane state and
running sums) and time at most linear in T. The last column times the same
step with the membrane kernel parallel over samples (``simulation.parallel``).
With ``--backend cupy`` the step runs on the GPU (the CUDA membrane kernel,
one thread per sample and unit); peak memory and the parallel column are then
left out (tracemalloc sees host memory only).
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np

from npsim.backend import get_backend
from npsim.experiment.assemble import build_network
from npsim.experiment.config import load_config, models_dir, rule_from_config
from npsim.learn.optim import adam
from npsim.learn.step import train_step, trainable
from npsim.model.spiking import Simulation


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[25, 50, 100, 200], help="values of T")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per T (median reported)")
    ap.add_argument("--config", default=str(models_dir() / "spiking-fmnist.toml"))
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy", "array-api-strict"])
    args = ap.parse_args(argv)

    cfg = load_config(args.config)
    be = get_backend(args.backend, "float32")
    gpu = be.name == "cupy"

    def sync():
        if gpu:
            import cupy

            cupy.cuda.Device().synchronize()

    net = build_network(cfg, 784, 10)
    rule = rule_from_config(cfg.rule)
    stream = be.stream(0)
    x = be.xp.abs(stream.normal((args.batch, 784)))
    y = be.asarray(np.arange(args.batch) % 10, dtype=np.int64)
    print(f"{net.describe()}\nrule {rule.name}, batch {args.batch}, median of {args.repeats} steps\n")
    rows = []
    for T in args.steps:
        timings, peak = {}, float("nan")
        for parallel in (False,) if args.backend != "numpy" else (False, True):
            net.simulation = Simulation(**{**cfg.network.simulation.model_dump(), "steps": T, "parallel": parallel})
            params = {**net.init(be.stream(1), be), **rule.init_params(net, be.stream(3), be)}  # local losses' heads
            opt = adam(1e-3)
            state, rng = opt.init(trainable(params)), be.stream(2)
            params, state, _ = train_step(net, rule, opt, params, state, x, y, rng)  # warm-up (compiles kernels)
            times = []
            for _ in range(args.repeats):
                sync()
                t0 = time.perf_counter()
                params, state, _ = train_step(net, rule, opt, params, state, x, y, rng)
                sync()
                times.append(time.perf_counter() - t0)
            timings[parallel] = statistics.median(times)
            timings.setdefault(True, float("nan"))
            if not parallel and args.backend == "numpy":
                tracemalloc.start()
                params, state, _ = train_step(net, rule, opt, params, state, x, y, rng)
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
        rows.append((T, timings[False], peak, timings[True]))
    T0, t0, p0, _ = rows[0]
    print(f"{'T':>5} {'step ms':>9} {'ms per step of T':>17} {'time / T0':>10} {'T / T0':>7} "
          f"{'peak MiB':>9} {'peak / T0':>10} {'parallel kernel ms':>19}")
    for T, t, peak, tp in rows:
        print(f"{T:>5} {1e3 * t:>9.1f} {1e3 * t / T:>17.3f} {t / t0:>10.2f} {T / T0:>7.1f} "
              f"{peak / 2**20:>9.2f} {peak / p0:>10.3f} {1e3 * tp:>19.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
