"""Sweeps end to end: expansion and validation, Dask runs, kill and re-run, failures, index, analysis, CLI."""

import csv
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from conftest import three_class_npz

from npsim.analysis import aggregate, load_sweep, sweep_curves, sweep_text
from npsim.cli import main
from npsim.experiment.loop import run
from npsim.experiment.sweep import load_sweep_file, read_index, run_name
from npsim.io.trajectory import read_trajectory

BASE = """
name = "tiny"

[data]
name = "tiny"
path = "{data}"

[network]
hidden = [16, 12]
node = "tanh"

[rule]
name = "danp"
sigma = 1e-3

[optimizer]
name = "adam"
lr = 3e-3

[train]
epochs = {epochs}
batch_size = 20
diagnostics_every = 5
eval_train_samples = 200
"""

RULES_X_LR = """
name = "{name}"
base = "base.toml"
out = "{out}"
seeds = [{seeds}]

[grid]
"rule.name" = ["bp", "danp"]
optimizer.lr = [1e-3, 3e-3]
"""


@pytest.fixture
def tiny(tmp_path):
    """A small 3-class npz data set, a base config for it, and a sweep-file writer."""
    three_class_npz(tmp_path / "tiny.npz", 400, 200)

    def write(text, epochs=2, name="sweep.toml"):
        (tmp_path / "base.toml").write_text(BASE.format(data=tmp_path / "tiny.npz", epochs=epochs))
        p = tmp_path / name
        p.write_text(text)
        return p
    return write


@pytest.fixture(scope="module")
def scheduler():
    """A LocalCluster of 2 worker processes shared by the tests of this module; its scheduler's address."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, silence_logs=logging.ERROR)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close(timeout=20)


def _index(path):
    with open(path, newline="") as fh:
        return {r["run"]: r for r in csv.DictReader(fh)}


def _cli(argv, capsys):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err.strip().splitlines()


def _alive(pids):
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.Error:
            pass
    return out


def test_names_expansion_and_random_draws(tiny, tmp_path):
    text = RULES_X_LR.format(name="s", out=tmp_path / "o", seeds="0, 1, 2") + """
