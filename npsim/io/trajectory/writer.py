"""Writing a run's trajectory file: create, append, checkpoint, finish, resume.

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

Reading (also while the run is being written) is :mod:`.reader`'s; the
layout is documented in ``docs/trajectory.md``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from typing import Any, Mapping

import h5py
import numpy as np

from ...errors import (
    OutputError,
    TrajectoryBusy,
    TrajectoryCorrupt,
    TrajectoryError,
    TrajectoryFinished,
)
from . import faults
from .access import (
    OPEN_WRITERS,
    check_layout,
    check_space,
    file_key,
    fsync,
    is_disk_full,
    meta_fields,
    open_read,
    open_rw,
    read_checkpoint_slot,
)
from .layout import Layout
from .monitors import check_monitors, write_monitors_group
from .recover import (
    FLAG_SWMR_WRITE,
    FLAG_WRITE,
    HDF5_SIGNATURE,
    clear_status_flags,
    superblock_flags,
    writer_alive,
)
from .schema import (
    CHUNK_ROWS,
    FINAL_STATUSES,
    LIBVER,
    MAX_BUFFERED_ROWS,
    META_FIELDS,
    Series,
    as_state_array,
    attr_value,
    check_attrs,
    check_names,
    datasets_under,
    h5msg,
    state_digest,
    timestamp,
)
from .uninterrupted import uninterrupted

__all__ = ["TrajectoryWriter"]


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
        layout = Layout.of(attrs=attrs, steps=steps, epochs=epochs, state=state, snapshot_names=snapshot_names,
                           meta_names=meta_names)

        if os.path.lexists(path):
            if not overwrite:
                raise FileExistsError(f"{path}: file exists; pass overwrite=True to replace it")
            _check_replaceable(path)
        check_space(path, 0, "a new trajectory file")
        # The file is built under a temporary name and renamed into place when complete, so a kill
        # during creation leaves no half-written file (and an overwritten one stays until then).
        _remove_stale_partials(path)
        partial = _partial_name(path)
        try:
            with h5py.File(partial, "x", libver=LIBVER) as f:
                layout.write(f)
                faults.reach("create:layout")
            os.replace(partial, path)  # readers of a replaced file keep their copy
        except BaseException as e:
            if os.path.lexists(partial):
                os.remove(partial)
            if isinstance(e, OSError) and is_disk_full(e):
                raise OutputError(f"{path}: the disk is full; no trajectory file was created") from None
            raise
        f = open_rw(path)
        f.swmr_mode = True
        faults.reach("create:swmr")
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
        if os.path.exists(path) and file_key(path) in OPEN_WRITERS:
            raise TrajectoryBusy(f"{path}: a TrajectoryWriter in this process still has the file open")
        # Everything resume needs is read and checked first, so a damaged file is left as it was.
        with open_read(path) as f:
            check_layout(f, path)
            status = attr_value(f.attrs.get("status"))
            if status == "finished":
                raise TrajectoryFinished(f"{path}: run already finished; nothing to resume")
            fields = meta_fields(f, path)
            slot, arrays, counters, note = read_checkpoint_slot(f, path)
            rows = {"steps": counters[0], "epochs": counters[1], "snapshots": counters[2]}
            for group, n in rows.items():
                try:
                    lengths = {name: d.shape[0] for name, d in datasets_under(f[group]).items()}
                except (OSError, RuntimeError, KeyError, ValueError) as e:
                    raise TrajectoryCorrupt(f"{path}: unreadable /{group} ({h5msg(e)})") from e
                short = [name for name, k in lengths.items() if k < n]
                if short:
                    raise TrajectoryCorrupt(f"{path}: {group}/{short[0]} has {lengths[short[0]]} rows but the "
                                            f"checkpoint recorded {n}; file is corrupt")
            pid = attr_value(f.attrs.get("writer_pid"))
            host = attr_value(f.attrs.get("writer_host"))
        flags = superblock_flags(path)
        if flags & (FLAG_WRITE | FLAG_SWMR_WRITE):
            if writer_alive(pid, host):
                raise TrajectoryBusy(f"{path}: still being written by process {pid} on this host")
            clear_status_flags(path)

        f = open_rw(path)
        try:
            faults.reach("resume:reopen")
            attrs = f.attrs
            for k in attr_value(attrs.get("finish_attrs", "")).split(","):
                if k and k in attrs:
                    del attrs[k]
            for k in ("finished", "finish_attrs"):
                if k in attrs:
                    del attrs[k]
            attrs["status"] = "running"
            attrs["resumed_count"] = np.int64(int(attr_value(attrs.get("resumed_count", 0))) + 1)
            attrs["resumed"] = timestamp()
            attrs["writer_pid"] = np.int64(os.getpid())
            attrs["writer_host"] = socket.gethostname()
            if note:
                attrs["resume_note"] = note
            elif "resume_note" in attrs:
                del attrs["resume_note"]
            f.flush()
            faults.reach("resume:status")
            f.swmr_mode = True
            # Rows after the checkpoint are dropped in SWMR mode, whose flushes keep the file readable at
            # every moment (outside it, a kill between HDF5's metadata writes can leave chunks unreadable).
            for group, n in rows.items():
                for d in datasets_under(f[group]).values():
                    if d.shape[0] > n:
                        d.resize(n, axis=0)
            f["checkpoint/meta"][()] = np.asarray([slot, *counters], dtype=np.int64)
            f.flush()
            faults.reach("resume:truncate")
        except TrajectoryError:
            f.close()
            raise
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            f.close()
            if isinstance(e, OSError) and is_disk_full(e):
                raise OutputError(f"{path}: the disk is full; free some space and resume again") from None
            raise TrajectoryError(f"{path}: cannot resume ({h5msg(e)})") from e
        user_meta = {name: int(v) for name, v in zip(fields[len(META_FIELDS):], counters[len(META_FIELDS) - 1:])}
        writer = cls._attach(f, path)
        writer.resume_note = note
        return writer, arrays, user_meta

    @classmethod
    def _attach(cls, f: h5py.File, path: str) -> "TrajectoryWriter":
        self = object.__new__(cls)
        self._f = f
        self._path = path
        self._closed = False
        self._attrs = {k: attr_value(v) for k, v in f.attrs.items()}
        self._ds = {g: datasets_under(f[g]) for g in ("steps", "epochs")}
        snaps = datasets_under(f["snapshots"])
        self._snap_epoch = snaps.pop("epoch")
        self._snaps = snaps
        self._slots = [datasets_under(f[f"checkpoint/slot{i}"]) for i in (0, 1)]
        self._meta = f["checkpoint/meta"]
        versioned = "digest" in f["checkpoint"]  # schema version 2 on: per-slot counters and checksums
        self._slot_meta = f["checkpoint/slot_meta"] if versioned else None
        self._digest = f["checkpoint/digest"] if versioned else None
        self.resume_note = ""
        fields = [str(x) for x in attr_value(self._meta.attrs["fields"])]
        self._meta_names = fields[len(META_FIELDS):]
        meta = self._meta[()]
        self._active = int(meta[0])
        self._rows = {g: min((d.shape[0] for d in self._ds[g].values()), default=0) for g in self._ds}
        self._snap_rows = self._snap_epoch.shape[0]
        self._buf = {
            g: {name: _RowBuffer(d.shape[1:], d.dtype, CHUNK_ROWS[g]) for name, d in self._ds[g].items()}
            for g in self._ds
        }
        self._buffered = {g: 0 for g in self._ds}
        self._key = file_key(path)
        OPEN_WRITERS.add(self._key)
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

    @uninterrupted
    def append_steps(self, **columns) -> None:
        """Buffer n rows of every step series (arrays of n rows, or scalars for one row)."""
        self._append("steps", columns)

    @uninterrupted
    def append_epoch(self, **row) -> None:
        """Buffer one row of every epoch series."""
        self._append("epochs", row, one_row=True)

    def _append(self, group: str, columns: dict, one_row: bool = False) -> int:
        self._check_open()
        bufs = self._buf[group]
        check_names(set(columns), set(bufs), group)
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
        if self._buffered[group] >= MAX_BUFFERED_ROWS[group]:
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

    @uninterrupted
    def snapshot(self, epoch: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Append one row to every /snapshots dataset (written now, visible after the next flush)."""
        self._check_open()
        check_names(set(arrays), set(self._snaps), "snapshot")
        rows = {}
        for name, d in self._snaps.items():
            rows[name] = as_state_array(arrays[name], d.shape[1:], d.dtype, f"snapshots/{name}")
        n = self._snap_rows
        for name, d in self._snaps.items():
            d.resize(n + 1, axis=0)
            d[n] = rows[name]
        self._snap_epoch.resize(n + 1, axis=0)
        self._snap_epoch[n] = int(epoch)
        self._snap_rows = n + 1

    # -- checkpoint ---------------------------------------------------------

    @uninterrupted
    def checkpoint(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, int]) -> None:
        """Write a crash-safe checkpoint of every state array plus the run's counters.

        Pending rows are flushed first; the arrays go into the inactive slot,
        which becomes active only once it is completely on disk, so a crash at
        any point leaves the previous checkpoint valid.
        """
        self._check_open()
        slot_ds = self._slots[0]
        check_names(set(arrays), set(slot_ds), "checkpoint")
        check_names(set(meta), set(self._meta_names), "checkpoint meta")
        values = {
            name: as_state_array(arrays[name], d.shape, d.dtype, f"checkpoint {name}")
            for name, d in slot_ds.items()
        }
        user = []
        for name in self._meta_names:
            v = meta[name]
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"checkpoint meta {name!r} must be an int, got {type(v).__name__}")
            user.append(int(v))
        check_space(self._path, self._buffered_bytes() + sum(a.nbytes for a in values.values()), "the checkpoint")
        self.flush()
        slot = 1 - self._active if self._active in (0, 1) else 0
        counters = [self._rows["steps"], self._rows["epochs"], self._snap_rows] + user
        with self._disk_errors("the checkpoint"):
            for name, d in self._slots[slot].items():
                if d.size:
                    d[()] = values[name]
            faults.reach("checkpoint:slot")
            if self._digest is not None:
                self._slot_meta[slot] = np.asarray(counters, dtype=np.int64)
                self._digest[slot] = state_digest(values, counters)
            self._f.flush()
            fsync(self._f)
            faults.reach("checkpoint:digest")
            self._meta[()] = np.asarray([slot, *counters], dtype=np.int64)
            faults.reach("checkpoint:meta")
            self._f.flush()
            fsync(self._f)
        self._active = slot

    # -- monitors -------------------------------------------------------------

    @uninterrupted
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
        group_attrs, layers = check_monitors(monitors, dt=dt, steps=steps, samples=samples, epoch=epoch)
        check_space(self._path, self._buffered_bytes() + sum(a.nbytes for rec in layers.values() for a in rec.values()
                                                             if isinstance(a, np.ndarray)), "the monitors")
        self.flush()
        fsync(self._f)
        self._release()
        f = open_rw(self._path)
        faults.reach("monitors:reopen")
        err: BaseException | None = None
        try:
            write_monitors_group(f, group_attrs, layers)
            faults.reach("monitors:written")
        except BaseException as e:  # even on an interrupt, go back to SWMR and keep the writer usable
            err = e
        try:
            f.flush()
            fsync(f)
            f.swmr_mode = True
        except BaseException:
            f.close()
            raise
        self.__dict__.update(type(self)._attach(f, self._path).__dict__)
        if isinstance(err, OSError) and is_disk_full(err):
            raise OutputError(f"{self._path}: the disk is full; the monitors were not written") from err
        if isinstance(err, (OSError, RuntimeError, ValueError, KeyError, TypeError)):
            raise TrajectoryError(f"{self._path}: cannot write /monitors ({h5msg(err)})") from err
        if err is not None:
            raise err

    # -- flushing and closing -------------------------------------------------

    @uninterrupted
    def flush(self) -> None:
        """Write buffered rows and flush the file, making them visible to readers and crash-safe.

        OutputError, before anything is written, if the disk cannot take the rows.
        """
        self._check_open()
        check_space(self._path, self._buffered_bytes(), "the rows since the last flush")
        with self._disk_errors("the rows since the last flush"):
            self._write_rows("steps")
            self._write_rows("epochs")
            self._f.flush()

    def _buffered_bytes(self) -> int:
        return sum(b.nbytes for group in self._buf.values() for b in group.values())

    @contextlib.contextmanager
    def _disk_errors(self, what: str):
        """A full disk while writing ``what`` becomes an OutputError naming the disk."""
        try:
            yield
        except OSError as e:
            if not is_disk_full(e):
                raise
            raise OutputError(f"{self._path}: the disk is full while writing {what}; everything up to the last "
                              f"checkpoint is kept: free some space and continue with npsim train --resume "
                              f"{self._path}") from None

    @uninterrupted
    def close(self) -> None:
        """Flush and close without changing ``status`` (it stays ``"running"``). Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._release()

    @uninterrupted
    def finish(self, status: str, *, flush: bool = True, **attrs) -> None:
        """Flush, close, and mark the run ended.

        ``status`` is ``"finished"``, ``"failed"`` or ``"interrupted"``; extra
        keyword attributes (str, int, float, bool; e.g. ``failed_step``,
        ``message``) are stored as root attributes. The file is reopened
        without SWMR for this, as attributes cannot be changed under SWMR.
        ``flush=False`` drops the rows buffered since the last flush (after a
        full disk: a resume drops rows after the checkpoint anyway).
        """
        self._check_open()
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {FINAL_STATUSES}, got {status!r}")
        extra = check_attrs(attrs, "finish attrs")
        try:
            if flush:
                self.flush()
        finally:
            self._release()
        f = open_rw(self._path)
        try:
            faults.reach("finish:reopen")
            f.attrs["status"] = status
            f.attrs["finished"] = timestamp()
            for k, v in extra.items():
                f.attrs[k] = v
            f.attrs["finish_attrs"] = ",".join(extra)
            faults.reach("finish:status")
        finally:
            f.close()

    def abandon(self) -> None:
        """Close the file without writing the buffered rows (after an error that writing would repeat)."""
        if self._closed:
            return
        try:
            self._release()
        except (OSError, RuntimeError, ValueError):
            pass

    @staticmethod
    def check_replaceable(path) -> None:
        """Raise unless ``path`` may be replaced with ``overwrite=True``: an npsim trajectory file whose
        writer is gone (not a directory, a device, a config file, or a file a live run is writing)."""
        _check_replaceable(os.fspath(path))

    def _release(self) -> None:
        self._closed = True
        OPEN_WRITERS.discard(self._key)
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


def _partial_name(path: str) -> str:
    """Where :meth:`TrajectoryWriter.create` builds a file before renaming it into place."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.creating-{os.getpid()}")


