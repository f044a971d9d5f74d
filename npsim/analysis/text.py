"""What ``npsim info`` and ``npsim compare`` print: runs and sweeps as text."""

from __future__ import annotations

import math

import numpy as np

from ..errors import UsageError
from ..io.sweep_index import index_path
from ..io.trajectory import Recordings, Trajectory
from .metrics import (
    ALIGNMENT_TAIL,
    alignment_tail,
    column,
    last,
    layer_labels,
    load_one,
    n_layers,
    n_rows,
    stored_config,
    summary,
    table,
)
from .stats import SWEEP_METRICS, sweep_groups, sweep_name, value_label

__all__ = ["info_text", "compare_text", "monitors_text", "sweep_text", "fmt", "fmt_duration"]


def fmt(x, spec: str = ".4f", missing: str = "-") -> str:
    if x is None:
        return missing
    try:
        if not math.isfinite(float(x)):
            return missing
    except (TypeError, ValueError):
        return str(x)
    return format(x, spec)


def fmt_duration(s: float) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _status_text(traj: Trajectory) -> str:
    a, status = traj.attrs, traj.status
    msg = str(a.get("message", "") or "")
    if status == "running":
        return "running or interrupted (no process finished it)"
    if status == "failed":
        at = f" at step {a['failed_step']}" if "failed_step" in a else ""
        return f"failed{at}" + (f": {msg}" if msg else "")
    text = status + (f": {msg}" if msg else "")
    if a.get("finished"):
        text += f" ({a['finished']})"
    return text


def info_text(path) -> str:
    """What ``npsim info RUN.h5`` prints: a readable multi-line summary of one run.

    Works on a file that a live run is writing and on one without any
    completed epoch; TrajectoryError for unusable files.
    """
    traj = load_one(path)
    a = traj.attrs
    s = summary(traj)
    cfg = stored_config(traj)
    planned = cfg.get("train", {}).get("epochs") if isinstance(cfg.get("train"), dict) else None
    lines: list[tuple[str, str]] = [
        ("file", str(traj.path)),
        ("name", s["name"]),
        ("status", _status_text(traj)),
        ("rule", s["rule"]),
        ("network", s["network"] or "-"),
    ]
    data = s["data"] or "-"
    if a.get("data_source"):
        data += f" from {a['data_source']}"
    if "n_train" in a or "n_test" in a:
        data += f" ({a.get('n_train', '?')} train / {a.get('n_test', '?')} test samples)"
    lines.append(("data", data))
    lines.append(("run", f"seed {a.get('seed', '?')}, backend {a.get('backend', '?')}, "
                         f"device {a.get('device', '?')}, dtype {a.get('dtype', '?')}"))
    of = f" of {planned}" if isinstance(planned, int) else ""
    lines.append(("progress", f"{s['epochs']}{of} epochs completed, {s['steps']} updates recorded"))

    ep = traj.epochs
    if n_rows(ep):
        unit = traj.units.get("epochs/test_loss", "")
        u = f" {unit}" if unit else ""
        lines.append(("last epoch", f"epoch {s['epochs']}: "
                      f"train loss {fmt(last(column(ep, 'train_loss')))}{u}, "
                      f"accuracy {fmt(s['final_train_accuracy'])}; "
                      f"test loss {fmt(s['final_test_loss'])}{u}, accuracy {fmt(s['final_test_accuracy'])}"))
        best = fmt(s["best_test_accuracy"])
        if s["best_epoch"] is not None:
            best += f" (epoch {s['best_epoch']})"
        lines.append(("best test accuracy", best))
    else:
        lines.append(("last epoch", "none completed yet"))
        lines.append(("best test accuracy", "- (no epoch completed yet)"))
    lines.append(("wall time", fmt_duration(s["wall_time"])))

    align, m = alignment_tail(traj)
    if m:
        labels = layer_labels(traj, len(align))
        k = max(1, math.ceil(ALIGNMENT_TAIL * m))
        per = ", ".join(f"{lab} {fmt(v, '.3f')}" for lab, v in zip(labels, align))
        lines.append(("BP alignment", f"{per} (cosine; mean over the last {k} of {m} measured updates)"))
    else:
        why = "diagnostics were off" if a.get("diagnostics_every") == 0 else (
            "no update recorded yet" if not s["steps"] else
            "not measured: the network has non-differentiable units or diagnostics were off")
        lines.append(("BP alignment", why if why.startswith("not") else f"not measured ({why})"))
    if traj.monitors is not None:
        lines.append(("monitors", monitors_text(traj)))
    n_res = a.get("resumed_count", 0)
    res = f"{n_res} time{'s' if n_res != 1 else ''}"
    if n_res and a.get("resumed"):
        res += f" (last {a['resumed']})"
    lines.append(("resumed", res))
    if a.get("created"):
        lines.append(("created", str(a["created"])))
    width = max(len(k) for k, _ in lines) + 1
    return "\n".join(f"{k + ':':<{width}} {v}" for k, v in lines)


def _sort_key(row: dict):
    b = row["best_test_accuracy"]
    return -b if b is not None and math.isfinite(b) else math.inf


