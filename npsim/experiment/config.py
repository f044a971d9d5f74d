"""Experiment configs: TOML files loaded into typed, validated objects.

A config names the data, the network, the learning rule, the optimizer and
the schedule (see ``models/*.toml``). Loading rejects unknown keys, wrong
types (strictly: ``true`` is not a number, ``"3"`` not an integer) and bad
values with a one-line :class:`~npsim.errors.ConfigError` that names the key
and the file.

Each setting is checked in one place (docs/design.md §6): where a config
table is a component's parameter set (``[network.simulation]``,
``[network.noise]``, ``network.conv``) the table *is* that component's model;
``[rule]`` and ``[optimizer]`` type their keys with the components' own
parameter types and take their defaults from them; node models and the
rule are built once at load time, so what they refuse, alone or together,
is reported with the key.
"""

from __future__ import annotations

import importlib.resources
import tomllib
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from ..errors import ConfigError, IncompatibleSettings, ParameterError
from ..learn.optim import AdamSettings, Beta, LearningRate, Momentum, SGDSettings
from ..learn.rules import make_rule
from ..learn.rules import split_name as split_rule_name
from ..learn.rules.decorrelation import (
    Decorrelate,
    DecorrelationRate,
    DecorrelationRows,
    Kappa,
)
from ..learn.rules.perturbation import (
    ANP,
    NoiseSource,
    Perturbation,
    Perturbations,
    Sigma,
)
from ..model.catalog import make_node
from ..model.layers import ConvSpec
from ..model.noise import NOISE_KINDS, Noise
from ..model.spiking import Simulation
from ..params import (
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    problem_text,
)

__all__ = ["Config", "ConfigError", "load_config", "parse_config", "parse_toml", "apply_overrides", "models_dir",
           "DEFAULT_CONFIG", "PATH_KEYS", "UNSET", "rule_from_config"]

#: config keys holding file paths; a relative value is relative to the file that gives it
PATH_KEYS = ("data.path", "network.noise.path", "network.from_nir")

#: network keys that describe the layers; ``network.from_nir`` takes them from its graph instead
FROM_NIR_EXCLUDES = ("input_shape", "conv", "hidden", "node", "node_params", "output", "output_params", "init")