def _remove_stale_partials(path: str) -> None:
    """Remove what creators of ``path`` that were killed left behind (their process is gone)."""
    folder, name = os.path.split(os.path.abspath(path))
    prefix = f".{name}.creating-"
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        pid = entry[len(prefix):]
        if entry.startswith(prefix) and pid.isdigit() and not writer_alive(int(pid), socket.gethostname()):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, entry))


def _check_replaceable(path: str) -> None:
    """Refuse to replace anything but an npsim trajectory file whose writer is gone (``overwrite``)."""
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a directory; --overwrite replaces only npsim trajectory files")
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OutputError(f"{path}: is not a regular file; --overwrite replaces only npsim trajectory files")
    if file_key(path) in OPEN_WRITERS:
        raise TrajectoryBusy(f"{path}: a TrajectoryWriter in this process still has the file open")
    with open(path, "rb") as fh:
        head = fh.read(len(HDF5_SIGNATURE))
    if head != HDF5_SIGNATURE:
        raise OutputError(f"{path}: is not an npsim trajectory file (not HDF5); refusing to replace it")
    try:
        with open_read(path) as f:
            check_layout(f, path)
            status = attr_value(f.attrs.get("status"))
            pid, host = attr_value(f.attrs.get("writer_pid")), attr_value(f.attrs.get("writer_host"))
    except TrajectoryError as e:
        raise OutputError(f"{path}: cannot be confirmed as an npsim trajectory file ({str(e).removeprefix(path + ': ')}); "
                          f"refusing to replace it: delete it yourself if it is not needed") from None
    if status == "running" and writer_alive(pid, host):
        raise TrajectoryBusy(f"{path}: still being written by process {pid} on this host; refusing to replace it")


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

    @property
    def nbytes(self) -> int:
        """Bytes of the buffered rows."""
        return self._n * self.dtype.itemsize * int(np.prod(self.shape, dtype=np.int64))

    def take(self) -> np.ndarray:
        """The buffered rows (a view, valid until the next append); empties the buffer."""
        rows = self._a[: self._n]
        self._n = 0
        return rows