[random]
n = 2
random_seed = 7
[random.params]
"rule.sigma" = { low = 1e-4, high = 1e-2, log = true }
"rule.perturbations" = { choices = [1, 2] }
"""
    sw = load_sweep_file(tiny(text))
    assert sw.keys == ["rule.name", "optimizer.lr", "rule.sigma", "rule.perturbations"]
    assert len(sw.runs) == 2 * 2 * 2 * 3
    r = sw.runs[0]
    assert r.name.startswith("rule.name=bp,optimizer.lr=0.001,rule.sigma=") and r.name.endswith(",seed=0")
    assert r.config.name == r.name and r.config.seed == 0 and r.config.optimizer.lr == 1e-3
    assert r.path == tmp_path / "o" / f"{r.name}.h5"
    sigmas = {x.params["rule.sigma"] for x in sw.runs}
    assert len(sigmas) == 2 and all(1e-4 <= s <= 1e-2 and float(f"{s:.4g}") == s for s in sigmas)
    assert [x.name for x in load_sweep_file(tmp_path / "sweep.toml").runs] == [x.name for x in sw.runs]  # seeded
    # names: readable when safe; a hash whenever a value had to be changed, so names never collide
    assert run_name({"rule.name": "np", "optimizer.lr": 1e-05}, 2) == "rule.name=np,optimizer.lr=1e-05,seed=2"
    a, b = run_name({"data.path": "/x/a b.npz"}, 0), run_name({"data.path": "/x/a_b.npz"}, 0)
    assert a != b and re.fullmatch(r"data\.path=_x_a_b\.npz,seed=0-[0-9a-f]{10}", a)
    assert re.fullmatch(r"data\.path=_x_a_b\.npz,seed=0-[0-9a-f]{10}", b)  # "/" was replaced here too
    assert run_name({"network.hidden": [8, 8]}, 0) != run_name({"network.hidden": [88]}, 0)


def test_bad_sweep_files_are_one_line_exit_2(tiny, tmp_path, capsys):
    good = RULES_X_LR.format(name="s", out=tmp_path / "o", seeds="0")
    cases = [
        (good.replace("seeds", "seedz"), "unknown key 'seedz'"),
        (good.replace('"rule.name"', '"rule.nam"'), "[grid]: unknown key 'rule.nam'"),
        (good.replace("optimizer.lr = [1e-3, 3e-3]", "optimizer.lr = [1e-3, -1.0]"), "key 'optimizer.lr'"),
        (good.replace('base = "base.toml"\n', ""), "missing key 'base'"),
        (good.replace('base = "base.toml"', 'base = "nope.toml"'), "key 'base'"),
        (good.replace('["bp", "danp"]', '"bp"'), "key 'grid.rule.name': must be a list"),
        (good + '\n[set]\n"optimizer.lr" = 1e-2\n', "key 'set.optimizer.lr': also swept"),
        (good + '\n[set]\n"train.epoch" = 1\n', "[set]: unknown key 'train.epoch'"),
        (good.replace('"rule.name"', '"seed"'), "key 'grid.seed'"),
        (good + '\n[random]\nn = 2\n[random.params]\n"rule.sigma" = { low = 0.0, high = 1.0, log = true }\n',
         "log = true needs low > 0"),
        (good.replace("seeds = [0]", "seeds = [0, 0]"), "key 'seeds': seeds repeat"),
    ]
    for text, needle in cases:
        path = tiny(text, name="bad.toml")
        code, _, err = _cli(["sweep", path], capsys)
        assert code == 2, (needle, err)
        assert len(err) == 1 and err[0].startswith("npsim: error:") and needle in err[0] and str(path) in err[0], \
            (needle, err)
    assert not (tmp_path / "o").exists()  # nothing started
    code, _, err = _cli(["compare", tmp_path], capsys)  # a folder without an index
    assert code == 2 and len(err) == 1 and "no sweep index" in err[0]
    code, _, err = _cli(["sweep", tiny(good), "--workers", "0"], capsys)
    assert code == 2 and "--workers" in err[0]


def test_12_runs_on_local_cluster_killed_midway_then_rerun(tiny, tmp_path, capsys):
    """Acceptance: >= 12 runs on a LocalCluster; a killed driver leaves no workers; re-running does only the rest."""
    out = tmp_path / "runs"
    sweep = tiny(RULES_X_LR.format(name="rules", out=out, seeds="0, 1, 2"), epochs=3)
    proc = subprocess.Popen([sys.executable, "-m", "npsim.cli", "sweep", str(sweep), "--workers", "2", "--quiet"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    children: set[int] = set()
    before = {}
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                children |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
            except psutil.Error:
                pass
            if (out / "index.csv").exists():
                before = _index(out / "index.csv")
                if sum(r["status"] == "finished" for r in before.values()) >= 2:
                    break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(children) >= 2  # the LocalCluster's worker processes
    deadline = time.time() + 20
    while _alive(children) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(children), "worker processes outlived the killed driver"

    assert len(before) == 12
    done_before = [n for n, r in before.items() if r["status"] == "finished"]
    assert 2 <= len(done_before) < 12
    stamps = {n: (out / before[n]["file"]).stat().st_mtime_ns for n in done_before}

    code, stdout, err = _cli(["sweep", sweep, "--workers", "2", "--quiet"], capsys)
    assert code == 0, err
    assert "12 of 12 runs finished" in stdout
    plan = next(m for m in map(re.compile(r"(\d+) finished, 0 failed, (\d+) to resume, (\d+) to run").search, err) if m)
    fin, res, new = map(int, plan.groups())
    assert fin >= len(done_before) and res + new >= 1 and fin + res + new == 12  # only the missing work
    after = _index(out / "index.csv")
    assert all(r["status"] == "finished" for r in after.values()) and len(after) == 12
    for n, t in stamps.items():
        assert (out / after[n]["file"]).stat().st_mtime_ns == t, f"finished run {n} was run again"
    names = {f"rule.name={r},optimizer.lr={lr},seed={s}.h5" for r in ("bp", "danp") for lr in ("0.001", "0.003")
             for s in range(3)}
    assert {r["file"] for r in after.values()} == names
    assert {p.name for p in out.glob("*.h5")} == names
    tr = read_trajectory(out / "rule.name=danp,optimizer.lr=0.003,seed=1.h5", snapshots=False)
    assert tr.status == "finished" and tr.attrs["name"] == "rule.name=danp,optimizer.lr=0.003,seed=1"
    assert len(tr.epochs["epoch"]) == 3

    # analysis and the CLI on the sweep
    rows = load_sweep(sweep)
    groups = aggregate(rows)
    assert len(groups) == 4 and all(g["finished"] == 3 and g["final_test_accuracy_n"] == 3 for g in groups)
    bp = next(g for g in groups if g["rule.name"] == "bp" and g["optimizer.lr"] == 3e-3)
    vals = [r["final_test_accuracy"] for r in rows if r["rule.name"] == "bp" and r["optimizer.lr"] == 3e-3]
    assert bp["final_test_accuracy_mean"] == pytest.approx(np.mean(vals))
    assert bp["final_test_accuracy_low"] <= bp["final_test_accuracy_mean"] <= bp["final_test_accuracy_high"]
    assert bp["alignment_mean"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)  # BP is aligned with itself
    danp = next(g for g in groups if g["rule.name"] == "danp" and g["optimizer.lr"] == 3e-3)
    assert len(danp["alignment_mean"]) == 3 and 0 < np.mean(danp["alignment_mean"]) < 1
    c = sweep_curves(rows)
    assert all(len(g["epoch"]) == 3 and np.all(g["n"] == 3) for g in c)
    code, stdout, _ = _cli(["compare", out], capsys)
    assert code == 0 and "12 runs (12 finished)" in stdout
    lines = stdout.splitlines()
    assert lines[1].split()[:3] == ["rule", "lr", "runs"] and len([x for x in lines if " 3/3 " in x]) == 4
    code, stdout, _ = _cli(["plot", sweep], capsys)
    png = out / "sweep.png"
    assert code == 0 and stdout.strip() == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 30000


def test_rerun_skips_finished_resumes_interrupted_replaces_unreadable(tiny, tmp_path, scheduler, capsys):
    sweep = tiny(RULES_X_LR.format(name="re", out=tmp_path / "re", seeds="0, 1").replace(
        "optimizer.lr = [1e-3, 3e-3]", "optimizer.lr = [3e-3]") + "\n[set]\ntrain.epochs = 3\n")
    sw = load_sweep_file(sweep)
    fin, garbage, interrupted, missing = sw.runs  # bp s0, bp s1, danp s0, danp s1
    assert (interrupted.params["rule.name"], interrupted.seed) == ("danp", 0) and not missing.path.exists()
    run(fin.config, fin.path, progress=False)
    part = run(interrupted.config, interrupted.path, progress=False, stop_after_steps=30)  # in epoch 2 of 3
    assert part.status == "interrupted"
    stamp = (fin.path.stat().st_mtime_ns, fin.path.stat().st_size)
    garbage.path.write_bytes(b"not an hdf5 file")

    code, stdout, err = _cli(["sweep", sweep, "--scheduler", scheduler, "--quiet"], capsys)
    assert code == 0, err
    assert any("1 finished, 0 failed, 1 to resume, 2 to run" in line for line in err), err
    assert (fin.path.stat().st_mtime_ns, fin.path.stat().st_size) == stamp  # not touched
    t = read_trajectory(interrupted.path, snapshots=False)
    assert t.status == "finished" and t.attrs["resumed_count"] == 1 and list(t.epochs["epoch"]) == [1, 2, 3]
    g = read_trajectory(garbage.path, snapshots=False)
    assert g.status == "finished" and g.attrs["resumed_count"] == 0 and g.attrs["name"] == garbage.name
    assert garbage.path.with_name(garbage.path.name + ".unreadable").read_bytes() == b"not an hdf5 file"  # kept
    keys, rows = read_index(tmp_path / "re")
    assert keys == ["rule.name", "optimizer.lr"] and len(rows) == 4
    assert all(r["status"] == "finished" and r["epochs"] == 3 for r in rows)
    assert {r["run"]: r["resumed_count"] for r in rows}[interrupted.name] == 1
    assert all(isinstance(r["optimizer.lr"], float) and isinstance(r["seed"], int) for r in rows)

    code, stdout, err = _cli(["sweep", sweep, "--scheduler", scheduler, "--quiet"], capsys)  # nothing left
    assert code == 0 and any("4 finished, 0 failed, 0 to resume, 0 to run" in line for line in err)
    assert (fin.path.stat().st_mtime_ns, fin.path.stat().st_size) == stamp


def test_failed_runs_are_recorded_and_do_not_stop_the_others(tiny, tmp_path, scheduler, capsys):
    text = f"""
