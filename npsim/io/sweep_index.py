"""The sweep index: ``<out>/index.csv``, one row per run with its swept values, status and final metrics.

Only a sweep's driver writes it (:mod:`npsim.experiment.sweep`); analysis
reads it (:mod:`npsim.analysis`). Swept values are written exactly (floats as
``repr``, lists and tables as JSON) and read back typed. The columns are
documented in docs/sweeps.md.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import tomllib
from pathlib import Path

from ..errors import SweepError

__all__ = ["INDEX_NAME", "STATUSES", "INDEX_COLUMNS", "METRIC_COLUMNS", "SUMMARY_COLUMNS", "index_path",
           "write_index", "read_index"]

#: File name of the sweep index inside the out folder.
INDEX_NAME = "index.csv"

#: Values of the index column ``status``.
STATUSES = ("pending", "running", "finished", "failed", "interrupted")

#: The float-valued metrics of a run (NaN where missing).
METRIC_COLUMNS = ("final_test_accuracy", "best_test_accuracy", "final_train_accuracy", "final_test_loss",
                  "mean_alignment", "wall_time")

#: The columns a run's summary (:func:`npsim.analysis.summary`) fills in.
SUMMARY_COLUMNS = ("epochs", *METRIC_COLUMNS, "alignment")

#: Index columns after ``run, file`` and the swept keys.
INDEX_COLUMNS = ("seed", "status", "epochs", *METRIC_COLUMNS[:5], "alignment", "wall_time", "resumed_count",
                 "message")

_FIXED_COLUMNS = ("run", "file", *INDEX_COLUMNS)


def index_path(path) -> Path:
    """The index file of a sweep given as its TOML file, its out folder or the index itself."""
    p = Path(path)
    if p.is_dir():
        return p / INDEX_NAME
    if p.suffix.lower() == ".toml":
        if not p.is_file():
            raise SweepError(f"sweep file {str(p)!r} not found")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise SweepError(f"{p}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SweepError(f"{p}: not valid TOML: {exc}") from None
        if "base" not in raw:
            raise SweepError(f"{p}: not a sweep file (no 'base' key)")
        out = raw.get("out")
        name = raw.get("name", "")
        return Path(out if out else Path("runs") / str(name)).expanduser().resolve() / INDEX_NAME
    return p


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "" if not math.isfinite(v) else format(v, ".6g")
    if isinstance(v, (list, tuple)):
        return ";".join(_cell(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v)
    return str(v)


def _param_cell(v) -> str:
    """A swept value, exactly: floats as repr, lists and tables as JSON (read back by :func:`_parse_value`)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return "" if v is None else str(v)


def write_index(path, rows: list[dict], keys: list[str]) -> Path:
    """Write the index CSV atomically (a temporary file, then ``os.replace``).

    rows : one dict per run with ``run, file``, the swept ``keys``, and :data:`INDEX_COLUMNS`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    cols = ["run", "file", *keys, *INDEX_COLUMNS]
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows:
            w.writerow([_param_cell(r.get(c)) if c in keys else _cell(r.get(c)) for c in cols])
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _parse_value(text: str):
    """An index cell back to a value: TOML literals (numbers, booleans, arrays), else the text."""
    if text == "":
        return None
    if text.startswith(("{", "[")):
        with contextlib.suppress(ValueError):
            return json.loads(text)
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _float(text: str) -> float:
    try:
        return float(text) if text != "" else math.nan
    except ValueError:
        return math.nan


def read_index(path) -> tuple[list[str], list[dict]]:
    """Read a sweep index: (swept keys, rows).

    path : the index, the out folder or the sweep TOML file. Each row has
    ``run``, ``file`` and ``path`` (the trajectory file, absolute), the swept
    keys (values typed: numbers, booleans, strings), ``seed`` (int),
    ``status``, ``epochs`` and ``resumed_count`` (int), the metrics (float,
    NaN if missing), ``alignment`` (list of floats, one per layer) and
    ``message``. SweepError if there is no readable index.
    """
    p = index_path(path)
    if not p.is_file():
        raise SweepError(f"{p}: no sweep index (run `npsim sweep SWEEP.toml` first)")
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            raw_rows = [r for r in reader if r]
    except (OSError, UnicodeDecodeError, StopIteration, csv.Error) as exc:
        raise SweepError(f"{p}: unreadable sweep index ({exc or 'empty file'})") from None
    missing = [c for c in _FIXED_COLUMNS if c not in header]
    if missing:
        raise SweepError(f"{p}: not an npsim sweep index (no column {missing[0]!r})")
    keys = [c for c in header if c not in _FIXED_COLUMNS]
    rows = []
    for cells in raw_rows:
        d = dict(zip(header, cells + [""] * (len(header) - len(cells))))
        row = {"run": d["run"], "file": d["file"], "path": str((p.parent / d["file"]).resolve())}
        for k in keys:
            row[k] = _parse_value(d[k])
        row["seed"] = int(d["seed"]) if d["seed"].lstrip("-").isdigit() else d["seed"]
        row["status"] = d["status"]
        for k in ("epochs", "resumed_count"):
            row[k] = int(d[k]) if d[k].isdigit() else 0
        for k in METRIC_COLUMNS:
            row[k] = _float(d[k])
        row["alignment"] = [_float(x) for x in d["alignment"].split(";")] if d["alignment"] else []
        row["message"] = d["message"]
        rows.append(row)
    return keys, rows
