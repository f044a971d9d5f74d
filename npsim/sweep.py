"""Sweeps: one base config run over a grid (and random draws) of config values and seeds, as Dask tasks.

A sweep file (TOML, see ``docs/sweeps.md``) names a base run config, the
seeds, a ``[grid]`` of config keys to values, optional ``[random]`` draws and
optional ``[set]`` overrides for every run. :func:`load_sweep_file` expands
it into runs and validates every run's :class:`~npsim.config.Config` before
anything starts. :func:`run_sweep` runs what is not finished yet, one Dask
task per run, on a :class:`distributed.LocalCluster` or on any scheduler,
writes one trajectory file per run and keeps the sweep index
(``<out>/index.csv``) up to date::

    from npsim.sweep import load_sweep_file, run_sweep
    sweep = load_sweep_file("models/sweep-example.toml")
    print([r.name for r in sweep.runs])
    rows = run_sweep(sweep, workers=2)          # or scheduler="tcp://host:8786", or client=Client(...)

Only the process that calls :func:`run_sweep` (the driver) writes the index;
the workers write the trajectory files, so with a remote scheduler the out
folder must be on a file system that the driver and every worker share.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import json
import math
import os
import queue
import re
import signal
import socket
import sys
import threading
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, ValidationError, field_validator, model_validator

from .config import PATH_KEYS, Config, ConfigError, _Strict, load_config
from .config import format_error as _format_error

__all__ = [
    "SweepError", "Sweep", "RunSpec", "RunState", "load_sweep_file", "run_name", "plan", "run_sweep",
    "execute_run", "read_index", "write_index", "index_path", "INDEX_NAME", "INDEX_COLUMNS", "STATUSES",
]

#: File name of the sweep index inside the out folder.
INDEX_NAME = "index.csv"

#: Copy of the resolved sweep file written into the out folder.
SPEC_NAME = "sweep.toml"

#: Values of the index column ``status``.
STATUSES = ("pending", "running", "finished", "failed", "interrupted")

#: Index columns after ``run, file`` and the swept keys.
INDEX_COLUMNS = ("seed", "status", "epochs", "final_test_accuracy", "best_test_accuracy", "final_train_accuracy",
                 "final_test_loss", "mean_alignment", "alignment", "wall_time", "resumed_count", "message")

_FIXED_COLUMNS = ("run", "file", *INDEX_COLUMNS)

#: Longest run name before it is cut and given a hash (file names stay below 255 bytes).
MAX_NAME = 150

#: Significant digits kept of a random float draw (so names stay readable and exact).
RANDOM_DIGITS = 4

_SAFE = re.compile(r"[^A-Za-z0-9._+-]")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
_RESUME_WAIT_S = 30.0  # how long a task waits for a killed writer of the same file to go away


class SweepError(ConfigError):
    """A sweep file is missing, unreadable or invalid, or its out folder is in use."""


# --------------------------------------------------------------------------- the sweep file


class Distribution(_Strict):
    """How ``[random]`` draws one key: uniform in [low, high] (log-uniform with ``log``), or one of ``choices``."""

    low: float | None = Field(default=None, allow_inf_nan=False)
    high: float | None = Field(default=None, allow_inf_nan=False)
    log: bool = False
    integer: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self):
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log or self.integer:
                raise ValueError("give either choices or low/high (with log, integer), not both")
            if not self.choices:
                raise ValueError("choices is empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high, or choices")
        if not self.low <= self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("log = true needs low > 0")
        return self


class RandomSpec(_Strict):
    n: int = Field(ge=1)
    random_seed: int = 0
    params: dict[str, Distribution] = Field(min_length=1)


class SweepSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    base: str
    out: str | None = None
    seeds: list[int] = Field(default=[0], min_length=1)
    grid: dict[str, list[Any]] = {}
    random: RandomSpec | None = None
    fixed: dict[str, Any] = Field(default={}, alias="set")

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("seeds repeat")
        return v

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, v):
        empty = [k for k, vals in v.items() if not vals]
        if empty:
            raise ValueError(f"'{empty[0]}' has no values")
        return v


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep.

    name : run name (also the config's ``name`` and the file's stem).
    params : swept key -> value of this run (grid keys, then random keys; no seed).
    seed : the run's seed.
    config : the run's full, validated config.
    path : its trajectory file (absolute).
    """

    name: str
    params: dict
    seed: int
    config: Config
    path: Path


