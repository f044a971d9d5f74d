"""Experiments: configs, building a run from one, the training loop with its trajectory file, and sweeps.

config -> (data, network, rule, optimizer) -> train loop -> trajectory file (docs/design.md §5).
"""

from .assemble import Experiment, build, build_network
from .config import (
    DEFAULT_CONFIG,
    Config,
    apply_overrides,
    load_config,
    models_dir,
    parse_config,
    parse_toml,
)
from .loop import RunResult, default_output, epoch_order, resume, run

__all__ = [
    "Experiment", "build", "build_network", "DEFAULT_CONFIG", "Config", "apply_overrides", "load_config",
    "models_dir", "parse_config", "parse_toml", "RunResult", "default_output", "epoch_order", "resume", "run",
]
