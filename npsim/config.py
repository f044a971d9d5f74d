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

__all__ = ["Config", "ConfigError", "load_config", "parse_config", "apply_overrides", "models_dir", "DEFAULT_CONFIG"]


class ConfigError(ValueError):
    """A config file or override is missing, unreadable or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    name: str = "fashion-mnist"
    path: str | None = None  # a relative path is relative to the config file
    n_train: int | None = Field(default=None, ge=1)
    normalize: Literal["standard", "unit", "none"] = "standard"


class NoiseConfig(_Strict):
    std: float = Field(ge=0)
    kind: Literal["additive", "multiplicative"] = "additive"


class NetworkConfig(_Strict):
    hidden: list[int] = [256, 256]
    node: str | list[str] = "leaky_relu"
    node_params: dict[str, float | int] = {}
    output: str = "linear"
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
        if isinstance(self.node, list) and len(self.node) != len(self.hidden):
            raise ValueError(f"node lists {len(self.node)} node models for {len(self.hidden)} hidden layers")
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


class TrainConfig(_Strict):
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=256, ge=1)
    diagnostics_every: int = Field(default=10, ge=0)  # steps between BP-alignment measurements; 0 = never
    snapshot_every: int = Field(default=0, ge=0)  # epochs between weight snapshots; 0 = final weights only
    eval_train_samples: int | None = Field(default=10000, ge=1)  # train-set evaluation on this many samples
    checkpoint_steps: int = Field(default=0, ge=0)  # extra checkpoints every N steps inside an epoch; 0 = epoch ends only


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


def _format_error(err: dict, source: str) -> str:
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{loc}'"
    if err["type"] == "missing":
        return f"{source}: missing key '{loc}'"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{source}: key '{loc}': {msg}{shown}" if loc else f"{source}: {msg}"


def parse_config(data: dict, source: str = "<config>") -> Config:
    """Validate a config dict; ``source`` names it in errors (usually the file path)."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        errs = exc.errors()
        more = f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
        raise ConfigError(_format_error(errs[0], source) + more) from None


def parse_toml(text: str, source: str, base_dir: Path | None = None) -> Config:
    """Parse TOML config text; a relative ``data.path`` is taken relative to ``base_dir``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    dpath = data.get("data", {}).get("path") if isinstance(data.get("data"), dict) else None
    if base_dir is not None and isinstance(dpath, str) and dpath and not Path(dpath).is_absolute():
        data["data"]["path"] = str((base_dir / dpath).resolve())
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
