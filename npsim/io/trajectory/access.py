"""Opening trajectory files for reading (also while a run writes them) and for writing, safely.

SWMR readers hold shared locks, killed writers leave flags behind, and a
live writer may be between two flushes: the functions here handle each and
turn HDF5's errors into one-line :class:`~npsim.errors.TrajectoryError` messages.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time

import h5py
import numpy as np

from ...errors import (
    NoCheckpoint,
    OutputError,
    TrajectoryBusy,
    TrajectoryCorrupt,
    TrajectoryError,
    TrajectoryNotFound,
)
from .recover import (
    FLAG_SWMR_WRITE,
    FLAG_WRITE,
    clear_status_flags,
    shorter_than_recorded,
    superblock_flags,
    written_elsewhere,
)
from .schema import (
    DIGEST_BYTES,
    LIBVER,
    META_FIELDS,
    READABLE_VERSIONS,
    attr_value,
    datasets_under,
    h5msg,
    state_digest,
)

try:  # POSIX only; without it the lock probes are skipped
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = ["open_read", "open_rw", "check_layout", "read_meta", "read_slot", "read_checkpoint_slot", "meta_fields",
           "fsync", "file_key", "check_space", "free_bytes", "is_disk_full", "OPEN_WRITERS"]

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
        # The plain open fails on a file marked open for writing, or first on its length
        # while a SWMR writer extends it.
        flags = superblock_flags(path)
        flagged = "already open for" in msg or "consistency flags" in msg or (
            "truncated" in msg and flags & FLAG_SWMR_WRITE)
        if flagged and not flags & FLAG_SWMR_WRITE and flags & FLAG_WRITE:
            # Open for writing outside SWMR mode: a writer finishing, writing monitors or resuming
            # (milliseconds), or one killed there. Wait for the first; then read a copy of the file
            # with the marks cleared, which leaves the file itself as it is.
            if not last:
                time.sleep(0.1)
                continue
            return _open_copy(path)
        if flagged and flags & FLAG_SWMR_WRITE:
            # Written in SWMR mode right now, or its writer was killed: read it as a
            # SWMR reader. Such a read skips HDF5's end-of-file check and retries
            # unreadable metadata for a very long time, so check the length first.
            # A live writer's file is briefly shorter while it extends it; one nobody writes is truncated.
            if shorter_than_recorded(path) and not written_elsewhere(path):
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


def _open_copy(path: str) -> h5py.File:
    """A read-only handle on a private copy of ``path`` whose write marks are cleared (the copy is
    unlinked at once, so it disappears when the handle closes; ``path`` is not touched)."""
    fd, copy = tempfile.mkstemp(prefix="npsim-read-", suffix=".h5")
    os.close(fd)
    try:
        shutil.copyfile(path, copy)
        clear_status_flags(copy)
        return h5py.File(copy, "r")
    except (OSError, RuntimeError, ValueError) as e:
        raise TrajectoryCorrupt(f"{path}: corrupt or unreadable HDF5 file ({h5msg(e)})") from e
    finally:
        os.remove(copy)


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
        if version not in READABLE_VERSIONS:
            raise TrajectoryError(
                f"{path}: schema version {version} unsupported (this npsim reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))})"
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
    name = f"checkpoint/slot{slot}"
    try:
        out = {}
        for name, d in datasets_under(f[f"checkpoint/slot{slot}"]).items():
            out[name] = np.asarray(d[()]) if d.size else np.empty(d.shape, d.dtype)
        return out
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise TrajectoryCorrupt(f"{path}: unreadable checkpoint slot {slot}, dataset {name!r} ({h5msg(e)})") from e


def meta_fields(f: h5py.File, path: str) -> list[str]:
    """The names of the fields of ``/checkpoint/meta``."""
    try:
        return [str(x) for x in attr_value(f["checkpoint/meta"].attrs["fields"])]
    except (KeyError, OSError, RuntimeError, ValueError, TypeError) as e:
        raise TrajectoryCorrupt(f"{path}: checkpoint/meta has no readable 'fields' attribute; file is corrupt") from e


def read_checkpoint_slot(f: h5py.File, path: str) -> tuple[int, dict[str, np.ndarray], list[int], str]:
    """The newest checkpoint that passes its checksum: (slot, arrays, counters, note).

    counters are checkpoint/meta[1:] as that slot was written (rows it covers,
    then the run's counters). The active slot is tried first; if it is damaged
    (unreadable, or its digest does not match), the other slot, the previous
    checkpoint, is used and ``note`` says so. Files of schema version 1 carry no
    digests: their active slot is read unverified. NoCheckpoint if none was
    written; TrajectoryCorrupt, naming what failed, if no slot is usable.
    """
    meta = read_meta(f, path)
    active = int(meta[0])
    if active not in (0, 1):
        raise NoCheckpoint(f"{path}: no checkpoint to resume from (none was written)")
    if "digest" not in f["checkpoint"]:  # schema version 1
        return active, read_slot(f, path, active), [int(v) for v in meta[1:]], ""
    try:
        slot_meta = np.asarray(f["checkpoint/slot_meta"][()], dtype=np.int64)
        digests = np.asarray(f["checkpoint/digest"][()], dtype=np.uint8)
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise TrajectoryCorrupt(f"{path}: unreadable checkpoint/slot_meta or checkpoint/digest ({h5msg(e)})") from e
    if slot_meta.shape != (2, meta.shape[0] - 1) or digests.shape != (2, DIGEST_BYTES):
        raise TrajectoryCorrupt(f"{path}: checkpoint/slot_meta or checkpoint/digest has the wrong shape; file is "
                                f"corrupt")
    problems = []
    for slot in (active, 1 - active):
        if not digests[slot].any():
            problems.append(f"slot {slot} was never written")
            continue
        try:
            arrays = read_slot(f, path, slot)
        except TrajectoryCorrupt as e:
            problems.append(str(e).removeprefix(f"{path}: "))
            continue
        counters = [int(v) for v in slot_meta[slot]]
        if not np.array_equal(state_digest(arrays, counters), digests[slot]):
            problems.append(f"checkpoint slot {slot} fails its checksum (damaged bytes)")
            continue
        if slot == active and counters != [int(v) for v in meta[1:]]:
            problems.append(f"checkpoint/meta disagrees with slot {slot}'s counters")
            continue
        note = "" if slot == active else (f"the newest checkpoint (slot {active}) is damaged: {problems[0]}; "
                                          f"continued from the previous one (slot {slot})")
        return slot, arrays, counters, note
    raise TrajectoryCorrupt(f"{path}: no usable checkpoint: {'; '.join(problems)}")


#: bytes kept free beyond what a write needs (HDF5 metadata, the file system's own reserve)
SPACE_MARGIN = 16 << 20


def free_bytes(path: str) -> int:
    """Bytes available to this process on the file system holding ``path``."""
    return shutil.disk_usage(os.path.dirname(os.path.abspath(path)) or ".").free


def check_space(path: str, need: int, what: str) -> None:
    """OutputError naming the disk if fewer than ``need`` bytes (plus a margin) are free for ``what``."""
    free = free_bytes(path)
    if free < need + SPACE_MARGIN:
        where = os.path.dirname(os.path.abspath(path))
        raise OutputError(f"{path}: the disk holding {where} is full ({free / 2**20:.1f} MiB free; {what} needs "
                          f"about {(need + SPACE_MARGIN) / 2**20:.1f} MiB); everything up to the last checkpoint is "
                          f"kept: free some space and continue with npsim train --resume {path}")


def is_disk_full(e: BaseException) -> bool:
    """Whether an OSError (or an HDF5 error wrapping one) reports a full disk or quota."""
    return getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "no space left" in str(e).lower()


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
