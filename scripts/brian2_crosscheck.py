"""Firing rates of npsim's LIF layer against the same layer simulated by Brian2 (the substrate of npsim[brian2]).

One LIF layer, driven by constant input currents i (reset to zero, v(0) = 0),
simulated for T steps of dt by npsim and by the Brian2 substrate with each of
two integrators, and the spike counts compared with what each integration
scheme predicts. Both schemes step the membrane as v ← a v + (1 − a) i with

    a = exp(−dt/τ)   Brian2 "exact" and npsim (the exact solution for i held within a step)
    a = 1 − dt/τ     Brian2 "euler"

so v_n = i (1 − a^n), the first spike falls on step n* = ⌈ln(1 − θ/i) / ln a⌉
(θ the threshold), every later one n* steps after the previous, and the count
over T steps is ⌊T / n*⌋. npsim and Brian2 "exact" compute the same map, so
their counts must be equal, except at a tie (ln(1 − θ/i)/ln a within 1e-9 of
a whole number, where the last bit of a decides the step); Brian2 "euler" must
give its own predicted count, which differs from npsim's by the shortening of
the interspike interval by the factor −(dt/τ)/ln(1 − dt/τ) ≈ 1 − dt/(2τ).

With membrane noise (std s per step), counts are random: the mean counts of n
independent units must agree within 5 standard errors of their difference
plus Euler's rate excess, ln(1 − dt/τ)/(−dt/τ) − 1 of the mean (5.4 % at
dt/τ = 0.1; the per-step noise of the two schemes differs by the same order).

    python scripts/brian2_crosscheck.py          # prints the table (needs npsim[brian2])
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from npsim.backend import get_backend
from npsim.model import LIF, Dense, Network, Simulation, make_loss, make_node
from npsim.model.brian2_substrate import Brian2Substrate

SETTINGS = [(5.0, 1.0), (10.0, 1.0), (20.0, 0.5)]  # (tau ms, threshold)
CURRENTS = np.array([0.6, 0.9, 1.05, 1.2, 1.5, 2.0, 3.0, 5.0, 8.0])  # in units of the threshold


def predicted_count(i: float, threshold: float, a: float, steps: int) -> tuple[int, bool]:
    """(spike count over ``steps`` steps of v ← a v + (1 − a) i from v = 0 with reset to 0, whether a tie)."""
    if i <= threshold:
        return 0, False
    ratio = math.log(1 - threshold / i) / math.log(a)
    tie = abs(ratio - round(ratio)) < 1e-9
    return steps // math.ceil(ratio - 1e-12), tie


def euler_excess(h: float) -> float:
    """How much faster Euler fires than the exact step for suprathreshold constant drive, h = dt/τ:
    its interspike interval is shorter by the factor −h/ln(1 − h), so its rate is higher by ln(1 − h)/(−h) − 1."""
    return math.log(1 - h) / -h - 1


def _layer(currents, tau, threshold, steps, dt, noise=0.0):
    node = LIF(tau=tau, threshold=threshold, membrane_noise=noise, readout="count")
    net = Network([Dense(1, len(currents), node), Dense(len(currents), 1, make_node("linear"))], make_loss("mse"),
                  simulation=Simulation(steps=steps, dt=dt))
    be = get_backend("numpy", "float64")
    params = net.init(be.stream(0), be)
    params["layer0/W"] = np.asarray(currents, np.float64)[:, None]  # input 1 through weight i: current i
    return net, params, be


def counts(currents, tau, threshold, *, steps=1000, dt=1.0, noise=0.0, seed=0):
    """Spike counts per current: npsim, Brian2 exact (None with noise) and Brian2 euler."""
    net, params, be = _layer(currents, tau, threshold, steps, dt, noise)
    x = np.ones((1, 1))
    own = net.forward(params, x, np.zeros(1, np.int64), rng=be.stream(seed)).inputs[1][0]
    out = {"npsim": own}
    for method in (["euler"] if noise else ["exact", "euler"]):
        m = Brian2Substrate(net, method=method).run(params, x, rng=be.stream(seed))
        out[method] = m.inputs[1][0]
    return out


def table(steps=1000, dt=1.0):
    """Rows of the noiseless comparison: one per (tau, threshold, current)."""
    rows = []
    for tau, thr in SETTINGS:
        got = counts(CURRENTS * thr, tau, thr, steps=steps, dt=dt)
        for k, i in enumerate(CURRENTS * thr):
            exact, tie = predicted_count(i, thr, math.exp(-dt / tau), steps)
            euler, tie_e = predicted_count(i, thr, 1 - dt / tau, steps)
            rows.append({"tau": tau, "threshold": thr, "current": float(i), "npsim": int(got["npsim"][k]),
                         "brian2_exact": int(got["exact"][k]), "brian2_euler": int(got["euler"][k]),
                         "predicted_exact": exact, "predicted_euler": euler, "tie": tie or tie_e})
    return rows


def noisy_rows(n=400, steps=1000, dt=1.0, noise=0.5):
    """Mean counts of n units per current with membrane noise: npsim against Brian2 euler."""
    rows = []
    tau, thr = 10.0, 1.0
    for i in (0.8, 1.0, 1.5, 3.0):
        got = counts(np.full(n, i), tau, thr, steps=steps, dt=dt, noise=noise)
        a, b = got["npsim"], got["euler"]
        se = math.sqrt(a.var(ddof=1) / n + b.var(ddof=1) / n)
        rows.append({"current": i, "npsim_mean": float(a.mean()), "brian2_mean": float(b.mean()), "se": se,
                     "bound": 5 * se + euler_excess(dt / tau) * float(a.mean())})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--dt", type=float, default=1.0)
    a = p.parse_args(argv)
    print(f"spike counts over {a.steps} steps of {a.dt:g} ms (reset to 0, constant current i)")
    print(f"{'tau':>5} {'thr':>4} {'i':>6} | {'npsim':>6} {'b2 exact':>8} {'pred':>5} | {'b2 euler':>8} {'pred':>5}"
          f" | {'rate diff %':>11}")
    for r in table(a.steps, a.dt):
        diff = 100 * (r["brian2_euler"] - r["npsim"]) / r["npsim"] if r["npsim"] else 0.0
        print(f"{r['tau']:5g} {r['threshold']:4g} {r['current']:6.3g} | {r['npsim']:6d} {r['brian2_exact']:8d} "
              f"{r['predicted_exact']:5d} | {r['brian2_euler']:8d} {r['predicted_euler']:5d} | {diff:11.2f}"
              + ("  (tie)" if r["tie"] else ""))
    print("\nwith membrane noise 0.5 (tau 10, threshold 1, 400 units): mean count, npsim vs Brian2 euler")
    for r in noisy_rows(steps=a.steps, dt=a.dt):
        d = r["brian2_mean"] - r["npsim_mean"]
        print(f"  i {r['current']:4g}: npsim {r['npsim_mean']:7.2f}  brian2 {r['brian2_mean']:7.2f}  "
              f"difference {d:+6.2f} ({d / r['se'] if r['se'] else 0.0:+.1f} standard errors; bound {r['bound']:.2f})")


if __name__ == "__main__":
    main()
