"""Which Brian2 mode trains fastest: time one training pass of models/brian2-fmnist.toml's network.

A DANP update on the Brian2 substrate is one Brian2 run of (1 + K)·B copies of
the batch (B = 50, K = 1: 100 copies of 196 -> LIF64 -> LIF64, T = 20 steps of
1 ms, 409,600 synapses). Each mode runs in its own process (Brian2's device is
global), builds once, then times ``--passes`` passes with new weights and
currents each, as training does:

* runtime/numpy, full gc — Brian2's own ``Network.run``, which starts with a
  full garbage collection;
* runtime/numpy — the substrate as shipped (youngest generation only);
* runtime/cython — compiled code objects;
* cpp_standalone — the network compiled once into a C++ program, each pass a
  new process given the weights and currents as ``run_args`` files.

Prints the median seconds per pass and the ratio to the shipped mode.

    python scripts/bench_brian2.py [--passes 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

MODES = ["runtime/numpy, full gc", "runtime/numpy", "runtime/cython", "cpp_standalone"]

WORKER = r"""
import json, sys, time, gc
import numpy as np
mode, passes = sys.argv[1], int(sys.argv[2])
import brian2 as b2
from npsim.backend import get_backend
from npsim.model import LIF, Dense, Network, Simulation, make_loss, make_node
from npsim.model import brian2_substrate
from npsim.model.brian2_substrate import Brian2Substrate
be = get_backend("numpy", "float32")
lif = LIF(tau=10.0, threshold=0.1)
net = Network([Dense(196, 64, lif), Dense(64, 64, lif), Dense(64, 10, make_node("linear"))],
              make_loss("cross_entropy"), simulation=Simulation(steps=20))
rng = np.random.default_rng(0)
x = rng.standard_normal((50, 196)).astype(np.float32)
def params(seed):
    return net.init(be.stream(seed), be)
times = []
if mode == "cpp_standalone":
    import tempfile
    b2.set_device("cpp_standalone", build_on_run=False, directory=tempfile.mkdtemp())
    sub = Brian2Substrate(net)
    network, groups, syn = sub._build(100)
    network.run(20 * b2.ms)
    t = time.perf_counter(); b2.device.build(run=False); build = time.perf_counter() - t
    for k in range(passes + 1):
        p = params(k)
        t = time.perf_counter()
        I0 = np.tile(x @ p["layer0/W"].T + p["layer0/b"], (2, 1)).astype(np.float64).ravel()
        I1 = np.tile(p["layer1/b"], 100).astype(np.float64)
        w = np.tile(p["layer1/W"].T.astype(np.float64).ravel(), 100)
        b2.device.run(run_args={groups[0].I: I0, groups[1].I: I1, syn[0].w: w})
        counts = np.asarray(groups[1].count[:])
        if k:
            times.append(time.perf_counter() - t)
    print(json.dumps({"times": times, "build": build, "rate": float(counts.mean()) / 20}))
    sys.exit()
sub = Brian2Substrate(net, target="cython" if mode == "runtime/cython" else "numpy")
if mode == "runtime/numpy, full gc":
    import contextlib
    brian2_substrate._young_garbage_collection = lambda b2mod: contextlib.nullcontext()
junk = [[i] for i in range(300000)]  # a training process holds many objects (data, arrays, modules)
t = time.perf_counter(); m = sub.run(params(0), x, repeats=2); build = time.perf_counter() - t
for k in range(passes):
    p = params(k + 1)
    t = time.perf_counter(); m = sub.run(p, x, repeats=2); times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "build": build, "rate": float(m.inputs[2].mean())}))
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--passes", type=int, default=10)
    p.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    a = p.parse_args(argv)
    results = {}
    for mode in a.modes:
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run([sys.executable, "-c", WORKER, mode, str(a.passes)], capture_output=True, text=True,
                                 cwd=d)
        if out.returncode:
            print(f"{mode}: failed ({out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode})")
            continue
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    ref = results.get("runtime/numpy")
    print(f"{'mode':<24} {'build s':>8} {'s/pass':>8} {'vs shipped':>10}  layer-2 rate")
    for mode, r in results.items():
        med = sorted(r["times"])[len(r["times"]) // 2]
        ratio = med / sorted(ref["times"])[len(ref["times"]) // 2] if ref else float("nan")
        print(f"{mode:<24} {r['build']:8.2f} {med:8.4f} {ratio:10.2f}  {r['rate']:.4f}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"(total {time.perf_counter() - t0:.0f} s)")
