"""Hostile input and a hostile machine: overwrites, other data, damaged checkpoints, full disks, signals,
unwritable outputs, runs that cannot fit, settings that cannot train. Each ends in one line, and no run is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import three_class_npz
from npsim.cli import main
from npsim.errors import (
    ConfigError, IncompatibleSettings, OutputError, ResourceError, TrajectoryBusy, TrajectoryCorrupt, TrajectoryError,
)
from npsim.experiment.config import load_config
from npsim.experiment.loop import resume, run
from npsim.io.trajectory import TrajectoryWriter, access, read_checkpoint, read_trajectory

REPO = Path(__file__).resolve().parents[1]

CONFIG = """
name = "tiny"
seed = 5
[data]
name = "tiny"
path = "{data}"
[network]
hidden = [16]
node = "tanh"
[rule]
name = "danp"
sigma = 1e-3
[optimizer]
lr = 3e-3
[train]
epochs = {epochs}
batch_size = 20
checkpoint_steps = 5
diagnostics_every = 0
"""


@pytest.fixture
def cfg_path(tmp_path):
    data = three_class_npz(tmp_path / "tiny.npz", 200, 60)
    p = tmp_path / "c.toml"
    p.write_text(CONFIG.format(data=data, epochs=4))
    return p


def _cli(argv, capsys):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err.strip().splitlines()


def _steps(path):
    t = read_trajectory(path, snapshots=False)
    return {k: v for k, v in t.steps.items() if k != "wall_time"}, t


def _same_steps(a, b):
    sa, _ = _steps(a)
    sb, _ = _steps(b)
    assert sorted(sa) == sorted(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


# --- 3. --overwrite ------------------------------------------------------------------------------------


def test_overwrite_refuses_what_is_not_a_trajectory(cfg_path, tmp_path, capsys):
    toml = tmp_path / "precious.toml"
    toml.write_text("x = 1\n")
    code, err = _cli(["train", cfg_path, "--out", toml, "--overwrite", "--quiet", "--no-plot"], capsys)
    assert code == 2 and err == [f"npsim: error: {toml}: is not an npsim trajectory file (not HDF5); refusing to "
                                 f"replace it"]
    assert toml.read_text() == "x = 1\n"
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.arange(3)
    code, err = _cli(["train", cfg_path, "--out", other, "--overwrite", "--quiet", "--no-plot"], capsys)
    assert code == 2 and "cannot be confirmed as an npsim trajectory file (not an npsim trajectory" in err[0]
    assert h5py.File(other, "r")["data"][()].tolist() == [0, 1, 2]
    code, err = _cli(["train", cfg_path, "--out", "/dev/null", "--overwrite", "--quiet", "--no-plot"], capsys)
    assert code == 2 and "cannot be written under /dev" in err[0]


def test_overwrite_refuses_a_file_a_live_run_is_writing(cfg_path, tmp_path, capsys):
    live = tmp_path / "live.h5"
    long = tmp_path / "long.toml"
    long.write_text(cfg_path.read_text().replace("epochs = 4", "epochs = 100000"))  # never ends by itself
    proc = subprocess.Popen([sys.executable, "-m", "npsim.cli", "train", str(long), "--out", str(live), "--quiet",
                             "--no-plot"], env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not (live.exists() and len(read_trajectory(live, snapshots=False).epochs["epoch"]) >= 1):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()
            time.sleep(0.05)
        code, err = _cli(["train", cfg_path, "--out", live, "--overwrite", "--quiet", "--no-plot"], capsys)
        assert code == 2 and err == [f"npsim: error: {live}: still being written by process {proc.pid} on this "
                                     f"host; refusing to replace it"]
        assert proc.poll() is None  # the live run goes on
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # once its writer is gone, the file may be replaced
    code, _ = _cli(["train", cfg_path, "--out", live, "--overwrite", "--quiet", "--no-plot"], capsys)
    assert code == 0 and read_trajectory(live).status == "finished"


# --- 4. resume on other data ------------------------------------------------------------------------------


def test_resume_refuses_other_data(cfg_path, tmp_path, capsys):
    part = run(load_config(cfg_path), tmp_path / "part.h5", progress=False, stop_after_steps=12)
    data = Path(load_config(cfg_path).data.path)
    x = np.load(data)
    np.savez(data, **{k: (x[k] + 0.01 if k == "x_train" else x[k]) for k in x.files})  # same shapes, other values
    before = part.path.read_bytes()
    code, err = _cli(["train", "--resume", part.path, "--quiet", "--no-plot"], capsys)
    assert code == 2 and len(err) == 1
    assert "the data differ from those the run trained on" in err[0] and "fingerprint" in err[0]
    assert part.path.read_bytes() == before  # the file is left as it was


# --- 5. damaged checkpoints ---------------------------------------------------------------------------------


def _flip(path, dataset, offset_bytes=8):
    """Flip one byte inside a contiguous dataset, directly in the file."""
    with h5py.File(path, "r") as f:
        where = f[dataset].id.get_offset()
    assert where is not None
    with open(path, "r+b") as fh:
        fh.seek(where + offset_bytes)
        b = fh.read(1)
        fh.seek(where + offset_bytes)
        fh.write(bytes([b[0] ^ 0x10]))


def _active_slot(path):
    with h5py.File(path, "r") as f:
        return int(f["checkpoint/meta"][0])


def test_a_damaged_checkpoint_falls_back_to_the_previous_one_and_continues_exactly(cfg_path, tmp_path, capsys):
    cfg = load_config(cfg_path)
    full = run(cfg, tmp_path / "full.h5", progress=False)
    part = run(cfg, tmp_path / "part.h5", progress=False, stop_after_steps=23)
    slot = _active_slot(part.path)
    _flip(part.path, f"checkpoint/slot{slot}/params/layer0/W")
    code, err = _cli(["train", "--resume", part.path, "--quiet", "--no-plot"], capsys)
    assert code == 0
    assert any(f"the newest checkpoint (slot {slot}) is damaged: checkpoint slot {slot} fails its checksum" in e
               and f"continued from the previous one (slot {1 - slot})" in e for e in err), err
    _same_steps(full.path, part.path)
    assert "resume_note" in read_trajectory(part.path).attrs


def test_both_checkpoints_damaged_is_one_line_and_the_file_stays(cfg_path, tmp_path, capsys):
    part = run(load_config(cfg_path), tmp_path / "part.h5", progress=False, stop_after_steps=23)
    for slot in (0, 1):
        _flip(part.path, f"checkpoint/slot{slot}/optimizer/mu/layer0/W", 16)
    before = part.path.read_bytes()
    code, err = _cli(["train", "--resume", part.path, "--quiet", "--no-plot"], capsys)
    assert code == 2 and err == [f"npsim: error: {part.path}: no usable checkpoint: checkpoint slot {_active_slot(part.path)} "
                                 f"fails its checksum (damaged bytes); checkpoint slot {1 - _active_slot(part.path)} "
                                 f"fails its checksum (damaged bytes)"]
    assert part.path.read_bytes() == before
    with pytest.raises(TrajectoryCorrupt):
        read_checkpoint(part.path)
    assert read_trajectory(part.path).status == "interrupted"  # the rest of the file still reads


# --- 12. damaged metadata met during resume ------------------------------------------------------------------


def test_damaged_attributes_met_by_resume_are_named_and_the_file_stays(cfg_path, tmp_path, capsys):
    part = run(load_config(cfg_path), tmp_path / "part.h5", progress=False, stop_after_steps=12)
    with h5py.File(part.path, "r+") as f:
        f.attrs["config"] = f.attrs["config"].replace("[rule]", "[rule")  # the stored config no longer parses
    before = part.path.read_bytes()
    code, err = _cli(["train", "--resume", part.path, "--quiet", "--no-plot"], capsys)
    assert code == 2 and len(err) == 1 and f"{part.path} (stored config): not valid TOML" in err[0]
    assert part.path.read_bytes() == before
    with h5py.File(part.path, "r+") as f:
        f.attrs["config"] = f.attrs["config"].replace("[rule", "[rule]")
        f["checkpoint/meta"].attrs["fields"] = np.array([b"active_slot"])  # the counters' names are lost
    code, err = _cli(["train", "--resume", part.path, "--quiet", "--no-plot"], capsys)
    assert code == 2 and len(err) == 1 and "checkpoint cannot continue this run" in err[0], err
    assert read_trajectory(part.path).status == "interrupted"


def test_series_shorter_than_the_checkpoint_are_refused_before_any_change(cfg_path, tmp_path, capsys):
    part = run(load_config(cfg_path), tmp_path / "part.h5", progress=False, stop_after_steps=12)
    with h5py.File(part.path, "r+") as f:
        f["steps/loss"].resize(3, axis=0)
    before = part.path.read_bytes()
    code, err = _cli(["train", "--resume", part.path, "--quiet", "--no-plot"], capsys)
    assert code == 2 and err == [f"npsim: error: {part.path}: steps/loss has 3 rows but the checkpoint recorded 10; "
                                 f"file is corrupt"]
    assert part.path.read_bytes() == before


# --- 10. a full disk -----------------------------------------------------------------------------------------


def test_a_full_disk_stops_with_one_line_and_the_run_resumes(cfg_path, tmp_path, capsys, monkeypatch):
    cfg = load_config(cfg_path)
    full = run(cfg, tmp_path / "full.h5", progress=False)
    out = tmp_path / "disk.h5"
    calls = {"n": 0}
    real = access.free_bytes

    def filling(path):  # the disk fills up after a few writes
        calls["n"] += 1
        return real(path) if calls["n"] < 4 else access.SPACE_MARGIN // 2

    monkeypatch.setattr(access, "free_bytes", filling)
    code, err = _cli(["train", cfg_path, "--out", out, "--quiet", "--no-plot"], capsys)
    assert code == 2 and len(err) == 1 and "is full" in err[0] and f"npsim train --resume {out}" in err[0]
    t = read_trajectory(out)
    assert t.status == "interrupted" and "is full" in t.attrs["message"]
    monkeypatch.setattr(access, "free_bytes", real)  # space is free again
    code, _ = _cli(["train", "--resume", out, "--quiet", "--no-plot"], capsys)
    assert code == 0
    _same_steps(full.path, out)


def test_a_failing_write_is_a_full_disk_too(cfg_path, tmp_path, capsys, monkeypatch):
    """A write that fails with ENOSPC (the space check passed, another process filled the disk)."""
    cfg = load_config(cfg_path)
    full = run(cfg, tmp_path / "full.h5", progress=False)
    out = tmp_path / "enospc.h5"
    env = dict(os.environ, PYTHONPATH=str(REPO), NPSIM_FAULT="checkpoint:slot:3:enospc")
    r = subprocess.run([sys.executable, "-m", "npsim.cli", "train", str(cfg_path), "--out", str(out), "--quiet",
                        "--no-plot"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "the disk is full while writing the checkpoint" in r.stderr
    assert read_trajectory(out).status == "interrupted"
    code, _ = _cli(["train", "--resume", out, "--quiet", "--no-plot"], capsys)
    assert code == 0
    _same_steps(full.path, out)


@pytest.mark.skipif(os.geteuid() != 0 or sys.platform != "linux", reason="mounting a small tmpfs needs root")
def test_a_really_full_disk(cfg_path, tmp_path, capsys):
    """A 22 MiB tmpfs: the run (a weight snapshot every epoch) fills it, stops with one line, and resumes once
    the file is moved to a disk with room."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=22m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = mnt / "run.h5"
        long = tmp_path / "long.toml"
        long.write_text(cfg_path.read_text().replace("epochs = 4", "epochs = 400").replace(
            "hidden = [16]", "hidden = [300, 300]") + "snapshot_every = 1\n")
        code, err = _cli(["train", long, "--out", out, "--quiet", "--no-plot"], capsys)
        assert code == 2 and len(err) == 1 and "is full" in err[0]
        assert read_trajectory(out).status == "interrupted"
        moved = tmp_path / "moved.h5"
        moved.write_bytes(out.read_bytes())
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
    assert resume(moved, progress=False, stop_after_steps=3).status == "interrupted"