@dataclass
class Sweep:
    """A loaded, validated sweep file.

    keys : the swept keys, in file order (``[grid]`` keys, then ``[random]`` keys).
    runs : every run, parameter sets in grid order (last key fastest), seeds innermost.
    """

    name: str
    path: Path
    base: Path
    out: Path
    seeds: list[int]
    keys: list[str]
    grid: dict[str, list]
    random: dict | None
    fixed: dict[str, Any]
    runs: list[RunSpec] = field(default_factory=list)

    @property
    def index(self) -> Path:
        return self.out / INDEX_NAME


def _is_distribution(d) -> bool:
    return isinstance(d, dict) and bool({"low", "high", "choices"} & set(d))


def _flatten(table, source: str, where: str, leaf) -> dict:
    """Dotted keys of a (possibly nested) TOML table; ``leaf(value)`` says where to stop descending."""
    if not isinstance(table, dict):
        raise SweepError(f"{source}: key '{where}': must be a table")
    out = {}

    def walk(d, prefix):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and not leaf(v):
                if not v:
                    raise SweepError(f"{source}: key '{where}.{key}': empty table")
                walk(v, key)
            else:
                if not _KEY.match(key):
                    raise SweepError(f"{source}: key '{where}.{key}': not a dotted config key like 'rule.sigma'")
                if key == "seed" or key.startswith("seed."):
                    raise SweepError(f"{source}: key '{where}.{key}': give seeds with the top-level 'seeds = [...]'")
                if key == "name" or key.startswith("name."):
                    raise SweepError(f"{source}: key '{where}.{key}': run names are set by the sweep")
                out[key] = v

    walk(table, "")
    return out


def _resolve_paths(values: dict, base_dir: Path) -> dict:
    """Relative ``data.path`` / ``network.noise.path`` values, taken relative to the sweep file."""

    def fix(v):
        if isinstance(v, str) and v and not Path(v).is_absolute():
            return str((base_dir / v).resolve())
        return v

    return {k: ([fix(x) for x in v] if isinstance(v, list) else fix(v)) if k in PATH_KEYS else v
            for k, v in values.items()}


def _draw(rng: np.random.Generator, d: Distribution):
    if d.choices is not None:
        return d.choices[int(rng.integers(len(d.choices)))]
    if d.log:
        v = math.exp(rng.uniform(math.log(d.low), math.log(d.high)))
    else:
        v = rng.uniform(d.low, d.high)
    if d.integer:
        return int(min(max(round(v), math.ceil(d.low)), math.floor(d.high)))
    return float(f"{v:.{RANDOM_DIGITS}g}")


