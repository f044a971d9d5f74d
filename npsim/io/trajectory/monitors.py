"""Spike and voltage recordings of a run: the ``/monitors`` group, its checks, writing and reading."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import h5py
import numpy as np

from ...errors import TrajectoryCorrupt
from .access import check_layout, open_read
from .schema import COMPRESSION, COMPRESSION_LEVEL, attr_value, chunk_shape, h5msg

__all__ = ["Recordings", "read_monitors", "check_monitors", "write_monitors_group", "read_recordings_in"]

_MONITOR_KEYS = ("v", "units", "spikes", "node", "threshold")
MONITORS_TMP = "_monitors_new"  # written under this name, then renamed to /monitors


@dataclass(repr=False)
class Recordings:
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
        return (f"<Recordings {self.path!r} layers={list(self.layers)} samples={len(self.samples)} "
                f"steps={self.steps} dt={self.dt:g} ms epoch={self.epoch}>")


def read_monitors(path) -> Recordings | None:
    """The spike/voltage recordings of a run, or None if it has none.

    Works while the run writes the file (a reader that opened the file before
    :meth:`TrajectoryWriter.write_monitors` must reopen it to see them).
    TrajectoryError for unusable files, as :func:`read_trajectory`.
    """
    path = os.fspath(path)
    with open_read(path) as f:
        check_layout(f, path)
        return read_recordings_in(f, path)


def read_recordings_in(f: h5py.File, path: str) -> Recordings | None:
    try:
        g = f.get("monitors")
        if g is None:
            return None
        if not isinstance(g, h5py.Group):
            raise TrajectoryCorrupt(f"{path}: /monitors is not a group; file is corrupt")
        a = g.attrs
        for k in ("dt", "steps", "samples", "epoch"):
            if k not in a:
                raise TrajectoryCorrupt(f"{path}: /monitors has no attribute {k!r}; file is corrupt")
        layers, nodes, thresholds = {}, {}, {}
        for name, lg in g.items():
            if not (name.startswith("layer") and name[5:].isdigit() and isinstance(lg, h5py.Group)):
                continue
            l = int(name[5:])
            if "v" not in lg or "units" not in lg:
                raise TrajectoryCorrupt(f"{path}: /monitors/{name} lacks v or units; file is corrupt")
            layers[l] = {k: lg[k][()] for k in ("spikes", "v", "units") if k in lg}
            nodes[l] = str(attr_value(lg.attrs.get("node", "")))
            th = attr_value(lg.attrs.get("threshold"))
            thresholds[l] = None if th is None else float(th)
        order = sorted(layers)
        return Recordings(
            dt=float(attr_value(a["dt"])),
            steps=int(attr_value(a["steps"])),
            samples=np.asarray(a["samples"], dtype=np.int64).reshape(-1),
            epoch=int(attr_value(a["epoch"])),
            layers={l: layers[l] for l in order},
            nodes={l: nodes[l] for l in order},
            thresholds={l: thresholds[l] for l in order},
            path=path,
        )
    except TrajectoryCorrupt:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
        raise TrajectoryCorrupt(f"{path}: unreadable /monitors ({h5msg(e)})") from e


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


def check_monitors(monitors, *, dt, steps, samples, epoch) -> tuple[dict, dict[int, dict]]:
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


def write_monitors_group(f: h5py.File, attrs: dict, layers: dict[int, dict]) -> None:
    """Write ``/monitors`` (file open normally, not in SWMR mode), replacing an existing one."""
    if MONITORS_TMP in f:
        del f[MONITORS_TMP]  # left by a writer killed in here
    g = f.create_group(MONITORS_TMP)
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
            chunks = chunk_shape(a.shape[0], a.shape[1:], a.dtype)
            d = lg.create_dataset(name, data=a, chunks=chunks, compression=COMPRESSION,
                                  compression_opts=COMPRESSION_LEVEL, shuffle=a.dtype.itemsize > 1)
            d.attrs["unit"] = unit
            d.attrs["description"] = description
    if "monitors" in f:
        del f["monitors"]
    f.move(MONITORS_TMP, "monitors")
