"""The trajectory file's layout: version, groups, chunking, and the checks on what may be stored.

The layout itself is documented in docs/trajectory.md; :mod:`.writer` writes it
and :mod:`.reader` reads it.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

import h5py
import numpy as np

__all__ = ["SCHEMA_VERSION", "READABLE_VERSIONS", "STATUSES", "FINAL_STATUSES", "Series", "state_digest"]

#: Version of the file layout, stored as the root attribute ``schema_version``.
SCHEMA_VERSION = 2
#: Versions this npsim reads: 1 has no per-slot counters and checksums (its checkpoints are not verified).
READABLE_VERSIONS = (1, 2)
#: Bytes of a checkpoint slot's BLAKE2b digest (``/checkpoint/digest``).
DIGEST_BYTES = 32
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
MAX_BUFFERED_ROWS = {"steps": 16384, "epochs": 1024}
CHUNK_ROWS = {"steps": STEP_CHUNK_ROWS, "epochs": EPOCH_CHUNK_ROWS}
_CHUNK_BYTES = 1 << 20  # target bytes per chunk
_MAX_ROW_CHUNK_BYTES = 16 << 20  # larger rows are split within a row
RESERVED_ATTRS = frozenset(
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
        "resume_note",
    }
)
GROUP_DESCRIPTIONS = {
    "steps": "per-update series: row i of every dataset belongs to parameter update i",
    "epochs": "per-epoch series: row i of every dataset belongs to epoch i",
    "snapshots": "weight snapshots: row i of every dataset was taken at epoch snapshots/epoch[i]",
    "checkpoint": (
        "crash-safe checkpoint in two slots; meta[0] (active_slot) names the valid one, "
        "meta[1:4] the step, epoch and snapshot rows it covers, meta[4:] the run's counters; "
        "slot_meta[s] holds those counters for slot s and digest[s] the BLAKE2b checksum of slot s"
    ),
}


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
        object.__setattr__(self, "shape", as_shape(self.shape, "Series.shape"))
        try:
            dt = np.dtype(self.dtype)
        except TypeError as e:
            raise ValueError(f"Series.dtype {self.dtype!r} is not a NumPy dtype") from e
        if dt.kind not in "biuf":
            raise ValueError(f"Series.dtype {self.dtype!r}: only bool, integer and float series are supported")
        object.__setattr__(self, "dtype", dt.name)
        if not isinstance(self.unit, str) or not isinstance(self.description, str):
            raise TypeError("Series.unit and Series.description must be str")


def timestamp() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def npsim_version() -> str:
    try:
        import npsim

        return str(getattr(npsim, "__version__", "unknown"))
    except ImportError:  # pragma: no cover
        return "unknown"


def as_shape(shape, what: str) -> tuple:
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


def check_series(series: Mapping[str, Series], what: str) -> dict[str, Series]:
    out = {}
    for name, s in series.items():
        _check_name(name, what, nested=False)
        if not isinstance(s, Series):
            raise TypeError(f"{what}[{name!r}] must be a Series, got {type(s).__name__}")
        if int(np.prod(s.shape)) == 0:
            raise ValueError(f"{what}[{name!r}]: rows of shape {s.shape} are empty")
        out[name] = s
    return out


def check_state(state: Mapping[str, tuple]) -> dict[str, tuple[tuple, np.dtype]]:
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
        out[name] = (as_shape(shape, f"state[{name!r}] shape"), dt)
    names = sorted(out)
    for a, b in zip(names, names[1:]):
        if b.startswith(a + "/"):
            raise ValueError(f"state names {a!r} and {b!r} clash (one would be a group holding the other)")
    return out


def check_attrs(attrs: Mapping[str, Any], what: str) -> dict[str, Any]:
    out = {}
    for k, v in attrs.items():
        if not isinstance(k, str) or not k or "/" in k:
            raise ValueError(f"{what}: attribute name {k!r} must be a non-empty str without '/'")
        if k in RESERVED_ATTRS:
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


def check_names(given: set, declared: set, what: str) -> None:
    missing, unknown = declared - given, given - declared
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {sorted(missing)}")
        if unknown:
            parts.append(f"unknown {sorted(unknown)}")
        raise ValueError(f"{what}: {'; '.join(parts)} (declared: {sorted(declared)})")


def as_state_array(value, shape: tuple, dtype: np.dtype, what: str) -> np.ndarray:
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


def chunk_shape(rows: int, shape: tuple, dtype) -> tuple:
    """Chunk shape for an extendable dataset of rows of ``shape``."""
    itemsize = np.dtype(dtype).itemsize
    dims = [max(1, s) for s in shape]
    while int(np.prod(dims)) * itemsize > _MAX_ROW_CHUNK_BYTES:
        i = int(np.argmax(dims))
        dims[i] = (dims[i] + 1) // 2
    row_bytes = int(np.prod(dims)) * itemsize
    return (max(1, min(rows, _CHUNK_BYTES // row_bytes)), *dims)


def create_rows(group, name, shape, dtype, rows, unit, description):
    dtype = np.dtype(dtype)
    d = group.create_dataset(
        name,
        shape=(0, *shape),
        maxshape=(None, *shape),
        dtype=dtype,
        chunks=chunk_shape(rows, shape, dtype),
        compression=COMPRESSION,
        compression_opts=COMPRESSION_LEVEL,
        shuffle=True,
        fillvalue=np.nan if dtype.kind == "f" else None,
    )
    d.attrs["unit"] = unit
    d.attrs["description"] = description
    return d


def datasets_under(group) -> dict[str, h5py.Dataset]:
    """Every dataset under ``group``, keyed by its path relative to it."""
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = obj

    group.visititems(visit)
    return out


def attr_value(v):
    """An HDF5 attribute value as a plain Python value."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray) and v.dtype.kind in "OSU":
        return [attr_value(x) for x in v.tolist()]
    return v


def h5msg(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def state_digest(arrays: Mapping[str, np.ndarray], counters) -> np.ndarray:
    """BLAKE2b digest ((DIGEST_BYTES,) uint8) of a checkpoint slot: every array's name, dtype, shape and
    bytes, in name order, then the slot's counters (int64)."""
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    h.update(np.asarray(counters, dtype="<i8").tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8).copy()
