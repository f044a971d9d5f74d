"""Sweeps when things go wrong: killed tasks resume from their checkpoints, bad scheduler files and addresses, bad seeds."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
from conftest import three_class_npz

from npsim.cli import main
from npsim.errors import SweepError
from npsim.experiment.loop import run
from npsim.experiment.sweep import (
    driver,
    execute_run,
    load_sweep_file,
    plan,
    run_sweep,
    write_index,
)
from npsim.io.trajectory import TrajectoryWriter, read_trajectory

BASE = """
name = "tiny"

[data]
name = "tiny"
path = "{data}"

[network]
hidden = [8]
node = "tanh"

[rule]
name = "np"
sigma = 1e-3

[optimizer]
name = "adam"
lr = 3e-3

[train]
epochs = 3
batch_size = 20
diagnostics_every = 5
eval_train_samples = 100
"""

SWEEP = """
name = "faults"
base = "base.toml"
out = "{out}"
seeds = [{seeds}]
"""


@pytest.fixture
def sweep_file(tmp_path):
    """A sweep of 1 run per seed (20 updates per epoch, 3 epochs) on a small 3-class npz."""
    three_class_npz(tmp_path / "tiny.npz", 400, 100)
    (tmp_path / "base.toml").write_text(BASE.format(data=tmp_path / "tiny.npz"))

    def write(seeds="0", extra=""):
        p = tmp_path / "sweep.toml"
        p.write_text(SWEEP.format(out=tmp_path / "out", seeds=seeds) + extra)
        return p
    return write


def _same_series(a, b):
    """The trajectories' step and epoch series are equal bit for bit (wall times aside)."""
    for group in ("steps", "epochs"):
        ga, gb = getattr(a, group), getattr(b, group)
        assert set(ga) == set(gb)
        for k in ga:
            if k != "wall_time":
                np.testing.assert_array_equal(ga[k], gb[k], err_msg=f"{group}/{k}")


def _reference(spec, tmp_path):
    run(spec.config, tmp_path / "reference.h5", progress=False)
    return read_trajectory(tmp_path / "reference.h5", snapshots=False)


def _execute(spec, action):
    return execute_run(spec.config.to_toml(), str(spec.path), action)


def _mark_failed(path, **attrs):
    """The file's run marked failed at its checkpoint, as the loop marks a run that fails (resumed_count + 1)."""
    writer, _, _ = TrajectoryWriter.resume(path)
    writer.finish("failed", **attrs)


# ---------------------------------------------------------------- execute_run resumes what has a checkpoint


def test_run_action_resumes_a_file_with_a_checkpoint(sweep_file, tmp_path):
    """A Dask retry (or --retry-failed) sends "run" for a run that was killed: it continues, it does not restart."""
    spec = load_sweep_file(sweep_file()).runs[0]
    part = run(spec.config, spec.path, progress=False, stop_after_steps=30)  # checkpoint after epoch 1
    assert part.status == "interrupted"
    res = _execute(spec, "run")
    assert res["status"] == "finished" and res["resumed_count"] == 1, res
    t = read_trajectory(spec.path, snapshots=False)
    assert t.status == "finished" and t.attrs["resumed_count"] == 1
    assert list(t.epochs["epoch"]) == [1, 2, 3] and len(t.steps["step"]) == 60
    _same_series(t, _reference(spec, tmp_path))


def test_run_action_resumes_a_killed_writer(sweep_file, tmp_path):
    """A file left "running" (its worker was killed) is resumed too."""
    spec = load_sweep_file(sweep_file()).runs[0]
    run(spec.config, spec.path, progress=False, stop_after_steps=25)
    writer, _, _ = TrajectoryWriter.resume(spec.path)  # now "running", as a killed worker leaves it
    writer.close()
    assert read_trajectory(spec.path, snapshots=False).status == "running"
    res = _execute(spec, "run")
    assert res["status"] == "finished" and res["resumed_count"] == 2, res
    _same_series(read_trajectory(spec.path, snapshots=False), _reference(spec, tmp_path))


