"""Learning curves of one or more runs: accuracy, loss, BP alignment and update norms."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import UsageError
from ..metrics import (
    curves,
    layer_labels,
    load,
    n_layers,
    running_mean,
    smoothing_window,
    summary,
)
from .common import (
    GREY,
    LAYER_STYLES,
    figure_legend,
    legend_rows,
    new_figure,
    no_alignment_note,
    note,
    palette,
    plot_path,
    save,
    shade,
)

__all__ = ["plot_runs"]


@dataclass
class _Drawn:
    """What the runs put into the panels, for the labels and the legend."""

    handles: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    epochs: bool = False
    steps: bool = False
    alignment: bool = False
    layers: int = 0
    loss_units: set = field(default_factory=set)


def _run_label(s: dict) -> str:
    label = f"{s['name']} ({s['rule']}, seed {s['seed']})"
    if s["status"] != "finished":
        label += f" [{s['status']}]"
    return label


def _per_layer(ax, x, y, color, markers) -> None:
    """One line per layer (column of ``y``): the run's colour, lighter and another style per layer."""
    for j in range(y.shape[1]):
        ax.plot(x, y[:, j], color=shade(color, j, y.shape[1]), ls=LAYER_STYLES[j % len(LAYER_STYLES)], lw=1.0,
                **markers)


def _draw_run(axes, traj, color, drawn: _Drawn) -> None:
    """Draw one run's curves into the four panels (a) accuracy, (b) loss, (c) alignment, (d) update norm."""
    from matplotlib.lines import Line2D

    ax_acc, ax_loss, ax_al, ax_un = axes
    c = curves(traj)
    drawn.layers = max(drawn.layers, c["update_norm"].shape[1] if c["update_norm"].size else c["alignment"].shape[1])
    drawn.handles.append(Line2D([], [], color=color, lw=2))
    drawn.labels.append(_run_label(summary(traj)))
    drawn.loss_units.add(traj.units.get("epochs/test_loss", ""))
    E = len(c["epoch"])
    if E:
        drawn.epochs = True
        mk = dict(marker="o", markersize=3) if E <= 40 else {}
        for ax, key in ((ax_acc, "accuracy"), (ax_loss, "loss")):
            ax.plot(c["epoch"], c[f"test_{key}"], color=color, ls="-", **mk)
            ax.plot(c["epoch"], c[f"train_{key}"], color=color, ls="--", **mk)
    n = len(c["step"])
    if n:
        drawn.steps = True
        mk = dict(marker=".", markersize=4) if n <= 3 else {}
        if np.isfinite(c["step_epoch"]).any():
            ax_loss.plot(c["step_epoch"], c["loss_smooth"], color=color, lw=0.8, alpha=0.45, **mk)
        un = running_mean(np.where(c["update_norm"] > 0, c["update_norm"], np.nan), smoothing_window(n))
        _per_layer(ax_un, c["step"], un, color, mk)
    m = len(c["alignment_step"])
    if m:
        drawn.alignment = True
        mk = dict(marker=".", markersize=4) if m <= 3 else {}
        _per_layer(ax_al, c["alignment_step"], running_mean(c["alignment"], smoothing_window(m)), color, mk)


def _label_panels(axes, drawn: _Drawn) -> None:
    from matplotlib.ticker import MaxNLocator

    ax_acc, ax_loss, ax_al, ax_un = axes
    unit = next(iter(drawn.loss_units)) if len(drawn.loss_units) == 1 else ""
    for ax, title, xlabel, ylabel in (
        (ax_acc, "(a) accuracy", "epoch", "accuracy (fraction)"),
        (ax_loss, "(b) loss", "epoch", f"loss ({unit})" if unit else "loss"),
        (ax_al, "(c) alignment with the BP gradient", "update", "cosine similarity"),
        (ax_un, "(d) update norm per layer", "update", "\u2016\u0394(W, b)\u2016 (parameter units)"),
    ):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_al, ax_un):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    if not drawn.epochs:
        note(ax_acc, "no epoch completed yet")
        if not drawn.steps:
            note(ax_loss, "no update recorded yet")
    if drawn.alignment:
        ax_al.axhline(0.0, color="0.6", lw=0.6, zorder=0)
        ax_al.set_title("(c) alignment with the BP gradient (running mean)")
    else:
        no_alignment_note(ax_al)
    if drawn.steps:
        ax_un.set_yscale("log")
        ax_un.set_title("(d) update norm per layer (running mean)")
    else:
        note(ax_un, "no update recorded yet")