def compare_text(paths) -> str:
    """What ``npsim compare`` prints: an aligned table, one row per run, best test accuracy first.

    Columns: name, rule, seed, status, epochs, final test accuracy, best test
    accuracy, final train accuracy, wall time, mean BP alignment over all
    layers (last 10% of measured updates), file. Runs without any epoch sort last.
    """
    rows = sorted(table(paths), key=_sort_key)
    if not rows:
        raise UsageError("no runs to compare")
    header = ["name", "rule", "seed", "status", "epochs", "test acc", "best test acc", "train acc",
              "wall time", "BP align", "file"]
    right = {"seed", "epochs", "test acc", "best test acc", "train acc", "wall time", "BP align"}
    body = []
    for r in rows:
        best = fmt(r["best_test_accuracy"])
        if r["best_epoch"] is not None:
            best += f" (ep {r['best_epoch']})"
        body.append([
            r["name"], r["rule"], str(r["seed"]), r["status"], str(r["epochs"]),
            fmt(r["final_test_accuracy"]), best, fmt(r["final_train_accuracy"]),
            fmt_duration(r["wall_time"]), fmt(r["mean_alignment"], ".3f"), str(r["path"]),
        ])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.rjust(w) if h in right else c.ljust(w)
                         for c, w, h in zip(cells, widths, header)).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    return "\n".join(out)


def recordings_of(x) -> tuple[Recordings, Trajectory | None]:
    """(monitors, trajectory or None) of a path, Trajectory or Recordings; ValueError if the run has none."""
    if isinstance(x, Recordings):
        return x, None
    traj = load_one(x)
    if traj.monitors is None:
        raise UsageError(f"{traj.path}: the run has no spike/voltage monitors")
    return traj.monitors, traj


def recorded_layer_label(traj: Trajectory | None, l: int) -> str:
    """``layer l+1 (n_in→n_out)`` for the 0-based layer index ``l`` (as panels c, d of :func:`plot_runs`)."""
    if traj is not None:
        L = n_layers(traj)
        if l < L:
            return layer_labels(traj, L)[l]
    return f"layer {l + 1}"


def samples_text(samples: np.ndarray, limit: int = 6) -> str:
    idx = [f"#{int(i)}" for i in samples[:limit]]
    return ", ".join(idx) + (", ..." if len(samples) > limit else "")


def monitors_text(traj) -> str:
    """One line describing a run's spike/voltage monitors ("none" if it has none).

    traj : a path, :class:`Trajectory` or :class:`~npsim.trajectory.Monitors`.
    Layers are numbered from 1, as in :func:`info_text` (group ``layer0`` is layer 1).
    """
    if not isinstance(traj, Recordings):
        traj = load_one(traj)
        if traj.monitors is None:
            return "none"
    m, t = recordings_of(traj)
    parts = []
    for l, rec in m.layers.items():
        what = [m.nodes.get(l) or "?", f"{len(rec['units'])} units"]
        if "spikes" in rec:
            what.append(f"{int(rec['spikes'].sum())} spikes")
        parts.append(f"{recorded_layer_label(t, l)}: {', '.join(what)}")
    S = len(m.samples)
    return (f"{'; '.join(parts)}; {S} test sample{'s' if S != 1 else ''} ({samples_text(m.samples)}), "
            f"T = {m.steps} steps of {m.dt:g} ms, after epoch {m.epoch}")


def plus_minus(mean: float, low: float, high: float, spec: str = ".4f") -> str:
    if not math.isfinite(mean):
        return "-"
    if not math.isfinite(low):
        return format(mean, spec)
    return f"{format(mean, spec)} \u00b1 {format((high - low) / 2, spec)}"


def sweep_text(path, *, confidence: float = 0.95) -> str:
    """What ``npsim compare SWEEP`` prints: one line per parameter set, best mean final test accuracy first.

    path : the sweep TOML file, its out folder or its index. Columns: the swept
    keys, finished/total runs, final test, best test and final train accuracy
    as mean ± half-width of the ``confidence`` Student-t interval over seeds
    (finished runs only), mean BP alignment (over layers and seeds) and mean
    wall time; then the failed runs with their messages.
    """
    rows, keys, short, groups = sweep_groups(path, confidence)
    groups.sort(key=lambda g: -g["final_test_accuracy_mean"] if math.isfinite(g["final_test_accuracy_mean"])
                else math.inf)
    pct = f"{100 * confidence:g}%"
    header = [short[k] for k in keys] + ["runs", "test acc", "best test acc", "train acc", "BP align", "wall time"]
    right = set(header[len(keys):])
    body = []
    for g in groups:
        cells = [value_label(g[k]) for k in keys]
        cells.append(f"{g['finished']}/{g['runs']}" + (f" ({g['failed']} failed)" if g["failed"] else ""))
        for m in SWEEP_METRICS:
            cells.append(plus_minus(g[f"{m}_mean"], g[f"{m}_low"], g[f"{m}_high"]))
        cells.append(fmt(g["mean_alignment_mean"], ".3f"))
        cells.append(fmt_duration(g["wall_time_mean"]))
        body.append(cells)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, header)).rstrip()

    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: kv[0] != "finished"))
    out = [f"sweep {sweep_name(path)}: {len(rows)} runs ({status}); {index_path(path)}",
           line(header), line(["-" * w for w in widths]), *(line(b) for b in body),
           f"(mean \u00b1 half-width of the {pct} Student-t interval over seeds of finished runs; BP align: "
           f"cosine with the BP gradient, mean over layers)"]
    failed = [r for r in rows if r["status"] == "failed"]
    for r in failed:
        out.append(f"failed: {r['run']}: {r['message'] or '(no message)'}")
    return "\n".join(out)
