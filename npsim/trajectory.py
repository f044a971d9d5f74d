"""Run trajectories: one HDF5 file per training run.

A trajectory file holds everything a run records: per-update series
(``/steps``), per-epoch series (``/epochs``), weight snapshots
(``/snapshots``), a crash-safe checkpoint (``/checkpoint``) from which the
run resumes bit-identically, and optionally spike/voltage recordings of some
layers (``/monitors``). The file is written in HDF5 SWMR mode
(single writer, multiple readers), so it can be read while the run writes it,
and it stays valid up to the last :meth:`TrajectoryWriter.flush` if the
writing process is killed.

Writing::

    w = TrajectoryWriter.create(
        "run.h5",
        attrs={"config": toml_text, "seed": 1},
        steps={"loss": Series(unit="nats", description="training loss")},
        epochs={"test_error": Series(unit="fraction")},
        state={"W1": ((100, 784), "float32"), "step": ((), "int64")},
        snapshot_names=["W1"],
        meta_names=["step", "epoch"],
    )
    w.append_steps(loss=losses)          # n rows at once, buffered
    w.append_epoch(test_error=0.03)
    w.snapshot(epoch, {"W1": W1})
    w.checkpoint({"W1": W1, "step": np.int64(s)}, {"step": s, "epoch": e})
    w.write_monitors({1: {"v": v, "spikes": spikes, "units": units, "node": "lif", "threshold": 1.0}},
                     dt=1.0, steps=T, samples=sample_idx, epoch=e)   # optional, (S, T, n) arrays
    w.finish("finished")

Resuming after a crash::

    w, arrays, meta = TrajectoryWriter.resume("run.h5")

Reading (also while the run is being written)::

    t = read_trajectory("run.h5")
    t.steps["loss"], t.units["steps/loss"], t.status
    m = read_monitors("run.h5")          # spike/voltage recordings, or None

The layout is documented in ``docs/trajectory.md``.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Mapping

import h5py
import numpy as np

try:  # POSIX only; without it the lock probes are skipped
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = [
    "SCHEMA_VERSION",
    "TrajectoryError",
    "Series",
    "TrajectoryWriter",
    "Trajectory",
    "Monitors",
    "read_trajectory",
    "read_checkpoint",
    "read_monitors",
]

#: Version of the file layout, stored as the root attribute ``schema_version``.
SCHEMA_VERSION = 1

#: Values of the root attribute ``status``.
STATUSES = ("running", "finished", "failed", "interrupted")
FINAL_STATUSES = ("finished", "failed", "interrupted")

#: HDF5 format bounds: 1.10 objects are the oldest that support SWMR, and
#: capping at 1.10 keeps files readable by every HDF5 from 1.10 on.
LIBVER = ("v110", "v110")

# Rows per chunk (at most; rows of more than a few hundred bytes get fewer).
STEP_CHUNK_ROWS = 1024
EPOCH_CHUNK_ROWS = 64
SNAPSHOT_CHUNK_ROWS = 64
COMPRESSION = "gzip"
COMPRESSION_LEVEL = 4

#: The first fields of ``/checkpoint/meta``; the user's meta values follow.
META_FIELDS = ("active_slot", "step_rows", "epoch_rows", "snapshot_rows")

# Buffered step (epoch) rows beyond which rows are written to the datasets
# before the next flush(), to bound memory.
_MAX_BUFFERED_ROWS = {"steps": 16384, "epochs": 1024}
_CHUNK_ROWS = {"steps": STEP_CHUNK_ROWS, "epochs": EPOCH_CHUNK_ROWS}
_CHUNK_BYTES = 1 << 20  # target bytes per chunk
_MAX_ROW_CHUNK_BYTES = 16 << 20  # larger rows are split within a row

_RESERVED_ATTRS = frozenset(
    {
        "schema_version",
        "npsim_version",
        "created",
        "status",
        "finished",
        "resumed",
        "resumed_count",
        "writer_pid",
        "writer_host",
        "finish_attrs",
    }
)

_GROUP_DESCRIPTIONS = {
    "steps": "per-update series: row i of every dataset belongs to parameter update i",
    "epochs": "per-epoch series: row i of every dataset belongs to epoch i",
    "snapshots": "weight snapshots: row i of every dataset was taken at epoch snapshots/epoch[i]",
    "checkpoint": (
        "crash-safe checkpoint in two slots; meta[0] (active_slot) names the valid one, "
        "meta[1:4] the step, epoch and snapshot rows it covers, meta[4:] the run's counters"
    ),
}

# Superblock (format versions 2 and 3) status flags, as cleared by `h5clear -s`.
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_FLAG_WRITE = 0x01
_FLAG_SWMR_WRITE = 0x04
_EOA_INCREMENT = 1 << 20  # as `h5clear -s --increment`: room past the old end of file

_LOCK_WAIT_S = 2.0  # how long writers wait for readers to let go of the file lock
_READ_RETRIES = 5

# Files this process has open through a TrajectoryWriter: (st_dev, st_ino).
_OPEN_WRITERS: set[tuple[int, int]] = set()


class TrajectoryError(ValueError):
    """A trajectory file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Series:
    """Description of one per-row series (a dataset under /steps or /epochs).

    Attributes
    ----------
    shape : shape of one row: ``()`` for a scalar, ``(L,)`` for per-layer values.
    dtype : NumPy dtype name of the stored values.
    unit : stored as the dataset attribute ``unit`` (``""``: dimensionless).
    description : stored as the dataset attribute ``description``.
    """

    shape: tuple = ()
    dtype: str = "float32"
    unit: str = ""
    description: str = ""

    def __post_init__(self):
        object.__setattr__(self, "shape", _as_shape(self.shape, "Series.shape"))
        try:
            dt = np.dtype(self.dtype)
        except TypeError as e:
            raise ValueError(f"Series.dtype {self.dtype!r} is not a NumPy dtype") from e
        if dt.kind not in "biuf":
            raise ValueError(f"Series.dtype {self.dtype!r}: only bool, integer and float series are supported")
        object.__setattr__(self, "dtype", dt.name)
        if not isinstance(self.unit, str) or not isinstance(self.description, str):
            raise TypeError("Series.unit and Series.description must be str")


# --------------------------------------------------------------------------- writer


