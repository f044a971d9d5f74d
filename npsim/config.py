"""Experiment configs: TOML files loaded into typed, validated objects.

A config names the data, the network, the learning rule, the optimizer and
the schedule (see ``models/*.toml``). Loading rejects unknown keys and wrong
types with a one-line :class:`ConfigError` that names the key and the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .nodes import NOISE_KINDS

__all__ = ["Config", "ConfigError", "load_config", "parse_config", "apply_overrides", "models_dir", "DEFAULT_CONFIG"]


class ConfigError(ValueError):
    """A config file or override is missing, unreadable or invalid."""


#: config keys holding file paths; a relative value is relative to the file that gives it
PATH_KEYS = ("data.path", "network.noise.path")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    name: str = "fashion-mnist"
    path: str | None = None  # a relative path is relative to the config file
    n_train: int | None = Field(default=None, ge=1)
    normalize: Literal["standard", "unit", "none"] = "standard"
    validation: int | None = Field(default=None, ge=1)  # last N training samples replace the test set (tuning)


def _finite(**kw):
    return Field(default=None, allow_inf_nan=False, **kw)


class NoiseConfig(_Strict):
    """``[network.noise]``: intrinsic noise on the activity (see ``npsim.nodes.NOISE_KINDS``).

    ``kind`` picks the noise; only that kind's parameters may be given:
    additive/multiplicative: std; telegraph: p_up, p_down, amplitude, offset,
    read_std; bernoulli: p, amplitude; replay: path, dataset, scale.
    """

    kind: Literal["additive", "multiplicative", "telegraph", "bernoulli", "replay"] = "additive"
    std: float | None = _finite(ge=0)
    p_up: float | None = _finite(ge=0, le=1)
    p_down: float | None = _finite(ge=0, le=1)
    amplitude: float | None = _finite()
    offset: float | None = _finite()
    read_std: float | None = _finite(ge=0)
    p: float | None = _finite(ge=0, le=1)
    path: str | None = None  # replay trace; a relative path is relative to the config file
    dataset: str | None = None  # HDF5 dataset of a replay trace
    scale: float | None = _finite()

    @model_validator(mode="after")
    def _parameters_fit_kind(self):
        allowed = NOISE_KINDS[self.kind][1]
        given = [k for k in type(self).model_fields if k != "kind" and getattr(self, k) is not None]
        unused = [k for k in given if k not in allowed]
        if unused:
            raise ValueError(f"noise kind '{self.kind}' does not take {', '.join(unused)}; "
                             f"it takes {', '.join(allowed)}")
        missing = [k for k in _NOISE_REQUIRED[self.kind] if getattr(self, k) is None]
        if missing:
            raise ValueError(f"noise kind '{self.kind}' needs {', '.join(missing)}")
        if self.kind == "telegraph" and not self.p_up + self.p_down > 0:
            raise ValueError("noise kind 'telegraph' needs p_up + p_down > 0")
        return self


_NOISE_REQUIRED = {
    "additive": ("std",),
    "multiplicative": ("std",),
    "telegraph": ("p_up", "p_down", "amplitude"),
    "bernoulli": ("p", "amplitude"),
    "replay": ("path",),
}


class SimulationConfig(_Strict):
    """Time loop of spiking (temporal) layers; see npsim.spiking.Simulation."""

    steps: int = Field(default=25, ge=1)
    dt: float = Field(default=1.0, gt=0)  # ms
    encoding: Literal["current", "poisson", "bernoulli"] = "current"
    max_rate: float = Field(default=200.0, gt=0)  # Hz of an input of 1 under poisson encoding
    chunk: int = Field(default=16, ge=1)
    parallel: bool = False


class ConvConfig(_Strict):
    """One convolution layer (npsim.layers.Conv2D); its node model is the hidden layers'."""

    channels: int = Field(ge=1)
    kernel: int = Field(ge=1)
    stride: int = Field(default=1, ge=1)
    padding: int = Field(default=0, ge=0)
    pool: int = Field(default=1, ge=1)
    pooling: Literal["max", "avg"] = "max"


class NetworkConfig(_Strict):
    input_shape: list[int] | None = None  # (C, H, W) for conv layers; default: the data set's image shape
    conv: list[ConvConfig] = []  # convolution layers before the dense hidden layers
    hidden: list[int] = [256, 256]
    node: str | list[str] = "leaky_relu"
    node_params: dict[str, float | int | str] = {}
    output: str = "linear"
    output_params: dict[str, float | int | str] = {}
    simulation: SimulationConfig | None = None  # None: defaults, if any layer is temporal
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    init: Literal["he", "lecun", "xavier"] = "he"
    noise: NoiseConfig | None = None
    decorrelate: bool | None = None  # None: decorrelate iff the rule is a D-variant

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v):
        if any(h < 1 for h in v):
            raise ValueError("every hidden width must be >= 1")
        return v

    @model_validator(mode="after")
    def _nodes_match(self):
        n = len(self.conv) + len(self.hidden)
        if isinstance(self.node, list) and len(self.node) != n:
            raise ValueError(f"node lists {len(self.node)} node models for {n} hidden layers "
                             f"({len(self.conv)} conv + {len(self.hidden)} dense)")
        if self.input_shape is not None and (len(self.input_shape) != 3 or min(self.input_shape) < 1):
            raise ValueError(f"input_shape must be [C, H, W] of positive integers, got {self.input_shape}")
        return self


