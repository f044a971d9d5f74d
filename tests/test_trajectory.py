"""Trajectory files: round trip, live (SWMR) reads, crash safety, checkpoints, resume, errors."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import held_open

from npsim.io.trajectory import (
    SCHEMA_VERSION,
    Series,
    TrajectoryError,
    TrajectoryWriter,
    access,
    read_checkpoint,
    read_trajectory,
)

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

STEPS = {
    "step": Series((), "int64", "update", "update index"),
    "loss": Series((), "float32", "nats", "training loss"),
    "norms": Series((3,), "float32", "parameter units", "per-layer update norm"),
}
EPOCHS = {
    "epoch": Series((), "int64", "epoch", "epochs completed"),
    "test_error": Series((), "float32", "fraction", "test error"),
}
STATE = {
    "params/W": ((4, 5), "float32"),
    "optimizer/m": ((4, 5), "float32"),
    "rng": ((6,), "uint64"),
    "count": ((), "int64"),
}
SNAPSHOTS = ["params/W"]
META = ["epoch", "step"]
ATTRS = {"config": "[train]\nlr = 0.1\n", "seed": 7, "backend": "numpy", "debug": False, "lr": 0.1,
         "sizes": np.array([5, 4], dtype=np.int64)}


def make_writer(path, **kw):
    args = dict(attrs=ATTRS, steps=STEPS, epochs=EPOCHS, state=STATE, snapshot_names=SNAPSHOTS, meta_names=META)
    args.update(kw)
    return TrajectoryWriter.create(path, **args)


def step_rows(start, n):
    i = np.arange(start, start + n)
    return {"step": i, "loss": (0.5 * i).astype(np.float32),
            "norms": np.stack([i, 2 * i, 3 * i], axis=1).astype(np.float32)}


def state_arrays(k):
    return {
        "params/W": np.arange(20, dtype=np.float32).reshape(4, 5) * k,
        "optimizer/m": np.full((4, 5), 0.25 * k, dtype=np.float32),
        "rng": np.arange(6, dtype=np.uint64) + np.uint64(2**63 + k),
        "count": np.int64(k),
    }


def run_python(code, *args, timeout=60):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]))
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def assert_arrays_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.asarray(a[k]).dtype == np.asarray(b[k]).dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# --------------------------------------------------------------------------- round trip


def test_round_trip(tmp_path):
    path = tmp_path / "run.h5"
    w = make_writer(path)
    w.append_steps(**step_rows(0, 3))
    w.append_steps(**{k: v[0] for k, v in step_rows(3, 1).items()})  # one row as scalars
    w.append_steps(**step_rows(4, 2000))  # spans chunks
    w.append_epoch(epoch=1, test_error=0.25)
    w.snapshot(1, {"params/W": state_arrays(1)["params/W"]})
    w.append_epoch(epoch=2, test_error=np.float64(0.125))
    w.snapshot(2, {"params/W": state_arrays(2)["params/W"]})
    assert (w.n_steps, w.n_epochs, w.n_snapshots) == (2004, 2, 2)
    assert w.attrs["seed"] == 7 and w.attrs["status"] == "running"
    w.finish("finished", message="done", final_step=2004)
    assert w.closed

    t = read_trajectory(path)
    assert t.status == "finished"
    assert_arrays_equal(t.steps, step_rows(0, 2004))
    assert_arrays_equal(t.epochs, {"epoch": np.array([1, 2]), "test_error": np.array([0.25, 0.125], np.float32)})
    np.testing.assert_array_equal(t.snapshots["epoch"], [1, 2])
    np.testing.assert_array_equal(t.snapshots["params/W"], np.stack([state_arrays(k)["params/W"] for k in (1, 2)]))
    a = t.attrs
    assert a["schema_version"] == SCHEMA_VERSION and a["config"] == ATTRS["config"] and a["seed"] == 7
    assert a["debug"] is False and a["lr"] == 0.1 and list(a["sizes"]) == [5, 4]
    assert a["message"] == "done" and a["final_step"] == 2004 and a["resumed_count"] == 0
    assert {"npsim_version", "created", "finished"} <= a.keys()
    assert t.units["steps/loss"] == "nats" and t.units["epochs/test_error"] == "fraction"
    assert t.units["snapshots/epoch"] == "epoch"
    assert t.descriptions["steps/norms"] == "per-layer update norm"
    assert "params/W" in t.descriptions["snapshots/params/W"]

    # every dataset carries unit and description; rows are chunked, compressed, NaN-filled
    with h5py.File(path, "r") as f:
        def check(name, obj):
            if isinstance(obj, h5py.Dataset):
                assert "unit" in obj.attrs and obj.attrs["description"], name
        f.visititems(check)
        d = f["steps/loss"]
        assert d.maxshape == (None,) and d.compression == "gzip" and d.shuffle and d.chunks[0] == 1024
        assert np.isnan(d.fillvalue) and f["epochs/test_error"].chunks[0] == 64
        assert isinstance(f.attrs["config"], str)

    t2 = read_trajectory(path, snapshots=False)
    assert t2.snapshots == {} and "snapshots/params/W" in t2.units


def test_writer_rejects_bad_rows(tmp_path):
    w = make_writer(tmp_path / "run.h5")
    rows = step_rows(0, 2)
    with pytest.raises(ValueError, match="missing"):
        w.append_steps(step=rows["step"], loss=rows["loss"])
    with pytest.raises(ValueError, match="unknown"):
        w.append_steps(**rows, bogus=rows["loss"])
    with pytest.raises(ValueError, match="different numbers of rows"):
        w.append_steps(**{**rows, "loss": np.zeros(3)})
    with pytest.raises(ValueError, match="shape"):
        w.append_steps(**{**rows, "norms": np.zeros((2, 4))})
    with pytest.raises(TypeError, match="float64"):
        w.append_steps(**{**rows, "step": np.array([0.5, 1.5])})
    with pytest.raises(ValueError, match="shape"):
        w.append_epoch(epoch=[1, 2], test_error=[0.1, 0.2])
    with pytest.raises(TypeError, match="change"):
        w.checkpoint({**state_arrays(1), "params/W": np.full((4, 5), 0.1)}, {"epoch": 0, "step": 0})
    with pytest.raises(ValueError, match="missing"):
        w.checkpoint(state_arrays(1), {"epoch": 0})
    assert w.n_steps == 0
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.append_steps(**rows)
    with pytest.raises(ValueError, match="set by the trajectory writer"):
        make_writer(tmp_path / "other.h5", attrs={"status": "x"})
    with pytest.raises(TypeError, match="must be str"):
        make_writer(tmp_path / "other.h5", attrs={"device": None})
    assert not (tmp_path / "other.h5").exists()


# --------------------------------------------------------------------------- SWMR


def test_live_read_while_writing(tmp_path):
    path = tmp_path / "run.h5"
    w = make_writer(path)
    t = read_trajectory(path)
    assert t.status == "running" and len(t.steps["loss"]) == 0
    w.append_steps(**step_rows(0, 10))
    assert len(read_trajectory(path).steps["loss"]) == 0  # buffered, not flushed
    w.flush()
    assert_arrays_equal(read_trajectory(path).steps, step_rows(0, 10))

    w.append_steps(**step_rows(10, 5))
    w.append_epoch(epoch=1, test_error=0.5)
    w.flush()
    code = textwrap.dedent("""
        import sys
        from npsim.io.trajectory import read_trajectory
        t = read_trajectory(sys.argv[1])
        print(t.status, len(t.steps["loss"]), len(t.epochs["epoch"]), float(t.steps["loss"][-1]))
    """)
    r = run_python(code, path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["running", "15", "1", "7.0"]
    w.finish("finished")


def test_read_trims_series_to_common_length(tmp_path):
    path = tmp_path / "run.h5"
    w = make_writer(path)
    w.append_steps(**step_rows(0, 4))
    w.close()
    with h5py.File(path, "r+") as f:  # as if a live writer had flushed only part of a step
        f["steps/loss"].resize((6,))
    t = read_trajectory(path)
    assert {k: len(v) for k, v in t.steps.items()} == {"step": 4, "loss": 4, "norms": 4}


def test_finish_while_a_reader_holds_the_file(tmp_path):
    path = tmp_path / "run.h5"
    w = make_writer(path)
    w.append_steps(**step_rows(0, 3))
    w.flush()
    with held_open(path):
        w.finish("interrupted", message="stopped")
    t = read_trajectory(path)
    assert t.status == "interrupted" and t.attrs["message"] == "stopped" and len(t.steps["loss"]) == 3


# --------------------------------------------------------------------------- crash safety and resume

CRASH = textwrap.dedent("""
    import os, signal, sys
    import test_trajectory as T
    w = T.make_writer(sys.argv[1])
    w.append_steps(**T.step_rows(0, 10))
    w.append_epoch(epoch=1, test_error=0.5)
    w.snapshot(1, {"params/W": T.state_arrays(1)["params/W"]})
    w.flush()
    w.checkpoint(T.state_arrays(1), {"epoch": 1, "step": 10})
    w.append_steps(**T.step_rows(10, 5))
    w.append_epoch(epoch=2, test_error=0.25)
    w.snapshot(2, {"params/W": T.state_arrays(2)["params/W"]})
    w.flush()
    w.append_steps(**T.step_rows(15, 3))   # never flushed
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_crash_then_resume(tmp_path):
    path = tmp_path / "run.h5"
    r = run_python(CRASH, path)
    assert r.returncode == -signal.SIGKILL, r.stderr

    t = read_trajectory(path)  # readable after the kill, up to the last flush
    assert t.status == "running"
    assert_arrays_equal(t.steps, step_rows(0, 15))
    assert len(t.epochs["epoch"]) == 2 and list(t.snapshots["epoch"]) == [1, 2]
    arrays, meta = read_checkpoint(path)
    assert_arrays_equal(arrays, state_arrays(1)) and meta == {"epoch": 1, "step": 10}

    w, arrays, meta = TrajectoryWriter.resume(path)
    assert_arrays_equal(arrays, state_arrays(1))
    assert meta == {"epoch": 1, "step": 10}
    assert (w.n_steps, w.n_epochs, w.n_snapshots) == (10, 1, 1)
    t = read_trajectory(path)  # rows after the checkpoint are gone
    assert_arrays_equal(t.steps, step_rows(0, 10))
    assert list(t.epochs["epoch"]) == [1] and list(t.snapshots["epoch"]) == [1]
    assert t.status == "running" and t.attrs["resumed_count"] == 1 and t.attrs["writer_pid"] == os.getpid()

    w.append_steps(**step_rows(10, 5))
    w.append_epoch(epoch=2, test_error=0.25)
    w.checkpoint(state_arrays(2), {"epoch": 2, "step": 15})
    w.finish("finished")
    t = read_trajectory(path)
    assert t.status == "finished" and t.attrs["resumed_count"] == 1
    assert_arrays_equal(t.steps, step_rows(0, 15))
    assert_arrays_equal(read_checkpoint(path)[0], state_arrays(2))
    with h5py.File(path, "r") as f:  # an ordinary HDF5 file again
        assert f["steps/loss"].shape == (15,)