class TrajectoryWriter:
    """Writes one run's trajectory file. Create with :meth:`create` or :meth:`resume`.

    Rows given to :meth:`append_steps` and :meth:`append_epoch` are buffered in
    memory and written by :meth:`flush` (and by :meth:`checkpoint`,
    :meth:`close`, :meth:`finish`); only flushed rows are visible to readers
    and survive a crash.
    """

    def __init__(self, *_args, **_kwargs):
        raise TypeError("use TrajectoryWriter.create(...) or TrajectoryWriter.resume(...)")

    # -- construction -------------------------------------------------------

    @classmethod
    def create(
        cls,
        path,
        *,
        attrs: Mapping[str, Any],
        steps: Mapping[str, Series],
        epochs: Mapping[str, Series],
        state: Mapping[str, tuple[tuple, str]],
        snapshot_names: list[str] | tuple[str, ...] = (),
        meta_names: list[str] | tuple[str, ...] = (),
        overwrite: bool = False,
    ) -> "TrajectoryWriter":
        """Create a new trajectory file and open it for SWMR writing.

        Parameters
        ----------
        path : file to create.
        attrs : root attributes (str, int, float or bool values, or arrays of
            them), e.g. the configuration text, seed, backend, versions. The writer adds
            ``schema_version``, ``npsim_version``, ``created``, ``status``,
            ``resumed_count``, ``writer_pid`` and ``writer_host``.
        steps, epochs : name -> :class:`Series` of the per-update and per-epoch series.
        state : name -> ``(shape, dtype)`` of every array in the checkpoint.
            Names may contain ``/`` (nested groups).
        snapshot_names : the state arrays that :meth:`snapshot` records.
        meta_names : names of the integer counters :meth:`checkpoint` stores
            with each checkpoint (e.g. ``["step", "epoch"]``), in file order.
        overwrite : replace an existing file instead of raising FileExistsError.
        """
        path = os.fspath(path)
        user_attrs = _check_attrs(attrs, "attrs")
        step_series = _check_series(steps, "steps")
        epoch_series = _check_series(epochs, "epochs")
        state_spec = _check_state(state)
        snapshot_names = list(snapshot_names)
        for name in snapshot_names:
            if name not in state_spec:
                raise ValueError(f"snapshot name {name!r} is not a state array")
            if name == "epoch":
                raise ValueError("a state array named 'epoch' cannot be snapshotted (/snapshots/epoch holds the epochs)")
            if int(np.prod(state_spec[name][0])) == 0:
                raise ValueError(f"snapshot {name!r}: the state array is empty")
        if len(set(snapshot_names)) != len(snapshot_names):
            raise ValueError("snapshot_names has duplicates")
        meta_names = list(meta_names)
        for name in meta_names:
            if not isinstance(name, str) or not name:
                raise ValueError(f"meta name {name!r} must be a non-empty str")
            if name in META_FIELDS:
                raise ValueError(f"meta name {name!r} is reserved")
        if len(set(meta_names)) != len(meta_names):
            raise ValueError("meta_names has duplicates")

        if os.path.lexists(path):
            if not overwrite:
                raise FileExistsError(f"{path}: file exists; pass overwrite=True to replace it")
            if _file_key(path) in _OPEN_WRITERS:
                raise ValueError(f"{path}: a TrajectoryWriter in this process still has the file open")
            os.remove(path)  # unlink, so a process still reading the old file keeps its copy

        f = h5py.File(path, "x", libver=LIBVER)
        try:
            root = f.attrs
            root["schema_version"] = np.int64(SCHEMA_VERSION)
            root["npsim_version"] = _npsim_version()
            root["created"] = _now()
            root["status"] = "running"
            root["resumed_count"] = np.int64(0)
            root["writer_pid"] = np.int64(os.getpid())
            root["writer_host"] = socket.gethostname()
            for k, v in user_attrs.items():
                root[k] = v

            for group in ("steps", "epochs", "snapshots", "checkpoint"):
                g = f.create_group(group)
                g.attrs["description"] = _GROUP_DESCRIPTIONS[group]
            for group, series in (("steps", step_series), ("epochs", epoch_series)):
                for name, s in series.items():
                    _create_rows(
                        f[group], name, s.shape, s.dtype, _CHUNK_ROWS[group], s.unit, s.description
                    )
            for name in snapshot_names:
                shape, dtype = state_spec[name]
                _create_rows(
                    f["snapshots"],
                    name,
                    shape,
                    dtype,
                    SNAPSHOT_CHUNK_ROWS,
                    "",
                    f"snapshot of state array '{name}', one row per snapshot (epoch in snapshots/epoch)",
                )
            _create_rows(
                f["snapshots"],
                "epoch",
                (),
                "int64",
                EPOCH_CHUNK_ROWS,
                "epoch",
                "epoch at which each snapshot row was taken",
            )
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)  # checkpoints only overwrite
            for slot in (0, 1):
                g = f["checkpoint"].create_group(f"slot{slot}")
                g.attrs["description"] = f"checkpoint slot {slot}: every state array of the run"
                for name, (shape, dtype) in state_spec.items():
                    d = g.create_dataset(name, shape=shape, dtype=dtype, dcpl=dcpl)
                    d.attrs["unit"] = ""
                    d.attrs["description"] = (
                        f"state array '{name}' in checkpoint slot {slot}; valid if checkpoint/meta[0] == {slot}"
                    )
            fields = list(META_FIELDS) + meta_names
            d = f["checkpoint"].create_dataset(
                "meta", data=np.array([-1] + [0] * (len(fields) - 1), dtype=np.int64)
            )
            d.attrs["fields"] = np.array(fields, dtype=h5py.string_dtype())
            d.attrs["unit"] = ""
            d.attrs["description"] = (
                "checkpoint bookkeeping, fields named in attribute 'fields': active_slot "
                "(-1: no checkpoint yet), step_rows, epoch_rows, snapshot_rows, then the run's counters"
            )
            f.flush()
            f.swmr_mode = True
        except BaseException:
            f.close()
            os.remove(path)
            raise
        return cls._attach(f, path)

    @classmethod
    def resume(cls, path) -> tuple["TrajectoryWriter", dict[str, np.ndarray], dict[str, int]]:
        """Reopen a run for writing from its last checkpoint.

        Rows written after the last checkpoint are dropped (so the continued run
        is bit-identical to an uninterrupted one), ``status`` is set back to
        ``"running"`` and ``resumed_count`` is incremented. A run killed while
        writing (status flags left set in the file) is recovered as
        ``h5clear -s --increment`` would, after checking that its writer is not
        still alive on this host.

        Returns
        -------
        (writer, arrays, meta) : the writer, the checkpointed state arrays and
            the checkpointed counters (``meta_names`` given at create time).
        """
        path = os.fspath(path)
        if os.path.exists(path) and _file_key(path) in _OPEN_WRITERS:
            raise TrajectoryError(f"{path}: a TrajectoryWriter in this process still has the file open")
        with _open_read(path) as f:
            _check_layout(f, path)
            status = _attr(f.attrs.get("status"))
            if status == "finished":
                raise TrajectoryError(f"{path}: run already finished; nothing to resume")
            slot = int(_read_meta(f, path)[0])
            if slot not in (0, 1):
                raise TrajectoryError(f"{path}: no checkpoint to resume from (none was written)")
            pid = _attr(f.attrs.get("writer_pid"))
            host = _attr(f.attrs.get("writer_host"))
        flags = _superblock_flags(path)
        if flags & (_FLAG_WRITE | _FLAG_SWMR_WRITE):
            if _writer_alive(pid, host):
                raise TrajectoryError(f"{path}: still being written by process {pid} on this host")
            _clear_status_flags(path)

        f = _open_rw(path)
        try:
            _check_layout(f, path)
            meta = _read_meta(f, path)
            fields = [str(x) for x in _attr(f["checkpoint/meta"].attrs["fields"])]
            slot, rows = int(meta[0]), {"steps": int(meta[1]), "epochs": int(meta[2])}
            snap_rows = int(meta[3])
            arrays = _read_slot(f, path, slot)
            for group in ("steps", "epochs", "snapshots"):
                n = rows[group] if group != "snapshots" else snap_rows
                for name, d in _datasets(f[group]).items():
                    if d.shape[0] < n:
                        raise TrajectoryError(
                            f"{path}: {group}/{name} has {d.shape[0]} rows but the checkpoint recorded {n}; file is corrupt"
                        )
                    if d.shape[0] > n:
                        d.resize(n, axis=0)
            attrs = f.attrs
            for k in _attr(attrs.get("finish_attrs", "")).split(","):
                if k and k in attrs:
                    del attrs[k]
            for k in ("finished", "finish_attrs"):
                if k in attrs:
                    del attrs[k]
            attrs["status"] = "running"
            attrs["resumed_count"] = np.int64(int(_attr(attrs.get("resumed_count", 0))) + 1)
            attrs["resumed"] = _now()
            attrs["writer_pid"] = np.int64(os.getpid())
            attrs["writer_host"] = socket.gethostname()
            f.flush()
            f.swmr_mode = True
        except TrajectoryError:
            f.close()
            raise
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            f.close()
            raise TrajectoryError(f"{path}: cannot resume ({_h5msg(e)})") from e
        user_meta = {name: int(v) for name, v in zip(fields[len(META_FIELDS):], meta[len(META_FIELDS):])}
        return cls._attach(f, path), arrays, user_meta

    @classmethod
    def _attach(cls, f: h5py.File, path: str) -> "TrajectoryWriter":
        self = object.__new__(cls)
        self._f = f
        self._path = path
        self._closed = False
        self._attrs = {k: _attr(v) for k, v in f.attrs.items()}
        self._ds = {g: _datasets(f[g]) for g in ("steps", "epochs")}
        snaps = _datasets(f["snapshots"])
        self._snap_epoch = snaps.pop("epoch")
        self._snaps = snaps
        self._slots = [_datasets(f[f"checkpoint/slot{i}"]) for i in (0, 1)]
        self._meta = f["checkpoint/meta"]
        fields = [str(x) for x in _attr(self._meta.attrs["fields"])]
        self._meta_names = fields[len(META_FIELDS):]
        meta = self._meta[()]
        self._active = int(meta[0])
        self._rows = {g: min((d.shape[0] for d in self._ds[g].values()), default=0) for g in self._ds}
        self._snap_rows = self._snap_epoch.shape[0]
        self._buf = {
            g: {name: _RowBuffer(d.shape[1:], d.dtype, _CHUNK_ROWS[g]) for name, d in self._ds[g].items()}
            for g in self._ds
        }
        self._buffered = {g: 0 for g in self._ds}
        self._key = _file_key(path)
        _OPEN_WRITERS.add(self._key)
        return self

    # -- properties ---------------------------------------------------------

    @property
    def path(self) -> str:
        """The trajectory file."""
        return self._path

    @property
    def attrs(self) -> dict:
        """Root attributes as they were when the writer opened the file (plain Python values)."""
        return dict(self._attrs)

    @property
    def n_steps(self) -> int:
        """Step rows so far, buffered ones included."""
        return self._rows["steps"] + self._buffered["steps"]

    @property
    def n_epochs(self) -> int:
        """Epoch rows so far, buffered ones included."""
        return self._rows["epochs"] + self._buffered["epochs"]

    @property
    def n_snapshots(self) -> int:
        """Snapshot rows so far."""
        return self._snap_rows

    @property
    def closed(self) -> bool:
        return self._closed

    # -- appending ----------------------------------------------------------

    def append_steps(self, **columns) -> None:
        """Buffer n rows of every step series (arrays of n rows, or scalars for one row)."""
        self._append("steps", columns)

    def append_epoch(self, **row) -> None:
        """Buffer one row of every epoch series."""
        self._append("epochs", row, one_row=True)

    def _append(self, group: str, columns: dict, one_row: bool = False) -> int:
        self._check_open()
        bufs = self._buf[group]
        _check_names(set(columns), set(bufs), group)
        blocks, n = {}, None
        for name, value in columns.items():
            buf = bufs[name]
            a = np.asarray(value)
            if a.shape == buf.shape:
                a = a[None]
            elif one_row or a.shape[1:] != buf.shape:
                want = f"a row of shape {buf.shape}" if one_row else f"rows of shape {buf.shape}"
                raise ValueError(f"{group}/{name}: expected {want}, got an array of shape {a.shape}")
            if not np.can_cast(a.dtype, buf.dtype, "same_kind"):
                raise TypeError(f"{group}/{name}: cannot store {a.dtype} values as {buf.dtype}")
            if n is not None and a.shape[0] != n:
                raise ValueError(f"{group}: columns have different numbers of rows ({n} and {a.shape[0]} for {name!r})")
            n = a.shape[0]
            blocks[name] = a
        if not n:
            return 0
        for name, a in blocks.items():
            bufs[name].append(a)
        self._buffered[group] += n
        if self._buffered[group] >= _MAX_BUFFERED_ROWS[group]:
            self._write_rows(group)
        return n

    def _write_rows(self, group: str) -> None:
        k = self._buffered[group]
        if not k:
            return
        n0 = self._rows[group]
        for name, d in self._ds[group].items():
            rows = self._buf[group][name].take()
            d.resize(n0 + k, axis=0)
            d[n0 : n0 + k] = rows
        self._rows[group] = n0 + k
        self._buffered[group] = 0

    def snapshot(self, epoch: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Append one row to every /snapshots dataset (written now, visible after the next flush)."""
        self._check_open()
        _check_names(set(arrays), set(self._snaps), "snapshot")
        rows = {}
        for name, d in self._snaps.items():
            rows[name] = _as_state_array(arrays[name], d.shape[1:], d.dtype, f"snapshots/{name}")
        n = self._snap_rows
        for name, d in self._snaps.items():
            d.resize(n + 1, axis=0)
            d[n] = rows[name]
        self._snap_epoch.resize(n + 1, axis=0)
        self._snap_epoch[n] = int(epoch)
        self._snap_rows = n + 1

    # -- checkpoint ---------------------------------------------------------

    def checkpoint(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, int]) -> None:
        """Write a crash-safe checkpoint of every state array plus the run's counters.

        Pending rows are flushed first; the arrays go into the inactive slot,
        which becomes active only once it is completely on disk, so a crash at
        any point leaves the previous checkpoint valid.
        """
        self._check_open()
        slot_ds = self._slots[0]
        _check_names(set(arrays), set(slot_ds), "checkpoint")
        _check_names(set(meta), set(self._meta_names), "checkpoint meta")
        values = {
            name: _as_state_array(arrays[name], d.shape, d.dtype, f"checkpoint {name}")
            for name, d in slot_ds.items()
        }
        user = []
        for name in self._meta_names:
            v = meta[name]
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"checkpoint meta {name!r} must be an int, got {type(v).__name__}")
            user.append(int(v))
        self.flush()
        slot = 1 - self._active if self._active in (0, 1) else 0
        for name, d in self._slots[slot].items():
            if d.size:
                d[()] = values[name]
        self._f.flush()
        _fsync(self._f)
        row = [slot, self._rows["steps"], self._rows["epochs"], self._snap_rows] + user
        self._meta[()] = np.asarray(row, dtype=np.int64)
        self._f.flush()
        _fsync(self._f)
        self._active = slot

    # -- monitors -------------------------------------------------------------

    def write_monitors(
        self,
        monitors: Mapping[int, Mapping[str, Any]],
        *,
        dt: float,
        steps: int,
        samples,
        epoch: int,
    ) -> None:
        """Store spike/voltage recordings of some layers as ``/monitors``, replacing earlier ones.

        With S = ``len(samples)`` recorded samples, T = ``steps`` time steps
        and n recorded units of a layer:

        Parameters
        ----------
        monitors : layer index l (0-based) -> dict with the keys
            ``v`` : (S, T, n) float, membrane potential after each step's update
            (and reset), stored as float32;
            ``units`` : (n,) int, indices of the recorded units within the layer;
            ``spikes`` (optional; absent for a non-spiking layer) : (S, T, n)
            bool or integer 0/1, 1 where the unit spiked in that step, stored as uint8;
            ``node`` (optional) : node model name, e.g. ``"lif"``;
            ``threshold`` (optional) : firing threshold, in the units of ``v``.
            Arrays must be NumPy (host) arrays.
        dt : length of a time step, ms.
        steps : T, time steps per sample.
        samples : (S,) int, indices into the test set of the recorded samples.
        epoch : the epoch after which the recordings were taken.

        Everything is checked before the file is touched; bad input raises
        ValueError naming the layer and the array. Pending rows are flushed
        first. SWMR allows no new objects, so, as :meth:`finish` does, the
        SWMR handle is closed, the file reopened normally (waiting for or
        bypassing readers' locks, see ``docs/trajectory.md``), the group
        written, flushed and synced, and the file switched back to SWMR mode;
        the writer then continues as before. TrajectoryError if the file
        cannot be reopened (the writer is then closed) or written.
        """
        self._check_open()
        group_attrs, layers = _check_monitors(monitors, dt=dt, steps=steps, samples=samples, epoch=epoch)
        self.flush()
        _fsync(self._f)
        self._release()
        f = _open_rw(self._path)
        err: BaseException | None = None
        try:
            _write_monitors_group(f, group_attrs, layers)
        except BaseException as e:  # even on an interrupt, go back to SWMR and keep the writer usable
            err = e
        try:
            f.flush()
            _fsync(f)
            f.swmr_mode = True
        except BaseException:
            f.close()
            raise
        self.__dict__.update(type(self)._attach(f, self._path).__dict__)
        if isinstance(err, (OSError, RuntimeError, ValueError, KeyError, TypeError)):
            raise TrajectoryError(f"{self._path}: cannot write /monitors ({_h5msg(err)})") from err
        if err is not None:
            raise err

    # -- flushing and closing -------------------------------------------------

    def flush(self) -> None:
        """Write buffered rows and flush the file, making them visible to readers and crash-safe."""
        self._check_open()
        self._write_rows("steps")
        self._write_rows("epochs")
        self._f.flush()

    def close(self) -> None:
        """Flush and close without changing ``status`` (it stays ``"running"``). Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._release()

    def finish(self, status: str, **attrs) -> None:
        """Flush, close, and mark the run ended.

        ``status`` is ``"finished"``, ``"failed"`` or ``"interrupted"``; extra
        keyword attributes (str, int, float, bool; e.g. ``failed_step``,
        ``message``) are stored as root attributes. The file is reopened
        without SWMR for this, as attributes cannot be changed under SWMR.
        """
        self._check_open()
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {FINAL_STATUSES}, got {status!r}")
        extra = _check_attrs(attrs, "finish attrs")
        try:
            self.flush()
        finally:
            self._release()
        f = _open_rw(self._path)
        try:
            f.attrs["status"] = status
            f.attrs["finished"] = _now()
            for k, v in extra.items():
                f.attrs[k] = v
            f.attrs["finish_attrs"] = ",".join(extra)
        finally:
            f.close()

    def _release(self) -> None:
        self._closed = True
        _OPEN_WRITERS.discard(self._key)
        self._f.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self._path}: TrajectoryWriter is closed")

    def __enter__(self) -> "TrajectoryWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<TrajectoryWriter {self._path!r} ({state}, {self.n_steps} steps, {self.n_epochs} epochs)>"


class _RowBuffer:
    """Growable row buffer of one series (amortised O(1) append, no Python object per row)."""

    def __init__(self, shape: tuple, dtype, capacity: int):
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self._a = np.empty((capacity, *self.shape), self.dtype)
        self._n = 0

    def append(self, rows: np.ndarray) -> None:
        k = rows.shape[0]
        if self._n + k > self._a.shape[0]:
            cap = max(2 * self._a.shape[0], self._n + k)
            a = np.empty((cap, *self.shape), self.dtype)
            a[: self._n] = self._a[: self._n]
            self._a = a
        self._a[self._n : self._n + k] = rows
        self._n += k

    def take(self) -> np.ndarray:
        """The buffered rows (a view, valid until the next append); empties the buffer."""
        rows = self._a[: self._n]
        self._n = 0
        return rows


# --------------------------------------------------------------------------- reading


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
    monitors : the spike/voltage recordings (:class:`Monitors`), or None if
        the run has none (or they were not read).
    """

    path: str
    attrs: dict
    steps: dict[str, np.ndarray]
    epochs: dict[str, np.ndarray]
    snapshots: dict[str, np.ndarray]
    units: dict[str, str]
    descriptions: dict[str, str]
    monitors: "Monitors | None" = None

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
    with _open_read(path) as f:
        _check_layout(f, path)
        try:
            attrs = {k: _attr(v) for k, v in f.attrs.items()}
            units, descriptions, groups = {}, {}, {}
            for group in ("steps", "epochs", "snapshots"):
                ds = _datasets(f[group])
                for name, d in ds.items():
                    units[f"{group}/{name}"] = str(_attr(d.attrs.get("unit", "")))
                    descriptions[f"{group}/{name}"] = str(_attr(d.attrs.get("description", "")))
                if group == "snapshots" and not snapshots:
                    groups[group] = {}
                    continue
                n = min((d.shape[0] for d in ds.values()), default=0)
                groups[group] = {name: d[:n] for name, d in ds.items()}
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
            raise TrajectoryError(f"{path}: unreadable data, file is corrupt or truncated ({_h5msg(e)})") from e
        mon = _read_monitors(f, path) if monitors else None
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


@dataclass(repr=False)
class Monitors:
    """Spike/voltage recordings of a run (the ``/monitors`` group).

    With S recorded samples, T time steps and n recorded units of a layer:

    Attributes
    ----------
    dt : length of a time step, ms.
    steps : T, time steps per sample.
    samples : (S,) int64, indices into the test set of the recorded samples.
    epoch : the epoch after which the recordings were taken.
    layers : layer index l (0-based) -> ``{"v": (S, T, n) float32 membrane
        potential after each step's update and reset, "units": (n,) int64
        indices of the recorded units within the layer, "spikes": (S, T, n)
        uint8, 1 where a unit spiked}``; ``"spikes"`` is absent for a
        non-spiking layer. Layers in increasing order.
    nodes : layer index -> node model name (``""`` if not recorded).
    thresholds : layer index -> firing threshold (in the units of ``v``), or None.
    path : the trajectory file.
    """

    dt: float
    steps: int
    samples: np.ndarray
    epoch: int
    layers: dict[int, dict[str, np.ndarray]]
    nodes: dict[int, str]
    thresholds: dict[int, float | None]
    path: str = ""

    @property
    def times(self) -> np.ndarray:
        """(T,) float64: time in ms at the end of each step, ``dt, 2 dt, ..., T dt``."""
        return np.arange(1, self.steps + 1, dtype=np.float64) * self.dt

    def __repr__(self) -> str:
        return (f"<Monitors {self.path!r} layers={list(self.layers)} samples={len(self.samples)} "
                f"steps={self.steps} dt={self.dt:g} ms epoch={self.epoch}>")


def read_monitors(path) -> Monitors | None:
    """The spike/voltage recordings of a run, or None if it has none.

    Works while the run writes the file (a reader that opened the file before
    :meth:`TrajectoryWriter.write_monitors` must reopen it to see them).
    TrajectoryError for unusable files, as :func:`read_trajectory`.
    """
    path = os.fspath(path)
    with _open_read(path) as f:
        _check_layout(f, path)
        return _read_monitors(f, path)


def _read_monitors(f: h5py.File, path: str) -> Monitors | None:
    try:
        g = f.get("monitors")
        if g is None:
            return None
        if not isinstance(g, h5py.Group):
            raise TrajectoryError(f"{path}: /monitors is not a group; file is corrupt")
        a = g.attrs
        for k in ("dt", "steps", "samples", "epoch"):
            if k not in a:
                raise TrajectoryError(f"{path}: /monitors has no attribute {k!r}; file is corrupt")
        layers, nodes, thresholds = {}, {}, {}
        for name, lg in g.items():
            if not (name.startswith("layer") and name[5:].isdigit() and isinstance(lg, h5py.Group)):
                continue
            l = int(name[5:])
            if "v" not in lg or "units" not in lg:
                raise TrajectoryError(f"{path}: /monitors/{name} lacks v or units; file is corrupt")
            layers[l] = {k: lg[k][()] for k in ("spikes", "v", "units") if k in lg}
            nodes[l] = str(_attr(lg.attrs.get("node", "")))
            th = _attr(lg.attrs.get("threshold"))
            thresholds[l] = None if th is None else float(th)
        order = sorted(layers)
        return Monitors(
            dt=float(_attr(a["dt"])),
            steps=int(_attr(a["steps"])),
            samples=np.asarray(a["samples"], dtype=np.int64).reshape(-1),
            epoch=int(_attr(a["epoch"])),
            layers={l: layers[l] for l in order},
            nodes={l: nodes[l] for l in order},
            thresholds={l: thresholds[l] for l in order},
            path=path,
        )
    except TrajectoryError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
        raise TrajectoryError(f"{path}: unreadable /monitors ({_h5msg(e)})") from e


def read_checkpoint(path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The last checkpoint of a run: (state arrays, counters). TrajectoryError if there is none."""
    path = os.fspath(path)
    with _open_read(path) as f:
        _check_layout(f, path)
        meta = _read_meta(f, path)
        slot = int(meta[0])
        if slot not in (0, 1):
            raise TrajectoryError(f"{path}: no checkpoint (none was written)")
        try:
            fields = [str(x) for x in _attr(f["checkpoint/meta"].attrs["fields"])]
        except (KeyError, OSError) as e:
            raise TrajectoryError(f"{path}: checkpoint/meta has no 'fields' attribute; file is corrupt") from e
        arrays = _read_slot(f, path, slot)
    user = {name: int(v) for name, v in zip(fields[len(META_FIELDS):], meta[len(META_FIELDS):])}
    return arrays, user


# --------------------------------------------------------------------------- helpers


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _npsim_version() -> str:
    try:
        import npsim

        return str(getattr(npsim, "__version__", "unknown"))
    except ImportError:  # pragma: no cover
        return "unknown"


def _as_shape(shape, what: str) -> tuple:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as e:
        raise TypeError(f"{what} must be a tuple of ints, got {shape!r}") from e
    if any(s < 0 for s in shape):
        raise ValueError(f"{what} {shape} has a negative size")
    return shape


def _check_name(name, what: str, nested: bool) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} name {name!r} must be a non-empty str")
    parts = name.split("/")
    if (not nested and len(parts) > 1) or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{what} name {name!r} is not a valid dataset name")


