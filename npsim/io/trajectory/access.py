"""Opening trajectory files for reading (also while a run writes them) and for writing, safely.

SWMR readers hold shared locks, killed writers leave flags behind, and a
live writer may be between two flushes: the functions here handle each and
turn HDF5's errors into one-line :class:`~npsim.errors.TrajectoryError` messages.
"""

from __future__ import annotations

import os
import time

import h5py
import numpy as np

from ...errors import (
    TrajectoryBusy,
    TrajectoryCorrupt,
    TrajectoryError,
    TrajectoryNotFound,
)
from .recover import FLAG_SWMR_WRITE, shorter_than_recorded, superblock_flags
from .schema import (
    LIBVER,
    META_FIELDS,
    SCHEMA_VERSION,
    attr_value,
    datasets_under,
    h5msg,
)

try:  # POSIX only; without it the lock probes are skipped
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = ["open_read", "open_rw", "check_layout", "read_meta", "read_slot", "fsync", "file_key", "OPEN_WRITERS"]

_LOCK_WAIT_S = 2.0  # how long writers wait for readers to let go of the file lock
_READ_RETRIES = 5
# Files this process has open through a TrajectoryWriter: (st_dev, st_ino).
OPEN_WRITERS: set[tuple[int, int]] = set()


def is_lock_error(e: BaseException) -> bool:
    return "unable to lock file" in str(e).lower()

def file_key(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)

def open_read(path: str) -> h5py.File:
    """Open for reading (plainly, or as a SWMR reader if a writer has it open), errors as TrajectoryError."""
    if not os.path.exists(path):
        raise TrajectoryNotFound(f"{path}: no such file")
    if os.path.isdir(path):
        raise TrajectoryError(f"{path}: is a directory, not a trajectory file")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as e:
        raise TrajectoryError(f"{path}: cannot read ({e.strerror or h5msg(e)})") from e
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
            # bypassed readers' locks, see open_rw): HDF5 shares the open file, so
            # open it with the same setting.
            try:
                return h5py.File(path, "r", swmr=bool(superblock_flags(path) & FLAG_SWMR_WRITE), locking=False)
            except (OSError, RuntimeError, ValueError) as e:
                err = e
                msg = str(err).lower()
        if ("already open for" in msg or "consistency flags" in msg) and superblock_flags(path) & FLAG_SWMR_WRITE:
            # Written in SWMR mode right now, or its writer was killed: read it as a
            # SWMR reader. Such a read skips HDF5's end-of-file check and retries
            # unreadable metadata for a very long time, so check the length first.
            if shorter_than_recorded(path):
                if not last:
                    time.sleep(0.1)  # a live writer may be between flushing and extending
                    continue
                raise TrajectoryCorrupt(f"{path}: truncated HDF5 file (shorter than its header records)")
            try:
                return h5py.File(path, "r", swmr=True)
            except (OSError, RuntimeError, ValueError) as e:
                err = e
        if not is_lock_error(err) or last:
            break
        time.sleep(0.1)  # a writer is briefly outside SWMR mode (finish, resume)
    raise _open_error(path, [err])

def _open_error(path: str, errors: list[BaseException]) -> TrajectoryError:
    text = " ".join(str(e).lower() for e in errors)
    kind = TrajectoryCorrupt
    if "truncated" in text:
        what = "truncated HDF5 file (shorter than its header records)"
    elif "unable to lock file" in text:
        kind, what = TrajectoryBusy, "locked by a process writing it outside SWMR mode; try again"
    elif "already open for" in text or "consistency flags" in text:
        kind, what = TrajectoryError, (
            "marked as open for writing by a writer that is not in SWMR mode, or that crashed "
            "outside it; if no process is writing it, `h5clear -s` removes the mark"
        )
    else:
        what = f"corrupt or unreadable HDF5 file ({h5msg(errors[-1]) if errors else 'unknown error'})"
    err = kind(f"{path}: {what}")
    err.__cause__ = errors[-1] if errors else None
    return err

def check_layout(f: h5py.File, path: str) -> None:
    try:
        attrs = f.attrs
        if "schema_version" not in attrs or "npsim_version" not in attrs:
            raise TrajectoryError(f"{path}: not an npsim trajectory (no schema_version/npsim_version attributes)")
        version = attr_value(attrs["schema_version"])
        if version != SCHEMA_VERSION:
            raise TrajectoryError(
                f"{path}: schema version {version} unsupported (this npsim reads version {SCHEMA_VERSION})"
            )
        for group in ("steps", "epochs", "snapshots", "checkpoint"):
            if not isinstance(f.get(group), h5py.Group):
                raise TrajectoryCorrupt(f"{path}: incomplete npsim trajectory (no /{group} group)")
        if "checkpoint/meta" not in f or "snapshots/epoch" not in f:
            raise TrajectoryCorrupt(f"{path}: incomplete npsim trajectory (no checkpoint/meta or snapshots/epoch)")
    except TrajectoryError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
        raise TrajectoryCorrupt(f"{path}: corrupt HDF5 file ({h5msg(e)})") from e

def read_meta(f: h5py.File, path: str) -> np.ndarray:
    try:
        meta = np.asarray(f["checkpoint/meta"][()], dtype=np.int64)
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise TrajectoryCorrupt(f"{path}: unreadable checkpoint/meta ({h5msg(e)})") from e
    if meta.ndim != 1 or meta.shape[0] < len(META_FIELDS):
        raise TrajectoryCorrupt(f"{path}: checkpoint/meta has shape {meta.shape}; file is corrupt")
    return meta

def read_slot(f: h5py.File, path: str, slot: int) -> dict[str, np.ndarray]:
    try:
        out = {}
        for name, d in datasets_under(f[f"checkpoint/slot{slot}"]).items():
            out[name] = np.asarray(d[()]) if d.size else np.empty(d.shape, d.dtype)
        return out
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise TrajectoryCorrupt(f"{path}: unreadable checkpoint slot {slot} ({h5msg(e)})") from e

def fsync(f: h5py.File) -> None:
    """Push the file to stable storage (checkpoints survive power loss, not just a kill)."""
    try:
        os.fsync(f.id.get_vfd_handle())
    except (OSError, ValueError, TypeError, RuntimeError):  # pragma: no cover - non-POSIX drivers
        pass

def open_rw(path: str) -> h5py.File:
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
            if not is_lock_error(e):
                raise TrajectoryError(f"{path}: cannot open for writing ({h5msg(e)})") from e
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if not _only_shared_locks(path):
        raise TrajectoryBusy(f"{path}: locked by another process writing it")
    try:
        return h5py.File(path, "r+", libver=LIBVER, locking=False)
    except (OSError, RuntimeError, ValueError) as e:
        raise TrajectoryError(f"{path}: cannot open for writing ({h5msg(e)})") from e

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