# --- 8. SIGTERM ------------------------------------------------------------------------------------------------


def test_sigterm_marks_the_run_interrupted_and_it_resumes(cfg_path, tmp_path):
    long = tmp_path / "long.toml"
    long.write_text(cfg_path.read_text().replace("epochs = 4", "epochs = 100000"))  # never ends by itself
    out = tmp_path / "term.h5"
    proc = subprocess.Popen([sys.executable, "-m", "npsim.cli", "train", str(long), "--out", str(out), "--quiet",
                             "--no-plot"], env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out.exists() and len(read_trajectory(out, snapshots=False).epochs["epoch"]) >= 1):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines()[-1] == f"npsim: error: terminated (SIGTERM); resume with npsim train --resume {out}"
    t = read_trajectory(out)
    assert t.status == "interrupted" and "SIGTERM" in t.attrs["message"]
    assert resume(out, progress=False, stop_after_steps=2).status == "interrupted"


# --- 9. unwritable outputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("where,match", [
    ("/proc/npsim.h5", "cannot be written under /proc, a virtual file system"),
    ("/sys/npsim.h5", "cannot be written under /sys, a virtual file system"),
])
def test_unwritable_outputs_are_refused_before_training(cfg_path, where, match, capsys, monkeypatch):
    loaded = []
    import npsim.experiment.assemble as build_module
    monkeypatch.setattr(build_module, "load_dataset", lambda *a, **k: loaded.append(1))
    code, err = _cli(["train", cfg_path, "--out", where, "--quiet", "--no-plot"], capsys)
    assert code == 2 and len(err) == 1 and match in err[0] and not loaded