def test_a_diverged_file_is_not_resumed(sweep_file, tmp_path):
    spec = load_sweep_file(sweep_file()).runs[0]
    run(spec.config, spec.path, progress=False, stop_after_steps=30)
    _mark_failed(spec.path, failed_step=31, message="loss became nan at step 31 (epoch 2)")
    res = _execute(spec, "resume")  # resuming would diverge again
    assert res["status"] == "failed" and "diverged" in res["message"] and "step 31" in res["message"], res
    t = read_trajectory(spec.path, snapshots=False)
    assert t.status == "failed" and t.attrs["resumed_count"] == 1 and t.attrs["failed_step"] == 31
    res = _execute(spec, "run")  # --retry-failed: from scratch
    assert res["status"] == "finished" and res["resumed_count"] == 0, res
    t = read_trajectory(spec.path, snapshots=False)
    assert "failed_step" not in t.attrs
    _same_series(t, _reference(spec, tmp_path))


def test_a_failed_file_that_did_not_diverge_resumes(sweep_file, tmp_path):
    spec = load_sweep_file(sweep_file()).runs[0]
    run(spec.config, spec.path, progress=False, stop_after_steps=30)
    _mark_failed(spec.path, message="internal error at step 30: RuntimeError: boom")
    res = _execute(spec, "run")
    assert res["status"] == "finished" and res["resumed_count"] == 2, res
    _same_series(read_trajectory(spec.path, snapshots=False), _reference(spec, tmp_path))


def test_run_action_without_a_checkpoint_starts_afresh(sweep_file, tmp_path):
    spec = load_sweep_file(sweep_file()).runs[0]
    run(spec.config, spec.path, progress=False, stop_after_steps=5)  # no checkpoint yet
    res = _execute(spec, "run")
    assert res["status"] == "finished" and res["resumed_count"] == 0, res
    _same_series(read_trajectory(spec.path, snapshots=False), _reference(spec, tmp_path))


def test_a_finished_file_is_left_alone(sweep_file):
    spec = load_sweep_file(sweep_file()).runs[0]
    run(spec.config, spec.path, progress=False)
    stamp = spec.path.stat().st_mtime_ns
    res = _execute(spec, "run")
    assert res["status"] == "finished" and spec.path.stat().st_mtime_ns == stamp


def test_an_unreadable_file_is_moved_aside_and_replaced(sweep_file):
    spec = load_sweep_file(sweep_file()).runs[0]
    spec.path.parent.mkdir(parents=True)
    spec.path.write_bytes(b"not an hdf5 file")
    res = _execute(spec, "run")
    assert res["status"] == "finished", res
    assert (spec.path.parent / (spec.path.name + ".unreadable")).read_bytes() == b"not an hdf5 file"


# ---------------------------------------------------------------- plan: a task that died is not a failed run


def _index_says_failed(sweep):
    states = plan(sweep)
    for s in states:
        s.status = "failed"
        s.metrics["message"] = "Dask task error: KilledWorker: attempted to run task 3 times"
    write_index(sweep.index, [s.row(sweep.out) for s in states], sweep.keys)


def test_plan_resumes_a_killed_task_with_a_checkpoint(sweep_file):
    sweep = load_sweep_file(sweep_file(seeds="0, 1, 2"))
    with_ckpt, without_ckpt, diverged = sweep.runs
    run(with_ckpt.config, with_ckpt.path, progress=False, stop_after_steps=30)
    run(without_ckpt.config, without_ckpt.path, progress=False, stop_after_steps=5)
    run(diverged.config, diverged.path, progress=False, stop_after_steps=30)
    _mark_failed(diverged.path, failed_step=31, message="loss became nan at step 31")
    _index_says_failed(sweep)
    states = {s.spec.name: s for s in plan(sweep)}
    assert (states[with_ckpt.name].status, states[with_ckpt.name].action) == ("interrupted", "resume")
    assert (states[without_ckpt.name].status, states[without_ckpt.name].action) == ("failed", None)
    assert "KilledWorker" in states[without_ckpt.name].metrics["message"]
    assert (states[diverged.name].status, states[diverged.name].action) == ("failed", None)
    states = {s.spec.name: s for s in plan(sweep, retry_failed=True)}
    assert states[with_ckpt.name].action == "resume"
    assert states[without_ckpt.name].action == "run" and states[diverged.name].action == "run"


