"""Spike/voltage monitors: storage in the trajectory file, live reads, validation, plots and ``npsim plot``."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import held_open

from npsim.analysis import info_text, monitors_text, plot_monitors
from npsim.cli import main
from npsim.io.trajectory import (
    Recordings,
    Series,
    TrajectoryWriter,
    read_monitors,
    read_trajectory,
)

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIZES = [6, 5, 4, 3]
S, T, DT = 3, 60, 0.5
SAMPLES = np.array([4, 17, 250])


L = len(SIZES) - 1
STEPS = {"step": Series((), "int64", "update"), "epoch": Series((), "int64", "epoch"),
         "loss": Series((), "float32", "nats"), "update_norm": Series((L,), "float32", "parameter units"),
         "alignment": Series((L,), "float32", "cosine"), "wall_time": Series((), "float64", "s")}
EPOCHS = {k: Series((), dt, unit) for k, dt, unit in [
    ("epoch", "int64", "epoch"), ("step", "int64", "update"), ("train_loss", "float32", "nats"),
    ("train_accuracy", "float32", "fraction"), ("test_loss", "float32", "nats"),
    ("test_accuracy", "float32", "fraction"), ("wall_time", "float64", "s")]}


def make_writer(path):
    attrs = {"name": "snn", "rule": "np", "seed": 1, "network": "6 -> 5:lif -> 4:lif -> 3:li",
             "sizes": np.array(SIZES, dtype=np.int64), "diagnostics_every": 0}
    return TrajectoryWriter.create(path, attrs=attrs, steps=STEPS, epochs=EPOCHS, state={"w": ((2,), "float32")},
                                   meta_names=["epoch"])


def append_steps(w, start, n):
    i = np.arange(start, start + n)
    w.append_steps(step=i, epoch=i // 5, loss=(2.0 - 0.1 * i).astype(np.float32),
                   update_norm=np.full((n, L), 0.1, np.float32), alignment=np.full((n, L), np.nan, np.float32),
                   wall_time=0.1 * (i + 1))


def append_epoch(w, e):
    w.append_epoch(epoch=e, step=5 * e, train_loss=1.0, train_accuracy=0.5, test_loss=1.1, test_accuracy=0.45,
                   wall_time=0.5 * e)


def lif(n, seed, spiking=True, thr=1.0, tau=8.0):
    """(v (S, T, n) float64, spikes (S, T, n) bool) of leaky integrate-and-fire units with random drive."""
    rng = np.random.default_rng(seed)
    drive = rng.uniform(0.05, 0.25, (S, 1, n)) + 0.05 * rng.normal(size=(S, T, n))
    v, spikes, x = np.zeros((S, T, n)), np.zeros((S, T, n), bool), np.zeros((S, n))
    for t in range(T):
        x = x * np.exp(-DT / tau) + drive[:, t]
        if spiking:
            spikes[:, t] = x >= thr
            x = np.where(spikes[:, t], 0.0, x)
        v[:, t] = x
    return v, spikes


def recordings(seed=0):
    """Layer 0: 5 LIF units (bool spikes, float64 v); layer 2: 3 non-spiking LI units."""
    v0, s0 = lif(5, seed)
    v2, _ = lif(3, seed + 1, spiking=False)
    return {
        0: {"v": v0, "spikes": s0, "units": np.array([0, 2, 3, 7, 9]), "node": "lif", "threshold": 1.0},
        2: {"v": v2, "units": np.arange(3), "node": "li"},
    }


def write_run(path, monitors=True, finish=True):
    w = make_writer(path)
    append_steps(w, 0, 5)
    append_epoch(w, 1)
    if monitors:
        w.write_monitors(recordings(), dt=DT, steps=T, samples=SAMPLES, epoch=1)
    if finish:
        w.finish("finished")
    return w


# --------------------------------------------------------------------------- storage


def test_round_trip(tmp_path):
    path = tmp_path / "run.h5"
    rec = recordings()
    w = make_writer(path)
    append_steps(w, 0, 5)
    w.write_monitors(rec, dt=DT, steps=T, samples=SAMPLES.astype(np.int32), epoch=3)
    # the writer goes on after the monitors: rows, checkpoint, finish
    append_steps(w, 5, 3)
    append_epoch(w, 1)
    w.checkpoint({"w": np.ones(2, np.float32)}, {"epoch": 1})
    w.finish("finished")

    m = read_monitors(path)
    assert isinstance(m, Recordings) and m.path == str(path)
    assert (m.dt, m.steps, m.epoch) == (DT, T, 3) and isinstance(m.steps, int) and isinstance(m.epoch, int)
    assert m.samples.dtype == np.int64 and m.samples.tolist() == SAMPLES.tolist()
    assert list(m.layers) == [0, 2]
    assert m.nodes == {0: "lif", 2: "li"} and m.thresholds == {0: 1.0, 2: None}
    l0, l2 = m.layers[0], m.layers[2]
    assert set(l0) == {"spikes", "v", "units"} and set(l2) == {"v", "units"}
    assert l0["spikes"].dtype == np.uint8 and l0["v"].dtype == np.float32 and l0["units"].dtype == np.int64
    np.testing.assert_array_equal(l0["spikes"], rec[0]["spikes"].astype(np.uint8))
    np.testing.assert_array_equal(l0["v"], rec[0]["v"].astype(np.float32))
    np.testing.assert_array_equal(l0["units"], [0, 2, 3, 7, 9])
    np.testing.assert_array_equal(l2["v"], rec[2]["v"].astype(np.float32))
    assert l0["spikes"].sum() > 10  # the synthetic units do spike
    np.testing.assert_allclose(m.times, DT * np.arange(1, T + 1))

    t = read_trajectory(path)
    assert t.status == "finished" and t.steps["step"].tolist() == list(range(8))
    assert t.monitors is not None and t.monitors.layers.keys() == m.layers.keys()
    np.testing.assert_array_equal(t.monitors.layers[0]["v"], l0["v"])
    assert read_trajectory(path, monitors=False).monitors is None

    with h5py.File(path, "r") as f:
        g = f["monitors"]
        assert g.attrs["dt"] == DT and g.attrs["steps"] == T and g.attrs["epoch"] == 3
        assert g.attrs["samples"].dtype == np.int64 and g.attrs["description"]
        assert g["layer0"].attrs["node"] == "lif" and g["layer0"].attrs["threshold"] == 1.0
        assert "threshold" not in g["layer2"].attrs and "spikes" not in g["layer2"]
        for name in ("layer0/spikes", "layer0/v", "layer0/units", "layer2/v"):
            d = g[name]
            assert d.compression == "gzip" and d.chunks is not None, name
            assert "unit" in d.attrs and d.attrs["description"], name
        assert g["layer0/v"].chunks == (S, T, 5) and g["layer0/v"].shuffle
        assert "_monitors_new" not in f


def test_rewriting_replaces(tmp_path):
    path = tmp_path / "run.h5"
    w = write_run(path, finish=False)
    w.checkpoint({"w": np.zeros(2, np.float32)}, {"epoch": 1})
    v, spikes = lif(4, 7)
    w.write_monitors({1: {"v": v[:1], "spikes": spikes[:1], "units": np.arange(4)}}, dt=1.0, steps=T,
                     samples=[9], epoch=2)
    m = read_monitors(path)
    assert list(m.layers) == [1] and m.samples.tolist() == [9] and (m.dt, m.epoch) == (1.0, 2)
    assert m.nodes == {1: ""} and m.thresholds == {1: None}
    np.testing.assert_array_equal(m.layers[1]["spikes"], spikes[:1])
    w.close()

    # a resumed run records again
    w, _, meta = TrajectoryWriter.resume(path)
    assert meta == {"epoch": 1} and list(read_monitors(path).layers) == [1]  # resume keeps the monitors
    w.write_monitors(recordings(), dt=DT, steps=T, samples=SAMPLES, epoch=4)
    w.finish("finished")
    m = read_monitors(path)
    assert list(m.layers) == [0, 2] and m.epoch == 4
    with h5py.File(path, "r") as f:
        assert sorted(f["monitors"]) == ["layer0", "layer2"] and "_monitors_new" not in f


def test_live_reader_sees_monitors(tmp_path):
    path = tmp_path / "run.h5"
    w = write_run(path, monitors=False, finish=False)
    w.flush()
    assert read_monitors(path) is None  # opened as a SWMR reader while the writer is open
    with held_open(path):  # another process holds the file open while the monitors are written
        w.write_monitors(recordings(), dt=DT, steps=T, samples=SAMPLES, epoch=1)
    assert not w.closed
    m = read_monitors(path)  # the writer is still open, in SWMR mode
    assert m is not None and list(m.layers) == [0, 2]
    # the writer still appends, and readers (in another process) see both
    append_steps(w, 5, 4)
    w.flush()
    read = textwrap.dedent("""
        import sys
        from npsim.io.trajectory import read_trajectory
        t = read_trajectory(sys.argv[1])
        print(t.status, len(t.steps["step"]), sorted(t.monitors.layers), int(t.monitors.layers[0]["spikes"].sum()))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", read, str(path)], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["running", "9", "[0,", "2]", str(int(recordings()[0]["spikes"].sum()))]
    w.finish("finished")
    assert read_trajectory(path).steps["step"].tolist() == list(range(9))


