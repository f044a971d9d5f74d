"""Sweeps: many runs of one config over a grid of values and seeds, as Dask tasks (docs/sweeps.md)."""

from ...errors import SweepError
from ...io.sweep_index import (
    INDEX_COLUMNS,
    INDEX_NAME,
    STATUSES,
    index_path,
    read_index,
    write_index,
)
from .driver import RunState, execute_run, plan, run_sweep
from .spec import RunSpec, Sweep, load_sweep_file, run_name

__all__ = [
    "SweepError", "Sweep", "RunSpec", "RunState", "load_sweep_file", "run_name", "plan", "run_sweep", "execute_run",
    "read_index", "write_index", "index_path", "INDEX_NAME", "INDEX_COLUMNS", "STATUSES",
]