class RuleConfig(_Strict):
    name: str = "danp"
    sigma: float = Field(default=1e-3, gt=0)
    samples: int = Field(default=1, ge=1)
    noise: Literal["injected", "intrinsic"] = "injected"
    decorrelation_lr: float = Field(default=1e-3, gt=0)
    decorrelation_kappa: float = Field(default=0.0, ge=0, le=1)
    decorrelation_samples: int | None = Field(default=None, ge=2)  # rows of the batch the R update uses


class OptimizerConfig(_Strict):
    name: Literal["adam", "sgd"] = "adam"
    lr: float = Field(default=1e-4, gt=0)
    schedule: Literal["constant", "cosine"] = "constant"  # cosine: decay to final_lr_fraction·lr over the run
    final_lr_fraction: float = Field(default=0.0, ge=0, le=1)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    b1: float = Field(default=0.9, ge=0, lt=1)
    b2: float = Field(default=0.999, ge=0, lt=1)
    eps: float = Field(default=1e-8, gt=0)


class MonitorConfig(_Strict):
    """Record spikes and membrane potentials of temporal layers on test samples after the last epoch."""

    layers: list[int] = [0]
    samples: int = Field(default=4, ge=1)  # the first test samples
    units: int | None = Field(default=100, ge=1)  # the first units of each layer; None: all


class TrainConfig(_Strict):
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=256, ge=1)
    diagnostics_every: int = Field(default=10, ge=0)  # steps between BP-alignment measurements; 0 = never
    snapshot_every: int = Field(default=0, ge=0)  # epochs between weight snapshots; 0 = final weights only
    eval_train_samples: int | None = Field(default=10000, ge=1)  # train-set evaluation on this many samples
    checkpoint_steps: int = Field(default=0, ge=0)  # extra checkpoints every N steps inside an epoch; 0 = epoch ends only
    monitor: MonitorConfig | None = None
    freeze: list[int] = []  # layers (0-based) whose W, b and R stay at their initial values (a control run)


class Config(_Strict):
    name: str = "run"
    seed: int = 0
    backend: Literal["numpy", "cupy"] = "numpy"
    dtype: Literal["float32", "float64"] = "float32"
    data: DataConfig = DataConfig()
    network: NetworkConfig = NetworkConfig()
    rule: RuleConfig = RuleConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    train: TrainConfig = TrainConfig()

    def to_toml(self) -> str:
        """The full config (defaults included) as TOML text, loadable by :func:`parse_config`."""
        return tomli_w.dumps(self.model_dump(exclude_none=True))

    def with_overrides(self, overrides: dict[str, Any], source: str = "--set") -> Config:
        d = self.model_dump(exclude_none=True)
        for key, value in overrides.items():
            _set_path(d, key, value, source)
        return parse_config(d, source)


def _set_path(d: dict, key: str, value, source: str):
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{source}: '{key}': '{p}' is not a table")
        cur = nxt
    cur[parts[-1]] = value


def format_error(err: dict, source: str) -> str:
    """One line for a pydantic error: the key, what is wrong, and the file (``source``)."""
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{loc}'"
    if err["type"] == "missing":
        return f"{source}: missing key '{loc}'"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
    return f"{source}: key '{loc}': {msg}{shown}" if loc else f"{source}: {msg}"


def parse_config(data: dict, source: str = "<config>") -> Config:
    """Validate a config dict; ``source`` names it in errors (usually the file path)."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        errs = exc.errors()
        more = f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
        raise ConfigError(format_error(errs[0], source) + more) from None


def parse_toml(text: str, source: str, base_dir: Path | None = None) -> Config:
    """Parse TOML config text; a relative ``data.path`` or ``network.noise.path`` is taken
    relative to ``base_dir``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    if base_dir is not None:
        for key in PATH_KEYS:
            *tables, name = key.split(".")
            table = data
            for k in tables:
                table = table.get(k) if isinstance(table, dict) else None
            path = table.get(name) if isinstance(table, dict) else None
            if isinstance(path, str) and path and not Path(path).is_absolute():
                table[name] = str((base_dir / path).resolve())
    return parse_config(data, source)


def load_config(path) -> Config:
    """Load and validate a TOML config file."""
    p = Path(path)
    if not p.is_file():
        hint = ""
        cand = models_dir() / p.name
        if not p.suffix and (models_dir() / f"{p.name}.toml").is_file():
            hint = f"; did you mean {models_dir() / (p.name + '.toml')}?"
        elif cand.is_file() and cand != p:
            hint = f"; did you mean {cand}?"
        raise ConfigError(f"config file {str(p)!r} not found{hint}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    return parse_toml(text, str(p), base_dir=p.resolve().parent)


def parse_override(item: str) -> tuple[str, Any]:
    """``"rule.sigma=0.01"`` -> ("rule.sigma", 0.01); values are TOML literals, bare words are strings."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set rule.sigma=0.01")
    key, raw = (s.strip() for s in item.split("=", 1))
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def apply_overrides(cfg: Config, items: list[str]) -> Config:
    return cfg.with_overrides(dict(parse_override(i) for i in items), source="--set")


def models_dir() -> Path:
    """The folder of shipped experiment configs (``models/`` beside the package)."""
    return Path(__file__).resolve().parents[1] / "models"


DEFAULT_CONFIG = "default.toml"