def _check_series(series: Mapping[str, Series], what: str) -> dict[str, Series]:
    out = {}
    for name, s in series.items():
        _check_name(name, what, nested=False)
        if not isinstance(s, Series):
            raise TypeError(f"{what}[{name!r}] must be a Series, got {type(s).__name__}")
        if int(np.prod(s.shape)) == 0:
            raise ValueError(f"{what}[{name!r}]: rows of shape {s.shape} are empty")
        out[name] = s
    return out


def _check_state(state: Mapping[str, tuple]) -> dict[str, tuple[tuple, np.dtype]]:
    out = {}
    for name, spec in state.items():
        _check_name(name, "state", nested=True)
        try:
            shape, dtype = spec
        except (TypeError, ValueError) as e:
            raise TypeError(f"state[{name!r}] must be (shape, dtype), got {spec!r}") from e
        dt = np.dtype(dtype)
        if dt.kind not in "biuf":
            raise ValueError(f"state[{name!r}]: dtype {dt} is not bool, integer or float")
        out[name] = (_as_shape(shape, f"state[{name!r}] shape"), dt)
    names = sorted(out)
    for a, b in zip(names, names[1:]):
        if b.startswith(a + "/"):
            raise ValueError(f"state names {a!r} and {b!r} clash (one would be a group holding the other)")
    return out


