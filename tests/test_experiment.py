"""Experiments end to end: config -> run -> trajectory file -> resume, live read, CLI errors."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import three_class_npz

from npsim.cli import main
from npsim.experiment.config import load_config
from npsim.experiment.loop import resume, run
from npsim.io.trajectory import read_trajectory

CONFIG = """
name = "tiny"
seed = 3

[data]
name = "tiny"
path = "{data}"

[network]
hidden = [24, 16]
node = "tanh"

[rule]
name = "{rule}"
sigma = 1e-3

[optimizer]
name = "adam"
lr = 3e-3

[train]
epochs = {epochs}
batch_size = 20
diagnostics_every = 7
snapshot_every = 2
"""


@pytest.fixture
def tiny(tmp_path):
    """A small 3-class npz data set and a config writer for it."""
    data = three_class_npz(tmp_path / "tiny.npz", 600, 200)

    def write(rule="danp", epochs=6, name="cfg.toml", **extra):
        text = CONFIG.format(data=data, rule=rule, epochs=epochs)
        p = tmp_path / name
        p.write_text(text + "".join(f"\n{k} = {v}" for k, v in extra.items()))
        return p
    return write


def _series(path):
    tr = read_trajectory(path)
    return tr, {k: v for k, v in tr.steps.items() if k != "wall_time"}


def test_run_writes_a_complete_trajectory(tiny, tmp_path):
    cfg = load_config(tiny())
    res = run(cfg, tmp_path / "run.h5", progress=False)
    assert res.status == "finished" and res.epochs == 6 and res.steps == 6 * 30
    assert res.test_accuracy > 0.8
    tr = read_trajectory(res.path)
    assert tr.status == "finished" and tr.attrs["rule"] == "danp" and "[rule]" in tr.attrs["config"]
    assert tr.steps["loss"].shape == (180,) and tr.steps["alignment"].shape == (180, 3)
    measured = ~np.isnan(tr.steps["alignment"][:, 0])
    assert np.array_equal(np.flatnonzero(measured), np.arange(0, 180, 7))
    assert np.nanmean(tr.steps["alignment"]) > 0.0
    assert tr.epochs["test_accuracy"].shape == (6,)
    assert list(tr.snapshots["epoch"]) == [2, 4, 6]
    with h5py.File(res.path, "r") as f:  # plain h5py: self-describing units
        assert f["steps/loss"].attrs["unit"] == "nats"
        assert f["epochs/test_accuracy"].attrs["unit"] == "fraction"


def test_same_seed_same_trajectory_and_stop_resume_is_bit_identical(tiny, tmp_path):
    cfg = load_config(tiny(rule="dinp"))
    full = run(cfg, tmp_path / "full.h5", progress=False)
    part = run(cfg, tmp_path / "part.h5", progress=False, stop_after_steps=75)  # mid epoch 3
    assert part.status == "interrupted"
    again = run(cfg, tmp_path / "again.h5", progress=False)
    resumed = resume(tmp_path / "part.h5", progress=False)
    assert resumed.status == "finished"
    a, sa = _series(full.path)
    for other in (again.path, resumed.path):
        b, sb = _series(other)
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
        for k in a.snapshots:
            np.testing.assert_array_equal(a.snapshots[k], b.snapshots[k], err_msg=k)
        np.testing.assert_array_equal(a.epochs["test_loss"], b.epochs["test_loss"])
    assert read_trajectory(resumed.path).attrs["resumed_count"] == 1


def test_resume_refuses_a_random_state_from_an_older_version(tiny, tmp_path, capsys):
    """A 6-entry stream state (older npsim, other Gaussian draws) cannot continue exactly: one clear line."""
    cfg = load_config(tiny(rule="np"))
    part = run(cfg, tmp_path / "part.h5", progress=False, stop_after_steps=75)
    with h5py.File(part.path, "r+") as f:
        names = []
        f.visititems(lambda name, obj: names.append(name) if name.endswith("rng/train") else None)
        assert names
        for name in names:
            old = f[name][:6]
            del f[name]
            f[name] = old
        # as that older npsim wrote it: schema version 1, no per-slot checksums
        del f["checkpoint/digest"], f["checkpoint/slot_meta"]
        f.attrs["schema_version"] = np.int64(1)
    assert main(["train", "--resume", str(part.path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "saved by an older npsim" in err and "Traceback" not in err
    assert read_trajectory(part.path).status == "interrupted"  # the file is left as it was


def test_sigkill_then_resume_is_bit_identical_and_live_info_works(tiny, tmp_path):
    cfg_path = tiny(epochs=40, name="long.toml")
    data_rows = 600 // 20
    killed = tmp_path / "killed.h5"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "npsim.cli", "train", str(cfg_path), "--out", str(killed),
                             "--quiet", "--no-plot"], env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    live_info = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if killed.exists():
                try:
                    if len(read_trajectory(killed, snapshots=False).epochs["epoch"]) >= 3:
                        # npsim info on the file of a live run, as a user would
                        live_info = subprocess.run([sys.executable, "-m", "npsim.cli", "info", str(killed)],
                                                   capture_output=True, text=True, timeout=60)
                        break
                except Exception:
                    pass
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert live_info is not None and live_info.returncode == 0, live_info and live_info.stderr
    assert "running" in live_info.stdout
    tr = read_trajectory(killed, snapshots=False)
    assert tr.status == "running" and len(tr.epochs["epoch"]) < 40
    r = subprocess.run([sys.executable, "-m", "npsim.cli", "train", "--resume", str(killed), "--quiet", "--no-plot"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    full = run(load_config(cfg_path), tmp_path / "full.h5", progress=False)
    a, sa = _series(full.path)
    b, sb = _series(killed)
    assert sa["loss"].shape == (40 * data_rows,)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    for k in a.snapshots:
        np.testing.assert_array_equal(a.snapshots[k], b.snapshots[k], err_msg=k)


def _cli(argv, capsys):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_cli_bad_input_is_one_line_exit_2(tiny, tmp_path, capsys):
    good = tiny()
    cases = []
    cases.append(([ "train", tmp_path / "nope.toml"], "not found"))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(good.read_text().replace("sigma = 1e-3", "sigmaa = 1e-3"))
    cases.append((["train", unknown], f"{unknown}: unknown key 'rule.sigmaa'"))
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(good.read_text().replace("epochs = 6", 'epochs = "six"'))
    cases.append((["train", wrong], "key 'train.epochs'"))
    nodata = tmp_path / "nodata.toml"
    nodata.write_text(good.read_text().replace('name = "tiny"\npath', 'name = "mnist"\npath').replace(
        str(tmp_path / "tiny.npz"), str(tmp_path / "missing")))
    cases.append((["train", nodata], "looked in"))
    cases.append((["train", good, "--set", "rule.name=bp", "--set", "network.node=heaviside"], "BP needs the derivative"))
    cases.append((["train", good, "--set", "rule.name=np", "--set", "rule.noise=intrinsic"], "inaccessible"))
    noth5 = tmp_path / "notes.h5"
    noth5.write_text("not hdf5")
    for cmd in (["info", noth5], ["plot", noth5, "-o", tmp_path / "x.png"], ["train", "--resume", noth5]):
        cases.append((cmd, str(noth5)))
    ok = tmp_path / "ok.h5"
    assert main(["train", str(good), "--out", str(ok), "--quiet", "--no-plot"]) == 0
    capsys.readouterr()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(ok.read_bytes()[: ok.stat().st_size // 2])
    for cmd in (["info", trunc], ["plot", trunc, "-o", tmp_path / "y.png"], ["train", "--resume", trunc]):
        cases.append((cmd, str(trunc)))
    cases.append((["train", good, "--out", ok], "exists; pass --overwrite"))
    cases.append((["train", "--resume", ok], "finished"))
    for argv, needle in cases:
        code, err = _cli(argv, capsys)
        assert code == 2, (argv, code, err)
        assert len(err) == 1 and err[0].startswith("npsim: error:") and needle in err[0], (argv, err)
    with pytest.raises(SystemExit) as exc:  # argparse usage errors: exit 2 as well
        main(["train", "--sed", "1"])
    assert exc.value.code == 2


def test_diverging_run_is_marked_failed_and_keeps_its_data(tiny, tmp_path, capsys):
    cfg = tiny(rule="bp")
    out = tmp_path / "nan.h5"
    code, err = _cli(["train", cfg, "--out", out, "--quiet", "--no-plot", "--set", "optimizer.name=sgd",
                      "--set", "optimizer.lr=1e30"], capsys)
    assert code == 1 and "marked failed" in err[-1], err
    tr = read_trajectory(out)
    assert tr.status == "failed" and "step" in tr.attrs["message"]
    assert tr.attrs["failed_step"] == len(tr.steps["loss"])  # every finite step before it was kept
    assert np.all(np.isfinite(tr.steps["loss"]))


def test_cli_train_info_plot_compare(tiny, tmp_path, capsys):
    outs = []
    for rule in ("bp", "danp"):
        out = tmp_path / f"{rule}.h5"
        assert main(["train", str(tiny(rule=rule)), "--out", str(out), "--quiet", "--set", f'name="t-{rule}"']) == 0
        assert out.with_suffix(".png").stat().st_size > 10000
        outs.append(out)
    assert main(["info", str(outs[0])]) == 0
    assert main(["compare", *map(str, outs)]) == 0
    assert main(["plot", *map(str, outs), "-o", str(tmp_path / "both.png")]) == 0
    text = capsys.readouterr().out
    assert "t-bp" in text and "t-danp" in text
    assert (tmp_path / "both.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data"]) == 0


def test_frozen_layers_keep_their_initial_weights(tiny, tmp_path):
    """train.freeze: a control run in which only the read-out learns (W, b and R of frozen layers stay)."""
    from npsim.experiment.assemble import build

    cfg = load_config(tiny(epochs=2)).with_overrides({"train.freeze": [0, 1]})
    res = run(cfg, tmp_path / "frozen.h5", progress=False)
    final = {k: v[-1] for k, v in read_trajectory(res.path).snapshots.items() if k != "epoch"}
    ex = build(cfg)
    init = ex.net.init(ex.backend.stream(np.random.SeedSequence(cfg.seed).spawn(2)[0]), ex.backend)
    for k in ("layer0/W", "layer0/b", "layer0/R", "layer1/W", "layer1/R"):
        np.testing.assert_array_equal(final[f"params/{k}"], init[k], err_msg=k)
    assert not np.array_equal(final["params/layer2/W"], init["layer2/W"])
    bad = load_config(tiny()).with_overrides({"train.freeze": [5]})
    with pytest.raises(ValueError, match="train.freeze: no layer 5"):
        run(bad, tmp_path / "bad.h5", progress=False)