def _value_text(v) -> str:
    """Canonical short text of a value, as it appears in run names."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value_text(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}={_value_text(x)}" for k, x in v.items()) + "}"
    return str(v)


def run_name(params: dict, seed: int) -> str:
    """The file-system-safe, deterministic name of a run: ``key=value,...,seed=S``.

    Keys come in the given order; values are written as in TOML (floats as
    Python's shortest repr, e.g. ``0.001``, ``1e-05``). A value character
    outside ``A-Z a-z 0-9 . _ + -`` becomes ``_``, and a name that needed
    such a change (or is longer than :data:`MAX_NAME`) ends in ``-`` and 10 hex
    digits of a hash of the exact parameters, so two different parameter sets
    never share a name.
    """
    raw = ",".join([f"{k}={_value_text(v)}" for k, v in params.items()] + [f"seed={seed}"])
    safe = ",".join([f"{k}={_SAFE.sub('_', _value_text(v))}" for k, v in params.items()] + [f"seed={seed}"])
    if safe != raw or len(safe) > MAX_NAME:
        exact = json.dumps([[k, repr(v)] for k, v in params.items()] + [["seed", repr(seed)]])
        digest = hashlib.sha256(exact.encode()).hexdigest()[:10]
        safe = f"{safe[:MAX_NAME]}-{digest}"
    return safe


def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise SweepError(f"sweep file {str(path)!r} not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path}: not valid TOML: {exc}") from None


def load_sweep_file(path, *, out=None) -> Sweep:
    """Read, expand and validate a sweep file.

    path : the sweep TOML file.
    out : the runs' folder; default the file's ``out``, else ``runs/<name>``
        (relative to the working directory).

    Every run's config is built (``Config.with_overrides``) here, so a bad key
    or value fails before any run starts, with a one-line :class:`SweepError`
    (or :class:`~npsim.config.ConfigError`) naming the key and the file.
    """
    path = Path(path)
    raw = _read_toml(path)
    src = str(path)
    here = path.resolve().parent
    data = dict(raw)
    if "grid" in data:
        data["grid"] = _flatten(data["grid"], src, "grid", leaf=lambda v: False)
        bad = next((k for k, v in data["grid"].items() if not isinstance(v, list)), None)
        if bad is not None:
            raise SweepError(f"{src}: key 'grid.{bad}': must be a list of values, e.g. [1e-4, 1e-3] "
                             f"(got {data['grid'][bad]!r}); put single values under [set]")
    if "set" in data:
        data["set"] = _flatten(data["set"], src, "set", leaf=lambda v: False)
    if isinstance(data.get("random"), dict) and "params" in data["random"]:
        data["random"] = dict(data["random"])
        data["random"]["params"] = _flatten(data["random"]["params"], src, "random.params", leaf=_is_distribution)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        errs = exc.errors()
        more = f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
        raise SweepError(_format_error(errs[0], src) + more) from None

    grid = _resolve_paths(spec.grid, here)
    fixed = _resolve_paths(spec.fixed, here)
    rnd = dict(spec.random.params) if spec.random else {}
    keys = list(grid) + list(rnd)
    for k in rnd:
        if k in grid:
            raise SweepError(f"{src}: key 'random.params.{k}': also in [grid]; sweep a key in one of them")
    for k in keys:
        if k in fixed:
            raise SweepError(f"{src}: key 'set.{k}': also swept; a key is either fixed or swept")
    nested = [(a, b) for a in keys + list(fixed) for b in keys + list(fixed) if b.startswith(a + ".")]
    if nested:
        raise SweepError(f"{src}: keys '{nested[0][0]}' and '{nested[0][1]}' overlap")

    base_path = (here / spec.base) if not Path(spec.base).is_absolute() else Path(spec.base)
    try:
        base = load_config(base_path)
    except ConfigError as exc:
        raise SweepError(f"{src}: key 'base': {exc}") from None
    base = base.with_overrides(fixed, source=f"{src} [set]")
    for k, values in grid.items():  # one key at a time: the error names [grid] and the key
        for v in values:
            base.with_overrides({k: v}, source=f"{src} [grid]")

    draws = [{}]
    if spec.random is not None:
        rng = np.random.default_rng(spec.random.random_seed)
        draws = [{k: _draw(rng, d) for k, d in rnd.items()} for _ in range(spec.random.n)]
        for d in draws:
            for k, v in d.items():
                base.with_overrides({k: v}, source=f"{src} [random]")
        draws = [_resolve_paths(d, here) for d in draws]
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else [{}]

    out_dir = Path(out if out is not None else (spec.out if spec.out is not None else Path("runs") / spec.name))
    out_dir = out_dir.expanduser().resolve()
    sweep = Sweep(name=spec.name, path=path.resolve(), base=base_path.resolve(), out=out_dir, seeds=list(spec.seeds),
                  keys=keys, grid=grid, random=spec.random.model_dump() if spec.random else None, fixed=fixed)
    seen: dict[str, dict] = {}
    for point in points:
        for d in draws:
            params = {**point, **d}
            for seed in spec.seeds:
                name = run_name(params, seed)
                if name in seen:
                    if seen[name] == {**params, "seed": seed}:
                        continue  # a repeated random draw: run once
                    raise SweepError(f"{src}: two parameter sets map to the run name {name!r}; "
                                     f"change a value or the grid")
                seen[name] = {**params, "seed": seed}
                cfg = base.with_overrides({**params, "seed": seed, "name": name}, source=src)
                sweep.runs.append(RunSpec(name, params, seed, cfg, out_dir / f"{name}.h5"))
    return sweep


def _spec_toml(sweep: Sweep) -> str:
    """The resolved sweep file (absolute base and out), as written to ``<out>/sweep.toml``."""
    import tomli_w

    d: dict[str, Any] = {"name": sweep.name, "base": str(sweep.base), "out": str(sweep.out), "seeds": sweep.seeds}
    if sweep.grid:
        d["grid"] = sweep.grid
    if sweep.random:
        d["random"] = {k: v for k, v in sweep.random.items() if k != "params"}
        d["random"]["params"] = {k: {a: b for a, b in p.items() if b is not None and b is not False}
                                 for k, p in sweep.random["params"].items()}
    if sweep.fixed:
        d["set"] = sweep.fixed
    head = f"# sweep {sweep.name}, resolved from {sweep.path}\n"
    return head + tomli_w.dumps(d)


# --------------------------------------------------------------------------- the index


def index_path(path) -> Path:
    """The index file of a sweep given as its TOML file, its out folder or the index itself."""
    p = Path(path)
    if p.is_dir():
        return p / INDEX_NAME
    if p.suffix.lower() == ".toml":
        raw = _read_toml(p)
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
        for k in ("final_test_accuracy", "best_test_accuracy", "final_train_accuracy", "final_test_loss",
                  "mean_alignment", "wall_time"):
            row[k] = _float(d[k])
        row["alignment"] = [_float(x) for x in d["alignment"].split(";")] if d["alignment"] else []
        row["message"] = d["message"]
        rows.append(row)
    return keys, rows


# --------------------------------------------------------------------------- the state of each run


@dataclass
class RunState:
    """Where a run stands, and what the sweep will do with it.

    status : one of :data:`STATUSES`.
    action : ``"run"`` (from scratch, replacing any file), ``"resume"`` (from
        its checkpoint) or None (nothing to do).
    metrics : index columns known so far (see :data:`INDEX_COLUMNS`).
    """

    spec: RunSpec
    status: str
    action: str | None
    metrics: dict = field(default_factory=dict)
    note: str = ""

    def row(self, out: Path) -> dict:
        r = {"run": self.spec.name, "file": os.path.relpath(self.spec.path, out), **self.spec.params,
             "seed": self.spec.seed, **self.metrics, "status": self.status}
        r.setdefault("message", "")
        return r


def _metrics_of(traj) -> dict:
    from .analysis import summary

    s = summary(traj)
    return {k: s[k] for k in ("epochs", "final_test_accuracy", "best_test_accuracy", "final_train_accuracy",
                              "final_test_loss", "mean_alignment", "alignment", "wall_time")} | {
        "resumed_count": int(traj.attrs.get("resumed_count", 0) or 0),
        "message": str(traj.attrs.get("message", "") or "")}


def plan(sweep: Sweep, *, retry_failed: bool = False) -> list[RunState]:
    """The state of every run, from its trajectory file (and the previous index), and what to do with it.

    - finished file: nothing to do;
    - failed file, or ``failed`` in the previous index: nothing, unless
      ``retry_failed`` (then run from scratch);
    - a file that is running, interrupted or was killed: resume from its
      checkpoint (from scratch if it has none);
    - no file, or an unreadable one: run from scratch (replacing it).
    """
    from .trajectory import TrajectoryError, read_trajectory

    previous = {}
    if sweep.index.is_file():
        with contextlib.suppress(SweepError):
            previous = {r["run"]: r for r in read_index(sweep.index)[1]}
    states = []
    for spec in sweep.runs:
        old = previous.get(spec.name)
        failed_before = old is not None and old["status"] == "failed"
        kept = {k: old[k] for k in INDEX_COLUMNS if old and k in old and k not in ("seed", "status")}
        if not spec.path.exists():
            if failed_before and not retry_failed:
                states.append(RunState(spec, "failed", None, kept))
            else:
                states.append(RunState(spec, "pending", "run"))
            continue
        try:
            traj = read_trajectory(spec.path, snapshots=False, monitors=False)
        except TrajectoryError as exc:
            states.append(RunState(spec, "pending", "run", {"message": f"unreadable file replaced: {exc}"}))
            continue
        m = _metrics_of(traj)
        note = ""
        stored = traj.attrs.get("config")
        if isinstance(stored, str) and stored != spec.config.to_toml():
            note = "its stored config differs from the sweep's (base or [set] changed?); kept as it is"
        if traj.status == "finished":
            states.append(RunState(spec, "finished", None, m, note))
        elif traj.status == "failed" or failed_before:
            m["message"] = kept.get("message") or m["message"]  # as the failing task reported it
            states.append(RunState(spec, "failed", "run" if retry_failed else None, m, note))
        elif traj.status == "running" and _writer_busy(traj.attrs):
            states.append(RunState(spec, "running", None, m,
                                   f"still being written by process {traj.attrs.get('writer_pid')} on this host; "
                                   f"skipped (run the sweep again when it has ended)"))
        else:  # interrupted, or running with its writer gone (killed)
            states.append(RunState(spec, "interrupted", "resume", m, note))
    return states


def _writer_busy(attrs: dict, wait: float = 5.0) -> bool:
    """Whether the process that writes a "running" file is alive on this host (waits up to ``wait`` s for it to exit).

    A writer on another host cannot be checked and counts as gone.
    """
    pid, host = attrs.get("writer_pid"), attrs.get("writer_host")
    if host != socket.gethostname() or not isinstance(pid, (int, np.integer)) or int(pid) == os.getpid():
        return False
    import psutil

    deadline = time.monotonic() + wait
    while True:
        try:
            alive = psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            alive = False
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


# --------------------------------------------------------------------------- the task


@contextlib.contextmanager
def _thread_limits(threads: int | None):
    """Limit BLAS (threadpoolctl, if installed) and Numba threads of this process to ``threads``."""
    if not threads:
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=threads))
        except ImportError:  # BLAS threads then follow OMP_NUM_THREADS etc. of the worker
            pass
        try:
            import numba

            old = numba.get_num_threads()
            numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
            stack.callback(numba.set_num_threads, old)
        except (ImportError, ValueError, RuntimeError):
            pass
        yield


def _log_start(topic: str | None, run: str) -> None:
    if topic is None:
        return
    try:
        from distributed import get_worker

        get_worker().log_event(topic, {"run": run, "event": "start"})
    except (ImportError, ValueError, AttributeError):  # not inside a Dask worker
        pass


def execute_run(config_toml: str, path: str, action: str, *, threads: int | None = None,
                topic: str | None = None, run: str = "") -> dict:
    """Train one run of a sweep; the function each Dask task calls (in the worker).

    config_toml : the run's full config (``Config.to_toml()``).
    path : its trajectory file (absolute; on a file system the driver shares).
    action : ``"run"`` (from scratch, replacing the file) or ``"resume"`` (from
        its checkpoint; from scratch if the file has no checkpoint).
    threads : BLAS/Numba threads for this run (None: as the worker is set up).
    topic, run : Dask event topic and run name to report the start on.

    Never raises for a failed run: returns a dict with ``status``
    ("finished", "failed" or "interrupted"), ``message``, the index metrics
    and ``worker`` (host:pid).
    """
    from .config import parse_toml
    from .trajectory import TrajectoryError, read_trajectory
    from .train import Diverged, resume
    from .train import run as train_run

    _log_start(topic, run)
    t0 = time.perf_counter()
    out = {"status": "failed", "message": "", "worker": f"{socket.gethostname()}:{os.getpid()}"}
    try:
        with _thread_limits(threads):
            cfg = parse_toml(config_toml, f"{path} (sweep config)")
            status, message = None, ""
            if action == "resume":
                deadline = time.monotonic() + _RESUME_WAIT_S
                while status is None:
                    try:
                        res = resume(path, progress=False)
                        status, message = res.status, res.message
                    except TrajectoryError as exc:
                        text = str(exc)
                        if "still being written" in text and time.monotonic() < deadline:
                            time.sleep(0.5)  # e.g. the worker of a killed driver is still exiting
                        elif "already finished" in text:
                            status = "finished"
                        elif "no checkpoint" in text or "no such file" in text:
                            break  # nothing to continue from: start afresh
                        else:
                            raise
            if status is None:
                res = train_run(cfg, path, overwrite=True, progress=False)
                status, message = res.status, res.message
        out["status"], out["message"] = status, message
    except Diverged as exc:
        out["message"] = f"diverged: {exc}"
    except Exception as exc:  # a training failure is a result, not a task error
        out["message"] = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    if Path(path).exists():
        try:
            m = _metrics_of(read_trajectory(path, snapshots=False, monitors=False))
            m.pop("message", None)
            out.update(m)
        except (TrajectoryError, OSError, ValueError) as exc:
            out["message"] = (out["message"] + f"; file unreadable: {exc}").lstrip("; ")
    out.setdefault("wall_time", time.perf_counter() - t0)
    return out


# --------------------------------------------------------------------------- the driver


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@contextlib.contextmanager
def _out_lock(out: Path):
    """Hold ``<out>/.sweep.lock`` so two drivers never write one index (POSIX; released when the process dies)."""
    out.mkdir(parents=True, exist_ok=True)
    lock = out / ".sweep.lock"
    fh = open(lock, "a+")
    try:
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover
            pass
        except OSError:
            fh.seek(0)
            who = fh.read().strip() or "another process"
            raise SweepError(f"{out}: another npsim sweep is running on this folder ({who})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        yield
    finally:
        fh.close()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """In the main thread, turn SIGTERM into KeyboardInterrupt so a terminated driver cleans up too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class _Progress:
    """A tqdm line: runs done / running / failed / queued."""

    def __init__(self, name: str, total: int, done: int, failed: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=done + failed, desc=f"sweep {name}", unit="run", disable=not enabled,
                        dynamic_ncols=True, file=sys.stderr, leave=True, mininterval=0.5)
        self.done, self.failed = done, failed

        self.shown = None
        self.running = self.queued = 0

    def _text(self) -> str:
        return f"done {self.done}, running {self.running}, failed {self.failed}, queued {self.queued}"

    def show(self, running: int, queued: int):
        """Redraw if a count changed."""
        self.running, self.queued = running, queued
        if self._text() != self.shown:
            self.shown = self._text()
            self.bar.set_postfix_str(self.shown, refresh=True)

    def advance(self, ok: bool, running: int, queued: int):
        """One more run ended (finished if ``ok``, else failed)."""
        if ok:
            self.done += 1
        else:
            self.failed += 1
        self.running, self.queued = running, queued
        self.shown = self._text()
        self.bar.set_postfix_str(self.shown, refresh=False)
        self.bar.update(1)

    def close(self):
        self.bar.close()


def _local_cluster(workers: int, threads: int):
    """A LocalCluster of ``workers`` processes, one task at a time each, BLAS/Numba limited to ``threads``.

    The worker processes start with SIGINT ignored, so a Ctrl-C in the terminal
    reaches only the driver, which then closes the cluster (no tracebacks from
    every worker).
    """
    import logging

    from distributed import LocalCluster

    env = {v: str(threads) for v in _THREAD_VARS}
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # no dashboard, any free port
                            silence_logs=logging.ERROR, env=env)
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


