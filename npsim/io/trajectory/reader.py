"""Reading trajectory files back into arrays, also while their run still writes them."""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

import numpy as np

from ...errors import TrajectoryCorrupt
from .access import check_layout, meta_fields, open_read, read_checkpoint_slot
from .monitors import Recordings, read_recordings_in
from .recover import written_elsewhere
from .schema import META_FIELDS, attr_value, datasets_under, h5msg

__all__ = ["Trajectory", "read_trajectory", "read_checkpoint", "read_attrs"]

_LIVE_RETRIES = 30  # times 0.1 s: how long a read waits out a writer that is extending the file


def _retried_while_written(read):
    """Repeat a read that found the file damaged while another process writes it: a SWMR
    writer extends its file in steps, and a reader may land between them."""

    @functools.wraps(read)
    def wrapper(path, *args, **kwargs):
        for attempt in range(_LIVE_RETRIES):
            try:
                return read(path, *args, **kwargs)
            except TrajectoryCorrupt:
                if attempt == _LIVE_RETRIES - 1 or not written_elsewhere(os.fspath(path)):
                    raise
            time.sleep(0.1)

    return wrapper


@dataclass(repr=False)
class Trajectory:
    """A trajectory file read into NumPy arrays.

    Attributes
    ----------
    path : the file.
    attrs : root attributes (configuration, seed, versions, status, ...).
    steps, epochs : series name -> array of rows (all series of a group have
        the same number of rows).
    snapshots : state name -> array of snapshot rows, plus ``"epoch"``.
    units, descriptions : ``"steps/loss"``-style dataset path -> its ``unit``
        and ``description`` attributes.
    monitors : the spike/voltage recordings (:class:`Recordings`), or None if
        the run has none (or they were not read).
    """

    path: str
    attrs: dict
    steps: dict[str, np.ndarray]
    epochs: dict[str, np.ndarray]
    snapshots: dict[str, np.ndarray]
    units: dict[str, str]
    descriptions: dict[str, str]
    monitors: "Recordings | None" = None

    @property
    def status(self) -> str:
        """``"running"``, ``"finished"``, ``"failed"`` or ``"interrupted"``."""
        return str(self.attrs.get("status", "unknown"))

    def __repr__(self) -> str:
        n = lambda d: next((len(v) for v in d.values()), 0)  # noqa: E731
        return (
            f"<Trajectory {self.path!r} status={self.status!r} steps={n(self.steps)} "
            f"epochs={n(self.epochs)} snapshots={len(self.snapshots.get('epoch', ()))}>"
        )


@_retried_while_written
def read_trajectory(path, *, snapshots: bool = True, monitors: bool = True) -> Trajectory:
    """Read a trajectory file, also while its run is still writing it.

    Each group's series are trimmed to the shortest among them, so rows line
    up even when a live writer had flushed only some of them. ``snapshots``,
    ``monitors``: whether to read the weight snapshots and the spike/voltage
    recordings (``Trajectory.monitors``). Every failure (missing file, not
    HDF5, truncated, not an npsim trajectory, unsupported schema, unreadable
    data) raises :class:`TrajectoryError`.
    """
    path = os.fspath(path)
    with open_read(path) as f:
        check_layout(f, path)
        try:
            attrs = {k: attr_value(v) for k, v in f.attrs.items()}
            units, descriptions, groups = {}, {}, {}
            for group in ("steps", "epochs", "snapshots"):
                ds = datasets_under(f[group])
                for name, d in ds.items():
                    units[f"{group}/{name}"] = str(attr_value(d.attrs.get("unit", "")))
                    descriptions[f"{group}/{name}"] = str(attr_value(d.attrs.get("description", "")))
                if group == "snapshots" and not snapshots:
                    groups[group] = {}
                    continue
                n = min((d.shape[0] for d in ds.values()), default=0)
                groups[group] = {name: d[:n] for name, d in ds.items()}
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
            raise TrajectoryCorrupt(f"{path}: unreadable data, file is corrupt or truncated ({h5msg(e)})") from e
        mon = read_recordings_in(f, path) if monitors else None
    return Trajectory(
        path=path,
        attrs=attrs,
        steps=groups["steps"],
        epochs=groups["epochs"],
        snapshots=groups["snapshots"],
        units=units,
        descriptions=descriptions,
        monitors=mon,
    )


@_retried_while_written
def read_checkpoint(path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The newest checkpoint of a run that passes its checksum: (state arrays, counters).

    NoCheckpoint if there is none; TrajectoryCorrupt if no slot is usable.
    """
    path = os.fspath(path)
    with open_read(path) as f:
        check_layout(f, path)
        fields = meta_fields(f, path)
        _, arrays, counters, _ = read_checkpoint_slot(f, path)
    return arrays, {name: int(v) for name, v in zip(fields[len(META_FIELDS):], counters[len(META_FIELDS) - 1:])}


@_retried_while_written
def read_attrs(path) -> dict:
    """The root attributes of a trajectory file (config, status, writer, ...) as plain values, reading nothing else."""
    path = os.fspath(path)
    with open_read(path) as f:
        check_layout(f, path)
        try:
            names = list(f.attrs.keys())
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
            raise TrajectoryCorrupt(f"{path}: unreadable root attributes ({h5msg(e)})") from e
        out = {}
        for k in names:
            try:
                out[k] = attr_value(f.attrs[k])
            except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
                raise TrajectoryCorrupt(f"{path}: unreadable root attribute {k!r} ({h5msg(e)})") from e
        return out
