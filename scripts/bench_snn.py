"""A spiking (or binary) MLP trained by npsim's node perturbation against snnTorch's surrogate-gradient BPTT.

Both train the network of a config (default ``models/spiking-fmnist.toml``:
784-LIF256-LIF256-10, T = 20 steps of 1 ms, current input, rate read-out) on
the same data, in the same shuffled batches, from the same initial weights,
for the same training time (``--budget`` seconds, evaluation excluded), and
are evaluated on the whole test set every ``--eval-every`` seconds of training
and at the end. Prints one table (test accuracy at the end of the budget, per
implementation and variant: mean, and every seed) and writes a figure of test
accuracy against training time (``--out``).

npsim runs the config as ``npsim train`` would (its rule, optimizer, schedule
and frozen layers; a scheduled learning rate ends after the config's
``train.epochs``, and so does the run), one ``npsim.learn.train_step`` per batch. ``--variant
NAME:KEY=VALUE,KEY=VALUE`` adds npsim runs with config overrides (the
``--set`` syntax), e.g. ``--variant "antithetic:rule.perturbations=2,rule.antithetic=true"``;
the levers these measure are discussed in ``docs/spiking.md``.

The snnTorch reference (``SnnTorchMLP``) is the same network as a snnTorch
user writes it: ``nn.Linear`` layers, ``snn.Leaky`` units with beta =
exp(-dt/tau), the config's threshold, reset to zero without delay (npsim resets
in the step a unit fires), the input current scaled by (1 - beta) as npsim's
exact integration of tau dv/dt = -v + i does, the spike count of the last
hidden layer over T steps divided by T into the linear read-out; backprop
through time with snnTorch's fast-sigmoid surrogate (slope 25) and
``torch.optim.Adam`` at the config's learning rate (``--torch-lr`` to change
it). ``tests/test_bench_snn.py`` checks that its forward pass equals npsim's
on the same weights.

Usage:

    python scripts/bench_snn.py --budget 300 --seeds 0 1 2
    python scripts/bench_snn.py --budget 60 --variant "k4:rule.perturbations=4" --no-torch
    python scripts/bench_snn.py models/binary-fmnist.toml --no-torch --variant "frozen:train.freeze=[0,1]"
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from npsim.experiment.assemble import build
from npsim.experiment.config import apply_overrides, load_config
from npsim.learn.step import evaluate, train_step, trainable
from npsim.model.network import param_key
from npsim.model.spiking import LIF

try:
    import snntorch as snn
    import torch
    from snntorch import surrogate
except ImportError:  # optional: pip install -e ".[test]"
    snn = torch = surrogate = None

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "npsim" / "models" / "spiking-fmnist.toml"


# --- the snnTorch reference ------------------------------------------------------


class SnnTorchMLP(torch.nn.Module if torch is not None else object):
    """npsim's spiking MLP (LIF hidden layers, rate read-out into a linear output layer) in snnTorch.

    net : the npsim Network (Dense LIF layers with zero reset and no refractory period, then one linear
        non-temporal layer; current input); params : its parameters (numpy), copied.
    """

    def __init__(self, net, params: dict, *, slope: float = 25.0):
        super().__init__()
        layers = net.layers
        sim = net.simulation
        hidden, out = layers[:-1], layers[-1]
        if not hidden or out.node.temporal or out.node.name != "linear" or sim.encoding != "current":
            raise ValueError("SnnTorchMLP: needs LIF hidden layers, a linear read-out layer and current input")
        for layer in hidden:
            node = layer.node
            if not isinstance(node, LIF) or node.reset != "zero" or node.refractory != 0:
                raise ValueError(f"SnnTorchMLP: layer {layer.describe()} is not a zero-reset LIF layer without "
                                 f"a refractory period")
            if node.readout != "rate" and layer is hidden[-1]:
                raise ValueError("SnnTorchMLP: the last hidden layer must read out its rate")
        self.steps = sim.steps
        self.scale = []
        self.fc = torch.nn.ModuleList()
        self.lif = torch.nn.ModuleList()
        for i, layer in enumerate(layers):
            W, b = params[param_key(i, "W")], params[param_key(i, "b")]
            if layer.decorrelate:  # npsim's decorrelation (R = I at initialisation), folded into W
                W = W @ params[param_key(i, "R")]
            fc = torch.nn.Linear(W.shape[1], W.shape[0])
            with torch.no_grad():
                fc.weight.copy_(torch.from_numpy(np.asarray(W, dtype=np.float32)))
                fc.bias.copy_(torch.from_numpy(np.asarray(b, dtype=np.float32)))
            self.fc.append(fc)
            if i < len(hidden):
                beta = math.exp(-sim.dt / layer.node.tau)
                self.scale.append(1.0 - beta)
                self.lif.append(snn.Leaky(beta=beta, threshold=layer.node.threshold,
                                          spike_grad=surrogate.fast_sigmoid(slope=slope), reset_mechanism="zero",
                                          reset_delay=False))

    def forward(self, x):
        """Logits (B, n_out) for inputs x (B, n_0)."""
        cur0 = self.fc[0](x) * self.scale[0]  # a constant current: the pixels
        mems = [lif.init_leaky() for lif in self.lif]
        count = 0
        for _ in range(self.steps):
            spk, mems[0] = self.lif[0](cur0, mems[0])
            for j in range(1, len(self.lif)):
                spk, mems[j] = self.lif[j](self.fc[j](spk) * self.scale[j], mems[j])
            count = count + spk
        return self.fc[-1](count / self.steps)


# --- one timed training run --------------------------------------------------------


class Curve:
    """Test accuracy against training time (s) of one run."""

    def __init__(self, label: str, seed: int):
        self.label, self.seed = label, seed
        self.t, self.acc, self.epochs = [], [], 0.0

    def add(self, t: float, acc: float):
        self.t.append(t)
        self.acc.append(acc)

    @property
    def final(self) -> float:
        return self.acc[-1]


def _batches(n: int, batch: int, seed: int):
    """(epoch, index array) in shuffled epochs, the same for both implementations."""
    rng = np.random.default_rng([seed, 0xBA7C])
    epoch = 0
    while True:
        order = rng.permutation(n)
        for s in range(0, n - batch + 1, batch):
            yield epoch, order[s:s + batch]
        epoch += 1


def _timed(step, evaluate_now, n_train, batch, seed, budget, epochs, eval_every, curve):
    """Run ``step(idx)`` over shuffled batches until ``budget`` seconds of training or ``epochs``."""
    trained, next_eval, steps = 0.0, eval_every, 0
    curve.add(0.0, evaluate_now())
    for epoch, idx in _batches(n_train, batch, seed):
        if epoch >= epochs or trained >= budget:
            break
        t0 = time.perf_counter()
        step(idx)
        trained += time.perf_counter() - t0
        steps += 1
        if trained >= next_eval:
            curve.add(trained, evaluate_now())
            next_eval += eval_every
    if curve.t[-1] != trained:
        curve.add(trained, evaluate_now())
    curve.epochs = steps * batch / n_train
    return curve


def run_npsim(cfg, seed: int, budget: float, epochs: int, eval_every: float, label: str) -> Curve:
    cfg = cfg.model_copy(update={"seed": seed})
    ex = build(cfg)
    params, rng = ex.initial_state()
    state = {"params": params, "opt": ex.optimizer.init(trainable(params))}
    frozen = ex.frozen
    B = cfg.train.batch_size

    def step(idx):
        state["params"], state["opt"], _ = train_step(ex.net, ex.rule, ex.optimizer, state["params"], state["opt"],
                                                      ex.x_train[idx], ex.y_train[idx], rng, frozen)

    def acc():
        return evaluate(ex.net, state["params"], ex.x_test, ex.y_test, rng=ex.backend.stream(1))[1]

    # one untimed step on copies, so that loading the Numba kernels is not counted as training time
    def copy(arrays):
        return {k: v.copy() for k, v in arrays.items()}

    train_step(ex.net, ex.rule, ex.optimizer, copy(state["params"]), copy(state["opt"]), ex.x_train[:B],
               ex.y_train[:B], ex.backend.stream(2**32 - 1), frozen)

    if cfg.optimizer.schedule != "constant":  # the schedule ends after train.epochs: so does the run
        epochs = min(epochs, cfg.train.epochs)
    return _timed(step, acc, ex.data.n_train, B, seed, budget, epochs, eval_every, Curve(label, seed))


def run_snntorch(cfg, seed: int, budget: float, epochs: int, eval_every: float, lr: float | None) -> Curve:
    cfg = cfg.model_copy(update={"seed": seed})
    ex = build(cfg)
    params, _ = ex.initial_state()  # npsim's initial weights
    torch.manual_seed(seed)
    model = SnnTorchMLP(ex.net, params)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr if lr is None else lr)
    x_train, y_train = torch.from_numpy(np.asarray(ex.x_train)), torch.from_numpy(np.asarray(ex.y_train))
    x_test, y_test = torch.from_numpy(np.asarray(ex.x_test)), torch.from_numpy(np.asarray(ex.y_test))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(idx):
        idx = torch.from_numpy(idx)
        opt.zero_grad()
        loss_fn(model(x_train[idx]), y_train[idx]).backward()
        opt.step()

    def acc():
        with torch.no_grad():
            hits = sum(int((model(x_test[s:s + 2000]).argmax(1) == y_test[s:s + 2000]).sum())
                       for s in range(0, len(y_test), 2000))
        return hits / len(y_test)

    return _timed(step, acc, ex.data.n_train, cfg.train.batch_size, seed, budget, epochs, eval_every,
                  Curve("snnTorch BPTT", seed))


# --- report ------------------------------------------------------------------------


def table(curves: list[Curve], budget: float) -> list[str]:
    by = {}
    for c in curves:
        by.setdefault(c.label, []).append(c)
    # a run ends at the budget or after its epochs, whichever comes first: say which it was
    lines = [f"| implementation | test accuracy at the end (mean) | per seed | epochs trained | training s "
             f"(budget {budget:g}) |", "|---|---:|---|---:|---:|"]
    for label, cs in by.items():
        accs = [c.final for c in cs]
        lines.append(f"| {label} | {100 * np.mean(accs):.2f} % | "
                     + ", ".join(f"{100 * a:.2f}" for a in accs)
                     + f" | {np.mean([c.epochs for c in cs]):.2f} | {np.mean([c.t[-1] for c in cs]):.0f} |")
    return lines


def figure(curves: list[Curve], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {}
    for c in curves:
        color = colors.setdefault(c.label, f"C{len(colors)}")
        ax.plot(c.t, [100 * a for a in c.acc], color=color, alpha=0.8, marker=".",
                label=c.label if sum(1 for d in curves if d.label == c.label and d is not c and
                                     curves.index(d) < curves.index(c)) == 0 else None)
    ax.set_xlabel("training time (s; evaluation excluded)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, sep, sets = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"a variant is NAME:KEY=VALUE[,KEY=VALUE...], got {text!r}")
    items, depth, cur = [], 0, ""
    for ch in sets:  # split on commas outside brackets: train.freeze=[0,1]
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    return name, [i for i in items if i]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG), help="npsim config (default: spiking-fmnist)")
    p.add_argument("--budget", type=float, default=300.0, help="training seconds per run (default 300)")
    p.add_argument("--epochs", type=int, default=1000, help="at most this many epochs per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default 0)")
    p.add_argument("--eval-every", type=float, default=30.0, help="seconds of training between evaluations")
    p.add_argument("--variant", type=parse_variant, action="append", default=[],
                   help="NAME:KEY=VALUE,... an npsim run with these config overrides (repeatable)")
    p.add_argument("--no-base", action="store_true", help="run only the variants, not the config as it is")
    p.add_argument("--no-torch", action="store_true", help="skip the snnTorch reference")
    p.add_argument("--torch-lr", type=float, default=None, help="snnTorch's Adam learning rate (default: config's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--out", default="bench_snn", help="folder for the figure and the table (default bench_snn)")
    args = p.parse_args(argv)
    base = load_config(args.config)
    cfg = apply_overrides(base, args.set, unset=["train.monitor"] if base.train.monitor is not None else [])
    use_torch = not args.no_torch
    if use_torch and snn is None:
        print('snntorch not installed: pip install -e ".[test]"; no snnTorch runs', flush=True)
        use_torch = False
    runs = ([] if args.no_base else [("npsim " + cfg.rule.name.upper(), [])]) + [(f"npsim {n}", s)
                                                                                   for n, s in args.variant]
    curves = []
    for seed in args.seeds:
        for label, sets in runs:
            c = run_npsim(apply_overrides(cfg, sets), seed, args.budget, args.epochs, args.eval_every, label)
            print(f"{label:32s} seed {seed}: {100 * c.final:.2f} % after {c.t[-1]:.0f} s ({c.epochs:.2f} epochs)",
                  flush=True)
            curves.append(c)
        if use_torch:
            c = run_snntorch(cfg, seed, args.budget, args.epochs, args.eval_every, args.torch_lr)
            print(f"{c.label:32s} seed {seed}: {100 * c.final:.2f} % after {c.t[-1]:.0f} s ({c.epochs:.2f} epochs)",
                  flush=True)
            curves.append(c)
    lines = table(curves, args.budget)
    print("\n" + "\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    figure(curves, out / "accuracy_vs_time.png", f"{cfg.name}: test accuracy against training time "
                                                 f"(seeds {', '.join(map(str, args.seeds))})")
    print(f"\nwrote {out / 'table.md'} and {out / 'accuracy_vs_time.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