def run_sweep(sweep, *, client=None, scheduler: str | None = None, scheduler_file: str | None = None,
              workers: int | None = None, threads_per_run: int | None = None, retry_failed: bool = False,
              progress: bool = True, out=None, log=None) -> list[dict]:
    """Run every unfinished run of a sweep as a Dask task and keep the index up to date.

    sweep : a :class:`Sweep` or the path of a sweep file.
    client : a connected :class:`distributed.Client` to use (e.g. on a
        ``dask_jobqueue.SLURMCluster``); else ``scheduler`` (an address such as
        ``tcp://host:8786``) or ``scheduler_file`` (the JSON file of
        ``dask scheduler --scheduler-file``); else a LocalCluster of
        ``workers`` processes (default: one per CPU, at most one per run) of one
        thread each, started here and closed at the end.
    threads_per_run : BLAS/Numba threads of each run (LocalCluster default:
        CPUs // workers; remote default: as the workers are set up).
    retry_failed : run failed runs again from scratch.
    progress : show a progress line on stderr.
    out : the runs' folder, overriding the sweep file's.
    log : where to print the start and end lines (default stderr; None to silence with progress=False).

    Returns the final index rows (as :func:`read_index` reads them). A
    KeyboardInterrupt (Ctrl-C, or SIGTERM in the main thread) stops the sweep:
    runs in flight are marked ``interrupted`` in the index and resume from their
    checkpoints on the next call.
    """
    if not isinstance(sweep, Sweep):
        sweep = load_sweep_file(sweep, out=out)
    elif out is not None:
        sweep = load_sweep_file(sweep.path, out=out)
    say = (lambda msg: print(msg, file=log or sys.stderr)) if (progress or log is not None) else (lambda msg: None)
    with _out_lock(sweep.out), _sigterm_as_interrupt():
        states = plan(sweep, retry_failed=retry_failed)
        (sweep.out / SPEC_NAME).write_text(_spec_toml(sweep), encoding="utf-8")
        keys = sweep.keys
        write_index(sweep.index, [s.row(sweep.out) for s in states], keys)
        todo = [s for s in states if s.action is not None]
        n_fin = sum(s.status == "finished" for s in states)
        n_fail = sum(s.status == "failed" and s.action is None for s in states)
        n_res = sum(s.action == "resume" for s in todo)
        noted = [s for s in states if s.note]
        say(f"npsim: sweep {sweep.name}: {len(states)} runs: {n_fin} finished, {n_fail} failed, {n_res} to resume, "
            f"{len(todo) - n_res} to run -> {sweep.index}")
        if n_fail:
            say(f"npsim: the {n_fail} failed run{'s are' if n_fail > 1 else ' is'} not run again; "
                f"--retry-failed runs {'them' if n_fail > 1 else 'it'} from scratch")
        for s in noted[:5]:
            say(f"npsim: warning: {s.spec.name}: {s.note}")
        if not todo:
            return read_index(sweep.index)[1]

        from distributed import Client

        cluster = own_client = None
        try:
            if client is None:
                if scheduler or scheduler_file:
                    where = scheduler or scheduler_file
                    try:
                        client = (Client(scheduler, timeout="30s") if scheduler
                                  else Client(scheduler_file=scheduler_file, timeout="30s"))
                    except (OSError, TimeoutError, ValueError) as exc:
                        raise SweepError(f"cannot connect to the Dask scheduler at {where}: {exc}") from None
                else:
                    n = max(1, min(workers or _cpus(), len(todo)))
                    threads_per_run = threads_per_run or max(1, _cpus() // n)
                    cluster = _local_cluster(n, threads_per_run)
                    client = Client(cluster)
                own_client = client
            info = client.scheduler_info()
            nw = len(info.get("workers", {}))
            say(f"npsim: Dask scheduler {info.get('address', '?')}, {nw} worker{'s' if nw != 1 else ''}"
                + (" (local cluster)" if cluster is not None else ""))
            return _drive(sweep, states, todo, client, threads_per_run, progress, say)
        finally:
            if own_client is not None:
                with contextlib.suppress(Exception):
                    own_client.close(timeout=10)
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.close(timeout=10)


def _drive(sweep: Sweep, states, todo, client, threads, progress, say) -> list[dict]:
    """Submit one task per run in ``todo``, then record results and events as they come (see run_sweep)."""
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    topic = f"npsim-sweep-{token}"
    events: queue.SimpleQueue = queue.SimpleQueue()
    client.subscribe_topic(topic, events.put)
    by_key = {}
    futures = []
    for s in todo:
        key = f"npsim-sweep-{sweep.name}-{s.spec.name}-{token}"
        fut = client.submit(execute_run, s.spec.config.to_toml(), str(s.spec.path), s.action, threads=threads,
                            topic=topic, run=s.spec.name, key=key, pure=False,
                            priority=1 if s.action == "resume" else 0)  # finish started work first
        by_key[fut.key] = s
        s.status = "pending"
        futures.append(fut)
    n_done = sum(s.status == "finished" for s in states)
    n_failed_kept = sum(s.status == "failed" and s.action is None for s in states)
    bar = _Progress(sweep.name, len(states), n_done, n_failed_kept, progress)
    by_name = {s.spec.name: s for s in todo}
    remaining = set(by_key)
    last_write = 0.0
    dirty = True
    ac = as_completed(futures)
    try:
        while remaining:
            while True:
                try:
                    ev = events.get_nowait()
                except queue.Empty:
                    break
                msg = ev[1] if isinstance(ev, tuple) and len(ev) == 2 else ev
                name = msg.get("run") if isinstance(msg, dict) else None
                if name in by_name and by_name[name].status == "pending":
                    by_name[name].status = "running"
                    dirty = True
            batch = ac.next_batch(block=False)
            for fut in batch:
                s = by_key[fut.key]
                remaining.discard(fut.key)
                _record(s, fut)
                running = sum(by_key[k].status == "running" for k in remaining)
                bar.advance(s.status == "finished", running, len(remaining) - running)
                dirty = True
            running = sum(by_key[k].status == "running" for k in remaining)
            bar.show(running, len(remaining) - running)
            now = time.monotonic()
            if dirty and (batch or now - last_write > 1.0 or not remaining):
                write_index(sweep.index, [s.row(sweep.out) for s in states], sweep.keys)
                last_write, dirty = now, False
            if not batch and remaining:
                time.sleep(0.1)
    except BaseException:
        for k in remaining:  # lost with the cluster; their files resume on the next call
            s = by_key[k]
            s.status = "interrupted" if s.status == "running" or s.action == "resume" else "pending"
        with contextlib.suppress(Exception):
            client.cancel([f for f in futures if f.key in remaining])
        write_index(sweep.index, [s.row(sweep.out) for s in states], sweep.keys)
        raise
    finally:
        bar.close()
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(topic)
    write_index(sweep.index, [s.row(sweep.out) for s in states], sweep.keys)
    n_fin = sum(s.status == "finished" for s in states)
    failed = [s for s in states if s.status == "failed"]
    say(f"npsim: sweep {sweep.name}: {n_fin} of {len(states)} runs finished, {len(failed)} failed -> {sweep.index}")
    for s in failed[:10]:
        say(f"npsim:   failed {s.spec.name}: {s.metrics.get('message', '')}")
    return read_index(sweep.index)[1]


def _record(s: RunState, fut) -> None:
    """Put a finished task's result (or its error) into the run's state."""
    if fut.status != "finished":  # the task itself failed (e.g. its worker died) or was cancelled
        exc = fut.exception() if fut.status == "error" else None
        s.status = "failed" if fut.status == "error" else "interrupted"
        s.metrics["message"] = (f"Dask task {fut.status}" + (f": {type(exc).__name__}: {exc}" if exc else "")
                                ).replace("\n", " ")
        return
    res = fut.result()
    s.status = res.get("status", "failed")
    s.metrics.update({k: v for k, v in res.items() if k in INDEX_COLUMNS and k not in ("seed", "status")})
