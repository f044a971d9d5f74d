"""Read, summarise, compare and plot run trajectories.

Every function takes trajectory files (``str`` / ``Path``) or already loaded
:class:`~npsim.trajectory.Trajectory` objects, works on files that a live run
is still writing (and on runs without any completed epoch yet), and lets
:class:`~npsim.trajectory.TrajectoryError` through for unusable files.

::

    from npsim.analysis import table, curves, plot_runs
    rows = table(["runs/a.h5", "runs/b.h5"])        # one summary dict per run
    c = curves("runs/a.h5")                         # arrays for custom plots
    plot_runs(["runs/a.h5", "runs/b.h5"], "ab.png")

    plot_monitors("runs/snn.h5", "snn-monitors.png")  # spike rasters and voltages, if recorded

Sweeps (``npsim sweep``; see ``docs/sweeps.md``) are read from their index::

    rows = load_sweep("runs/my-sweep")              # one dict per run (the index rows)
    groups = aggregate(rows)                        # mean, sd, 95% CI over seeds per parameter set
    print(sweep_text("runs/my-sweep"))
    plot_sweep("runs/my-sweep", "sweep.png")

The CLI uses :func:`info_text` (``npsim info``), :func:`compare_text`
(``npsim compare``), :func:`plot_runs` and :func:`plot_monitors` (``npsim plot``),
and for a sweep :func:`sweep_text` and :func:`plot_sweep`.
"""

from __future__ import annotations

import math
import os
import textwrap
import tomllib
from pathlib import Path
import numpy as np

from .trajectory import Monitors, Trajectory, read_trajectory

__all__ = ["load", "summary", "table", "curves", "running_mean", "info_text", "compare_text", "plot_runs",
           "plot_monitors", "monitors_text", "ALIGNMENT_TAIL", "NO_ALIGNMENT",
           "load_sweep", "sweep_keys", "aggregate", "sweep_curves", "sweep_text", "plot_sweep", "SWEEP_METRICS"]

#: Fraction of the measured (non-NaN) alignment rows, the last ones, that
#: :func:`summary` averages into the per-layer alignment.
ALIGNMENT_TAIL = 0.10

#: Running-mean window of smoothed step-level series, as a fraction of the rows.
SMOOTH_FRACTION = 1 / 50

PLOT_SUFFIXES = (".png", ".pdf", ".svg")

NO_ALIGNMENT = "no BP alignment: the network has non-differentiable units or diagnostics were off"


# --------------------------------------------------------------------------- loading


def load(paths) -> list[Trajectory]:
    """Read one trajectory file or several (without weight snapshots).

    paths : a path, a :class:`Trajectory`, or an iterable of them.
    Returns one :class:`Trajectory` per entry, in the given order.
    """
    if isinstance(paths, (str, os.PathLike, Trajectory)):
        paths = [paths]
    return [p if isinstance(p, Trajectory) else read_trajectory(p, snapshots=False) for p in paths]


# --------------------------------------------------------------------------- small helpers


def _one(x) -> Trajectory:
    return x if isinstance(x, Trajectory) else read_trajectory(x, snapshots=False)


def _col(group: dict, name: str, ndim: int = 1) -> np.ndarray:
    """``group[name]`` as an array, or an empty float array (0 rows) if the series is absent."""
    a = group.get(name)
    if a is None:
        return np.empty((0,) * ndim, dtype=np.float64)
    return np.asarray(a)


def _last(a: np.ndarray) -> float:
    return float(a[-1]) if len(a) else math.nan


def _n_rows(group: dict) -> int:
    return next((len(v) for v in group.values()), 0)


def _n_layers(traj: Trajectory) -> int:
    for name in ("alignment", "update_norm"):
        a = traj.steps.get(name)
        if a is not None and a.ndim == 2:
            return int(a.shape[1])
    sizes = traj.attrs.get("sizes")
    return max(0, len(np.atleast_1d(sizes)) - 1) if sizes is not None else 0


def _config(traj: Trajectory) -> dict:
    """The run's stored TOML config as a dict ({} if absent or unparsable)."""
    text = traj.attrs.get("config")
    if not isinstance(text, str):
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}