class Strict(BaseModel):
    """Base of every config table: unknown keys refused, values not coerced, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _default(model, field: str):
    return model.model_fields[field].default


class DataConfig(Strict):
    name: str = "fashion-mnist"
    path: str | None = None  # a relative path is relative to the config file
    n_train: PositiveInt | None = None
    normalize: Literal["standard", "unit", "none"] = "standard"
    validation: PositiveInt | None = None  # last N training samples replace the test set (tuning)
    pool: PositiveInt | None = None  # average images over pool x pool pixel blocks (28x28 -> 14x14 with 2)


class NetworkConfig(Strict):
    input_shape: list[PositiveInt] | None = None  # (C, H, W) for conv layers; default: the data set's image shape
    conv: list[ConvSpec] = []  # convolution layers before the dense hidden layers
    hidden: list[PositiveInt] = [256, 256]
    node: str | list[str] = "leaky_relu"
    node_params: dict[str, float | int | str] = {}
    output: str = "linear"
    output_params: dict[str, float | int | str] = {}
    simulation: Simulation | None = None  # None: defaults, if any layer is temporal
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    init: Literal["he", "lecun", "xavier"] = "he"
    noise: Noise | None = None
    decorrelate: bool | None = None  # None: decorrelate iff the rule is a D-variant
    from_nir: str | None = None  # a NIR file: layers, node models and initial weights (relative to the config file)

    @model_validator(mode="after")
    def _nodes_match(self):
        if self.from_nir is not None:
            given = [k for k in FROM_NIR_EXCLUDES if k in self.model_fields_set]
            if given:
                raise ValueError(f"network.from_nir takes the layers, node models and initial weights from the NIR "
                                 f"graph; remove {', '.join('network.' + k for k in given)}")
            if not self.from_nir:
                raise ValueError("network.from_nir must name a NIR file")
        n = len(self.conv) + len(self.hidden)
        if isinstance(self.node, list) and len(self.node) != n:
            raise ValueError(f"node lists {len(self.node)} node models for {n} hidden layers "
                             f"({len(self.conv)} conv + {len(self.hidden)} dense)")
        if self.input_shape is not None and len(self.input_shape) != 3:
            raise ValueError(f"input_shape must be [C, H, W] of positive integers, got {self.input_shape}")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        d = handler(self)
        if self.from_nir is not None:  # the graph gives these: a stored config must not give them too
            for k in FROM_NIR_EXCLUDES:
                d.pop(k, None)
        return d


class RuleConfig(Strict):
    name: str = "danp"
    sigma: Sigma = _default(Perturbation, "sigma")
    perturbations: Perturbations = _default(Perturbation, "perturbations")  # K noisy passes per clean pass
    antithetic: bool = _default(Perturbation, "antithetic")  # perturbations in (+ε, −ε) pairs (K even)
    # each hidden layer learns against its own linear read-out head, not the network's loss (np, inp, anp)
    local_losses: bool = _default(Perturbation, "local_losses")
    noise: NoiseSource = _default(ANP, "noise")
    decorrelation_lr: DecorrelationRate = _default(Decorrelate, "lr")
    decorrelation_kappa: Kappa = _default(Decorrelate, "kappa")
    # rows of the batch (of a convolution's patches) each R update uses; "all": every row;
    # "auto": 32 for a dense layer, every patch for a convolution
    decorrelation_rows: DecorrelationRows = _default(Decorrelate, "rows")


class OptimizerConfig(Strict):
    name: Literal["adam", "sgd"] = "adam"
    lr: LearningRate = 1e-4
    schedule: Literal["constant", "cosine"] = "constant"  # cosine: decay to final_lr_fraction·lr over the run
    final_lr_fraction: Probability = 0.0
    momentum: Momentum = _default(SGDSettings, "momentum")
    b1: Beta = _default(AdamSettings, "b1")
    b2: Beta = _default(AdamSettings, "b2")
    eps: PositiveFloat = _default(AdamSettings, "eps")


class MonitorConfig(Strict):
    """Record spikes and membrane potentials of temporal layers on test samples after the last epoch."""

    layers: list[NonNegativeInt] = [0]
    samples: PositiveInt = 4  # the first test samples
    units: PositiveInt | None = 100  # the first units of each layer; None: all


class TrainConfig(Strict):
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 256
    diagnostics_every: NonNegativeInt = 10  # steps between BP-alignment measurements; 0 = never
    snapshot_every: NonNegativeInt = 0  # epochs between weight snapshots; 0 = final weights only
    eval_train_samples: PositiveInt | None = 10000  # train-set evaluation on this many samples
    checkpoint_steps: NonNegativeInt = 0  # extra checkpoints every N steps inside an epoch; 0 = epoch ends only
    monitor: MonitorConfig | None = None
    freeze: list[NonNegativeInt] = []  # layers (0-based) whose W, b and R stay at their initial values (a control run)


class SubstrateConfig(Strict):
    """What runs the network's passes (docs/design.md §10a): npsim itself, or Brian2 (``npsim[brian2]``)."""

    name: Literal["npsim", "brian2"] = "npsim"
    perturbation: Literal["injected", "intrinsic"] = "injected"  # brian2: inject currents, or only membrane noise
    method: Literal["exact", "euler", "heun", "milstein"] | None = None  # brian2's integrator; None: exact, or euler with noise
    target: Literal["numpy", "cython"] = "numpy"  # brian2's code generation


