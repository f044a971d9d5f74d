"""Run trajectories: one HDF5 file per training run.

A trajectory file holds everything a run records: per-update series
(``/steps``), per-epoch series (``/epochs``), weight snapshots
(``/snapshots``), a crash-safe checkpoint (``/checkpoint``) from which the
run resumes bit-identically, and optionally spike/voltage recordings of some
layers (``/monitors``). It is written in HDF5 SWMR mode, so it can be read
while the run writes it, and stays valid up to the last flush if the writing
process is killed. The layout is documented in docs/trajectory.md.

    t = read_trajectory("run.h5")
    t.steps["loss"], t.units["steps/loss"], t.status
    m = read_monitors("run.h5")          # spike/voltage recordings, or None
"""

from ...errors import (
    NoCheckpoint,
    TrajectoryBusy,
    TrajectoryCorrupt,
    TrajectoryError,
    TrajectoryFinished,
)
from .monitors import Recordings, read_monitors
from .reader import Trajectory, read_attrs, read_checkpoint, read_trajectory
from .recover import writer_alive
from .schema import FINAL_STATUSES, SCHEMA_VERSION, STATUSES, Series
from .writer import TrajectoryWriter

__all__ = [
    "TrajectoryWriter", "Trajectory", "Recordings", "Series", "read_trajectory", "read_checkpoint", "read_attrs", "read_monitors",
    "writer_alive", "SCHEMA_VERSION", "STATUSES", "FINAL_STATUSES", "TrajectoryError", "TrajectoryBusy",
    "TrajectoryFinished", "NoCheckpoint", "TrajectoryCorrupt",
]
