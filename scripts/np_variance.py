"""How noisy node perturbation's update is, against the number of units it perturbs at once.

At the initial weights of a config's network (default ``models/spiking-fmnist.toml``)
the rule's update G_l of every layer's W is drawn ``--draws`` times (fresh
perturbations) on each of ``--batches`` training batches. Writing g_jm for draw m
on batch j, per layer:

* perturbation noise  v_pert  = E_j (1/(M-1)) Σ_m ‖g_jm − ḡ_j‖²   (ḡ_j: the draws' mean on batch j)
* minibatch noise     v_batch = Var_j ḡ_j − v_pert / M            (what an exact batch gradient has too)
* signal              S       = ‖E ḡ‖²  (bias-corrected: ‖mean_j ḡ_j‖² − Var_j ḡ_j / J)

and the table reports, per network width, rule and layer: the number of perturbed
units whose noise reaches the loss that estimates the layer's update (N for NP,
ANP and their D-forms: every layer at once; n_l for INP; with local losses
n_0 + … + n_l, the layers up to l, whose noise reaches layer l's head), the signal-to-noise ratio of
one update S / (v_pert + v_batch), the expected cosine of one update with the
expected update √(SNR / (1 + SNR)), and v_pert / v_batch: how many times noisier
the perturbation makes the update than the batch's own sampling noise, i.e.
about how many independent noisy passes K (or times larger a batch) it would
take for the perturbation noise to fall to the level an exact-gradient method
(BPTT with a surrogate) starts from. Theory for NP with isotropic noise: v_pert
grows in proportion to the units perturbed, N + 2 per sample.

Usage:

    python scripts/np_variance.py                                  # spiking-fmnist, widths 64..512
    python scripts/np_variance.py --widths 256 --rules danp inp --draws 64
    python scripts/np_variance.py models/binary-fmnist.toml --widths 1000
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from npsim.backend.arrays import to_host
from npsim.experiment.assemble import build
from npsim.experiment.config import apply_overrides, load_config
from npsim.model.network import param_key

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "npsim" / "models" / "spiking-fmnist.toml"


def noise_budget(ex, params, rule, *, batch: int, batches: int, draws: int, seed: int) -> list[dict]:
    """Per layer: units perturbed, signal S, v_pert and v_batch of ``rule``'s W update (see the module doc).

    ex : a built experiment (its network, backend and training data); batch : rows per batch B.
    """
    net, B = ex.net, batch
    if batches * B > len(ex.y_train):
        raise ValueError(f"{batches} batches of {B} need {batches * B} training samples; there are "
                         f"{len(ex.y_train)}")
    rng_batches = np.random.default_rng([seed, 0xB47C])
    idx_all = rng_batches.permutation(len(ex.y_train))
    keys = [param_key(i, "W") for i in range(net.n_layers)]
    means = {k: [] for k in keys}
    within = {k: [] for k in keys}
    for j in range(batches):
        idx = idx_all[j * B:(j + 1) * B]
        x, y = ex.x_train[idx], ex.y_train[idx]
        total = {k: 0.0 for k in keys}
        sq = {k: 0.0 for k in keys}
        for m in range(draws):
            out = rule(net, params, x, y, ex.backend.stream(np.random.SeedSequence([seed, j, m])))
            for k in keys:
                g = to_host(out.grads[k]).astype(np.float64)
                total[k] = total[k] + g
                sq[k] += float(np.sum(g * g))
        for k in keys:
            mean = total[k] / draws
            means[k].append(mean)
            within[k].append((sq[k] - draws * float(np.sum(mean * mean))) / (draws - 1))
    rows = []
    for i, k in enumerate(keys):
        gbar = np.stack(means[k])  # (J, n_out, n_in)
        grand = gbar.mean(axis=0)
        between = float(np.sum((gbar - grand) ** 2)) / (batches - 1)  # Var_j ḡ_j
        v_pert = float(np.mean(within[k]))
        rows.append({"layer": i, "units": _perturbed(net, rule, i),
                     "signal": float(np.sum(grand * grand)) - between / batches,
                     "v_pert": v_pert, "v_batch": between - v_pert / draws})
    return rows


def _perturbed(net, rule, layer: int) -> int:
    """Perturbed units whose noise reaches the loss that estimates ``layer``'s update."""
    inner = getattr(rule, "inner", rule)  # a D-rule wraps its perturbation rule
    if inner.name == "inp":
        return net.layers[layer].n_units
    if getattr(inner, "local_losses", False):
        return sum(net.layers[i].n_units for i in range(layer + 1))
    return net.n_units


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG), help="npsim config (default: spiking-fmnist)")
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512],
                   help="hidden width (every hidden layer; default 64 128 256 512)")
    p.add_argument("--rules", nargs="+", default=None, help="rules (default: the config's and inp)")
    p.add_argument("--batches", type=int, default=8, help="training batches J (default 8)")
    p.add_argument("--draws", type=int, default=32, help="updates drawn per batch M (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = p.parse_args(argv)
    if args.batches < 2 or args.draws < 2:
        p.error("--batches and --draws must be at least 2")
    base = load_config(args.config)
    cfg = apply_overrides(base, args.set, unset=["train.monitor"] if base.train.monitor is not None else [])
    rules = args.rules or list(dict.fromkeys([cfg.rule.name, "inp"]))
    print(f"{cfg.name}: batch {cfg.train.batch_size}, sigma {cfg.rule.sigma}, K {cfg.rule.perturbations}, "
          f"{args.batches} batches x {args.draws} draws, initial weights (seed {args.seed})\n")
    lines = ["| hidden | rule | layer | units reaching its loss | SNR of one update | cos with expected | "
             "v_pert / v_batch |", "|---|---|---:|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for width in args.widths:
        for name in rules:
            c = apply_overrides(cfg, [f"network.hidden=[{', '.join([str(width)] * len(cfg.network.hidden))}]",
                                      f"rule.name={name}", f"seed={args.seed}"])
            ex = build(c)
            params, _ = ex.initial_state()  # the initial weights of a training run
            for r in noise_budget(ex, params, ex.rule, batch=c.train.batch_size, batches=args.batches,
                                  draws=args.draws, seed=args.seed):
                snr = r["signal"] / (r["v_pert"] + r["v_batch"])
                cos = math.sqrt(max(snr, 0.0) / (1 + max(snr, 0.0)))
                # v_batch is a difference of two estimates: where it is not resolved, say so
                ratio = f"{r['v_pert'] / r['v_batch']:.3g}" if r["v_batch"] > 0 else "unresolved (v_batch <= 0)"
                line = f"| {width} | {name} | {r['layer']} | {r['units']} | {snr:.3g} | {cos:.3f} | {ratio} |"
                lines.append(line)
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