class Config(Strict):
    name: str = Field(default="run", min_length=1, max_length=200)  # the run's file name stem
    seed: NonNegativeInt = 0
    backend: Literal["numpy", "cupy", "array-api-strict"] = "numpy"  # array-api-strict: the CPU stand-in for a GPU
    dtype: Literal["float32", "float64"] = "float32"
    data: DataConfig = DataConfig()
    network: NetworkConfig = NetworkConfig()
    rule: RuleConfig = RuleConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    train: TrainConfig = TrainConfig()
    substrate: SubstrateConfig = SubstrateConfig()

    @field_validator("name")
    @classmethod
    def _file_name(cls, v: str) -> str:
        if v in (".", "..") or any(c in v for c in "/\\\0"):
            raise ValueError("must be usable as a file name (no '/', '\\', NUL, and not '.' or '..')")
        return v

    def to_toml(self) -> str:
        """The full config (defaults included) as TOML text, loadable by :func:`parse_config`."""
        return tomli_w.dumps(self.model_dump(exclude_none=True))

    def with_overrides(self, overrides: dict[str, Any], source: str = "--set") -> Config:
        d = self.model_dump(exclude_none=True)
        for key, value in overrides.items():
            _set_path(d, key, value, source)
        return parse_config(d, source)


#: an override value that removes the key (its default applies again): ``--unset KEY``
UNSET = object()


def _set_path(d: dict, key: str, value, source: str):
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{source}: '{key}': '{p}' is not a table")
        cur = nxt
    if value is UNSET:
        cur.pop(parts[-1], None)
    else:
        cur[parts[-1]] = value


def _key(loc) -> str:
    """A pydantic error location as a dotted config key (validator names and union tags left out)."""
    parts = [str(p) for p in loc if not str(p).startswith("function-")]
    return ".".join(p for i, p in enumerate(parts) if not (i and parts[i - 1] == "noise" and p in NOISE_KINDS))


def format_error(err: dict, source: str) -> str:
    """One line for a pydantic error: the key, what is wrong, and the file (``source``)."""
    loc = _key(err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{loc}'"
    if err["type"] == "missing":
        return f"{source}: missing key '{loc}'"
    msg = problem_text(err)
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
    return f"{source}: key '{loc}': {msg}{shown}" if loc else f"{source}: {msg}"


def parse_config(data: dict, source: str = "<config>") -> Config:
    """Validate a config dict; ``source`` names it in errors (usually the file path).

    Beyond the types and ranges of every key, the components the config names
    are built once here (node models, the rule), so settings they refuse, alone
    or together, fail now with the key named, not later in the run.
    """
    if isinstance(data, dict):
        data = _renamed_keys(data, source)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, source)) from None
    _check_components(cfg, source)
    return cfg


def validation_message(exc: ValidationError, source: str) -> str:
    """The first problem of a config or sweep file, and how many more there are, on one line."""
    errs = exc.errors()
    more = f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
    return format_error(errs[0], source) + more


#: old key -> new key (accepted with a FutureWarning for one release)
RENAMED_KEYS = {"rule.samples": "rule.perturbations", "rule.decorrelation_samples": "rule.decorrelation_rows"}


def _renamed_keys(data: dict, source: str) -> dict:
    """``data`` with old key names replaced by the new ones (a FutureWarning for each)."""
    data = dict(data)
    for old, new in RENAMED_KEYS.items():
        (table, key), (_, new_key) = old.split("."), new.split(".")
        section = data.get(table)
        if isinstance(section, dict) and key in section:
            section = dict(section)
            if new_key in section:
                raise ConfigError(f"{source}: keys '{old}' and '{new}' are the same setting; give only '{new}'")
            warnings.warn(f"{source}: config key '{old}' is now called '{new}'; the old name will be removed in the "
                          f"next release", FutureWarning, stacklevel=3)
            section[new_key] = section.pop(key)
            data[table] = section
    return data