def _nan_mean(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean over ``axis`` ignoring NaN; NaN where nothing is finite (no warning)."""
    a = np.asarray(a, dtype=np.float64)
    ok = np.isfinite(a)
    n = ok.sum(axis=axis)
    s = np.where(ok, a, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def running_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing running mean of ``x`` (shape (n,) or (n, k)) over ``window`` rows, NaN-aware.

    Row i averages the finite values among rows ``max(0, i-window+1) .. i``
    (so the first rows average fewer values); the result has the shape of ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    window = max(1, int(window))
    if x.shape[0] == 0 or window == 1:
        return x.copy()
    ok = np.isfinite(x)
    zero = np.zeros((1, *x.shape[1:]))
    cs = np.concatenate([zero, np.cumsum(np.where(ok, x, 0.0), axis=0)])
    cn = np.concatenate([zero, np.cumsum(ok, axis=0)])
    hi = np.arange(1, x.shape[0] + 1)
    lo = np.maximum(0, hi - window)
    s, n = cs[hi] - cs[lo], cn[hi] - cn[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def _window(n: int) -> int:
    return max(1, int(round(n * SMOOTH_FRACTION)))


def _measured_alignment(traj: Trajectory) -> tuple[np.ndarray, np.ndarray]:
    """(step index (m,), alignment (m, L)) of the rows where alignment was measured."""
    a = traj.steps.get("alignment")
    if a is None or len(a) == 0:
        return np.empty(0, dtype=np.int64), np.empty((0, _n_layers(traj)), dtype=np.float64)
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    keep = np.isfinite(a).any(axis=1)
    step = _col(traj.steps, "step")
    if len(step) != len(a):
        step = np.arange(len(a))
    return step[keep].astype(np.int64), a[keep]


def _alignment_tail(traj: Trajectory) -> tuple[np.ndarray, int]:
    """Per-layer mean alignment over the last ALIGNMENT_TAIL of measured rows, and how many rows were measured."""
    _, a = _measured_alignment(traj)
    m = len(a)
    if m == 0:
        return np.full(a.shape[1], np.nan), 0
    k = max(1, math.ceil(ALIGNMENT_TAIL * m))
    return _nan_mean(a[-k:], axis=0), m


def _wall_time(traj: Trajectory) -> float:
    """Seconds of training, summed over the segments of a resumed run.

    ``wall_time`` restarts from 0 at every resume; a drop in the step series
    starts a new segment. Each segment counts up to its last step row or the
    last epoch row written in it (the evaluation after the last update).
    """
    st = _col(traj.steps, "wall_time").astype(np.float64)
    ew = _col(traj.epochs, "wall_time").astype(np.float64)
    if len(st) == 0:
        if len(ew) == 0:
            return math.nan
        seg = np.concatenate([[0], np.cumsum(np.diff(ew) < 0)])
        return float(sum(ew[seg == s].max() for s in np.unique(seg)))
    seg = np.concatenate([[0], np.cumsum(np.diff(st) < 0)])
    ends = np.array([st[seg == s].max() for s in range(seg[-1] + 1)])
    step = _col(traj.steps, "step")
    es = _col(traj.epochs, "step")
    if len(ew) and len(es) == len(ew) and len(step) == len(st):
        # epoch row with step s followed update row s-1: same segment
        rows = np.searchsorted(step, es, side="left") - 1
        for r, w in zip(rows, ew):
            if 0 <= r < len(seg) and np.isfinite(w):
                ends[seg[r]] = max(ends[seg[r]], w)
    return float(np.nansum(ends))


def _steps_per_epoch(traj: Trajectory) -> float | None:
    """Updates per epoch, from the epoch rows, the step rows or the stored config (None if unknown)."""
    e, s = _col(traj.epochs, "epoch"), _col(traj.epochs, "step")
    if len(e) and len(s) == len(e) and e[-1] > 0 and s[-1] > 0:
        return float(s[-1]) / float(e[-1])
    se = _col(traj.steps, "epoch")
    if len(se) and se.max() > se.min():
        n = int(np.count_nonzero(se == se.min()))
        if se.min() == 0 and n:
            return float(n)
    cfg = _config(traj)
    try:
        n_train, batch = int(traj.attrs["n_train"]), int(cfg["train"]["batch_size"])
        if n_train >= batch > 0:
            return float(n_train // batch)
    except (KeyError, TypeError, ValueError):
        pass
    return None


# --------------------------------------------------------------------------- summaries


def summary(traj) -> dict:
    """One run's key numbers.

    traj : a :class:`Trajectory` or a path.

    Returns a dict with ``name, rule, seed, status, network, data`` (from the
    file's attributes), ``epochs`` (epochs completed), ``steps`` (update rows
    recorded), ``final_test_accuracy, best_test_accuracy, best_epoch`` (epoch
    of the best; first one on ties; None if no epoch), ``final_train_accuracy,
    final_test_loss``, ``wall_time`` (s, summed over resumed segments),
    ``alignment`` (list of L floats: per-layer mean cosine with the BP gradient
    over the last 10% of measured rows, NaN-aware; NaN where never measured),
    ``mean_alignment`` (mean of those over layers) and ``path``. Missing values
    are NaN.
    """
    traj = _one(traj)
    a = traj.attrs
    ep = traj.epochs
    test_acc = _col(ep, "test_accuracy").astype(np.float64)
    epoch = _col(ep, "epoch")
    finite = np.isfinite(test_acc)
    if finite.any():
        i = int(np.nanargmax(np.where(finite, test_acc, -np.inf)))
        best, best_epoch = float(test_acc[i]), int(epoch[i]) if len(epoch) == len(test_acc) else i + 1
    else:
        best, best_epoch = math.nan, None
    align, _ = _alignment_tail(traj)
    return {
        "name": str(a.get("name", Path(traj.path).stem)),
        "rule": str(a.get("rule", "?")),
        "seed": a.get("seed"),
        "status": traj.status,
        "network": str(a.get("network", "")),
        "data": str(a.get("data", "")),
        "epochs": int(epoch[-1]) if len(epoch) else 0,
        "steps": _n_rows(traj.steps),
        "final_test_accuracy": _last(test_acc),
        "best_test_accuracy": best,
        "best_epoch": best_epoch,
        "final_train_accuracy": _last(_col(ep, "train_accuracy")),
        "final_test_loss": _last(_col(ep, "test_loss")),
        "wall_time": _wall_time(traj),
        "alignment": [float(x) for x in align],
        "mean_alignment": float(_nan_mean(align)) if len(align) else math.nan,
        "path": traj.path,
    }


def table(paths_or_trajs) -> list[dict]:
    """One :func:`summary` dict per run, in the order given (a tidy table: rows = runs)."""
    return [summary(t) for t in load(paths_or_trajs)]


def curves(traj) -> dict[str, np.ndarray]:
    """A run's series, ready to plot.

    traj : a :class:`Trajectory` or a path. With E epoch rows, n update rows,
    m measured alignment rows and L layers, the arrays are:

    - ``epoch`` (E,): epochs completed; ``epoch_step`` (E,): updates completed;
      ``train_accuracy, test_accuracy, train_loss, test_loss, epoch_wall_time`` (E,)
    - ``step`` (n,): update index; ``step_epoch`` (n,): fractional epoch after
      the update (NaN if updates per epoch are unknown); ``loss`` (n,): batch
      loss; ``loss_smooth`` (n,): its trailing running mean over ~n/50 updates;
      ``update_norm`` (n, L)
    - ``alignment_step`` (m,), ``alignment`` (m, L): the rows where the cosine
      with the BP gradient was measured (all-NaN rows dropped)
    """
    traj = _one(traj)
    L = _n_layers(traj)
    ep, st = traj.epochs, traj.steps
    n = _n_rows(st)
    out = {
        "epoch": _col(ep, "epoch").astype(np.float64),
        "epoch_step": _col(ep, "step").astype(np.float64),
    }
    for k in ("train_accuracy", "test_accuracy", "train_loss", "test_loss"):
        out[k] = _col(ep, k).astype(np.float64)
    out["epoch_wall_time"] = _col(ep, "wall_time").astype(np.float64)
    step = _col(st, "step")
    step = step.astype(np.int64) if len(step) == n else np.arange(n, dtype=np.int64)
    out["step"] = step
    per_epoch = _steps_per_epoch(traj)
    out["step_epoch"] = (step + 1) / per_epoch if per_epoch else np.full(n, np.nan)
    loss = _col(st, "loss").astype(np.float64)
    out["loss"] = loss
    out["loss_smooth"] = running_mean(loss, _window(n))
    un = st.get("update_norm")
    out["update_norm"] = (np.asarray(un, dtype=np.float64).reshape(n, -1) if un is not None
                          else np.empty((0, L)))
    out["alignment_step"], out["alignment"] = _measured_alignment(traj)
    return out


# --------------------------------------------------------------------------- text


def _fmt(x, spec: str = ".4f", missing: str = "-") -> str:
    if x is None:
        return missing
    try:
        if not math.isfinite(float(x)):
            return missing
    except (TypeError, ValueError):
        return str(x)
    return format(x, spec)


def _fmt_duration(s: float) -> str:
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


def _layer_labels(traj: Trajectory, L: int) -> list[str]:
    sizes = np.atleast_1d(traj.attrs.get("sizes", []))
    if len(sizes) == L + 1:
        return [f"layer {i + 1} ({int(sizes[i])}\u2192{int(sizes[i + 1])})" for i in range(L)]
    return [f"layer {i + 1}" for i in range(L)]


def info_text(path) -> str:
    """What ``npsim info RUN.h5`` prints: a readable multi-line summary of one run.

    Works on a file that a live run is writing and on one without any
    completed epoch; TrajectoryError for unusable files.
    """
    traj = _one(path)
    a = traj.attrs
    s = summary(traj)
    cfg = _config(traj)
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
    if _n_rows(ep):
        unit = traj.units.get("epochs/test_loss", "")
        u = f" {unit}" if unit else ""
        lines.append(("last epoch", f"epoch {s['epochs']}: "
                      f"train loss {_fmt(_last(_col(ep, 'train_loss')))}{u}, "
                      f"accuracy {_fmt(s['final_train_accuracy'])}; "
                      f"test loss {_fmt(s['final_test_loss'])}{u}, accuracy {_fmt(s['final_test_accuracy'])}"))
        best = _fmt(s["best_test_accuracy"])
        if s["best_epoch"] is not None:
            best += f" (epoch {s['best_epoch']})"
        lines.append(("best test accuracy", best))
    else:
        lines.append(("last epoch", "none completed yet"))
        lines.append(("best test accuracy", "- (no epoch completed yet)"))
    lines.append(("wall time", _fmt_duration(s["wall_time"])))

    align, m = _alignment_tail(traj)
    if m:
        labels = _layer_labels(traj, len(align))
        k = max(1, math.ceil(ALIGNMENT_TAIL * m))
        per = ", ".join(f"{lab} {_fmt(v, '.3f')}" for lab, v in zip(labels, align))
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
        raise ValueError("no runs to compare")
    header = ["name", "rule", "seed", "status", "epochs", "test acc", "best test acc", "train acc",
              "wall time", "BP align", "file"]
    right = {"seed", "epochs", "test acc", "best test acc", "train acc", "wall time", "BP align"}
    body = []
    for r in rows:
        best = _fmt(r["best_test_accuracy"])
        if r["best_epoch"] is not None:
            best += f" (ep {r['best_epoch']})"
        body.append([
            r["name"], r["rule"], str(r["seed"]), r["status"], str(r["epochs"]),
            _fmt(r["final_test_accuracy"]), best, _fmt(r["final_train_accuracy"]),
            _fmt_duration(r["wall_time"]), _fmt(r["mean_alignment"], ".3f"), str(r["path"]),
        ])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.rjust(w) if h in right else c.ljust(w)
                         for c, w, h in zip(cells, widths, header)).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    return "\n".join(out)


# --------------------------------------------------------------------------- plotting

_LAYER_STYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2))]


def _shade(color, i: int, n: int):
    """The run colour, lightened towards white for later layers (layer 0 unchanged)."""
    from matplotlib.colors import to_rgb

    r = np.array(to_rgb(color))
    f = 0.3 * i / max(1, n - 1)
    return tuple(r + (1 - r) * f)


def _legend_rows(handles: list, labels: list, ncol: int, blank) -> list[list[tuple]]:
    """(handle, label) pairs in rows of ``ncol``, the last row padded with invisible entries."""
    pairs = list(zip(handles, labels))
    pairs += [(blank, "")] * (-len(pairs) % ncol)
    return [pairs[i : i + ncol] for i in range(0, len(pairs), ncol)]


def _run_label(s: dict) -> str:
    label = f"{s['name']} ({s['rule']}, seed {s['seed']})"
    if s["status"] != "finished":
        label += f" [{s['status']}]"
    return label


def plot_runs(paths, out) -> Path:
    """Plot learning curves and BP alignment of one or more runs into ``out`` (.png, .pdf or .svg).

    paths : a path or Trajectory, or an iterable of them (1..10 runs read best).
    Panels: (a) train/test accuracy vs epoch, (b) train/test loss vs epoch
    and the running mean of the batch loss vs fractional epoch, (c) cosine
    with the BP gradient per layer vs update, (d) update norm per layer vs
    update (log scale). One colour per run; line style (and lighter shade)
    per layer. Returns ``out`` as a Path. ValueError for another suffix.
    """
    out = Path(out)
    if out.suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(f"{out}: plot file must end in {', '.join(PLOT_SUFFIXES)}")
    trajs = load(paths)
    if not trajs:
        raise ValueError("no runs to plot")

    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 8), dpi=120)
    FigureCanvasAgg(fig)  # no pyplot, no global backend switch
    (ax_acc, ax_loss), (ax_al, ax_un) = fig.subplots(2, 2)
    cmap = colormaps["tab10"] if len(trajs) <= 10 else colormaps["tab20"]
    palette = [cmap(i % cmap.N) for i in range(len(trajs))]

    run_handles, run_labels = [], []
    any_epochs = any_steps = any_align = False
    max_layers = 0
    loss_units = set()
    for traj, color in zip(trajs, palette):
        s = summary(traj)
        c = curves(traj)
        L = c["update_norm"].shape[1] if c["update_norm"].size else c["alignment"].shape[1]
        max_layers = max(max_layers, L)
        run_handles.append(Line2D([], [], color=color, lw=2))
        run_labels.append(_run_label(s))
        loss_units.add(traj.units.get("epochs/test_loss", ""))
        E = len(c["epoch"])
        mk = dict(marker="o", markersize=3) if 0 < E <= 40 else {}
        if E:
            any_epochs = True
            ax_acc.plot(c["epoch"], c["test_accuracy"], color=color, ls="-", **mk)
            ax_acc.plot(c["epoch"], c["train_accuracy"], color=color, ls="--", **mk)
            ax_loss.plot(c["epoch"], c["test_loss"], color=color, ls="-", **mk)
            ax_loss.plot(c["epoch"], c["train_loss"], color=color, ls="--", **mk)
        n = len(c["step"])
        if n:
            any_steps = True
            mk_st = dict(marker=".", markersize=4) if n <= 3 else {}
            if np.isfinite(c["step_epoch"]).any():
                ax_loss.plot(c["step_epoch"], c["loss_smooth"], color=color, lw=0.8, alpha=0.45, **mk_st)
            un = running_mean(np.where(c["update_norm"] > 0, c["update_norm"], np.nan), _window(n))
            for j in range(un.shape[1]):
                ax_un.plot(c["step"], un[:, j], color=_shade(color, j, un.shape[1]),
                           ls=_LAYER_STYLES[j % len(_LAYER_STYLES)], lw=1.0, **mk_st)
        m = len(c["alignment_step"])
        if m:
            any_align = True
            al = running_mean(c["alignment"], _window(m))
            mk_al = dict(marker=".", markersize=4) if m <= 3 else {}
            for j in range(al.shape[1]):
                ax_al.plot(c["alignment_step"], al[:, j], color=_shade(color, j, al.shape[1]),
                           ls=_LAYER_STYLES[j % len(_LAYER_STYLES)], lw=1.0, **mk_al)

    unit = next(iter(loss_units)) if len(loss_units) == 1 else ""
    grey = "0.35"
    ax_acc.set_title("(a) accuracy")
    ax_acc.set_xlabel("epoch")
    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.set_ylabel("accuracy (fraction)")
    ax_loss.set_title("(b) loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set_ylabel(f"loss ({unit})" if unit else "loss")
    ax_al.set_title("(c) alignment with the BP gradient")
    ax_al.set_xlabel("update")
    ax_al.set_ylabel("cosine similarity")
    ax_un.set_title("(d) update norm per layer")
    ax_un.set_xlabel("update")
    ax_un.set_ylabel("\u2016\u0394(W, b)\u2016 (parameter units)")
    for ax in (ax_acc, ax_loss, ax_al, ax_un):
        ax.grid(True, alpha=0.3)
    for ax in (ax_al, ax_un):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))

    # line-style keys go into the legend under the panels, where they hide no data
    curve_h, curve_l = [], []
    if any_epochs:
        curve_h += [Line2D([], [], color=grey, ls="-", marker="o", markersize=3),
                    Line2D([], [], color=grey, ls="--", marker="o", markersize=3)]
        curve_l += ["(a, b) test set", "(a, b) train (eval. samples)"]
    else:
        ax_acc.text(0.5, 0.5, "no epoch completed yet", ha="center", va="center", transform=ax_acc.transAxes,
                    color=grey)
    if any_steps:
        curve_h.append(Line2D([], [], color=grey, lw=0.8, alpha=0.6))
        curve_l.append("(b) training batches (running mean)")
    elif not any_epochs:
        ax_loss.text(0.5, 0.5, "no update recorded yet", ha="center", va="center", transform=ax_loss.transAxes,
                     color=grey)

    layer_labels = _layer_labels(trajs[0], max_layers) if max_layers else []
    if max_layers and any(_n_layers(t) != max_layers for t in trajs):
        layer_labels = [f"layer {i + 1}" for i in range(max_layers)]
    layer_handles = [Line2D([], [], color=_shade(grey, j, max_layers), ls=_LAYER_STYLES[j % len(_LAYER_STYLES)])
                     for j in range(max_layers)]
    if any_align:
        ax_al.axhline(0.0, color="0.6", lw=0.6, zorder=0)
        ax_al.set_title("(c) alignment with the BP gradient (running mean)")
    else:
        head, rest = NO_ALIGNMENT.split(": ", 1)
        ax_al.text(0.5, 0.5, "\n".join([head + ":", *textwrap.wrap(rest, 42)]),
                   ha="center", va="center", transform=ax_al.transAxes, color=grey)
        ax_al.set_yticks([])
        ax_al.set_xticks([])
    if any_steps:
        ax_un.set_yscale("log")
        ax_un.set_title("(d) update norm per layer (running mean)")
    else:
        ax_un.text(0.5, 0.5, "no update recorded yet", ha="center", va="center", transform=ax_un.transAxes,
                   color=grey)

    if len(trajs) == 1:
        s = summary(trajs[0])
        title = f"{s['name']}: {s['rule']}, seed {s['seed']}"
        if s["network"]:
            title += f"  |  {s['network']}"
        fig.suptitle(title, fontsize=11)
    else:
        fig.suptitle(f"{len(trajs)} runs", fontsize=11)
    # one legend under the panels, outside the data: rows of runs (colours), then
    # the line styles of panels a, b and of the layers in panels c, d
    ncol = 3 if len(trajs) > 1 or max_layers > 1 else 1
    blank = Line2D([], [], alpha=0.0)
    grid = _legend_rows(run_handles, run_labels, ncol, blank)
    grid += _legend_rows(curve_h, curve_l, ncol, blank)
    if any_align or any_steps:
        labels = [f"(c, d) {lab}" for lab in layer_labels]
        grid += _legend_rows(layer_handles, labels, ncol, blank)
    handles = [grid[r][k][0] for k in range(ncol) for r in range(len(grid))]  # legends fill column by column
    labels = [grid[r][k][1] for k in range(ncol) for r in range(len(grid))]
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    bottom = 0.015 + 0.03 * len(grid)
    fig.tight_layout(rect=(0, bottom, 1, 0.98))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, format=out.suffix.lower().lstrip("."))
    return out


# --------------------------------------------------------------------------- monitors

#: Membrane-potential traces drawn per layer (of the first recorded sample).
MONITOR_TRACES = 5

#: Raster rows (samples x recorded units) drawn at most per layer; further samples are left out.
MONITOR_RASTER_ROWS = 1500


def _monitors_of(x) -> tuple[Monitors, Trajectory | None]:
    """(monitors, trajectory or None) of a path, Trajectory or Monitors; ValueError if the run has none."""
    if isinstance(x, Monitors):
        return x, None
    traj = _one(x)
    if traj.monitors is None:
        raise ValueError(f"{traj.path}: the run has no spike/voltage monitors")
    return traj.monitors, traj


def _monitor_layer_label(traj: Trajectory | None, l: int) -> str:
    """``layer l+1 (n_in→n_out)`` for the 0-based layer index ``l`` (as panels c, d of :func:`plot_runs`)."""
    if traj is not None:
        L = _n_layers(traj)
        if l < L:
            return _layer_labels(traj, L)[l]
    return f"layer {l + 1}"


def _samples_text(samples: np.ndarray, limit: int = 6) -> str:
    idx = [f"#{int(i)}" for i in samples[:limit]]
    return ", ".join(idx) + (", ..." if len(samples) > limit else "")


def monitors_text(traj) -> str:
    """One line describing a run's spike/voltage monitors ("none" if it has none).

    traj : a path, :class:`Trajectory` or :class:`~npsim.trajectory.Monitors`.
    Layers are numbered from 1, as in :func:`info_text` (group ``layer0`` is layer 1).
    """
    if not isinstance(traj, Monitors):
        traj = _one(traj)
        if traj.monitors is None:
            return "none"
    m, t = _monitors_of(traj)
    parts = []
    for l, rec in m.layers.items():
        what = [m.nodes.get(l) or "?", f"{len(rec['units'])} units"]
        if "spikes" in rec:
            what.append(f"{int(rec['spikes'].sum())} spikes")
        parts.append(f"{_monitor_layer_label(t, l)}: {', '.join(what)}")
    S = len(m.samples)
    return (f"{'; '.join(parts)}; {S} test sample{'s' if S != 1 else ''} ({_samples_text(m.samples)}), "
            f"T = {m.steps} steps of {m.dt:g} ms, after epoch {m.epoch}")


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


def plot_monitors(path_or_traj, out) -> Path:
    """Plot a run's spike/voltage monitors into ``out`` (.png, .pdf or .svg).

    path_or_traj : a path, :class:`Trajectory` or :class:`~npsim.trajectory.Monitors`.
    One column per recorded layer (layers numbered from 1, as in :func:`plot_runs`):
    on top a spike raster (time in ms on x; the recorded units of each sample
    stacked, one colour per test sample, sample 0 on top; up to
    :data:`MONITOR_RASTER_ROWS` rows), below it the membrane potential of up
    to :data:`MONITOR_TRACES` units of the first sample (from the most to the
    least active) with the threshold as a dashed line and spikes marked on it. A
    layer without spikes (non-spiking nodes) gets only the voltage panel.
    Returns ``out`` as a Path; ValueError for another suffix or a run without monitors.
    """
    out = Path(out)
    if out.suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(f"{out}: plot file must end in {', '.join(PLOT_SUFFIXES)}")
    m, traj = _monitors_of(path_or_traj)
    if not m.layers:
        raise ValueError(f"{m.path}: the /monitors group holds no layer")

    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    layers = list(m.layers.items())
    K = len(layers)
    ncols = min(K, 4)
    nblocks = math.ceil(K / ncols)
    fig = Figure(figsize=(max(8.0, 4.6 * ncols), 6.2 * nblocks + 0.4), dpi=120)
    FigureCanvasAgg(fig)  # no pyplot, no global backend switch
    gs = fig.add_gridspec(2 * nblocks, ncols, height_ratios=[1.25, 1.0] * nblocks)
    t = m.times
    S, T = len(m.samples), m.steps
    sample_colors = [colormaps["tab10"](i % 10) for i in range(S)]
    trace_cmap = colormaps["Dark2"]
    grey = "0.35"
    raster_lines = []  # (axes, lines, rows) to size the tick marks once the layout is known

    for i, (l, rec) in enumerate(layers):
        r, c = 2 * (i // ncols), i % ncols
        label = _monitor_layer_label(traj, l)
        node = m.nodes.get(l) or ""
        head = f"{label}, {node}" if node else label
        units = rec["units"]
        n = len(units)
        v = rec["v"]
        spikes = rec.get("spikes")
        thr = m.thresholds.get(l)
        if spikes is not None:
            ax_r = fig.add_subplot(gs[r, c])
            ax_v = fig.add_subplot(gs[r + 1, c], sharex=ax_r)
            shown = max(1, min(S, MONITOR_RASTER_ROWS // max(1, n)))
            gap = max(1, round(0.15 * n)) if shown > 1 else 0
            lines, rows = [], shown * n + (shown - 1) * gap
            for s in range(shown):
                st, j = np.nonzero(spikes[s])
                ln, = ax_r.plot(t[st], s * (n + gap) + j, ls="", marker="|", color=sample_colors[s],
                                rasterized=len(st) > 2000)
                lines.append(ln)
            raster_lines.append((ax_r, lines, rows))
            ax_r.set_ylim(rows - 0.5, -0.5)  # sample 0 and unit row 0 on top
            total = int(spikes.sum())
            rate = 1000.0 * total / (S * T * n * m.dt)
            title = f"{head}: spikes ({total}, mean {rate:.3g} Hz)"
            if shown < S:
                title += f", samples 1\u2013{shown} of {S}"
            ax_r.set_title(title, fontsize=10)
            if shown > 1:
                ax_r.set_yticks([s * (n + gap) + (n - 1) / 2 for s in range(shown)])
                ax_r.set_yticklabels([f"#{int(x)}" for x in m.samples[:shown]])
                for tick, col in zip(ax_r.get_yticklabels(), sample_colors):
                    tick.set_color(col)
                ax_r.set_ylabel(f"test sample ({n} unit{'s' if n != 1 else ''} each)")
            else:
                ax_r.yaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
                ax_r.yaxis.set_major_formatter(FuncFormatter(
                    lambda y, _pos, u=units: str(int(u[int(round(y))])) if 0 <= round(y) < len(u) else ""))
                ax_r.set_ylabel(f"unit (sample #{int(m.samples[0])})")
            if total == 0:
                ax_r.text(0.5, 0.5, "no spikes", ha="center", va="center", transform=ax_r.transAxes, color=grey)
            ax_r.tick_params(labelbottom=False)
            ax_r.grid(True, axis="x", alpha=0.3)
        else:
            ax_v = fig.add_subplot(gs[r : r + 2, c])

        rows_v = _trace_units(rec, MONITOR_TRACES)
        for k, j in enumerate(rows_v):
            col = trace_cmap(k % trace_cmap.N)
            ax_v.plot(t, v[0, :, j], color=col, lw=1.0, label=f"unit {int(units[j])}")
        finite = v[0][:, rows_v][np.isfinite(v[0][:, rows_v])]
        if spikes is not None:
            if thr is not None:
                y_mark = thr
            else:
                y_mark = float(finite.max()) if finite.size else 1.0
            for k, j in enumerate(rows_v):
                st = np.nonzero(spikes[0, :, j])[0]
                if len(st):
                    ax_v.plot(t[st], np.full(len(st), y_mark), ls="", marker="|", ms=9, mew=1.4,
                              color=trace_cmap(k % trace_cmap.N))
        if thr is not None:
            ax_v.axhline(thr, color="0.25", ls="--", lw=0.9)
        ax_v.set_title(f"{head}: membrane potential, sample #{int(m.samples[0])}", fontsize=10)
        ax_v.set_xlabel("time (ms)")
        ax_v.set_ylabel("membrane potential")
        ax_v.set_xlim(0.0, T * m.dt)
        ax_v.grid(True, alpha=0.3)
        handles, labels = ax_v.get_legend_handles_labels()
        if thr is not None:
            handles.append(Line2D([], [], color="0.25", ls="--", lw=0.9))
            labels.append(f"threshold ({thr:g})")
        if spikes is not None and len(rows_v):
            handles.append(Line2D([], [], color=grey, ls="", marker="|", ms=9, mew=1.4))
            labels.append("spike")
        if handles:
            if finite.size:  # headroom above the traces for a legend that hides none of them
                lo, hi = float(finite.min()), float(finite.max())
                if thr is not None:
                    lo, hi = min(lo, thr), max(hi, thr)
                span = hi - lo if hi > lo else 1.0
                ax_v.set_ylim(lo - 0.05 * span, hi + (0.3 if len(handles) > 4 else 0.18) * span)
            ax_v.legend(handles, labels, fontsize=7, loc="upper center", ncol=min(4, len(handles)),
                        framealpha=0.85, columnspacing=1.0, handlelength=1.6)

    name = Path(m.path).name if m.path else "run"
    if traj is not None and traj.attrs.get("name"):
        name = f"{traj.attrs['name']} ({name})"
    fig.suptitle(f"{name}: monitors after epoch {m.epoch}; T = {m.steps} steps of dt = {m.dt:g} ms "
                 f"({m.steps * m.dt:g} ms); {S} test sample{'s' if S != 1 else ''} ({_samples_text(m.samples)})",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    for ax, lines, rows in raster_lines:  # tick marks one row tall, now that the axes' size is known
        height_pt = ax.get_window_extent().height * 72.0 / fig.dpi
        ms = min(8.0, max(1.0, 0.9 * height_pt / max(1, rows)))
        for ln in lines:
            ln.set_markersize(ms)
            ln.set_markeredgewidth(min(1.2, max(0.5, ms / 4)))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, format=out.suffix.lower().lstrip("."))
    return out


# --------------------------------------------------------------------------- sweeps

#: Per-run metrics of a sweep index that :func:`aggregate` summarises over seeds.
SWEEP_METRICS = ("final_test_accuracy", "best_test_accuracy", "final_train_accuracy")


def load_sweep(path) -> list[dict]:
    """A sweep's runs: the rows of its index, one dict per run.

    path : the sweep TOML file, its out folder, or its ``index.csv``.
    Keys of a row: ``run``, ``file``, ``path`` (the trajectory file), every
    swept key (typed values), ``seed``, ``status``, ``epochs``, the metrics
    of :data:`npsim.sweep.INDEX_COLUMNS` (NaN if missing), ``alignment`` (list,
    one cosine per layer) and ``message``. SweepError without a readable index.
    """
    from .sweep import read_index

    return read_index(path)[1]


def sweep_keys(rows: list[dict]) -> list[str]:
    """The swept keys of index rows (every column but the index's own), in column order."""
    from .sweep import INDEX_COLUMNS

    own = {"run", "file", "path", *INDEX_COLUMNS}
    return [k for k in rows[0] if k not in own] if rows else []


def _rows(rows_or_path) -> list[dict]:
    return load_sweep(rows_or_path) if isinstance(rows_or_path, (str, os.PathLike)) else list(rows_or_path)


def _ci(values, confidence: float) -> tuple[int, float, float, float, float]:
    """(n, mean, sd, low, high) of the finite values: Student-t interval for the mean (NaN sd/CI if n < 2)."""
    from scipy import stats

    a = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    n = len(a)
    if n == 0:
        return 0, math.nan, math.nan, math.nan, math.nan
    mean = float(a.mean())
    if n < 2:
        return 1, mean, math.nan, math.nan, math.nan
    sd = float(a.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return n, mean, sd, mean - half, mean + half


def _groups(rows: list[dict], by: list[str]) -> list[tuple[dict, list[dict]]]:
    """Rows grouped by their values of ``by``, groups in order of first appearance."""
    out: dict[str, tuple[dict, list[dict]]] = {}
    for r in rows:
        values = {k: r.get(k) for k in by}
        key = repr([values[k] for k in by])
        out.setdefault(key, (values, []))[1].append(r)
    return list(out.values())


def aggregate(rows, by=None, *, metrics=SWEEP_METRICS, confidence: float = 0.95) -> list[dict]:
    """Mean and confidence interval over seeds of a sweep's metrics, per parameter set.

    rows : index rows (:func:`load_sweep`) or a sweep path.
    by : keys to group by (default: every swept key; never ``seed``).
    metrics : index columns to summarise.
    confidence : level of the Student-t interval for the mean.

    Only finished runs enter the statistics. Returns one dict per group, in
    the order the groups first appear in the index: the group's values of
    ``by``; ``runs``, ``finished``, ``failed`` (counts) and ``seeds`` (of the
    finished runs); for each metric ``m``: ``m_n``, ``m_mean``, ``m_sd``,
    ``m_low``, ``m_high`` (interval; NaN with fewer than 2 values);
    ``alignment_mean``, ``alignment_low``, ``alignment_high`` (lists, one per
    layer: cosine with the BP gradient, see :func:`summary`); ``mean_alignment_mean``
    (over layers and seeds) and ``wall_time_mean`` (s).
    """
    rows = _rows(rows)
    by = [k for k in (sweep_keys(rows) if by is None else by) if k != "seed"]
    out = []
    for values, members in _groups(rows, by):
        done = [r for r in members if r.get("status") == "finished"]
        g = dict(values)
        g.update(runs=len(members), finished=len(done), failed=sum(r.get("status") == "failed" for r in members),
                 seeds=[r.get("seed") for r in done])
        for m in metrics:
            n, mean, sd, lo, hi = _ci([r.get(m) for r in done], confidence)
            g.update({f"{m}_n": n, f"{m}_mean": mean, f"{m}_sd": sd, f"{m}_low": lo, f"{m}_high": hi})
        L = max((len(r.get("alignment") or []) for r in done), default=0)
        per_layer = [_ci([(r.get("alignment") or [])[j] if j < len(r.get("alignment") or []) else math.nan
                          for r in done], confidence) for j in range(L)]
        g["alignment_mean"] = [c[1] for c in per_layer]
        g["alignment_low"] = [c[3] for c in per_layer]
        g["alignment_high"] = [c[4] for c in per_layer]
        g["mean_alignment_mean"] = _ci([r.get("mean_alignment") for r in done], confidence)[1]
        g["wall_time_mean"] = _ci([r.get("wall_time") for r in done], confidence)[1]
        out.append(g)
    return out


def sweep_curves(rows, by=None, *, metric: str = "test_accuracy", confidence: float = 0.95) -> list[dict]:
    """Per-epoch mean and confidence band over seeds of an epoch series, per parameter set.

    rows : index rows or a sweep path; by : as in :func:`aggregate`;
    metric : a per-epoch series (``test_accuracy``, ``train_accuracy``,
    ``test_loss``, ``train_loss``).

    Reads the trajectory files of the finished runs. Returns one dict per
    group: the group's values of ``by`` and, with E the most epochs of any
    member, ``epoch`` (E,), ``mean``, ``low``, ``high`` (E,; the band is NaN
    where fewer than 2 runs have that epoch), ``min``, ``max`` and ``n`` (E,).
    """
    from .trajectory import TrajectoryError

    rows = _rows(rows)
    by = [k for k in (sweep_keys(rows) if by is None else by) if k != "seed"]
    out = []
    for values, members in _groups(rows, by):
        series = []
        for r in members:
            if r.get("status") != "finished":
                continue
            try:
                t = read_trajectory(r["path"], snapshots=False, monitors=False)
            except TrajectoryError:
                continue
            e, y = _col(t.epochs, "epoch"), _col(t.epochs, metric).astype(np.float64)
            if len(e) and len(e) == len(y):
                series.append((e.astype(np.int64), y))
        E = max((int(e.max()) for e, _ in series), default=0)
        table = np.full((len(series), E), np.nan)
        for i, (e, y) in enumerate(series):
            table[i, e - 1] = y
        stats_ = [_ci(table[:, j], confidence) for j in range(E)]
        g = dict(values)
        with np.errstate(all="ignore"):
            g.update(epoch=np.arange(1, E + 1, dtype=np.float64),
                     mean=np.array([c[1] for c in stats_]), low=np.array([c[3] for c in stats_]),
                     high=np.array([c[4] for c in stats_]), n=np.array([c[0] for c in stats_], dtype=np.int64),
                     min=np.nanmin(table, axis=0) if len(series) else np.empty(0),
                     max=np.nanmax(table, axis=0) if len(series) else np.empty(0))
        out.append(g)
    return out


def _short_keys(keys: list[str]) -> dict[str, str]:
    """Readable labels of dotted keys: the last part (``rule.name`` -> ``rule``), the full key where ambiguous."""
    def short(k):
        parts = k.split(".")
        return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]

    labels = {k: short(k) for k in keys}
    counts = {}
    for v in labels.values():
        counts[v] = counts.get(v, 0) + 1
    return {k: (v if counts[v] == 1 else k) for k, v in labels.items()}


def _value_label(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _group_label(g: dict, keys: list[str], short: dict[str, str]) -> str:
    return ", ".join(f"{short[k]}={_value_label(g[k])}" for k in keys) if keys else "all runs"


def _sweep_name(path) -> str:
    from .sweep import SPEC_NAME, index_path

    folder = index_path(path).parent
    spec = folder / SPEC_NAME
    if spec.is_file():
        try:
            return str(tomllib.loads(spec.read_text(encoding="utf-8")).get("name", folder.name))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            pass
    return folder.name


def _pm(mean: float, low: float, high: float, spec: str = ".4f") -> str:
    if not math.isfinite(mean):
        return "-"
    if not math.isfinite(low):
        return format(mean, spec)
    return f"{format(mean, spec)} \u00b1 {format((high - low) / 2, spec)}"


def _sweep_groups(path, confidence: float):
    """(rows, swept keys, their short labels, per-parameter-set aggregates) of a sweep with runs."""
    from .sweep import index_path

    rows = load_sweep(path)
    if not rows:
        raise ValueError(f"{index_path(path)}: the sweep has no runs")
    keys = sweep_keys(rows)
    return rows, keys, _short_keys(keys), aggregate(rows, keys, confidence=confidence)


def sweep_text(path, *, confidence: float = 0.95) -> str:
    """What ``npsim compare SWEEP`` prints: one line per parameter set, best mean final test accuracy first.

    path : the sweep TOML file, its out folder or its index. Columns: the swept
    keys, finished/total runs, final test, best test and final train accuracy
    as mean ± half-width of the ``confidence`` Student-t interval over seeds
    (finished runs only), mean BP alignment (over layers and seeds) and mean
    wall time; then the failed runs with their messages.
    """
    from .sweep import index_path

    rows, keys, short, groups = _sweep_groups(path, confidence)
    groups.sort(key=lambda g: -g["final_test_accuracy_mean"] if math.isfinite(g["final_test_accuracy_mean"])
                else math.inf)
    pct = f"{100 * confidence:g}%"
    header = [short[k] for k in keys] + ["runs", "test acc", "best test acc", "train acc", "BP align", "wall time"]
    right = set(header[len(keys):])
    body = []
    for g in groups:
        cells = [_value_label(g[k]) for k in keys]
        cells.append(f"{g['finished']}/{g['runs']}" + (f" ({g['failed']} failed)" if g["failed"] else ""))
        for m in SWEEP_METRICS:
            cells.append(_pm(g[f"{m}_mean"], g[f"{m}_low"], g[f"{m}_high"]))
        cells.append(_fmt(g["mean_alignment_mean"], ".3f"))
        cells.append(_fmt_duration(g["wall_time_mean"]))
        body.append(cells)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, header)).rstrip()

    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: kv[0] != "finished"))
    out = [f"sweep {_sweep_name(path)}: {len(rows)} runs ({status}); {index_path(path)}",
           line(header), line(["-" * w for w in widths]), *(line(b) for b in body),
           f"(mean \u00b1 half-width of the {pct} Student-t interval over seeds of finished runs; BP align: "
           f"cosine with the BP gradient, mean over layers)"]
    failed = [r for r in rows if r["status"] == "failed"]
    for r in failed:
        out.append(f"failed: {r['run']}: {r['message'] or '(no message)'}")
    return "\n".join(out)


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
    out = Path(out)
    if out.suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(f"{out}: plot file must end in {', '.join(PLOT_SUFFIXES)}")
    rows, keys, short, groups = _sweep_groups(path, confidence)
    acc = sweep_curves(rows, keys, metric="test_accuracy", confidence=confidence)
    loss = sweep_curves(rows, keys, metric="test_loss", confidence=confidence)

    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    G = len(groups)
    labels = [_group_label(g, keys, short) for g in groups]
    fig = Figure(figsize=(12, 9), dpi=120)
    FigureCanvasAgg(fig)  # no pyplot, no global backend switch
    (ax_acc, ax_loss), (ax_fin, ax_al) = fig.subplots(2, 2)
    cmap = colormaps["tab10"] if G <= 10 else colormaps["tab20"]
    palette = [cmap(i % cmap.N) for i in range(G)]
    grey = "0.35"
    pct = f"{100 * confidence:g}%"

    for ax, curves_, ylabel, lim in ((ax_acc, acc, "test accuracy (fraction)", (0.0, 1.0)),
                                     (ax_loss, loss, "test loss", (0.0, np.inf))):
        drawn = False
        for c, color in zip(curves_, palette):
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
            ax.text(0.5, 0.5, "no finished run", ha="center", va="center", transform=ax.transAxes, color=grey)
    ax_acc.set_title(f"(a) test accuracy: mean over seeds, {pct} CI band")
    ax_loss.set_title(f"(b) test loss: mean over seeds, {pct} CI band")

    # (c) final test accuracy: seeds as dots, mean and interval; first group on top
    rng = np.random.default_rng(0)
    for i, (g, color) in enumerate(zip(groups, palette)):
        y = G - 1 - i
        vals = [r.get("final_test_accuracy") for r in rows
                if r.get("status") == "finished" and all(r.get(k) == g[k] for k in keys)]
        vals = np.asarray([v for v in vals if v is not None and np.isfinite(v)], dtype=np.float64)
        if len(vals):
            ax_fin.plot(vals, y + rng.uniform(-0.12, 0.12, len(vals)), ls="", marker="o", markersize=4,
                        mfc="none", mec=color, alpha=0.8)
        m, lo, hi = g["final_test_accuracy_mean"], g["final_test_accuracy_low"], g["final_test_accuracy_high"]
        lo, hi = max(lo, 0.0), min(hi, 1.0)  # an accuracy interval ends at 0 and 1
        if np.isfinite(m):
            xerr = [[m - lo], [hi - m]] if np.isfinite(lo) else None
            ax_fin.errorbar([m], [y], xerr=xerr, fmt="D", color=color, markersize=6, capsize=4, lw=1.5)
    ax_fin.set_yticks(range(G))
    numbered = max(map(len, labels)) > 28
    ax_fin.set_yticklabels([f"({G - j})" if numbered else labels[G - 1 - j] for j in range(G)] if G > 1 else [""])
    for tick, color in zip(ax_fin.get_yticklabels(), palette[::-1]):
        tick.set_color(color)
    ax_fin.set_ylim(-0.6, G - 0.4)
    ax_fin.set_xlabel("final test accuracy (fraction)")
    ax_fin.set_ylabel("parameter set (legend number)" if G > 1 and numbered else "")
    ax_fin.set_title(f"(c) final test accuracy: seeds (\u25cb), mean \u00b1 {pct} CI (\u25c6)")
    ax_fin.grid(True, axis="x", alpha=0.3)

    # (d) BP alignment per layer: mean over seeds with interval, groups side by side
    L = max((len(g["alignment_mean"]) for g in groups), default=0)
    any_align = any(np.isfinite(g["alignment_mean"]).any() for g in groups if len(g["alignment_mean"]))
    if any_align:
        width = 0.7 / max(1, G)
        for i, (g, color) in enumerate(zip(groups, palette)):
            a = np.asarray(g["alignment_mean"], dtype=np.float64)
            if not len(a) or not np.isfinite(a).any():
                continue
            x = np.arange(1, len(a) + 1) + (i - (G - 1) / 2) * width
            lo, hi = (np.clip(np.asarray(g[k], dtype=np.float64), -1.0, 1.0)
                      for k in ("alignment_low", "alignment_high"))
            err = np.where(np.isfinite(lo), [a - lo, hi - a], 0.0)
            ax_al.errorbar(x, a, yerr=err, fmt="o-", color=color, markersize=5, capsize=3, lw=1.0)
        ax_al.set_xticks(range(1, L + 1))
        ax_al.set_xticklabels([f"layer {j}" for j in range(1, L + 1)])
        ax_al.axhline(0.0, color="0.6", lw=0.6, zorder=0)
        ax_al.set_ylabel("cosine similarity")
        ax_al.grid(True, axis="y", alpha=0.3)
    else:
        head, rest = NO_ALIGNMENT.split(": ", 1)
        ax_al.text(0.5, 0.5, "\n".join([head + ":", *textwrap.wrap(rest, 42)]), ha="center", va="center",
                   transform=ax_al.transAxes, color=grey)
        ax_al.set_xticks([])
        ax_al.set_yticks([])
    ax_al.set_title(f"(d) alignment with the BP gradient: mean \u00b1 {pct} CI")

    n_fin = sum(r["status"] == "finished" for r in rows)
    fig.suptitle(f"sweep {_sweep_name(path)}: {len(rows)} runs ({n_fin} finished), {G} parameter "
                 f"set{'s' if G != 1 else ''}; BP alignment: each run's mean over its last "
                 f"{100 * ALIGNMENT_TAIL:g}% of measured updates", fontsize=11)
    handles = [Line2D([], [], color=c, lw=2.5) for c in palette]
    names = [(f"({i + 1}) " if numbered else "") + f"{lab}  [{g['finished']}/{g['runs']} runs finished]"
             for i, (lab, g) in enumerate(zip(labels, groups))]
    ncol = 1 if G <= 3 else (2 if G <= 8 else 3)
    blank = Line2D([], [], alpha=0.0)
    grid = _legend_rows(handles, names, ncol, blank)
    fig.legend([grid[r][k][0] for k in range(ncol) for r in range(len(grid))],
               [grid[r][k][1] for k in range(ncol) for r in range(len(grid))],
               loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.015 + 0.03 * len(grid), 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, format=out.suffix.lower().lstrip("."))
    return out