def test_a_directory_as_output_is_refused(cfg_path, tmp_path, capsys):
    d = tmp_path / "adir"
    d.mkdir()
    for extra in ([], ["--overwrite"]):
        code, err = _cli(["train", cfg_path, "--out", d, "--quiet", "--no-plot", *extra], capsys)
        assert code == 2 and err == [f"npsim: error: {d}: is a directory; give a file name for the trajectory file"]
    assert d.is_dir()


@pytest.mark.skipif(os.geteuid() != 0 or sys.platform != "linux", reason="a read-only mount needs root")
def test_a_read_only_file_system_is_refused(cfg_path, tmp_path, capsys):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        code, err = _cli(["train", cfg_path, "--out", mnt / "x.h5", "--quiet", "--no-plot"], capsys)
        assert code == 2 and len(err) == 1 and "Read-only file system" in err[0]
        part = run(load_config(cfg_path), tmp_path / "p.h5", progress=False, stop_after_steps=3)
        code, err = _cli(["plot", part.path, "-o", mnt / "x.png"], capsys)
        assert code == 2 and len(err) == 1 and "cannot write the plot" in err[0]
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_plot_to_an_unwritable_place(cfg_path, tmp_path, capsys):
    part = run(load_config(cfg_path), tmp_path / "p.h5", progress=False, stop_after_steps=3)
    code, err = _cli(["plot", part.path, "-o", "/proc/x.png"], capsys)
    assert code == 2 and err == ["npsim: error: /proc/x.png: a plot cannot be written under /proc, a virtual file system"]