def _check_attrs(attrs: Mapping[str, Any], what: str) -> dict[str, Any]:
    out = {}
    for k, v in attrs.items():
        if not isinstance(k, str) or not k or "/" in k:
            raise ValueError(f"{what}: attribute name {k!r} must be a non-empty str without '/'")
        if k in _RESERVED_ATTRS:
            raise ValueError(f"{what}: attribute {k!r} is set by the trajectory writer")
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, bool):
            out[k] = np.bool_(v)
        elif isinstance(v, int):
            if not -(2**63) <= v < 2**63:
                raise ValueError(f"{what}: attribute {k!r} = {v} does not fit in int64; store it as a str")
            out[k] = np.int64(v)
        elif isinstance(v, (float, str)):
            out[k] = v
        elif isinstance(v, (np.ndarray, list, tuple)):
            a = np.asarray(v)
            if a.dtype.kind in "biuf":
                out[k] = a
            elif a.dtype.kind == "U" or (a.size == 0 and isinstance(v, (list, tuple))):
                out[k] = a.astype(h5py.string_dtype())
            else:
                raise TypeError(f"{what}: attribute {k!r}: arrays must hold numbers or str, got {a.dtype}")
        else:
            raise TypeError(
                f"{what}: attribute {k!r} must be str, int, float, bool or an array of those, got {type(v).__name__}"
            )
    return out


