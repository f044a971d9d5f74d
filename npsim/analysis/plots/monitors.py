"""Spike rasters and membrane-potential traces of a run's recorded layers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ...errors import UsageError
from ..text import recorded_layer_label, recordings_of, samples_text
from .common import GREY, new_figure, note, plot_path, save

__all__ = ["plot_monitors", "MONITOR_TRACES", "MONITOR_RASTER_ROWS"]

#: Membrane-potential traces drawn per layer (of the first recorded sample).
MONITOR_TRACES = 5

#: Raster rows (samples x recorded units) drawn at most per layer; further samples are left out.
MONITOR_RASTER_ROWS = 1500


def _trace_units(rec: dict, k: int) -> np.ndarray:
    """Rows (into the recorded units) of at most ``k`` units to draw, in row order.

    All units if there are at most ``k``; for a non-spiking layer the first
    ``k``; else ``k`` units evenly spread over the ranking by spike count in
    sample 0, from the most active to the least active.
    """
    n = len(rec["units"])
    if "spikes" not in rec or n <= k:
        return np.arange(min(k, n))
    counts = rec["spikes"][0].sum(axis=0, dtype=np.int64)
    ranked = np.argsort(-counts, kind="stable")
    return np.sort(ranked[np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))])


def _raster(ax, m, rec, head: str, sample_colors) -> tuple[list, int]:
    """The spike raster of one layer: the recorded units of each sample stacked, sample 0 on top.

    Returns (the raster's lines, its rows), to size the tick marks once the layout is known.
    """
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    spikes, units, t = rec["spikes"], rec["units"], m.times
    S, T, n = len(m.samples), m.steps, len(units)
    shown = max(1, min(S, MONITOR_RASTER_ROWS // max(1, n)))
    gap = max(1, round(0.15 * n)) if shown > 1 else 0
    lines, rows = [], shown * n + (shown - 1) * gap
    for s in range(shown):
        st, j = np.nonzero(spikes[s])
        ln, = ax.plot(t[st], s * (n + gap) + j, ls="", marker="|", color=sample_colors[s], rasterized=len(st) > 2000)
        lines.append(ln)
    ax.set_ylim(rows - 0.5, -0.5)  # sample 0 and unit row 0 on top
    total = int(spikes.sum())
    rate = 1000.0 * total / (S * T * n * m.dt)
    title = f"{head}: spikes ({total}, mean {rate:.3g} Hz)"
    if shown < S:
        title += f", samples 1\u2013{shown} of {S}"
    ax.set_title(title, fontsize=10)
    if shown > 1:
        ax.set_yticks([s * (n + gap) + (n - 1) / 2 for s in range(shown)])
        ax.set_yticklabels([f"#{int(x)}" for x in m.samples[:shown]])
        for tick, col in zip(ax.get_yticklabels(), sample_colors):
            tick.set_color(col)
        ax.set_ylabel(f"test sample ({n} unit{'s' if n != 1 else ''} each)")
    else:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.yaxis.set_major_formatter(FuncFormatter(
            lambda y, _pos, u=units: str(int(u[int(round(y))])) if 0 <= round(y) < len(u) else ""))
        ax.set_ylabel(f"unit (sample #{int(m.samples[0])})")
    if total == 0:
        note(ax, "no spikes")
    ax.tick_params(labelbottom=False)
    ax.grid(True, axis="x", alpha=0.3)
    return lines, rows


def _voltages(ax, m, rec, head: str, thr) -> None:
    """Membrane potential of a few units of the first sample, the threshold dashed and spikes marked on it."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    trace_cmap = colormaps["Dark2"]
    t, v, units, spikes = m.times, rec["v"], rec["units"], rec.get("spikes")
    rows_v = _trace_units(rec, MONITOR_TRACES)
    for k, j in enumerate(rows_v):
        ax.plot(t, v[0, :, j], color=trace_cmap(k % trace_cmap.N), lw=1.0, label=f"unit {int(units[j])}")
    finite = v[0][:, rows_v][np.isfinite(v[0][:, rows_v])]
    if spikes is not None:
        y_mark = thr if thr is not None else (float(finite.max()) if finite.size else 1.0)
        for k, j in enumerate(rows_v):
            st = np.nonzero(spikes[0, :, j])[0]
            if len(st):
                ax.plot(t[st], np.full(len(st), y_mark), ls="", marker="|", ms=9, mew=1.4,
                        color=trace_cmap(k % trace_cmap.N))
    if thr is not None:
        ax.axhline(thr, color="0.25", ls="--", lw=0.9)
    ax.set_title(f"{head}: membrane potential, sample #{int(m.samples[0])}", fontsize=10)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("membrane potential")
    ax.set_xlim(0.0, m.steps * m.dt)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if thr is not None:
        handles.append(Line2D([], [], color="0.25", ls="--", lw=0.9))
        labels.append(f"threshold ({thr:g})")
    if spikes is not None and len(rows_v):
        handles.append(Line2D([], [], color=GREY, ls="", marker="|", ms=9, mew=1.4))
        labels.append("spike")
    if handles:
        if finite.size:  # headroom above the traces for a legend that hides none of them
            lo, hi = float(finite.min()), float(finite.max())
            if thr is not None:
                lo, hi = min(lo, thr), max(hi, thr)
            span = hi - lo if hi > lo else 1.0
            ax.set_ylim(lo - 0.05 * span, hi + (0.3 if len(handles) > 4 else 0.18) * span)
        ax.legend(handles, labels, fontsize=7, loc="upper center", ncol=min(4, len(handles)), framealpha=0.85,
                  columnspacing=1.0, handlelength=1.6)


def plot_monitors(path_or_traj, out) -> Path:
    """Plot a run's spike/voltage monitors into ``out`` (.png, .pdf or .svg).

    path_or_traj : a path, :class:`~npsim.io.trajectory.Trajectory` or
    :class:`~npsim.io.trajectory.Recordings`.
    One column per recorded layer (layers numbered from 1, as in :func:`plot_runs`):
    on top a spike raster (time in ms on x; the recorded units of each sample
    stacked, one colour per test sample, sample 0 on top; up to
    :data:`MONITOR_RASTER_ROWS` rows), below it the membrane potential of up
    to :data:`MONITOR_TRACES` units of the first sample (from the most to the
    least active) with the threshold as a dashed line and spikes marked on it. A
    layer without spikes (non-spiking nodes) gets only the voltage panel.
    Returns ``out`` as a Path; ValueError for another suffix or a run without monitors.
    """
    from matplotlib import colormaps

    out = plot_path(out)
    m, traj = recordings_of(path_or_traj)
    if not m.layers:
        raise UsageError(f"{m.path}: the /monitors group holds no layer")
    layers = list(m.layers.items())
    ncols = min(len(layers), 4)
    nblocks = math.ceil(len(layers) / ncols)
    fig = new_figure(max(8.0, 4.6 * ncols), 6.2 * nblocks + 0.4)
    gs = fig.add_gridspec(2 * nblocks, ncols, height_ratios=[1.25, 1.0] * nblocks)
    S = len(m.samples)
    sample_colors = [colormaps["tab10"](i % 10) for i in range(S)]
    raster_lines = []  # (axes, lines, rows) to size the tick marks once the layout is known
    for i, (l, rec) in enumerate(layers):
        r, c = 2 * (i // ncols), i % ncols
        label = recorded_layer_label(traj, l)
        node = m.nodes.get(l) or ""
        head = f"{label}, {node}" if node else label
        if rec.get("spikes") is not None:
            ax_r = fig.add_subplot(gs[r, c])
            ax_v = fig.add_subplot(gs[r + 1, c], sharex=ax_r)
            raster_lines.append((ax_r, *_raster(ax_r, m, rec, head, sample_colors)))
        else:
            ax_v = fig.add_subplot(gs[r : r + 2, c])
        _voltages(ax_v, m, rec, head, m.thresholds.get(l))
    name = Path(m.path).name if m.path else "run"
    if traj is not None and traj.attrs.get("name"):
        name = f"{traj.attrs['name']} ({name})"
    fig.suptitle(f"{name}: monitors after epoch {m.epoch}; T = {m.steps} steps of dt = {m.dt:g} ms "
                 f"({m.steps * m.dt:g} ms); {S} test sample{'s' if S != 1 else ''} ({samples_text(m.samples)})",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    for ax, lines, rows in raster_lines:  # tick marks one row tall, now that the axes' size is known
        height_pt = ax.get_window_extent().height * 72.0 / fig.dpi
        ms = min(8.0, max(1.0, 0.9 * height_pt / max(1, rows)))
        for ln in lines:
            ln.set_markersize(ms)
            ln.set_markeredgewidth(min(1.2, max(0.5, ms / 4)))
    return save(fig, out)