# --- 11. memory -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override", ["network.hidden=[100000000]", "rule.perturbations=100000000"])
def test_a_run_that_cannot_fit_is_refused_with_the_estimate(cfg_path, tmp_path, override, capsys):
    out = tmp_path / "big.h5"
    code, err = _cli(["train", cfg_path, "--out", out, "--set", override, "--quiet", "--no-plot"], capsys)
    assert code == 2 and len(err) == 1 and "needs about" in err[0] and "this machine has" in err[0]
    assert not out.exists()


def test_a_run_that_runs_out_of_memory_midway_is_not_left_running(cfg_path, tmp_path, monkeypatch):
    import npsim.experiment.loop as loop

    calls = {"n": 0}
    real = loop.train_step

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 8:
            raise MemoryError("cannot allocate 1.0 GiB")
        return real(*a, **k)

    monkeypatch.setattr(loop, "train_step", failing)
    with pytest.raises(MemoryError):
        run(load_config(cfg_path), tmp_path / "oom.h5", progress=False)
    t = read_trajectory(tmp_path / "oom.h5")
    assert t.status == "interrupted" and t.attrs["message"].startswith("out of memory at step 7")
    monkeypatch.setattr(loop, "train_step", real)
    assert resume(tmp_path / "oom.h5", progress=False).status == "finished"