def _check_names(given: set, declared: set, what: str) -> None:
    missing, unknown = declared - given, given - declared
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {sorted(missing)}")
        if unknown:
            parts.append(f"unknown {sorted(unknown)}")
        raise ValueError(f"{what}: {'; '.join(parts)} (declared: {sorted(declared)})")


def _as_state_array(value, shape: tuple, dtype: np.dtype, what: str) -> np.ndarray:
    a = np.asarray(value)
    if a.shape != tuple(shape):
        raise ValueError(f"{what}: expected shape {tuple(shape)}, got {a.shape}")
    if a.dtype != dtype:
        if not np.can_cast(a.dtype, dtype, "same_kind"):
            raise TypeError(f"{what}: cannot store {a.dtype} as {dtype}")
        b = a.astype(dtype)
        if not np.array_equal(b, a, equal_nan=a.dtype.kind == "f"):
            raise TypeError(f"{what}: {a.dtype} values change when stored as {dtype}; pass {dtype} arrays")
        a = b
    return a


def _chunks(rows: int, shape: tuple, dtype) -> tuple:
    """Chunk shape for an extendable dataset of rows of ``shape``."""
    itemsize = np.dtype(dtype).itemsize
    dims = [max(1, s) for s in shape]
    while int(np.prod(dims)) * itemsize > _MAX_ROW_CHUNK_BYTES:
        i = int(np.argmax(dims))
        dims[i] = (dims[i] + 1) // 2
    row_bytes = int(np.prod(dims)) * itemsize
    return (max(1, min(rows, _CHUNK_BYTES // row_bytes)), *dims)


def _create_rows(group, name, shape, dtype, rows, unit, description):
    dtype = np.dtype(dtype)
    d = group.create_dataset(
        name,
        shape=(0, *shape),
        maxshape=(None, *shape),
        dtype=dtype,
        chunks=_chunks(rows, shape, dtype),
        compression=COMPRESSION,
        compression_opts=COMPRESSION_LEVEL,
        shuffle=True,
        fillvalue=np.nan if dtype.kind == "f" else None,
    )
    d.attrs["unit"] = unit
    d.attrs["description"] = description
    return d


_MONITOR_KEYS = ("v", "units", "spikes", "node", "threshold")
_MONITORS_TMP = "_monitors_new"  # written under this name, then renamed to /monitors


def _int_value(v, what: str, minimum: int) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{what} must be an int, got {type(v).__name__}")
    if int(v) < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {int(v)}")
    return int(v)


def _real_value(v, what: str) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a real number, got {type(v).__name__}")
    if not np.isfinite(float(v)):
        raise ValueError(f"{what} must be finite, got {float(v)}")
    return float(v)


def _host_array(a, what: str) -> np.ndarray:
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: cannot convert {type(a).__name__} to a NumPy array "
                         f"(pass host arrays, e.g. Backend.to_numpy)") from e


def _check_monitors(monitors, *, dt, steps, samples, epoch) -> tuple[dict, dict[int, dict]]:
    """Validate :meth:`TrajectoryWriter.write_monitors` input: (group attrs, layer index -> stored values)."""
    dt = _real_value(dt, "monitors: dt")
    if dt <= 0:
        raise ValueError(f"monitors: dt must be > 0 (ms per step), got {dt}")
    T = _int_value(steps, "monitors: steps", 1)
    epoch = _int_value(epoch, "monitors: epoch", 0)
    s = _host_array(samples, "monitors: samples")
    if s.ndim != 1 or s.size == 0 or s.dtype.kind not in "iu":
        raise ValueError(f"monitors: samples must be a non-empty 1-d integer array, got {s.dtype} of shape {s.shape}")
    if (s < 0).any():
        raise ValueError("monitors: samples are test-set indices and must be >= 0")
    s = s.astype(np.int64)
    S = len(s)
    if not isinstance(monitors, Mapping) or not monitors:
        raise ValueError("monitors: expected a non-empty mapping of layer index -> recorded arrays")
    layers = {}
    for key, rec in monitors.items():
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)) or int(key) < 0:
            raise ValueError(f"monitors: layer index {key!r} must be an int >= 0")
        l = int(key)
        what = f"monitors layer {l}"
        if not isinstance(rec, Mapping):
            raise ValueError(f"{what}: expected a dict with keys 'v', 'units' (and optionally 'spikes', 'node', "
                             f"'threshold'), got {type(rec).__name__}")
        unknown = sorted(set(rec) - set(_MONITOR_KEYS))
        if unknown:
            raise ValueError(f"{what}: unknown keys {unknown} (allowed: {list(_MONITOR_KEYS)})")
        for k in ("v", "units"):
            if k not in rec or rec[k] is None:
                raise ValueError(f"{what}: '{k}' is missing")
        units = _host_array(rec["units"], f"{what}: units")
        if units.ndim != 1 or units.size == 0 or units.dtype.kind not in "iu":
            raise ValueError(f"{what}: units must be a non-empty 1-d integer array, got {units.dtype} "
                             f"of shape {units.shape}")
        if (units < 0).any() or len(np.unique(units)) != len(units):
            raise ValueError(f"{what}: units must be distinct unit indices >= 0")
        n = len(units)
        want = (S, T, n)
        shape_note = f"(S, T, n) = {want} (S = len(samples), T = steps, n = len(units))"
        v = _host_array(rec["v"], f"{what}: v")
        if v.shape != want:
            raise ValueError(f"{what}: v has shape {v.shape}, expected {shape_note}")
        if v.dtype.kind not in "iuf":
            raise ValueError(f"{what}: v must hold real numbers, got dtype {v.dtype}")
        out = {"v": v.astype(np.float32), "units": units.astype(np.int64)}
        spikes = rec.get("spikes")
        if spikes is not None:
            sp = _host_array(spikes, f"{what}: spikes")
            if sp.shape != want:
                raise ValueError(f"{what}: spikes has shape {sp.shape}, expected {shape_note}")
            if sp.dtype.kind not in "buif":
                raise ValueError(f"{what}: spikes must be bool or 0/1 numbers, got dtype {sp.dtype}")
            if sp.dtype.kind != "b" and not ((sp == 0) | (sp == 1)).all():
                raise ValueError(f"{what}: spikes must hold only 0 and 1")
            out["spikes"] = sp.astype(np.uint8)
        node = rec.get("node")
        if node is not None and not isinstance(node, str):
            raise ValueError(f"{what}: node must be a str (node model name), got {type(node).__name__}")
        out["node"] = node or ""
        threshold = rec.get("threshold")
        out["threshold"] = None if threshold is None else _real_value(threshold, f"{what}: threshold")
        layers[l] = out
    attrs = {"dt": np.float64(dt), "steps": np.int64(T), "samples": s, "epoch": np.int64(epoch)}
    return attrs, dict(sorted(layers.items()))