# ---------------------------------------------------------------- connecting to a scheduler


def _sweep_to(sweep_file, tmp_path, **kw):
    with pytest.raises(SweepError) as e:
        run_sweep(sweep_file(), progress=False, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_missing_scheduler_file_ends_after_the_timeout(sweep_file, tmp_path):
    missing = tmp_path / "nope.json"
    t0 = time.monotonic()
    msg = _sweep_to(sweep_file, tmp_path, scheduler_file=str(missing), connect_timeout=0.5)
    assert time.monotonic() - t0 < 10
    assert str(missing) in msg and "not found" in msg


@pytest.mark.parametrize("text,needle", [
    ("{}", '"address" string'),
    ("[1, 2]", '"address" string'),
    ('{"address": 8786}', '"address" string'),
    ("{not json", "not valid JSON"),
])
def test_bad_scheduler_files_are_refused(sweep_file, tmp_path, text, needle):
    f = tmp_path / "scheduler.json"
    f.write_text(text)
    t0 = time.monotonic()
    msg = _sweep_to(sweep_file, tmp_path, scheduler_file=str(f), connect_timeout=0.5)
    assert time.monotonic() - t0 < 10
    assert str(f) in msg and needle in msg, msg


def test_scheduler_file_that_is_a_directory(sweep_file, tmp_path):
    msg = _sweep_to(sweep_file, tmp_path, scheduler_file=str(tmp_path), connect_timeout=0.5)
    assert str(tmp_path) in msg and "cannot read" in msg


def test_bad_scheduler_file_on_the_command_line(sweep_file, tmp_path, capsys, monkeypatch):
    f = tmp_path / "scheduler.json"
    f.write_text("{}")
    code = main(["sweep", str(sweep_file()), "--scheduler-file", str(f), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("npsim: error:") and str(f) in err[0], err
    monkeypatch.setattr(driver, "_CONNECT_TIMEOUT_S", 0.5)
    code = main(["sweep", str(sweep_file()), "--scheduler-file", str(tmp_path / "nope.json"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nope.json" in err[0] and "not found" in err[0], err


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_closed_port_ends_within_the_timeout(sweep_file, tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    msg = _sweep_to(sweep_file, tmp_path, scheduler=address, connect_timeout=1)
    assert time.monotonic() - t0 < 5
    assert address in msg and "cannot connect" in msg


def test_silent_server_ends_within_the_timeout(sweep_file, tmp_path):
    """A server that accepts the connection but never answers: Dask's own timeout does not end that wait."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    try:
        address = f"tcp://127.0.0.1:{srv.getsockname()[1]}"
        t0 = time.monotonic()
        msg = _sweep_to(sweep_file, tmp_path, scheduler=address, connect_timeout=1)
        assert time.monotonic() - t0 < 5
        assert address in msg and "no answer within 1 s" in msg
    finally:
        srv.close()


def test_scheduler_file_address_is_used(sweep_file, tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    f = tmp_path / "scheduler.json"
    f.write_text(f'{{"type": "Scheduler", "address": "{address}", "id": "x"}}')
    msg = _sweep_to(sweep_file, tmp_path, scheduler_file=str(f), connect_timeout=1)
    assert address in msg and str(f) in msg


# ---------------------------------------------------------------- seeds


@pytest.mark.parametrize("text,key", [
    ('name = "s"\nbase = "base.toml"\nseeds = [0, -1]\n', "key 'seeds'"),
    (('name = "s"\nbase = "base.toml"\n[random]\nn = 1\nrandom_seed = -3\n[random.params]\n'
      '"rule.sigma" = { low = 1e-3, high = 1e-2 }\n'), "key 'random.random_seed'"),
])
def test_negative_seeds_are_refused(sweep_file, tmp_path, text, key):
    sweep_file()
    p = tmp_path / "neg.toml"
    p.write_text(text)
    with pytest.raises(SweepError) as e:
        load_sweep_file(p)
    msg = str(e.value)
    assert key in msg and str(p) in msg and (">= 0" in msg or "greater than or equal to 0" in msg), msg