def test_monitors_survive_a_kill(tmp_path):
    path = tmp_path / "run.h5"
    code = textwrap.dedent("""
        import os, signal, sys
        import numpy as np
        import test_monitors as M
        w = M.write_run(sys.argv[1], finish=False)
        w.checkpoint({"w": np.ones(2, np.float32)}, {"epoch": 1})
        M.append_steps(w, 5, 3)
        w.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == -9, r.stderr
    t = read_trajectory(path)
    assert t.status == "running" and len(t.steps["step"]) == 8 and list(t.monitors.layers) == [0, 2]
    np.testing.assert_array_equal(t.monitors.layers[0]["v"], recordings()[0]["v"].astype(np.float32))
    w, _, _ = TrajectoryWriter.resume(path)
    w.finish("finished")
    assert read_monitors(path).epoch == 1


def _bad(rec=None, **kw):
    args = {"dt": DT, "steps": T, "samples": SAMPLES, "epoch": 1}
    args.update(kw)
    return (recordings() if rec is None else rec), args


def _layer0(**changes):
    rec = recordings()
    rec[0].update(changes)
    return {k: {n: a for n, a in v.items() if a is not None} for k, v in rec.items()}


@pytest.mark.parametrize("monitors, kwargs, match", [
    (*_bad(_layer0(v=np.zeros((S, T, 4)))), r"layer 0: v has shape \(3, 60, 4\), expected .*\(3, 60, 5\)"),
    (*_bad(_layer0(v=np.zeros((S, T + 1, 5)))), r"layer 0: v has shape"),
    (*_bad(_layer0(spikes=np.zeros((S, T, 5, 1), bool))), r"layer 0: spikes has shape"),
    (*_bad(_layer0(spikes=np.full((S, T, 5), 2))), r"layer 0: spikes must hold only 0 and 1"),
    (*_bad(_layer0(v=np.zeros((S, T, 5), complex))), r"layer 0: v must hold real numbers"),
    (*_bad(_layer0(units=np.array([0, 1, 1, 2, 3]))), r"layer 0: units must be distinct"),
    (*_bad(_layer0(units=np.arange(5.0))), r"layer 0: units must be a non-empty 1-d integer array"),
    (*_bad(_layer0(v=None)), r"layer 0: 'v' is missing"),
    (*_bad(_layer0(threshold=float("nan"))), r"layer 0: threshold must be finite"),
    (*_bad(_layer0(node=3)), r"layer 0: node must be a str"),
    (*_bad({1: {"v": np.zeros((S, T, 2)), "units": [0, 1], "spike": np.zeros((S, T, 2))}}), r"layer 1: unknown keys"),
    (*_bad({-1: recordings()[0]}), r"layer index -1"),
    (*_bad({}), r"non-empty mapping"),
    (*_bad(samples=SAMPLES[:2]), r"layer 0: v has shape \(3, 60, 5\), expected .*\(2, 60, 5\)"),
    (*_bad(samples=SAMPLES[None]), r"samples must be a non-empty 1-d integer array"),
    (*_bad(steps=T - 1), r"layer 0: v has shape"),
    (*_bad(steps=True), r"steps must be an int"),
    (*_bad(dt=0.0), r"dt must be > 0"),
    (*_bad(epoch=-1), r"epoch must be >= 0"),
])
def test_bad_input_is_rejected(tmp_path, monitors, kwargs, match):
    path = tmp_path / "run.h5"
    w = write_run(path, monitors=False, finish=False)
    with pytest.raises(ValueError, match=match):
        w.write_monitors(monitors, **kwargs)
    assert not w.closed  # checked before the file was touched
    w.finish("finished")
    assert read_monitors(path) is None


def test_no_monitors(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path, monitors=False)
    assert read_monitors(path) is None
    assert read_trajectory(path).monitors is None
    assert not any(ln.startswith("monitors:") for ln in info_text(path).splitlines())
    assert monitors_text(path) == "none"
    with pytest.raises(ValueError, match="no spike/voltage monitors"):
        plot_monitors(path, tmp_path / "m.png")


def test_info_text(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path)
    line = next(ln for ln in info_text(path).splitlines() if ln.startswith("monitors:"))
    n_spikes = int(recordings()[0]["spikes"].sum())
    assert f"layer 1 (6\u21925): lif, 5 units, {n_spikes} spikes; layer 3 (4\u21923): li, 3 units" in line
    assert "3 test samples (#4, #17, #250), T = 60 steps of 0.5 ms, after epoch 1" in line


# --------------------------------------------------------------------------- plots


def _check_png(path):
    from matplotlib.image import imread

    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    h, w = imread(path).shape[:2]
    assert h > 500 and w > 800
    return h, w


def test_plot_monitors(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path)
    out = plot_monitors(path, tmp_path / "m.png")
    assert out == tmp_path / "m.png"
    _check_png(out)
    svg = plot_monitors(read_trajectory(path), tmp_path / "m.svg").read_text()
    assert "run.h5" in svg and "epoch 1" in svg and "dt = 0.5 ms" in svg and "T = 60 steps" in svg
    assert "threshold" in svg and "layer 1 (6\u21925), lif: spikes" in svg
    assert "layer 3 (4\u21923), li: membrane potential" in svg and "layer 3 (4\u21923), li: spikes" not in svg
    with pytest.raises(ValueError, match="m.jpg"):
        plot_monitors(path, tmp_path / "m.jpg")


def test_plot_voltage_only_and_one_sample(tmp_path):
    path = tmp_path / "run.h5"
    w = make_writer(path)
    v, _ = lif(4, 3, spiking=False)
    w.write_monitors({2: {"v": v, "units": np.arange(4), "node": "li"}}, dt=1.0, steps=T, samples=SAMPLES, epoch=0)
    w.close()
    _check_png(plot_monitors(path, tmp_path / "li.png"))
    # one sample, no spike at all, a Recordings object
    m = read_monitors(path)
    m.layers[2]["spikes"] = np.zeros((S, T, 4), np.uint8)
    m.thresholds[2] = 1.0
    _check_png(plot_monitors(m, tmp_path / "silent.png"))


def test_cli_plot(tmp_path, capsys):
    run = tmp_path / "run.h5"
    write_run(run)
    assert main(["plot", str(run)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "run.png"), str(tmp_path / "run-monitors.png")]
    for p in printed:
        _check_png(p)

    assert main(["plot", str(run), "-o", str(tmp_path / "figs" / "curves.png")]) == 0
    assert capsys.readouterr().out.split()[1] == str(tmp_path / "figs" / "curves-monitors.png")
    assert (tmp_path / "figs" / "curves-monitors.png").stat().st_size > 10_000

    plain = tmp_path / "plain.h5"
    write_run(plain, monitors=False)
    assert main(["plot", str(plain)]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "plain.png")]
    assert not (tmp_path / "plain-monitors.png").exists()
    # several runs: learning curves only
    assert main(["plot", str(run), str(plain), "-o", str(tmp_path / "both.png")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "both.png")]
    assert not (tmp_path / "both-monitors.png").exists()
