"""A run's numbers: load trajectory files and reduce them to summaries and plottable curves.

Every function takes trajectory files (``str`` / ``Path``) or already loaded
:class:`~npsim.io.trajectory.Trajectory` objects, works on files that a live
run is still writing (and on runs without any completed epoch yet), and lets
:class:`~npsim.errors.TrajectoryError` through for unusable files.
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path

import numpy as np

from ..io.trajectory import Trajectory, read_trajectory

__all__ = ["load", "summary", "table", "curves", "running_mean", "ALIGNMENT_TAIL"]

#: Fraction of the measured (non-NaN) alignment rows, the last ones, that
#: :func:`summary` averages into the per-layer alignment.
ALIGNMENT_TAIL = 0.10

#: Running-mean window of smoothed step-level series, as a fraction of the rows.
SMOOTH_FRACTION = 1 / 50


def load(paths) -> list[Trajectory]:
    """Read one trajectory file or several (without weight snapshots).

    paths : a path, a :class:`Trajectory`, or an iterable of them.
    Returns one :class:`Trajectory` per entry, in the given order.
    """
    if isinstance(paths, (str, os.PathLike, Trajectory)):
        paths = [paths]
    return [p if isinstance(p, Trajectory) else read_trajectory(p, snapshots=False) for p in paths]


def load_one(x) -> Trajectory:
    return x if isinstance(x, Trajectory) else read_trajectory(x, snapshots=False)


def column(group: dict, name: str, ndim: int = 1) -> np.ndarray:
    """``group[name]`` as an array, or an empty float array (0 rows) if the series is absent."""
    a = group.get(name)
    if a is None:
        return np.empty((0,) * ndim, dtype=np.float64)
    return np.asarray(a)


def last(a: np.ndarray) -> float:
    return float(a[-1]) if len(a) else math.nan


def n_rows(group: dict) -> int:
    return next((len(v) for v in group.values()), 0)


def n_layers(traj: Trajectory) -> int:
    for name in ("alignment", "update_norm"):
        a = traj.steps.get(name)
        if a is not None and a.ndim == 2:
            return int(a.shape[1])
    sizes = traj.attrs.get("sizes")
    return max(0, len(np.atleast_1d(sizes)) - 1) if sizes is not None else 0


def stored_config(traj: Trajectory) -> dict:
    """The run's stored TOML config as a dict ({} if absent or unparsable)."""
    text = traj.attrs.get("config")
    if not isinstance(text, str):
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}


def nan_mean(a: np.ndarray, axis: int = 0) -> np.ndarray:
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


def smoothing_window(n: int) -> int:
    return max(1, int(round(n * SMOOTH_FRACTION)))


def _measured_alignment(traj: Trajectory) -> tuple[np.ndarray, np.ndarray]:
    """(step index (m,), alignment (m, L)) of the rows where alignment was measured."""
    a = traj.steps.get("alignment")
    if a is None or len(a) == 0:
        return np.empty(0, dtype=np.int64), np.empty((0, n_layers(traj)), dtype=np.float64)
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    keep = np.isfinite(a).any(axis=1)
    step = column(traj.steps, "step")
    if len(step) != len(a):
        step = np.arange(len(a))
    return step[keep].astype(np.int64), a[keep]


def alignment_tail(traj: Trajectory) -> tuple[np.ndarray, int]:
    """Per-layer mean alignment over the last ALIGNMENT_TAIL of measured rows, and how many rows were measured."""
    _, a = _measured_alignment(traj)
    m = len(a)
    if m == 0:
        return np.full(a.shape[1], np.nan), 0
    k = max(1, math.ceil(ALIGNMENT_TAIL * m))
    return nan_mean(a[-k:], axis=0), m


def _wall_time(traj: Trajectory) -> float:
    """Seconds of training, summed over the segments of a resumed run.

    ``wall_time`` restarts from 0 at every resume; a drop in the step series
    starts a new segment. Each segment counts up to its last step row or the
    last epoch row written in it (the evaluation after the last update).
    """
    st = column(traj.steps, "wall_time").astype(np.float64)
    ew = column(traj.epochs, "wall_time").astype(np.float64)
    if len(st) == 0:
        if len(ew) == 0:
            return math.nan
        seg = np.concatenate([[0], np.cumsum(np.diff(ew) < 0)])
        return float(sum(ew[seg == s].max() for s in np.unique(seg)))
    seg = np.concatenate([[0], np.cumsum(np.diff(st) < 0)])
    ends = np.array([st[seg == s].max() for s in range(seg[-1] + 1)])
    step = column(traj.steps, "step")
    es = column(traj.epochs, "step")
    if len(ew) and len(es) == len(ew) and len(step) == len(st):
        # epoch row with step s followed update row s-1: same segment
        rows = np.searchsorted(step, es, side="left") - 1
        for r, w in zip(rows, ew):
            if 0 <= r < len(seg) and np.isfinite(w):
                ends[seg[r]] = max(ends[seg[r]], w)
    return float(np.nansum(ends))


