"""A run killed (SIGKILL) at every named point of its trajectory file's life.

Each kill happens in a child process (``NPSIM_FAULT``, npsim/io/trajectory/faults.py).
Afterwards the file must be readable by ``read_trajectory`` and ``npsim info``, and
resuming it (from its checkpoint; from scratch with --overwrite where none was
written yet) must end in the uninterrupted run's trajectory, bit for bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import three_class_npz
from npsim.cli import main
from npsim.errors import NoCheckpoint, TrajectoryFinished
from npsim.experiment.config import load_config
from npsim.experiment.loop import resume, run
from npsim.io.trajectory import read_trajectory
from npsim.io.trajectory.faults import ENV, POINTS

REPO = Path(__file__).resolve().parents[1]

CONFIG = """
name = "faults"
seed = 3
[data]
name = "tiny"
path = "{data}"
normalize = "unit"
[network]
hidden = [10]
node = "lif"
node_params = {{ tau = 8.0, threshold = 0.15, membrane_noise = 0.05 }}
[network.simulation]
steps = 6
[rule]
name = "danp"
sigma = 0.05
perturbations = 2
[optimizer]
lr = 1e-2
[train]
epochs = 2
batch_size = 20
checkpoint_steps = 2
diagnostics_every = 0
[train.monitor]
layers = [0]
samples = 2
units = 4
"""

#: (point, occurrence): where the child is killed; checkpoints and flushes happen several times, so
#: the first and a later one are both tried
KILLS = [("create:layout", 1), ("create:swmr", 1), ("checkpoint:slot", 1), ("checkpoint:slot", 4),
         ("checkpoint:digest", 3), ("checkpoint:meta", 1), ("checkpoint:meta", 5), ("monitors:reopen", 1),
         ("monitors:written", 1), ("finish:reopen", 1), ("finish:status", 1)]
RESUME_KILLS = [("resume:reopen", 1), ("resume:status", 1), ("resume:truncate", 1)]


def test_every_point_is_exercised():
    assert {p for p, _ in KILLS + RESUME_KILLS} == set(POINTS)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    data = three_class_npz(d / "tiny.npz", 100, 40)
    cfg_path = d / "c.toml"
    cfg_path.write_text(CONFIG.format(data=data))
    ref = run(load_config(cfg_path), d / "ref.h5", progress=False)
    assert ref.status == "finished"
    return d, cfg_path, read_trajectory(ref.path)


def _child(code: str, fault: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), **{ENV: fault})
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def _datasets(path) -> dict:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return {k: v for k, v in out.items() if not k.endswith("wall_time")}


def _same_as_reference(path, ref) -> None:
    a, b = _datasets(path), _datasets(ref.path)
    assert sorted(a) == sorted(b)
    for k in a:
        if k.startswith("checkpoint/"):  # the slot the last checkpoint went to depends on the history
            continue
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert read_trajectory(path).status == "finished"


def _resume_to_the_end(path) -> None:
    for _ in range(3):
        try:
            res = resume(path, progress=False)
        except TrajectoryFinished:
            return
        if res.status == "finished":
            return
    raise AssertionError("the run did not finish")


@pytest.mark.parametrize("point,nth", KILLS, ids=[f"{p}-{n}" for p, n in KILLS])
def test_killed_run_is_readable_and_resumes_exactly(setup, point, nth, capsys):
    d, cfg_path, ref = setup
    path = d / f"{point.replace(':', '-')}-{nth}.h5"
    code = (f"from npsim.experiment.config import load_config; from npsim.experiment.loop import run; "
            f"run(load_config({str(cfg_path)!r}), {str(path)!r}, progress=False)")
    child = _child(code, f"{point}:{nth}")
    assert child.returncode == -9, child.stderr[-2000:]
    if point == "create:layout":  # the file is built under another name and renamed into place when complete
        assert not path.exists() and any(p.name.startswith(f".{path.name}.creating-") for p in d.iterdir())
        assert main(["train", str(cfg_path), "--out", str(path), "--quiet", "--no-plot"]) == 0
        assert not any(p.name.startswith(f".{path.name}.creating-") for p in d.iterdir())  # the leftover is gone
        _same_as_reference(path, ref)
        return
    traj = read_trajectory(path)  # readable whatever the moment of the kill
    assert main(["info", str(path)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    try:
        _resume_to_the_end(path)
    except NoCheckpoint:  # killed before the first checkpoint: nothing to continue, so start afresh
        assert point.startswith("create") or traj.attrs.get("status") == "running"
        assert main(["train", str(cfg_path), "--out", str(path), "--overwrite", "--quiet", "--no-plot"]) == 0
    _same_as_reference(path, ref)


@pytest.mark.parametrize("point,nth", RESUME_KILLS, ids=[f"{p}-{n}" for p, n in RESUME_KILLS])
def test_killed_resume_is_readable_and_resumes_exactly(setup, point, nth, capsys):
    d, cfg_path, ref = setup
    path = d / f"{point.replace(':', '-')}-{nth}.h5"
    assert run(load_config(cfg_path), path, progress=False, stop_after_steps=7).status == "interrupted"
    child = _child(f"from npsim.experiment.loop import resume; resume({str(path)!r}, progress=False)",
                   f"{point}:{nth}")
    assert child.returncode == -9, child.stderr[-2000:]
    assert read_trajectory(path).status in ("running", "interrupted")
    assert main(["info", str(path)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    _resume_to_the_end(path)
    _same_as_reference(path, ref)
