"""The reproduction study: BP, NP, INP, ANP, DNP, DINP and DANP on Fashion-MNIST, over seeds.

For each architecture (``models/reproduce-mlp.toml``: 3 hidden layers;
``models/reproduce-conv.toml``: a small conv net):

1. tune the Adam learning rate of every rule on a validation split (the last
   10,000 training images; the test set is not looked at), one tuning seed,
   runs as long as the final ones (a short tuning run favours rates that are
   unstable later);
2. train every rule with its tuned rate for ``--seeds`` seeds on the full
   training set and evaluate on the test set;
3. write ``docs/results.md``: the table (train and test accuracy, mean ± sd
   over seeds), learning curves and BP-alignment figures, the commands, and the
   paper's qualitative findings checked against ours.

Every run is a task of an ``npsim sweep`` (a Dask LocalCluster of ``--workers``
processes); the runs, sweep files and indexes land in ``--out``. Re-running
skips finished runs, so an interrupted study resumes where it stopped.

    python scripts/reproduce.py                      # both architectures, 3 seeds
    python scripts/reproduce.py --archs mlp --seeds 5

Text below the line ``<!-- discussion -->`` of an existing results file is
kept, so a hand-written discussion survives re-runs.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from npsim.analysis import curves
from npsim.experiment.config import load_config, models_dir
from npsim.experiment.sweep import load_sweep_file, run_sweep
from npsim.io.trajectory import read_trajectory

RULES = ["bp", "np", "inp", "anp", "dnp", "dinp", "danp"]
ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- discussion -->"


def _toml_value(v) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def write_sweep(path: Path, name: str, base: Path, seeds, grid: dict, fixed: dict, out: Path) -> Path:
    """Write a sweep file (see docs/sweeps.md)."""
    lines = [f'name = "{name}"', f'base = "{base}"', f"seeds = {_toml_value(list(seeds))}", f'out = "{out}"',
             "", "[grid]"]
    lines += [f'"{k}" = {_toml_value(v)}' for k, v in grid.items()]
    lines += ["", "[set]"] + [f'"{k}" = {_toml_value(v)}' for k, v in fixed.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def sweep(path: Path, workers: int):
    rows = run_sweep(load_sweep_file(path), workers=workers)
    bad = [r for r in rows if r["status"] != "finished"]
    if bad:
        print(f"reproduce: {len(bad)} runs of {path.name} did not finish: "
              + "; ".join(f"{r['run']}: {r['status']} {r['message']}" for r in bad), file=sys.stderr)
    return rows


def tune(arch: str, base: Path, out: Path, rules, lrs, epochs: int | None, workers: int, validation: int) -> dict:
    """Best Adam lr per rule by final validation accuracy (one tuning seed; ``epochs`` None: the config's)."""
    if epochs is None:
        epochs = load_config(base).train.epochs
    path = write_sweep(out / f"{arch}-tune{epochs}.toml", f"{arch}-tune{epochs}", base, [100],
                       {"rule.name": rules, "optimizer.lr": lrs},
                       {"data.validation": validation, "train.epochs": epochs, "train.diagnostics_every": 0},
                       out / f"{arch}-tune{epochs}")
    rows = sweep(path, workers)
    best = {}
    for rule in rules:
        cand = [r for r in rows if r["rule.name"] == rule and math.isfinite(r["final_test_accuracy"])]
        if cand:
            top = max(cand, key=lambda r: r["final_test_accuracy"])
            best[rule] = (top["optimizer.lr"], {r["optimizer.lr"]: r["final_test_accuracy"] for r in cand})
    return best


def final(arch: str, base: Path, out: Path, best: dict, seeds: int, workers: int) -> dict:
    """Per rule: the index rows of its ``seeds`` runs with the tuned lr."""
    results = {}
    for rule, (lr, _) in best.items():
        path = write_sweep(out / f"{arch}-{rule}.toml", f"{arch}-{rule}", base, list(range(seeds)),
                           {"rule.name": [rule], "optimizer.lr": [lr]}, {}, out / f"{arch}-{rule}")
        results[rule] = [r for r in sweep(path, workers) if r["status"] == "finished"]
    return results


# --------------------------------------------------------------------------- summary


def _ms(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def summarise(results: dict) -> dict:
    """Per rule: mean ± sd of final train/test accuracy, per-layer mean alignment, n seeds."""
    out = {}
    for rule, rows in results.items():
        if not rows:
            continue
        trajs = [read_trajectory(r["path"], snapshots=False) for r in rows]
        cs = [curves(t) for t in trajs]
        align = [np.nanmean(c["alignment"], axis=0) if c["alignment"].size else None for c in cs]
        out[rule] = {
            "n": len(rows),
            "train": _ms([c["train_accuracy"][-1] for c in cs]),
            "test": _ms([c["test_accuracy"][-1] for c in cs]),
            "gap": _ms([c["train_accuracy"][-1] - c["test_accuracy"][-1] for c in cs]),
            "alignment": None if any(a is None for a in align) else np.mean(align, axis=0),
            "curves": cs,
            "wall": float(np.mean([c["epoch_wall_time"][-1] for c in cs])),
        }
    return out


def plot(arch: str, summ: dict, fig_dir: Path) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    palette = dict(zip(("bp", "np", "inp", "anp"), plt.get_cmap("tab10").colors))

    def color(rule):  # a decorrelated variant shares its base rule's colour
        return palette[rule[1:] if rule.startswith("d") and rule[1:] in palette else rule]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for rule, s in summ.items():
        for ax, key in zip(axes, ("train_accuracy", "test_accuracy")):
            ep = s["curves"][0]["epoch"]
            ys = np.array([c[key] for c in s["curves"]])
            ls = "--" if rule.startswith("d") else "-"
            ax.plot(ep, ys.mean(axis=0), ls, color=color(rule), label=rule.upper(), lw=1.8)
            ax.fill_between(ep, ys.min(axis=0), ys.max(axis=0), color=color(rule), alpha=0.15)
    for ax, title in zip(axes, ("train accuracy (10,000 training images)", "test accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(ncol=2, fontsize=9)
    fig.suptitle(f"Fashion-MNIST, {arch}: mean over seeds (band: min to max); dashed: decorrelated")
    curves_png = fig_dir / f"results-{arch}-curves.png"
    fig.savefig(curves_png, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    ranked = [r for r in RULES if r in summ and r != "bp" and summ[r]["alignment"] is not None]
    L = len(summ[ranked[0]]["alignment"]) if ranked else 0
    width = 0.8 / max(len(ranked), 1)
    for j, rule in enumerate(ranked):
        ax.bar(np.arange(L) + j * width, summ[rule]["alignment"], width,
               color=color(rule), hatch="//" if rule.startswith("d") else None,
               edgecolor="white", label=rule.upper())
    ax.set_xticks(np.arange(L) + 0.4 - width / 2, [f"layer {i + 1}" for i in range(L)])
    ax.set_ylabel("cosine with the BP gradient")
    ax.set_title(f"{arch}: alignment of the update with BP (mean over the run and seeds)")
    ax.axhline(0, color="k", lw=0.8)
    ax.legend(ncol=3, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    align_png = fig_dir / f"results-{arch}-alignment.png"
    fig.savefig(align_png, dpi=110)
    plt.close(fig)
    return curves_png, align_png


def findings(summ: dict) -> list[str]:
    """The paper's qualitative claims, each checked against our numbers."""
    lines = []

    def acc(rule, split="test"):
        return summ[rule][split][0] if rule in summ else float("nan")

    pairs = [(r, "d" + r) for r in ("np", "inp", "anp") if r in summ and "d" + r in summ]
    helped = [f"{d.upper()} {acc(d):.4f} vs {r.upper()} {acc(r):.4f}" for r, d in pairs]
    ok = all(acc(d) > acc(r) for r, d in pairs)
    lines.append(f"* *Decorrelation helps every NP variant* (test accuracy): {'holds' if ok else 'does not hold'} "
                 f"here — {'; '.join(helped)}.")

    def mean_align(rule):
        a = summ.get(rule, {}).get("alignment")
        return float(np.mean(a)) if a is not None else float("nan")

    ok = mean_align("inp") > mean_align("np") and mean_align("anp") > mean_align("np")
    if all(r in summ for r in ("np", "inp", "anp")):
        lines.append(f"* *INP and ANP align with BP far better than NP* (mean cosine over layers): "
                     f"{'holds' if ok else 'does not hold'} here — NP {mean_align('np'):.3f}, INP "
                     f"{mean_align('inp'):.3f}, ANP {mean_align('anp'):.3f} (decorrelated: DNP "
                     f"{mean_align('dnp'):.3f}, DINP {mean_align('dinp'):.3f}, DANP {mean_align('danp'):.3f}).")
    if "bp" in summ and "danp" in summ:
        lines.append(f"* *DANP approaches BP on the training set, with a larger generalisation gap*: train "
                     f"accuracy DANP {acc('danp', 'train'):.4f} vs BP {acc('bp', 'train'):.4f}; gap (train − "
                     f"test) DANP {summ['danp']['gap'][0]:+.4f} vs BP {summ['bp']['gap'][0]:+.4f}.")
    return lines


def write_results(path: Path, study: dict, command: str, elapsed: float, configs: Path, validation: int) -> None:
    keep = ""
    if path.is_file() and MARK in path.read_text():
        keep = path.read_text().split(MARK, 1)[1]
    out = ["# Reproduction study: node perturbation on Fashion-MNIST", "",
           "Produced by `scripts/reproduce.py` (all numbers and figures below come from its runs):", "",
           f"    {command}", "",
           f"Total wall time {elapsed / 60:.0f} min. Every run's trajectory file, the sweep files and their "
           "indexes are in the output folder (`npsim compare <folder>` lists them).", ""]
    for arch, (best, summ, figs, seeds) in study.items():
        cfg = configs / f"reproduce-{arch}.toml"
        cfg = cfg.relative_to(ROOT) if cfg.is_relative_to(ROOT) else cfg
        out += [f"## {arch.upper()} (`{cfg}`)", "",
                f"Adam learning rate per rule, tuned on a validation split (the last {validation:,} training "
                "images, one seed, as many epochs as a final run; validation accuracy shown per rate):", ""]
        out += ["| rule | tuned lr | validation accuracy per lr |", "|---|---|---|"]
        for rule, (lr, scores) in best.items():
            sc = ", ".join(f"{k:g}: {v:.4f}" for k, v in sorted(scores.items()))
            out.append(f"| {rule.upper()} | {lr:g} | {sc} |")
        out += ["", f"Final runs: {seeds} seeds each (mean ± sd), the config's training set, test set:", "",
                "| rule | train accuracy | test accuracy | train − test | BP alignment per layer | s per run |",
                "|---|---|---|---|---|---|"]
        for rule in RULES:
            if rule not in summ:
                continue
            s = summ[rule]
            al = "—" if s["alignment"] is None or rule == "bp" else ", ".join(f"{a:.3f}" for a in s["alignment"])
            out.append(f"| {rule.upper()} | {s['train'][0]:.4f} ± {s['train'][1]:.4f} | "
                       f"{s['test'][0]:.4f} ± {s['test'][1]:.4f} | {s['gap'][0]:+.4f} | {al} | {s['wall']:.0f} |")
        curves_png, align_png = figs
        out += ["", f"![learning curves]({curves_png.relative_to(path.parent)})", "",
                f"![alignment with BP]({align_png.relative_to(path.parent)})", "",
                "The paper's findings, checked:", ""] + findings(summ) + [""]
    out += [MARK + (keep if keep else "\n")]
    path.write_text("\n".join(out))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=["mlp", "conv"], choices=["mlp", "conv"])
    ap.add_argument("--rules", nargs="+", default=RULES, choices=RULES)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3],
                    help="tuning grid of Adam lrs")
    ap.add_argument("--tune-epochs", type=int, default=None,
                    help="epochs of a tuning run (default: as many as a final run)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "reproduce")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "results.md")
    ap.add_argument("--configs", type=Path, default=models_dir(), help="folder of reproduce-<arch>.toml")
    ap.add_argument("--validation", type=int, default=10000, help="training images held out for tuning")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    fig_dir = args.docs.parent / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    study = {}
    for arch in args.archs:
        base = (args.configs / f"reproduce-{arch}.toml").resolve()
        best = tune(arch, base, args.out, args.rules, args.lrs, args.tune_epochs, args.workers, args.validation)
        results = final(arch, base, args.out, best, args.seeds, args.workers)
        summ = summarise(results)
        study[arch] = (best, summ, plot(arch, summ, fig_dir), args.seeds)
    command = "python scripts/reproduce.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_results(args.docs, study, command.strip(), time.perf_counter() - t0, args.configs.resolve(), args.validation)
    print(args.docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