def _write_monitors_group(f: h5py.File, attrs: dict, layers: dict[int, dict]) -> None:
    """Write ``/monitors`` (file open normally, not in SWMR mode), replacing an existing one."""
    if _MONITORS_TMP in f:
        del f[_MONITORS_TMP]  # left by a writer killed in here
    g = f.create_group(_MONITORS_TMP)
    for k, v in attrs.items():
        g.attrs[k] = v
    T = int(attrs["steps"])
    g.attrs["description"] = (
        f"spikes and membrane potentials of some layers for the test samples in attribute 'samples', "
        f"recorded after epoch {int(attrs['epoch'])}: {T} steps of dt = {float(attrs['dt']):g} ms each; "
        f"one subgroup layer<l> per recorded layer (l from 0)"
    )
    for l, rec in layers.items():
        lg = g.create_group(f"layer{l}")
        lg.attrs["node"] = rec["node"]
        if rec["threshold"] is not None:
            lg.attrs["threshold"] = np.float64(rec["threshold"])
        kind = f"'{rec['node']}' " if rec["node"] else ""
        lg.attrs["description"] = f"recorded {kind}units of layer {l} (0-based)"
        for name, unit, description in (
            ("spikes", "", "1 where the unit spiked in the step, else 0; (sample, step, unit)"),
            ("v", "", "membrane potential after the step's update and reset, in the units of the threshold; "
                      "(sample, step, unit)"),
            ("units", "", "indices within the layer of the recorded units (last axis of v and spikes)"),
        ):
            a = rec.get(name)
            if a is None:
                continue
            chunks = _chunks(a.shape[0], a.shape[1:], a.dtype)
            d = lg.create_dataset(name, data=a, chunks=chunks, compression=COMPRESSION,
                                  compression_opts=COMPRESSION_LEVEL, shuffle=a.dtype.itemsize > 1)
            d.attrs["unit"] = unit
            d.attrs["description"] = description
    if "monitors" in f:
        del f["monitors"]
    f.move(_MONITORS_TMP, "monitors")


