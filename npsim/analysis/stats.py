"""Sweep statistics: a sweep's index rows grouped by parameter set, with means and intervals over seeds."""

from __future__ import annotations

import math
import os
import tomllib

import numpy as np

from ..errors import TrajectoryError, UsageError
from ..io.sweep_index import INDEX_COLUMNS, index_path, read_index
from ..io.trajectory import read_trajectory
from .metrics import column

__all__ = ["SWEEP_METRICS", "load_sweep", "sweep_keys", "aggregate", "sweep_curves", "sweep_groups", "sweep_name",
           "group_label", "short_keys", "value_label"]

#: Copy of the resolved sweep file that a sweep writes into its out folder (to name the sweep).
SPEC_NAME = "sweep.toml"

#: Per-run metrics of a sweep index that :func:`aggregate` summarises over seeds.
SWEEP_METRICS = ("final_test_accuracy", "best_test_accuracy", "final_train_accuracy")


def load_sweep(path) -> list[dict]:
    """A sweep's runs: the rows of its index, one dict per run.

    path : the sweep TOML file, its out folder, or its ``index.csv``.
    Keys of a row: ``run``, ``file``, ``path`` (the trajectory file), every
    swept key (typed values), ``seed``, ``status``, ``epochs``, the metrics
    of :data:`npsim.io.sweep_index.INDEX_COLUMNS` (NaN if missing), ``alignment`` (list,
    one cosine per layer) and ``message``. SweepError without a readable index.
    """
    return read_index(path)[1]


def sweep_keys(rows: list[dict]) -> list[str]:
    """The swept keys of index rows (every column but the index's own), in column order."""
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
            e, y = column(t.epochs, "epoch"), column(t.epochs, metric).astype(np.float64)
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


def short_keys(keys: list[str]) -> dict[str, str]:
    """Readable labels of dotted keys: the last part (``rule.name`` -> ``rule``), the full key where ambiguous."""
    def short(k):
        parts = k.split(".")
        return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]

    labels = {k: short(k) for k in keys}
    counts = {}
    for v in labels.values():
        counts[v] = counts.get(v, 0) + 1
    return {k: (v if counts[v] == 1 else k) for k, v in labels.items()}


def value_label(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def group_label(g: dict, keys: list[str], short: dict[str, str]) -> str:
    return ", ".join(f"{short[k]}={value_label(g[k])}" for k in keys) if keys else "all runs"


def sweep_name(path) -> str:
    folder = index_path(path).parent
    spec = folder / SPEC_NAME
    if spec.is_file():
        try:
            return str(tomllib.loads(spec.read_text(encoding="utf-8")).get("name", folder.name))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            pass
    return folder.name


def sweep_groups(path, confidence: float):
    """(rows, swept keys, their short labels, per-parameter-set aggregates) of a sweep with runs."""
    rows = load_sweep(path)
    if not rows:
        raise UsageError(f"{index_path(path)}: the sweep has no runs")
    keys = sweep_keys(rows)
    return rows, keys, short_keys(keys), aggregate(rows, keys, confidence=confidence)
