"""Run summaries, comparison tables, info text and plots from small synthetic trajectory files."""

import math

import numpy as np
import pytest

from npsim.analysis import (
    NO_ALIGNMENT,
    compare_text,
    curves,
    info_text,
    load,
    plot_runs,
    running_mean,
    summary,
    table,
)
from npsim.io.trajectory import Series, TrajectoryError, TrajectoryWriter

SIZES = [6, 5, 4, 3]
L = len(SIZES) - 1
PER_EPOCH = 10
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _series():
    steps = {
        "step": Series((), "int64", "update"),
        "epoch": Series((), "int64", "epoch"),
        "loss": Series((), "float32", "nats"),
        "delta_loss": Series((), "float32", "nats"),
        "update_norm": Series((L,), "float32", "parameter units"),
        "alignment": Series((L,), "float32", "cosine"),
        "wall_time": Series((), "float64", "s"),
    }
    epochs = {
        "epoch": Series((), "int64", "epoch"),
        "step": Series((), "int64", "update"),
        "train_loss": Series((), "float32", "nats"),
        "train_accuracy": Series((), "float32", "fraction"),
        "test_loss": Series((), "float32", "nats"),
        "test_accuracy": Series((), "float32", "fraction"),
        "wall_time": Series((), "float64", "s"),
    }
    return steps, epochs


def _writer(path, name, rule, seed, diagnostics_every=2):
    steps, epochs = _series()
    attrs = {
        "name": name, "config": f'name = "{name}"\nseed = {seed}\n\n[train]\nepochs = 4\nbatch_size = 10\n',
        "seed": seed, "backend": "numpy", "device": "cpu", "dtype": "float32", "rule": rule,
        "network": "6 -> 5:tanh -> 4:tanh -> 3:linear | loss cross_entropy",
        "sizes": np.array(SIZES, dtype=np.int64), "data": "toy", "data_source": "synthetic",
        "n_train": 100, "n_test": 50, "versions": "npsim test", "diagnostics_every": diagnostics_every,
        "command": "npsim train",
    }
    return TrajectoryWriter.create(path, attrs=attrs, steps=steps, epochs=epochs,
                                   state={"w": ((2,), "float32")}, meta_names=["step"])


def _alignment_row(i, measured):
    """Run a: layer 1 = step/100, layer 2 = 0.5, layer 3 = 0.2 but NaN at step 38."""
    if not measured:
        return np.full(L, np.nan, np.float32)
    return np.array([i / 100, 0.5, np.nan if i == 38 else 0.2], np.float32)


def _steps(w, start, n, epoch_of, align, t0=0.0):
    for i in range(start, start + n):
        w.append_steps(step=i, epoch=epoch_of(i), loss=np.float32(2.0 - 0.04 * i), delta_loss=np.float32(-0.01),
                       update_norm=np.array([0.1, 0.2, 0.3], np.float32) * (1 + i % 3),
                       alignment=align(i), wall_time=t0 + 0.1 * (i - start + 1))


def _epoch(w, e, test_acc, train_acc, test_loss, wall):
    w.append_epoch(epoch=e, step=e * PER_EPOCH, train_loss=np.float32(test_loss - 0.1),
                   train_accuracy=np.float32(train_acc), test_loss=np.float32(test_loss),
                   test_accuracy=np.float32(test_acc), wall_time=wall)