name = "fail"
base = "base.toml"
out = "{tmp_path / 'fail'}"
seeds = [0]

[set]
rule.name = "bp"
optimizer.name = "sgd"

[grid]
"optimizer.lr" = [1e-2, 1e30]
"data.path" = ["tiny.npz", "missing.npz"]
"""
    sweep = tiny(text)
    code, stdout, err = _cli(["sweep", sweep, "--scheduler", scheduler, "--quiet"], capsys)
    assert code == 1 and "1 of 4 runs finished, 3 failed" in stdout, (stdout, err)
    keys, rows = read_index(tmp_path / "fail")
    by = {(r["optimizer.lr"], os.path.basename(r["data.path"])): r for r in rows}
    assert by[(1e-2, "tiny.npz")]["status"] == "finished" and by[(1e-2, "tiny.npz")]["message"] == ""
    div = by[(1e30, "tiny.npz")]
    assert div["status"] == "failed" and "diverged" in div["message"] and "loss became" in div["message"]
    assert read_trajectory(div["path"], snapshots=False).status == "failed"
    for lr in (1e-2, 1e30):
        r = by[(lr, "missing.npz")]
        assert r["status"] == "failed" and "DataNotFound" in r["message"] and "missing.npz" in r["message"]
        assert not os.path.exists(r["path"])
        assert re.search(r"-[0-9a-f]{10}\.h5$", r["file"])  # a path needed sanitising: hashed name
    text_out = sweep_text(tmp_path / "fail")
    assert "3 failed" in text_out and text_out.count("\nfailed: ") == 3

    # again: failed runs are kept (not re-run), with their messages
    stamp = os.stat(div["path"]).st_mtime_ns
    code, stdout, err = _cli(["sweep", sweep, "--scheduler", scheduler, "--quiet"], capsys)
    assert code == 1 and any("1 finished, 3 failed, 0 to resume, 0 to run" in line for line in err), err
    assert os.stat(div["path"]).st_mtime_ns == stamp
    again = {r["run"]: r for r in read_index(tmp_path / "fail")[1]}
    assert all(again[r["run"]]["status"] == r["status"] and again[r["run"]]["message"] == r["message"] for r in rows)
    # --retry-failed runs them from scratch (they fail again)
    code, stdout, err = _cli(["sweep", sweep, "--scheduler", scheduler, "--quiet", "--retry-failed"], capsys)
    assert code == 1 and any("0 to resume, 3 to run" in line for line in err), err
    assert os.stat(div["path"]).st_mtime_ns != stamp


def test_sweep_through_a_separate_dask_scheduler_and_worker(tiny, tmp_path, capsys):
    """A real `dask scheduler` and `dask worker`, as separate processes on localhost, run a sweep via --scheduler."""
    from distributed import Client

    sweep = tiny(RULES_X_LR.format(name="remote", out=tmp_path / "remote", seeds="0").replace(
        '["bp", "danp"]', '["danp"]'))
    info = tmp_path / "scheduler.json"
    logs = [open(tmp_path / f"{n}.log", "w") for n in ("scheduler", "worker")]
    cli = [sys.executable, "-m"]
    procs = [subprocess.Popen(cli + ["distributed.cli.dask_scheduler", "--scheduler-file", str(info), "--port", "0",
                                     "--host", "127.0.0.1", "--no-dashboard"], stdout=logs[0], stderr=logs[0])]
    try:
        procs.append(subprocess.Popen(cli + ["distributed.cli.dask_worker", "--scheduler-file", str(info),
                                             "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"],
                                      stdout=logs[1], stderr=logs[1]))
        deadline = time.time() + 60
        while not info.exists():
            assert time.time() < deadline and procs[0].poll() is None, (tmp_path / "scheduler.log").read_text()
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
        code, stdout, err = _cli(["sweep", sweep, "--scheduler", address, "--quiet"], capsys)
        assert code == 0, err
        assert "2 of 2 runs finished" in stdout and any(address in line for line in err)
        worker_pids = {procs[1].pid} | {c.pid for c in psutil.Process(procs[1].pid).children(recursive=True)}
        for r in load_sweep(tmp_path / "remote"):
            assert r["status"] == "finished"
            assert read_trajectory(r["path"], snapshots=False).attrs["writer_pid"] in worker_pids
        code, stdout, err = _cli(["sweep", sweep, "--scheduler-file", info, "--out", tmp_path / "again", "--quiet"],
                                 capsys)
        assert code == 0 and "2 of 2 runs finished" in stdout, err
        assert all(read_trajectory(r["path"], snapshots=False).attrs["writer_pid"] in worker_pids
                   for r in load_sweep(tmp_path / "again"))
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in logs:
            f.close()