def _steps_per_epoch(traj: Trajectory) -> float | None:
    """Updates per epoch, from the epoch rows, the step rows or the stored config (None if unknown)."""
    e, s = column(traj.epochs, "epoch"), column(traj.epochs, "step")
    if len(e) and len(s) == len(e) and e[-1] > 0 and s[-1] > 0:
        return float(s[-1]) / float(e[-1])
    se = column(traj.steps, "epoch")
    if len(se) and se.max() > se.min():
        n = int(np.count_nonzero(se == se.min()))
        if se.min() == 0 and n:
            return float(n)
    cfg = stored_config(traj)
    try:
        n_train, batch = int(traj.attrs["n_train"]), int(cfg["train"]["batch_size"])
        if n_train >= batch > 0:
            return float(n_train // batch)
    except (KeyError, TypeError, ValueError):
        pass
    return None


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
    traj = load_one(traj)
    a = traj.attrs
    ep = traj.epochs
    test_acc = column(ep, "test_accuracy").astype(np.float64)
    epoch = column(ep, "epoch")
    finite = np.isfinite(test_acc)
    if finite.any():
        i = int(np.nanargmax(np.where(finite, test_acc, -np.inf)))
        best, best_epoch = float(test_acc[i]), int(epoch[i]) if len(epoch) == len(test_acc) else i + 1
    else:
        best, best_epoch = math.nan, None
    align, _ = alignment_tail(traj)
    return {
        "name": str(a.get("name", Path(traj.path).stem)),
        "rule": str(a.get("rule", "?")),
        "seed": a.get("seed"),
        "status": traj.status,
        "network": str(a.get("network", "")),
        "data": str(a.get("data", "")),
        "epochs": int(epoch[-1]) if len(epoch) else 0,
        "steps": n_rows(traj.steps),
        "final_test_accuracy": last(test_acc),
        "best_test_accuracy": best,
        "best_epoch": best_epoch,
        "final_train_accuracy": last(column(ep, "train_accuracy")),
        "final_test_loss": last(column(ep, "test_loss")),
        "wall_time": _wall_time(traj),
        "alignment": [float(x) for x in align],
        "mean_alignment": float(nan_mean(align)) if len(align) else math.nan,
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
    traj = load_one(traj)
    L = n_layers(traj)
    ep, st = traj.epochs, traj.steps
    n = n_rows(st)
    out = {
        "epoch": column(ep, "epoch").astype(np.float64),
        "epoch_step": column(ep, "step").astype(np.float64),
    }
    for k in ("train_accuracy", "test_accuracy", "train_loss", "test_loss"):
        out[k] = column(ep, k).astype(np.float64)
    out["epoch_wall_time"] = column(ep, "wall_time").astype(np.float64)
    step = column(st, "step")
    step = step.astype(np.int64) if len(step) == n else np.arange(n, dtype=np.int64)
    out["step"] = step
    per_epoch = _steps_per_epoch(traj)
    out["step_epoch"] = (step + 1) / per_epoch if per_epoch else np.full(n, np.nan)
    loss = column(st, "loss").astype(np.float64)
    out["loss"] = loss
    out["loss_smooth"] = running_mean(loss, smoothing_window(n))
    un = st.get("update_norm")
    out["update_norm"] = (np.asarray(un, dtype=np.float64).reshape(n, -1) if un is not None
                          else np.empty((0, L)))
    out["alignment_step"], out["alignment"] = _measured_alignment(traj)
    return out


def layer_labels(traj: Trajectory, L: int) -> list[str]:
    sizes = np.atleast_1d(traj.attrs.get("sizes", []))
    if len(sizes) == L + 1:
        return [f"layer {i + 1} ({int(sizes[i])}\u2192{int(sizes[i + 1])})" for i in range(L)]
    return [f"layer {i + 1}" for i in range(L)]