def _datasets(group) -> dict[str, h5py.Dataset]:
    """Every dataset under ``group``, keyed by its path relative to it."""
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = obj

    group.visititems(visit)
    return out


def _attr(v):
    """An HDF5 attribute value as a plain Python value."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray) and v.dtype.kind in "OSU":
        return [_attr(x) for x in v.tolist()]
    return v


def _h5msg(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _is_lock_error(e: BaseException) -> bool:
    return "unable to lock file" in str(e).lower()


def _file_key(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def _open_read(path: str) -> h5py.File:
    """Open for reading (plainly, or as a SWMR reader if a writer has it open), errors as TrajectoryError."""
    if not os.path.exists(path):
        raise TrajectoryError(f"{path}: no such file")
    if os.path.isdir(path):
        raise TrajectoryError(f"{path}: is a directory, not a trajectory file")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as e:
        raise TrajectoryError(f"{path}: cannot read ({e.strerror or _h5msg(e)})") from e
    if not is_hdf5:
        raise TrajectoryError(f"{path}: not an HDF5 file")
    err: BaseException | None = None
    for attempt in range(_READ_RETRIES):
        last = attempt == _READ_RETRIES - 1
        try:
            return h5py.File(path, "r")
        except (OSError, RuntimeError, ValueError) as e:
            err = e
        msg = str(err).lower()
        if "locking flag values don't match" in msg:
            # This process has the file open without locking (a writer of ours that
            # bypassed readers' locks, see _open_rw): HDF5 shares the open file, so
            # open it with the same setting.
            try:
                return h5py.File(path, "r", swmr=bool(_superblock_flags(path) & _FLAG_SWMR_WRITE), locking=False)
            except (OSError, RuntimeError, ValueError) as e:
                err = e
                msg = str(err).lower()
        if ("already open for" in msg or "consistency flags" in msg) and _superblock_flags(path) & _FLAG_SWMR_WRITE:
            # Written in SWMR mode right now, or its writer was killed: read it as a
            # SWMR reader. Such a read skips HDF5's end-of-file check and retries
            # unreadable metadata for a very long time, so check the length first.
            if _shorter_than_recorded(path):
                if not last:
                    time.sleep(0.1)  # a live writer may be between flushing and extending
                    continue
                raise TrajectoryError(f"{path}: truncated HDF5 file (shorter than its header records)")
            try:
                return h5py.File(path, "r", swmr=True)
            except (OSError, RuntimeError, ValueError) as e:
                err = e
        if not _is_lock_error(err) or last:
            break
        time.sleep(0.1)  # a writer is briefly outside SWMR mode (finish, resume)
    raise _open_error(path, [err])


def _open_error(path: str, errors: list[BaseException]) -> TrajectoryError:
    text = " ".join(str(e).lower() for e in errors)
    if "truncated" in text:
        what = "truncated HDF5 file (shorter than its header records)"
    elif "unable to lock file" in text:
        what = "locked by a process writing it outside SWMR mode; try again"
    elif "already open for" in text or "consistency flags" in text:
        what = (
            "marked as open for writing by a writer that is not in SWMR mode, or that crashed "
            "outside it; if no process is writing it, `h5clear -s` removes the mark"
        )
    else:
        what = f"corrupt or unreadable HDF5 file ({_h5msg(errors[-1]) if errors else 'unknown error'})"
    err = TrajectoryError(f"{path}: {what}")
    err.__cause__ = errors[-1] if errors else None
    return err


def _check_layout(f: h5py.File, path: str) -> None:
    try:
        attrs = f.attrs
        if "schema_version" not in attrs or "npsim_version" not in attrs:
            raise TrajectoryError(f"{path}: not an npsim trajectory (no schema_version/npsim_version attributes)")
        version = _attr(attrs["schema_version"])
        if version != SCHEMA_VERSION:
            raise TrajectoryError(
                f"{path}: schema version {version} unsupported (this npsim reads version {SCHEMA_VERSION})"
            )
        for group in ("steps", "epochs", "snapshots", "checkpoint"):
            if not isinstance(f.get(group), h5py.Group):
                raise TrajectoryError(f"{path}: incomplete npsim trajectory (no /{group} group)")
        if "checkpoint/meta" not in f or "snapshots/epoch" not in f:
            raise TrajectoryError(f"{path}: incomplete npsim trajectory (no checkpoint/meta or snapshots/epoch)")
    except TrajectoryError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
        raise TrajectoryError(f"{path}: corrupt HDF5 file ({_h5msg(e)})") from e


def _read_meta(f: h5py.File, path: str) -> np.ndarray:
    try:
        meta = np.asarray(f["checkpoint/meta"][()], dtype=np.int64)
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise TrajectoryError(f"{path}: unreadable checkpoint/meta ({_h5msg(e)})") from e
    if meta.ndim != 1 or meta.shape[0] < len(META_FIELDS):
        raise TrajectoryError(f"{path}: checkpoint/meta has shape {meta.shape}; file is corrupt")
    return meta


def _read_slot(f: h5py.File, path: str, slot: int) -> dict[str, np.ndarray]:
    try:
        out = {}
        for name, d in _datasets(f[f"checkpoint/slot{slot}"]).items():
            out[name] = np.asarray(d[()]) if d.size else np.empty(d.shape, d.dtype)
        return out
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise TrajectoryError(f"{path}: unreadable checkpoint slot {slot} ({_h5msg(e)})") from e


def _fsync(f: h5py.File) -> None:
    """Push the file to stable storage (checkpoints survive power loss, not just a kill)."""
    try:
        os.fsync(f.id.get_vfd_handle())
    except (OSError, ValueError, TypeError, RuntimeError):  # pragma: no cover - non-POSIX drivers
        pass


def _open_rw(path: str) -> h5py.File:
    """Open for writing (no SWMR yet), waiting briefly for readers' shared locks.

    SWMR readers hold a shared lock on the file, which blocks a normal
    read-write open. If only such shared locks remain after a short wait, the
    file is opened without locking: we are the only writer, and the readers
    merely risk one failed read (which they retry).
    """
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        try:
            return h5py.File(path, "r+", libver=LIBVER)
        except (OSError, RuntimeError, ValueError) as e:
            if not _is_lock_error(e):
                raise TrajectoryError(f"{path}: cannot open for writing ({_h5msg(e)})") from e
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if not _only_shared_locks(path):
        raise TrajectoryError(f"{path}: locked by another process writing it")
    try:
        return h5py.File(path, "r+", libver=LIBVER, locking=False)
    except (OSError, RuntimeError, ValueError) as e:
        raise TrajectoryError(f"{path}: cannot open for writing ({_h5msg(e)})") from e


def _only_shared_locks(path: str) -> bool:
    """True if nobody holds an exclusive lock on ``path`` (readers may hold shared ones)."""
    if fcntl is None:  # pragma: no cover
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _writer_alive(pid, host) -> bool:
    """Whether the process that last opened the file for writing may still run.

    Only a process on this host can be checked; a writer on another host is
    taken to be gone (the run is being resumed elsewhere after a crash).
    """
    if not isinstance(pid, int) or host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # zombie: dead, not reaped
    except (OSError, IndexError):
        return True


# HDF5 superblock versions 2 and 3: signature (8 bytes), version, size of offsets,
# size of lengths, status flags, then 4 addresses (base, extension, end of file,
# root group) and a Jenkins lookup3 checksum of everything before it.


def _superblock_flags(path: str) -> int:
    with open(path, "rb") as fh:
        head = fh.read(12)
    if len(head) < 12 or head[:8] != _HDF5_SIGNATURE or head[8] < 2:
        return 0
    return head[11]


def _shorter_than_recorded(path: str) -> bool:
    """Whether the file ends before the end-of-file address its superblock records."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:8] != _HDF5_SIGNATURE or head[8] < 2:
            return False
        osize = head[9]
        addrs = fh.read(4 * osize)
        size = os.fstat(fh.fileno()).st_size
    if len(addrs) < 4 * osize:
        return True
    base = int.from_bytes(addrs[:osize], "little")
    eoa = int.from_bytes(addrs[2 * osize : 3 * osize], "little")
    return size < base + eoa