# --- 15. settings that cannot train -----------------------------------------------------------------------------


@pytest.mark.parametrize("override,message", [
    ('train.epochs=true', "key 'train.epochs': must be a valid integer (got True)"),
    ('train.epochs="3"', "key 'train.epochs': must be a valid integer (got '3')"),
    ("optimizer.eps=inf", "key 'optimizer.eps': must be a finite number (got inf)"),
    ("rule.decorrelation_lr=inf", "key 'rule.decorrelation_lr': must be a finite number (got inf)"),
    ("rule.sigma=1e-9", "key 'rule.sigma': 1e-09 is below the resolution of float32"),
    ('name=""', "key 'name': must have at least 1 character"),
    ('name="a/b"', "key 'name': must be usable as a file name"),
    ("seed=-1", "key 'seed': must be greater than or equal to 0"),
    ("rule.decorrelation_rows=20", "rule.decorrelation_rows = 20 is not fewer than the rows an update has (20"),
    ("rule.decorrelation_rows=1", "key 'rule.decorrelation_rows': must be 'auto', 'all' or a whole number of rows"),
    ("rule.antithetic=true", "key 'rule.antithetic': antithetic perturbations come in pairs (+ε, −ε): "
                             "perturbations must be even, got 1"),
])
def test_settings_that_cannot_train_are_refused(cfg_path, override, message, capsys):
    code, err = _cli(["train", cfg_path, "--set", override, "--quiet", "--no-plot"], capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_sigma_below_float32_resolution_is_fine_in_float64(cfg_path, tmp_path):
    cfg = load_config(cfg_path).with_overrides({"rule.sigma": 1e-9, "dtype": "float64"})
    assert run(cfg, tmp_path / "f64.h5", progress=False, stop_after_steps=2).status == "interrupted"


def test_a_monitor_on_a_network_without_spiking_layers_is_refused(cfg_path, capsys):
    text = cfg_path.read_text() + "[train.monitor]\nlayers = [0]\n"
    cfg_path.write_text(text)
    code, err = _cli(["train", cfg_path, "--quiet", "--no-plot"], capsys)
    assert code == 2 and "train.monitor records spikes" in err[0] and "--unset train.monitor" in err[0]
    code, err = _cli(["train", cfg_path, "--unset", "train.monitor", "--set", "train.epochs=1", "--out",
                      cfg_path.with_suffix(".h5"), "--quiet", "--no-plot"], capsys)
    assert code == 0


def test_the_library_raises_typed_errors():
    with pytest.raises(OutputError):
        TrajectoryWriter.check_replaceable("/dev/null")
    assert issubclass(TrajectoryBusy, TrajectoryError) and issubclass(ResourceError, MemoryError)
    assert issubclass(IncompatibleSettings, ValueError) and issubclass(ConfigError, ValueError)