def _check_components(cfg: Config, source: str) -> None:
    """Build the node models and the rule the config names; their errors become ConfigErrors naming the key."""
    nc = cfg.network
    if isinstance(nc.node, list):
        hidden = {name: f"network.node[{nc.node.index(name)}]" for name in nc.node}
    else:
        hidden = {nc.node: "network.node"} if nc.conv or nc.hidden else {}
    for name, where in hidden.items():
        _delegate(lambda: make_node(name, **nc.node_params), source, {"name": where}, "network.node_params")
    _delegate(lambda: make_node(nc.output, **nc.output_params), source, {"name": "network.output"},
              "network.output_params")
    rule = _delegate(lambda: rule_from_config(cfg.rule), source, RULE_KEYS, "rule")
    base = getattr(rule, "inner", rule)
    resolution = float(np.finfo(cfg.dtype).eps)
    smallest = min(base.sigma) if isinstance(getattr(base, "sigma", None), list) else getattr(base, "sigma", 1.0)
    if hasattr(base, "sigma") and getattr(base, "noise", "injected") == "injected" and smallest <= resolution:
        raise ConfigError(f"{source}: key 'rule.sigma': {smallest!r} is below the resolution of {cfg.dtype} "
                          f"({resolution:.2g}): an activity of order 1 plus the perturbation rounds back to itself, "
                          f"so every loss difference and update would be zero; use a larger sigma or dtype = "
                          f"'float64'")


#: parameters of the rule components -> their keys in ``[rule]``
RULE_KEYS = {"name": "rule.name", "sigma": "rule.sigma", "perturbations": "rule.perturbations",
             "antithetic": "rule.antithetic", "local_losses": "rule.local_losses",
             "noise": "rule.noise", "lr": "rule.decorrelation_lr", "kappa": "rule.decorrelation_kappa",
             "rows": "rule.decorrelation_rows", "": "rule.name"}


def _delegate(build, source: str, keys: dict, table: str):
    """Run ``build``; a ParameterError or IncompatibleSettings becomes a ConfigError naming the config key."""
    try:
        return build()
    except ParameterError as exc:
        key = keys.get(exc.param, f"{table}.{exc.param}" if exc.param else table)
        got = f" (got {exc.value!r})" if exc.value is not None and exc.problem and "got" not in exc.problem else ""
        raise ConfigError(f"{source}: key '{key}': {exc.problem}{got}") from None
    except IncompatibleSettings as exc:
        raise ConfigError(f"{source}: {exc}") from None


def rule_from_config(rc: "RuleConfig"):
    """The learning rule ``[rule]`` describes (settings a rule does not use are left out)."""
    base, dec = split_rule_name(rc.name)
    kw = {}
    if base != "bp":
        kw = {"sigma": rc.sigma, "perturbations": rc.perturbations, "antithetic": rc.antithetic,
              "local_losses": rc.local_losses}
    elif rc.local_losses:
        kw["local_losses"] = True  # for make_rule to refuse
    if rc.noise != "injected" or base == "anp":
        kw["noise"] = rc.noise
    dec_kw = {"decorrelation_lr": rc.decorrelation_lr, "decorrelation_kappa": rc.decorrelation_kappa,
              "decorrelation_rows": rc.decorrelation_rows} if dec else {}
    return make_rule(rc.name, **kw, **dec_kw)


def parse_toml(text: str, source: str, base_dir: Path | None = None) -> Config:
    """Parse TOML config text; a relative ``data.path``, ``network.noise.path`` or ``network.from_nir`` is
    taken relative to ``base_dir``."""
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


def apply_overrides(cfg: Config, items: list[str], unset: list[str] = ()) -> Config:
    """``cfg`` with the ``--set KEY=VALUE`` items applied and the ``--unset KEY`` keys back at their defaults."""
    overrides = dict(parse_override(i) for i in items)
    for key in unset:
        if not key or key.startswith(".") or key.endswith("."):
            raise ConfigError(f"--unset {key!r}: expected a dotted config key, e.g. --unset train.monitor")
        overrides[key] = UNSET
    return cfg.with_overrides(overrides, source="--set")


def models_dir() -> Path:
    """The folder of the experiment configs shipped inside the package (``npsim/models``; ``models/`` in a checkout)."""
    return Path(str(importlib.resources.files("npsim") / "models"))


DEFAULT_CONFIG = "default.toml"