def _clear_status_flags(path: str) -> None:
    """What ``h5clear -s --increment`` does: clear the write flags a killed writer left set.

    The end-of-file address is moved past both its recorded value and the
    actual file end, so nothing written after the last flush is reused.
    """
    with open(path, "r+b") as fh:
        head = fh.read(12)
        osize = head[9]
        n = 12 + 4 * osize
        fh.seek(0)
        block = bytearray(fh.read(n + 4))
        if len(block) != n + 4 or _lookup3(bytes(block[:n])) != int.from_bytes(block[n:], "little"):
            raise TrajectoryError(f"{path}: corrupt HDF5 superblock (checksum mismatch)")
        addr = lambda i: int.from_bytes(block[12 + i * osize : 12 + (i + 1) * osize], "little")  # noqa: E731
        base, eoa = addr(0), addr(2)
        size = os.fstat(fh.fileno()).st_size
        eoa = max(eoa, size - base) + _EOA_INCREMENT
        block[11] &= ~(_FLAG_WRITE | _FLAG_SWMR_WRITE) & 0xFF
        block[12 + 2 * osize : 12 + 3 * osize] = eoa.to_bytes(osize, "little")
        block[n:] = _lookup3(bytes(block[:n])).to_bytes(4, "little")
        fh.truncate(base + eoa)  # extends (sparsely), so the file is not "truncated"
        fh.flush()
        os.fsync(fh.fileno())
        fh.seek(0)
        fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())


def _lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, the checksum HDF5 uses for metadata."""
    m = 0xFFFFFFFF

    def rot(x, k):
        return ((x << k) | (x >> (32 - k))) & m

    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & m
    i = 0
    while n > 12:
        a = (a + int.from_bytes(data[i : i + 4], "little")) & m
        b = (b + int.from_bytes(data[i + 4 : i + 8], "little")) & m
        c = (c + int.from_bytes(data[i + 8 : i + 12], "little")) & m
        a = (a - c) & m; a ^= rot(c, 4); c = (c + b) & m  # noqa: E702
        b = (b - a) & m; b ^= rot(a, 6); a = (a + c) & m  # noqa: E702
        c = (c - b) & m; c ^= rot(b, 8); b = (b + a) & m  # noqa: E702
        a = (a - c) & m; a ^= rot(c, 16); c = (c + b) & m  # noqa: E702
        b = (b - a) & m; b ^= rot(a, 19); a = (a + c) & m  # noqa: E702
        c = (c - b) & m; c ^= rot(b, 4); b = (b + a) & m  # noqa: E702
        n -= 12
        i += 12
    if n == 0:
        return c
    tail = bytes(data[i:]) + bytes(12 - n)
    a = (a + int.from_bytes(tail[0:4], "little")) & m
    b = (b + int.from_bytes(tail[4:8], "little")) & m
    c = (c + int.from_bytes(tail[8:12], "little")) & m
    c ^= b; c = (c - rot(b, 14)) & m  # noqa: E702
    a ^= c; a = (a - rot(c, 11)) & m  # noqa: E702
    b ^= a; b = (b - rot(a, 25)) & m  # noqa: E702
    c ^= b; c = (c - rot(b, 16)) & m  # noqa: E702
    a ^= c; a = (a - rot(c, 4)) & m  # noqa: E702
    b ^= a; b = (b - rot(a, 14)) & m  # noqa: E702
    c ^= b; c = (c - rot(b, 24)) & m  # noqa: E702
    return c
