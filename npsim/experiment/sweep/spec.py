"""Sweep files: one base run config over a grid (and random draws) of config values and seeds.

A sweep file (TOML, see docs/sweeps.md) names a base run config, the seeds,
a ``[grid]`` of config keys to values, optional ``[random]`` draws and
optional ``[set]`` overrides for every run. :func:`load_sweep_file` expands
it into runs and validates every run's :class:`~npsim.experiment.config.Config`
before anything starts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, ValidationError, field_validator, model_validator

from ...errors import ConfigError, SweepError
from ...io.sweep_index import INDEX_NAME
from ..config import PATH_KEYS, Config, Strict, load_config, validation_message

__all__ = ["Sweep", "RunSpec", "load_sweep_file", "run_name", "spec_toml", "SPEC_NAME", "MAX_NAME"]

#: Copy of the resolved sweep file written into the out folder.
SPEC_NAME = "sweep.toml"

#: Longest run name before it is cut and given a hash (file names stay below 255 bytes).
MAX_NAME = 150

#: Significant digits kept of a random float draw (so names stay readable and exact).
RANDOM_DIGITS = 4

_SAFE = re.compile(r"[^A-Za-z0-9._+-]")

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class Distribution(Strict):
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


class RandomSpec(Strict):
    n: int = Field(ge=1)
    random_seed: int = Field(default=0, ge=0)
    params: dict[str, Distribution] = Field(min_length=1)


class SweepSpec(Strict):
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
        negative = [s for s in v if s < 0]
        if negative:
            raise ValueError(f"seeds must be >= 0 (got {negative[0]})")
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
        raise SweepError(validation_message(exc, src)) from None

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


def spec_toml(sweep: Sweep) -> str:
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
