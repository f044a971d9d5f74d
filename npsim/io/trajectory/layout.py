"""What a new trajectory file holds: its validated layout, and writing it into an empty file."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Mapping

import h5py
import numpy as np

from .schema import (
    CHUNK_ROWS,
    DIGEST_BYTES,
    EPOCH_CHUNK_ROWS,
    GROUP_DESCRIPTIONS,
    META_FIELDS,
    SCHEMA_VERSION,
    SNAPSHOT_CHUNK_ROWS,
    Series,
    check_attrs,
    check_series,
    check_state,
    create_rows,
    npsim_version,
    timestamp,
)

__all__ = ["Layout"]


@dataclass(frozen=True)
class Layout:
    """The checked contents of a new file: root attributes, series, state arrays, snapshots, counters."""

    user_attrs: dict
    step_series: dict
    epoch_series: dict
    state_spec: dict
    snapshot_names: list
    meta_names: list

    @classmethod
    def of(cls, *, attrs: Mapping[str, Any], steps: Mapping[str, Series], epochs: Mapping[str, Series],
           state: Mapping[str, tuple[tuple, str]], snapshot_names=(), meta_names=()) -> "Layout":
        """Validate what :meth:`TrajectoryWriter.create` was given (ValueError/TypeError naming the problem)."""
        user_attrs = check_attrs(attrs, "attrs")
        step_series = check_series(steps, "steps")
        epoch_series = check_series(epochs, "epochs")
        state_spec = check_state(state)
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
        return cls(user_attrs, step_series, epoch_series, state_spec, snapshot_names, meta_names)

    def write(self, f: h5py.File) -> None:
        """Write the layout into the empty, newly created file ``f`` (no checkpoint yet: active slot -1)."""
        user_attrs, step_series, epoch_series = self.user_attrs, self.step_series, self.epoch_series
        state_spec, snapshot_names, meta_names = self.state_spec, self.snapshot_names, self.meta_names
        root = f.attrs
        root["schema_version"] = np.int64(SCHEMA_VERSION)
        root["npsim_version"] = npsim_version()
        root["created"] = timestamp()
        root["status"] = "running"
        root["resumed_count"] = np.int64(0)
        root["writer_pid"] = np.int64(os.getpid())
        root["writer_host"] = socket.gethostname()
        for k, v in user_attrs.items():
            root[k] = v

        for group in ("steps", "epochs", "snapshots", "checkpoint"):
            g = f.create_group(group)
            g.attrs["description"] = GROUP_DESCRIPTIONS[group]
        for group, series in (("steps", step_series), ("epochs", epoch_series)):
            for name, s in series.items():
                create_rows(
                    f[group], name, s.shape, s.dtype, CHUNK_ROWS[group], s.unit, s.description
                )
        for name in snapshot_names:
            shape, dtype = state_spec[name]
            create_rows(
                f["snapshots"],
                name,
                shape,
                dtype,
                SNAPSHOT_CHUNK_ROWS,
                "",
                f"snapshot of state array '{name}', one row per snapshot (epoch in snapshots/epoch)",
            )
        create_rows(
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
        d = f["checkpoint"].create_dataset("slot_meta", data=np.zeros((2, len(fields) - 1), dtype=np.int64))
        d.attrs["unit"] = ""
        d.attrs["description"] = ("per slot: the counters of checkpoint/meta[1:] the slot was written with "
                                  "(its step, epoch and snapshot rows and the run's counters)")
        d = f["checkpoint"].create_dataset("digest", data=np.zeros((2, DIGEST_BYTES), dtype=np.uint8))
        d.attrs["unit"] = ""
        d.attrs["description"] = ("per slot: BLAKE2b digest of its arrays (names, dtypes, shapes, bytes in name "
                                  "order) and its slot_meta row; all zeros until the slot is first written")