def _train(w, epoch0, k0, epochs, stop_after=None):
    """A deterministic stand-in for training: every row and state follows from the checkpoint."""
    k = k0
    for epoch in range(epoch0, epochs):
        for _ in range(3):
            w.append_steps(**step_rows(4 * k, 2))
            k += 1
        w.append_epoch(epoch=epoch + 1, test_error=1.0 / (k + 1))
        w.snapshot(epoch + 1, {"params/W": state_arrays(k)["params/W"]})
        w.checkpoint(state_arrays(epoch + 1), {"epoch": epoch + 1, "step": k})
        if stop_after == epoch + 1:
            w.append_steps(**step_rows(1000, 4))  # after the checkpoint: dropped on resume
            w.append_epoch(epoch=99, test_error=0.0)
            w.snapshot(99, {"params/W": state_arrays(99)["params/W"]})
            w.close()
            return
    w.finish("finished")


def test_resume_is_bit_identical(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    _train(make_writer(a), 0, 0, 4)
    _train(make_writer(b), 0, 0, 4, stop_after=2)
    assert len(read_trajectory(b).steps["step"]) == 16
    w, arrays, meta = TrajectoryWriter.resume(b)
    assert meta == {"epoch": 2, "step": 6}
    assert_arrays_equal(arrays, state_arrays(2))
    _train(w, meta["epoch"], meta["step"], 4)
    ta, tb = read_trajectory(a), read_trajectory(b)
    for group in ("steps", "epochs", "snapshots"):
        assert_arrays_equal(getattr(ta, group), getattr(tb, group))
    assert len(tb.steps["step"]) == 24 and tb.status == "finished" and tb.attrs["resumed_count"] == 1


def test_checkpoint_slots_alternate(tmp_path):
    path = tmp_path / "run.h5"
    w = make_writer(path)
    slots = []
    for k in (1, 2, 3):
        w.append_steps(**step_rows(k, 1))
        w.checkpoint(state_arrays(k), {"epoch": k, "step": 10 * k})
        with h5py.File(path, "r", swmr=True) as f:
            slots.append(int(f["checkpoint/meta"][0]))
            assert list(f["checkpoint/meta"].attrs["fields"]) == [
                "active_slot", "step_rows", "epoch_rows", "snapshot_rows", "epoch", "step"]
            assert list(f["checkpoint/meta"][1:]) == [k, 0, 0, k, 10 * k]
        arrays, meta = read_checkpoint(path)
        assert_arrays_equal(arrays, state_arrays(k))
        assert meta == {"epoch": k, "step": 10 * k}
    assert slots == [0, 1, 0]
    # the previous checkpoint stays intact in the other slot
    with h5py.File(path, "r", swmr=True) as f:
        np.testing.assert_array_equal(f["checkpoint/slot1/params/W"][()], state_arrays(2)["params/W"])
    w.close()
    w, arrays, meta = TrajectoryWriter.resume(path)
    assert_arrays_equal(arrays, state_arrays(3)) and meta == {"epoch": 3, "step": 30}
    w.close()


def test_resume_refuses_a_live_writer(tmp_path):
    path = tmp_path / "run.h5"
    w = make_writer(path)
    w.checkpoint(state_arrays(1), {"epoch": 0, "step": 0})
    with pytest.raises(TrajectoryError, match="this process"):
        TrajectoryWriter.resume(path)
    code = textwrap.dedent("""
        import sys
        from npsim.io.trajectory import TrajectoryWriter, TrajectoryError
        try:
            TrajectoryWriter.resume(sys.argv[1])
        except TrajectoryError as e:
            print(e)
    """)
    r = run_python(code, path)
    assert r.returncode == 0, r.stderr
    assert str(path) in r.stdout and f"still being written by process {os.getpid()}" in r.stdout
    w.finish("finished")


# --------------------------------------------------------------------------- errors


def _finished_file(path):
    w = make_writer(path)
    w.append_steps(**step_rows(0, 5000))
    w.checkpoint(state_arrays(1), {"epoch": 1, "step": 5000})
    w.finish("finished")
    return path


def test_error_not_hdf5(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not a trajectory\n")
    for fn in (read_trajectory, read_checkpoint, TrajectoryWriter.resume):
        with pytest.raises(TrajectoryError, match="not an HDF5 file") as e:
            fn(path)
        assert str(path) in str(e.value)
    with pytest.raises(TrajectoryError, match="no such file") as e:
        read_trajectory(tmp_path / "missing.h5")
    assert "missing.h5" in str(e.value)


def test_error_truncated(tmp_path):
    full = _finished_file(tmp_path / "full.h5")
    path = tmp_path / "cut.h5"
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for fn in (read_trajectory, read_checkpoint, TrajectoryWriter.resume):
        with pytest.raises(TrajectoryError, match="truncated") as e:
            fn(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)

    # a partial copy of a file a writer still has open (SWMR flags set) fails fast too
    live = tmp_path / "live.h5"
    w = make_writer(live)
    w.append_steps(**step_rows(0, 5000))
    w.checkpoint(state_arrays(1), {"epoch": 1, "step": 5000})
    data = live.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TrajectoryError, match="truncated") as e:
        read_trajectory(path)
    assert str(path) in str(e.value)
    (tmp_path / "copy.h5").write_bytes(data)  # a complete copy is readable
    assert len(read_trajectory(tmp_path / "copy.h5").steps["loss"]) == 5000
    w.close()


_FINISH_WRITING = textwrap.dedent("""
    import sys, time
    with open(sys.argv[1], "r+b") as fh:  # a writer that holds the file and is still extending it
        print("open", flush=True)
        time.sleep(float(sys.argv[3]))
        fh.seek(0, 2)
        fh.write(open(sys.argv[2], "rb").read()[fh.tell():])
""")


def test_a_live_writer_extending_its_file_is_waited_for(tmp_path):
    # A SWMR writer's file is, for moments, shorter than its superblock records. While a process
    # holds it open for writing, a reader must not call it truncated (the plain open fails first
    # on the length, so this is not the message that says the file is open).
    full = tmp_path / "full.h5"
    w = make_writer(full)
    w.append_steps(**step_rows(0, 5000))
    w.checkpoint(state_arrays(1), {"epoch": 1, "step": 5000})
    data = full.read_bytes()
    path = tmp_path / "live.h5"
    path.write_bytes(data[: len(data) - 4000])
    writer = subprocess.Popen([sys.executable, "-c", _FINISH_WRITING, str(path), str(full), "0.3"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        assert access.written_elsewhere(str(path)) is True
        assert len(read_trajectory(path).steps["loss"]) == 5000
    finally:
        writer.wait(timeout=30)
        w.close()
    assert access.written_elsewhere(str(path)) is False  # nobody has it open now
    path.write_bytes(data[: len(data) - 4000])
    with pytest.raises(TrajectoryError, match="truncated"):  # and, held by nobody, it is truncated
        read_trajectory(path)


def test_error_not_npsim(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(TrajectoryError, match="not an npsim trajectory") as e:
        read_trajectory(path)
    assert str(path) in str(e.value)


def test_error_schema_version(tmp_path):
    path = _finished_file(tmp_path / "run.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = 999
    for fn in (read_trajectory, read_checkpoint, TrajectoryWriter.resume):
        with pytest.raises(TrajectoryError, match="schema version 999 unsupported") as e:
            fn(path)
        assert str(path) in str(e.value)


def test_error_resume_finished(tmp_path):
    path = _finished_file(tmp_path / "run.h5")
    with pytest.raises(TrajectoryError, match="already finished") as e:
        TrajectoryWriter.resume(path)
    assert str(path) in str(e.value)
    assert read_trajectory(path).status == "finished"


def test_error_resume_without_checkpoint(tmp_path):
    path = tmp_path / "run.h5"
    w = make_writer(path)
    w.append_steps(**step_rows(0, 3))
    w.finish("interrupted")
    for fn in (TrajectoryWriter.resume, read_checkpoint):
        with pytest.raises(TrajectoryError, match="no checkpoint") as e:
            fn(path)
        assert str(path) in str(e.value)


def test_error_create_existing(tmp_path):
    path = _finished_file(tmp_path / "run.h5")
    with pytest.raises(FileExistsError, match="overwrite=True") as e:
        make_writer(path)
    assert str(path) in str(e.value)
    assert read_trajectory(path).status == "finished"  # untouched
    w = make_writer(path, overwrite=True)
    w.close()
    t = read_trajectory(path)
    assert t.status == "running" and len(t.steps["loss"]) == 0


def test_ctrl_c_inside_a_write_lands_after_it(tmp_path, monkeypatch):
    # A signal that arrives while the writer is between two series of a row (here: raised from inside
    # the first series' buffer append) must not leave the series with different lengths.
    from npsim.io.trajectory import writer as writer_module

    w = make_writer(tmp_path / "sig.h5")
    w.append_steps(**step_rows(0, 3))
    real = writer_module._RowBuffer.append
    calls = []

    def append_then_signal(self, rows):
        real(self, rows)
        if not calls:
            calls.append(1)
            signal.raise_signal(signal.SIGINT)  # Python's handler: KeyboardInterrupt at the next bytecode

    monkeypatch.setattr(writer_module._RowBuffer, "append", append_then_signal)
    with pytest.raises(KeyboardInterrupt):
        w.append_steps(**step_rows(3, 2))
    monkeypatch.setattr(writer_module._RowBuffer, "append", real)
    w.finish("interrupted", message="interrupted by the user")
    t = read_trajectory(tmp_path / "sig.h5")
    assert t.status == "interrupted" and {len(v) for v in t.steps.values()} == {5}