A_TEST = [0.5, 0.8, 0.75, 0.79]
A_TRAIN = [0.55, 0.85, 0.9, 0.95]
A_LOSS = [1.2, 0.6, 0.7, 0.65]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    # a: finished, 4 epochs, alignment measured every 2nd update
    a = d / "a.h5"
    w = _writer(a, "a", "danp", 1)
    for e in range(4):
        _steps(w, e * PER_EPOCH, PER_EPOCH, lambda i: i // PER_EPOCH, lambda i: _alignment_row(i, i % 2 == 0),
               t0=e * PER_EPOCH * 0.1)
        _epoch(w, e + 1, A_TEST[e], A_TRAIN[e], A_LOSS[e], wall=(e + 1) * PER_EPOCH * 0.1 + 0.05)
    w.finish("finished")
    # b: failed at step 25, never measured alignment (non-differentiable units)
    b = d / "b.h5"
    w = _writer(b, "b", "np", 2, diagnostics_every=0)
    _steps(w, 0, 25, lambda i: i // PER_EPOCH, lambda i: _alignment_row(i, False))
    _epoch(w, 1, 0.6, 0.62, 1.0, 1.05)
    _epoch(w, 2, 0.85, 0.86, 0.5, 2.05)
    w.finish("failed", failed_step=25, message="loss became nan at step 25 (epoch 3)")
    # c: left running (closed, not finished), no epoch yet
    c = d / "c.h5"
    w = _writer(c, "c", "danp", 3)
    _steps(w, 0, 5, lambda i: 0, lambda i: _alignment_row(i, i % 2 == 0))
    w.close()
    return {"a": a, "b": b, "c": c}


# --------------------------------------------------------------------------- summaries


def test_summary_values(runs):
    s = summary(runs["a"])
    assert (s["name"], s["rule"], s["seed"], s["status"]) == ("a", "danp", 1, "finished")
    assert s["epochs"] == 4 and s["steps"] == 40
    assert s["final_test_accuracy"] == pytest.approx(0.79)
    assert s["best_test_accuracy"] == pytest.approx(0.8) and s["best_epoch"] == 2
    assert s["final_train_accuracy"] == pytest.approx(0.95)
    assert s["final_test_loss"] == pytest.approx(0.65)
    assert s["wall_time"] == pytest.approx(4.05)  # last epoch row, after the last update (4.0 s)
    # 20 measured rows -> last 2 (steps 36, 38); layer 3 is NaN at 38
    assert s["alignment"] == pytest.approx([0.37, 0.5, 0.2], rel=1e-6)
    assert s["mean_alignment"] == pytest.approx((0.37 + 0.5 + 0.2) / 3, rel=1e-6)
    assert s["path"] == str(runs["a"])


def test_summary_without_alignment_or_epochs(runs):
    b = summary(runs["b"])
    assert b["status"] == "failed" and b["epochs"] == 2 and b["steps"] == 25
    assert b["best_test_accuracy"] == pytest.approx(0.85) and b["best_epoch"] == 2
    assert len(b["alignment"]) == L and all(math.isnan(x) for x in b["alignment"])
    assert math.isnan(b["mean_alignment"])
    c = summary(runs["c"])
    assert c["status"] == "running" and c["epochs"] == 0 and c["steps"] == 5
    assert math.isnan(c["final_test_accuracy"]) and math.isnan(c["best_test_accuracy"]) and c["best_epoch"] is None
    assert c["wall_time"] == pytest.approx(0.5)
    # 3 measured rows (steps 0, 2, 4) -> ceil(0.3) = 1 row: step 4
    assert c["alignment"] == pytest.approx([0.04, 0.5, 0.2], rel=1e-6)


def test_wall_time_sums_resumed_segments(tmp_path):
    path = tmp_path / "r.h5"
    w = _writer(path, "r", "danp", 1)
    _steps(w, 0, 10, lambda i: 0, lambda i: _alignment_row(i, False))  # 0.1 .. 1.0 s
    _epoch(w, 1, 0.5, 0.5, 1.0, wall=1.2)
    _steps(w, 10, 5, lambda i: 1, lambda i: _alignment_row(i, False))  # resumed: 0.1 .. 0.5 s
    w.finish("finished")
    assert summary(path)["wall_time"] == pytest.approx(1.2 + 0.5)


def test_table_keeps_order_and_accepts_trajectories(runs):
    order = [runs["c"], runs["a"], runs["b"]]
    assert [r["name"] for r in table(order)] == ["c", "a", "b"]
    trajs = load(order)
    assert [r["name"] for r in table(trajs)] == ["c", "a", "b"]
    assert len(load(runs["a"])) == 1


def test_curves(runs):
    c = curves(runs["a"])
    np.testing.assert_array_equal(c["epoch"], [1, 2, 3, 4])
    np.testing.assert_allclose(c["test_accuracy"], A_TEST, rtol=1e-6)
    assert c["step"].shape == c["loss"].shape == c["loss_smooth"].shape == (40,)
    np.testing.assert_allclose(c["step_epoch"][[0, 9, 39]], [0.1, 1.0, 4.0])
    assert c["update_norm"].shape == (40, L)
    np.testing.assert_array_equal(c["alignment_step"], np.arange(0, 40, 2))
    assert c["alignment"].shape == (20, L)
    # window round(40 / 50) = 1 -> smoothing is the identity here
    np.testing.assert_allclose(c["loss_smooth"], c["loss"])
    nc = curves(runs["c"])
    assert nc["epoch"].shape == (0,) and nc["alignment"].shape == (3, L)
    np.testing.assert_allclose(nc["step_epoch"], (np.arange(5) + 1) / 10)  # n_train // batch_size


def test_running_mean():
    x = np.array([1.0, 3.0, np.nan, 5.0, 7.0])
    np.testing.assert_allclose(running_mean(x, 2), [1.0, 2.0, 3.0, 5.0, 6.0])
    np.testing.assert_allclose(running_mean(x[:, None], 3)[:, 0], [1.0, 2.0, 2.0, 4.0, 6.0])


# --------------------------------------------------------------------------- text


def test_info_text_finished(runs):
    text = info_text(runs["a"])
    assert "status" in text and "finished" in text
    assert "danp" in text and "best test accuracy" in text and "0.8000 (epoch 2)" in text
    assert "4 of 4 epochs completed, 40 updates recorded" in text
    assert "toy from synthetic (100 train / 50 test samples)" in text
    assert "layer 1 (6\u21925) 0.370" in text
    assert "resumed" in text


def test_info_text_failed_and_running(runs):
    b = info_text(runs["b"])
    assert "failed at step 25: loss became nan at step 25" in b
    assert "BP alignment" in b and "not measured" in b
    c = info_text(runs["c"])
    assert "running or interrupted (no process finished it)" in c
    assert "none completed yet" in c and "0 of 4 epochs completed, 5 updates recorded" in c


def test_info_text_while_a_run_writes(tmp_path):
    path = tmp_path / "live.h5"
    w = _writer(path, "live", "danp", 5)
    try:
        assert "0 of 4 epochs completed, 0 updates recorded" in info_text(path)
        _steps(w, 0, 3, lambda i: 0, lambda i: _alignment_row(i, False))
        w.flush()
        text = info_text(path)
        assert "running or interrupted" in text and "3 updates recorded" in text
    finally:
        w.finish("interrupted", message="stopped")
    assert "interrupted: stopped" in info_text(path)


def test_compare_text_sorted(runs):
    text = compare_text([runs["c"], runs["a"], runs["b"]])
    lines = text.splitlines()
    assert len(lines) == 2 + 3  # header, rule, one line per run
    assert lines[0].split()[:4] == ["name", "rule", "seed", "status"]
    assert [ln.split()[0] for ln in lines[2:]] == ["b", "a", "c"]  # best test accuracy 0.85, 0.80, none
    assert "0.8000 (ep 2)" in lines[3] and "failed" in lines[2] and "running" in lines[4]
    assert lines[0].index("status") == lines[2].index("failed") == lines[4].index("running")  # aligned


# --------------------------------------------------------------------------- plots


def _check_png(path):
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    assert imread(path).shape[:2] == (960, 1320)  # figsize (11, 8) at 120 dpi


def test_plot_one_run(runs, tmp_path):
    out = plot_runs([runs["a"]], tmp_path / "a.png")
    assert out == tmp_path / "a.png"
    _check_png(out)


def test_plot_several_runs(runs, tmp_path):
    _check_png(plot_runs([runs["a"], runs["b"], runs["c"]], tmp_path / "abc.png"))
    trajs = load([runs["a"], runs["b"]]) * 5  # ten runs
    _check_png(plot_runs(trajs, tmp_path / "sub" / "ten.png"))


def test_plot_without_alignment(runs, tmp_path):
    _check_png(plot_runs(runs["b"], tmp_path / "b.png"))
    svg = plot_runs([runs["b"], runs["c"]], tmp_path / "bc.svg").read_text()
    assert "no BP alignment" not in svg  # c has alignment
    svg = plot_runs([runs["b"]], tmp_path / "b.svg").read_text()
    assert NO_ALIGNMENT.split(":")[0] in svg


def test_plot_zero_epochs(runs, tmp_path):
    _check_png(plot_runs([runs["c"]], tmp_path / "c.png"))


def test_plot_bad_suffix(runs, tmp_path):
    bad = tmp_path / "curves.jpg"
    with pytest.raises(ValueError, match="curves.jpg"):
        plot_runs([runs["a"]], bad)
    assert not bad.exists()


# --------------------------------------------------------------------------- errors


def test_corrupted_files(runs, tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00garbage" * 100)
    cut = tmp_path / "cut.h5"
    data = runs["a"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    for path in (junk, cut, tmp_path / "missing.h5"):
        for fn in (load, info_text, summary, compare_text):
            with pytest.raises(TrajectoryError) as e:
                fn(path)
            assert str(path) in str(e.value) and "\n" not in str(e.value)
        with pytest.raises(TrajectoryError):
            plot_runs([runs["a"], path], tmp_path / "x.png")
