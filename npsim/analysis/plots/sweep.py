"""A sweep at a glance: learning curves, final accuracy and BP alignment per parameter set, over seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metrics import ALIGNMENT_TAIL
from ..stats import group_label, sweep_curves, sweep_groups, sweep_name
from .common import (
    figure_legend,
    legend_rows,
    new_figure,
    no_alignment_note,
    note,
    palette,
    plot_path,
    save,
)

__all__ = ["plot_sweep"]


def _curve_panel(ax, curves, colors, ylabel: str, lim) -> None:
    """Mean over seeds per parameter set with its interval band (clipped to ``lim``)."""
    from matplotlib.ticker import MaxNLocator

    drawn = False
    for c, color in zip(curves, colors):
        if not len(c["epoch"]):
            continue
        drawn = True
        mk = dict(marker="o", markersize=3) if len(c["epoch"]) <= 40 else {}
        ax.plot(c["epoch"], c["mean"], color=color, lw=1.6, **mk)
        band = np.isfinite(c["low"])
        if band.any():
            lo, hi = (np.clip(np.where(band, c[k], np.nan), *lim) for k in ("low", "high"))
            ax.fill_between(c["epoch"], lo, hi, color=color, alpha=0.18, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if not drawn:
        note(ax, "no finished run")


def _final_panel(ax, rows, keys, groups, labels, colors, pct: str, numbered: bool) -> None:
    """Final test accuracy: every seed as a dot, the mean with its interval; first group on top."""
    G = len(groups)
    rng = np.random.default_rng(0)
    for i, (g, color) in enumerate(zip(groups, colors)):
        y = G - 1 - i
        vals = [r.get("final_test_accuracy") for r in rows
                if r.get("status") == "finished" and all(r.get(k) == g[k] for k in keys)]
        vals = np.asarray([v for v in vals if v is not None and np.isfinite(v)], dtype=np.float64)
        if len(vals):
            ax.plot(vals, y + rng.uniform(-0.12, 0.12, len(vals)), ls="", marker="o", markersize=4, mfc="none",
                    mec=color, alpha=0.8)
        m, lo, hi = g["final_test_accuracy_mean"], g["final_test_accuracy_low"], g["final_test_accuracy_high"]
        lo, hi = max(lo, 0.0), min(hi, 1.0)  # an accuracy interval ends at 0 and 1
        if np.isfinite(m):
            xerr = [[m - lo], [hi - m]] if np.isfinite(lo) else None
            ax.errorbar([m], [y], xerr=xerr, fmt="D", color=color, markersize=6, capsize=4, lw=1.5)
    ax.set_yticks(range(G))
    ax.set_yticklabels([f"({G - j})" if numbered else labels[G - 1 - j] for j in range(G)] if G > 1 else [""])
    for tick, color in zip(ax.get_yticklabels(), colors[::-1]):
        tick.set_color(color)
    ax.set_ylim(-0.6, G - 0.4)
    ax.set_xlabel("final test accuracy (fraction)")
    ax.set_ylabel("parameter set (legend number)" if G > 1 and numbered else "")
    ax.set_title(f"(c) final test accuracy: seeds (\u25cb), mean \u00b1 {pct} CI (\u25c6)")
    ax.grid(True, axis="x", alpha=0.3)


def _alignment_panel(ax, groups, colors, pct: str) -> None:
    """BP alignment per layer: mean over seeds with its interval, parameter sets side by side."""
    G = len(groups)
    L = max((len(g["alignment_mean"]) for g in groups), default=0)
    if any(np.isfinite(g["alignment_mean"]).any() for g in groups if len(g["alignment_mean"])):
        width = 0.7 / max(1, G)
        for i, (g, color) in enumerate(zip(groups, colors)):
            a = np.asarray(g["alignment_mean"], dtype=np.float64)
            if not len(a) or not np.isfinite(a).any():
                continue
            x = np.arange(1, len(a) + 1) + (i - (G - 1) / 2) * width
            lo, hi = (np.clip(np.asarray(g[k], dtype=np.float64), -1.0, 1.0)
                      for k in ("alignment_low", "alignment_high"))
            err = np.where(np.isfinite(lo), [a - lo, hi - a], 0.0)
            ax.errorbar(x, a, yerr=err, fmt="o-", color=color, markersize=5, capsize=3, lw=1.0)
        ax.set_xticks(range(1, L + 1))
        ax.set_xticklabels([f"layer {j}" for j in range(1, L + 1)])
        ax.axhline(0.0, color="0.6", lw=0.6, zorder=0)
        ax.set_ylabel("cosine similarity")
        ax.grid(True, axis="y", alpha=0.3)
    else:
        no_alignment_note(ax)
    ax.set_title(f"(d) alignment with the BP gradient: mean \u00b1 {pct} CI")


def plot_sweep(path, out, *, confidence: float = 0.95) -> Path:
    """Plot a sweep, one colour per parameter set, into ``out`` (.png, .pdf or .svg).

    path : the sweep TOML file, its out folder or its index.
    Panels: (a) test accuracy and (b) test loss vs epoch, mean over seeds with
    a band of the ``confidence`` Student-t interval (no band where fewer than
    2 runs have the epoch; accuracy bands clipped to [0, 1], loss bands at 0);
    (c) final test accuracy per parameter set: every seed as a dot, the mean
    with its interval; (d) BP alignment per layer: mean over seeds (of each
    run's mean over its last 10% of measured updates) with its interval. Only
    finished runs are drawn. Returns ``out`` as a Path; ValueError for another suffix.
    """
    from matplotlib.lines import Line2D

    out = plot_path(out)
    rows, keys, short, groups = sweep_groups(path, confidence)
    G = len(groups)
    labels = [group_label(g, keys, short) for g in groups]
    colors = palette(G)
    pct = f"{100 * confidence:g}%"
    numbered = max(map(len, labels)) > 28
    fig = new_figure(12, 9)
    (ax_acc, ax_loss), (ax_fin, ax_al) = fig.subplots(2, 2)
    _curve_panel(ax_acc, sweep_curves(rows, keys, metric="test_accuracy", confidence=confidence), colors,
                 "test accuracy (fraction)", (0.0, 1.0))
    _curve_panel(ax_loss, sweep_curves(rows, keys, metric="test_loss", confidence=confidence), colors,
                 "test loss", (0.0, np.inf))
    ax_acc.set_title(f"(a) test accuracy: mean over seeds, {pct} CI band")
    ax_loss.set_title(f"(b) test loss: mean over seeds, {pct} CI band")
    _final_panel(ax_fin, rows, keys, groups, labels, colors, pct, numbered)
    _alignment_panel(ax_al, groups, colors, pct)
    n_fin = sum(r["status"] == "finished" for r in rows)
    fig.suptitle(f"sweep {sweep_name(path)}: {len(rows)} runs ({n_fin} finished), {G} parameter "
                 f"set{'s' if G != 1 else ''}; BP alignment: each run's mean over its last "
                 f"{100 * ALIGNMENT_TAIL:g}% of measured updates", fontsize=11)
    handles = [Line2D([], [], color=c, lw=2.5) for c in colors]
    names = [(f"({i + 1}) " if numbered else "") + f"{lab}  [{g['finished']}/{g['runs']} runs finished]"
             for i, (lab, g) in enumerate(zip(labels, groups))]
    ncol = 1 if G <= 3 else (2 if G <= 8 else 3)
    grid = legend_rows(handles, names, ncol, Line2D([], [], alpha=0.0))
    figure_legend(fig, grid, ncol)
    fig.tight_layout(rect=(0, 0.015 + 0.03 * len(grid), 1, 0.97))
    return save(fig, out)