def _legend_grid(trajs, drawn: _Drawn, ncol: int) -> list:
    """Rows of the legend: the runs (colours), then the line styles of panels a, b and of the layers in c, d."""
    from matplotlib.lines import Line2D

    blank = Line2D([], [], alpha=0.0)
    curve_h, curve_l = [], []
    if drawn.epochs:
        curve_h += [Line2D([], [], color=GREY, ls="-", marker="o", markersize=3),
                    Line2D([], [], color=GREY, ls="--", marker="o", markersize=3)]
        curve_l += ["(a, b) test set", "(a, b) train (eval. samples)"]
    if drawn.steps:
        curve_h.append(Line2D([], [], color=GREY, lw=0.8, alpha=0.6))
        curve_l.append("(b) training batches (running mean)")
    L = drawn.layers
    names = layer_labels(trajs[0], L) if L else []
    if L and any(n_layers(t) != L for t in trajs):
        names = [f"layer {i + 1}" for i in range(L)]
    grid = legend_rows(drawn.handles, drawn.labels, ncol, blank) + legend_rows(curve_h, curve_l, ncol, blank)
    if drawn.alignment or drawn.steps:
        handles = [Line2D([], [], color=shade(GREY, j, L), ls=LAYER_STYLES[j % len(LAYER_STYLES)]) for j in range(L)]
        grid += legend_rows(handles, [f"(c, d) {lab}" for lab in names], ncol, blank)
    return grid


def plot_runs(paths, out) -> Path:
    """Plot learning curves and BP alignment of one or more runs into ``out`` (.png, .pdf or .svg).

    paths : a path or Trajectory, or an iterable of them (1..10 runs read best).
    Panels: (a) train/test accuracy vs epoch, (b) train/test loss vs epoch
    and the running mean of the batch loss vs fractional epoch, (c) cosine
    with the BP gradient per layer vs update, (d) update norm per layer vs
    update (log scale). One colour per run; line style (and lighter shade)
    per layer. Returns ``out`` as a Path. ValueError for another suffix.
    """
    out = plot_path(out)
    trajs = load(paths)
    if not trajs:
        raise UsageError("no runs to plot")
    fig = new_figure(11, 8)
    (ax_acc, ax_loss), (ax_al, ax_un) = fig.subplots(2, 2)
    axes = (ax_acc, ax_loss, ax_al, ax_un)
    drawn = _Drawn()
    for traj, color in zip(trajs, palette(len(trajs))):
        _draw_run(axes, traj, color, drawn)
    _label_panels(axes, drawn)
    if len(trajs) == 1:
        s = summary(trajs[0])
        title = f"{s['name']}: {s['rule']}, seed {s['seed']}"
        if s["network"]:
            title += f"  |  {s['network']}"
        lines = textwrap.wrap(title, 150)  # a spiking network's description is longer than the figure is wide
        fig.suptitle("\n".join(lines), fontsize=11 if len(lines) == 1 else 9)
        top = 0.98 - 0.02 * (len(lines) - 1)
    else:
        fig.suptitle(f"{len(trajs)} runs", fontsize=11)
        top = 0.98
    ncol = 3 if len(trajs) > 1 or drawn.layers > 1 else 1
    grid = _legend_grid(trajs, drawn, ncol)
    figure_legend(fig, grid, ncol)
    fig.tight_layout(rect=(0, 0.015 + 0.03 * len(grid), 1, top))
    return save(fig, out)
