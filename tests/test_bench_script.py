"""scripts/bench_rules.py: its PyTorch and JAX reference rules equal npsim's, and the script runs end to end."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npsim.learn.optim import adam
from npsim.learn.step import train_step, trainable

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_rules.py"
SIZES = (7, 6, 5, 3)
SIGMA = 1e-2
LR = 1e-3
NO_TORCH = "PyTorch is not installed (it is the optional bench extra: pip install -e \".[bench]\")"
NO_JAX = "JAX is not installed (it is the optional bench extra: pip install -e \".[bench]\")"
#: (sizes, decorrelation rows): (7, 6, 5, 3) folds R into W in both stacked layers at B = 6; (7, 9, 8, 3)
#: folds only the last (8 + 6 is not fewer than the 12 stacked rows); rows = 4 subsamples the batch of 6
CASES = {"fold": ((7, 6, 5, 3), None), "mixed, 4 rows": ((7, 9, 8, 3), 4)}
RULES = ["bp", "np", "inp", "anp", "danp", "dnp", "dinp", "dbp"]
REF_CASES = [(r, c) for r in RULES for c in CASES if r.startswith("d") or c == "fold"]


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script(SCRIPT)


class Recorder:
    """A random stream that remembers every Gaussian draw, to replay it into the PyTorch rule."""

    def __init__(self, rng):
        self.rng = rng
        self.draws = []

    def normal(self, shape, scale=1.0, dtype=None):
        z = self.rng.normal(shape, scale=scale, dtype=dtype)
        self.draws.append(z.copy())
        return z

    def __getattr__(self, name):
        return getattr(self.rng, name)


def close(a, b, tol=1e-10):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.abs(b).max()), 1e-300)
    return float(np.abs(a - b).max()) <= tol * scale, float(np.abs(a - b).max()) / scale


def _check_reference(bench, rule, case, make_step):
    """Two steps of npsim and of a reference (``make_step(params, sizes, rows) -> step(draws)``, returning
    the direction as numpy arrays and the reference's parameters) from the same weights and noise."""
    sizes, rows = CASES[case]
    kw = {} if rows is None else {"decorrelation_rows": rows}
    be, net, r, params = bench.build_npsim(sizes, rule, dtype="float64", seed=0, sigma=SIGMA, **kw)
    data = np.random.default_rng(1)
    if rule.startswith("d"):  # start R away from the identity so the forward through R is checked too
        for i in net.decorrelated:
            n = sizes[i]
            params[f"layer{i}/R"] = np.eye(n) + 0.1 * data.standard_normal((n, n))
    B = 6  # below the input width 7 and above the hidden widths: both forms of npsim's C R
    x = data.standard_normal((B, sizes[0]))
    y = data.integers(0, sizes[-1], size=B).astype(np.int64)

    opt = adam(LR)
    state = opt.init(trainable(params))
    rng = Recorder(be.stream(2))
    step_ref = make_step(params, sizes, rows, x, y)
    old = {k: v.copy() for k, v in params.items()}
    for step in range(2):  # two steps: Adam's moments carry over
        params, state, out = train_step(net, r, opt, params, state, x, y, rng)
        draws = list(rng.draws)
        rng.draws.clear()
        assert (len(draws) > 0) == (rule not in ("bp", "dbp"))
        grads, new = step_ref(draws)
        assert set(grads) == set(out.grads)
        for k, g in out.grads.items():
            ok, err = close(grads[k], g)
            assert ok, f"{rule} step {step}: direction {k} differs by {err:.2e} (relative)"
        assert set(new) == set(params)
        for k in params:  # compare the changes, which are small against the parameters themselves
            ok, err = close(new[k] - old[k], params[k] - old[k])
            assert ok, f"{rule} step {step}: change of {k} differs by {err:.2e} (relative)"


@pytest.mark.parametrize("rule, case", REF_CASES)
def test_torch_rule_equals_npsim(bench, rule, case):
    torch = pytest.importorskip("torch", reason=NO_TORCH)

    def make_step(params, sizes, rows, x, y):
        replay = []

        def noise(n_rows, n):
            z = replay.pop(0)
            assert z.shape == (n_rows, n), "the PyTorch rule draws its noise in another order or shape than npsim"
            return torch.from_numpy(z)

        model = bench.TorchNet(params, sizes, rule, lr=LR, sigma=SIGMA, noise=noise, rows=rows)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def step(draws):
            replay.extend(draws)
            grads = model.step(xt, yt)
            assert not replay, f"PyTorch used fewer noise draws than npsim's {len(draws)}"
            return {k: g.numpy() for k, g in grads.items()}, model.params()

        return step

    _check_reference(bench, rule, case, make_step)


@pytest.fixture(scope="module")
def jax64():
    jax = pytest.importorskip("jax", reason=NO_JAX)
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield jax
    jax.config.update("jax_enable_x64", old)


@pytest.mark.parametrize("rule, case", REF_CASES)
def test_jax_rule_equals_npsim(bench, jax64, rule, case):
    def make_step(params, sizes, rows, x, y):
        base, dec = bench.split_rule(rule)
        model = bench.JaxNet(params, sizes, base, dec, lr=LR, sigma=SIGMA, decorrelation_lr=bench.DECORRELATION_LR,
                             slope=bench.SLOPE, rows=rows)
        assert model.state["p"]["W"][0].dtype == np.float64

        def step(draws):
            grads = model.step(jax64.numpy.asarray(x), jax64.numpy.asarray(y), eps=draws or None)
            return {k: np.asarray(g) for k, g in grads.items()}, model.params()

        return step

    _check_reference(bench, rule, case, make_step)


def test_jax_draws_its_own_noise_inside_the_jitted_step(bench, jax64):
    """Without replayed noise the JAX step draws from jax.random: two steps differ, a seed repeats them."""
    sizes = CASES["fold"][0]
    _, _, _, params = bench.build_npsim(sizes, "anp", dtype="float64", sigma=SIGMA)
    x = np.random.default_rng(1).standard_normal((6, sizes[0]))
    y = np.arange(6) % sizes[-1]
    runs = []
    for _ in range(2):
        model = bench.JaxNet(params, sizes, "anp", False, lr=LR, sigma=SIGMA, decorrelation_lr=1e-3,
                             slope=bench.SLOPE, seed=3)
        runs.append([np.asarray(model.step(x, y)["layer0/W"]) for _ in range(2)])
    assert not np.array_equal(runs[0][0], runs[0][1])
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


def test_gemm_floor_lists_the_products_of_each_rule(bench):
    s = (784, 1000, 1000, 1000, 10)
    count = {r: len(bench.gemm_shapes(r, s, 64)) for r in ("bp", "np", "inp", "anp", "danp")}
    # NP/ANP: clean+noisy stacked above layer 0; DANP: 8 + 4 + 8, and one more where layer 3 (10 units) folds R
    assert count == {"bp": 11, "np": 8, "inp": 14, "anp": 8, "danp": 21}
    names = [sh[3] for sh in bench.gemm_shapes("danp", s, 64)]
    assert "fold W3R3" in names and "fold W1R1" not in names  # 1000 units + 64 clean rows exceed the 128 stacked
    assert "fold W1R1" in [sh[3] for sh in bench.gemm_shapes("danp", s, 1024)]
    sub = [sh[:3] for sh in bench.gemm_shapes("danp", s, 1024, rows=32) if "decorrelation" in sh[3]]
    assert (32, 784, 784) in sub and (784, 32, 784) in sub
    # DANP's decorrelation update: X R then X^T (X R) below the width, X^T X then C R above it
    dec64 = [sh for sh in bench.gemm_shapes("danp", s, 64) if "decorrelation" in sh[3]]
    dec1024 = [sh for sh in bench.gemm_shapes("danp", s, 1024) if "decorrelation" in sh[3]]
    assert (64, 784, 784) in [sh[:3] for sh in dec64] and (784, 784, 784) in [sh[:3] for sh in dec1024]
    np_flops = bench.gemm_flops(bench.gemm_shapes("np", (10, 20, 5), 8))
    assert np_flops == 2 * (8 * 10 * 20 + 8 * 20 * 5) + 2 * 8 * 20 * 5 + 2 * (20 * 8 * 10 + 5 * 8 * 20)


def _run(args, tmp_path, prelude=None):
    if prelude is None:
        cmd = [sys.executable, str(SCRIPT), *args]
    else:
        code = (f"import runpy, sys; {prelude}; sys.argv = {[str(SCRIPT), *args]!r}; "
                f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
        cmd = [sys.executable, "-c", code]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_script_runs_end_to_end(tmp_path):
    md = tmp_path / "bench.md"
    out = _run(["--batch", "8", "--repeats", "1", "--steps", "1", "--warmup", "1", "--rules", "np", "danp",
                "--sizes", "20-16-12-4", "--threads", "1", "--markdown", str(md)], tmp_path)
    assert "batch 8:" in out and "DANP" in out and "scaling check: needs at least two batch sizes" in out
    text = md.read_text()
    assert "--sizes 20-16-12-4" in text and "threads: 1" in text
    assert "| NP |" in text and "| DANP |" in text and "GEMM floor samples/s" in text
    for ref in ("torch", "jax"):
        assert (f"{ref} samples/s" in text) == (importlib.util.find_spec(ref) is not None)


def test_script_without_torch_times_npsim_and_the_floor(tmp_path):
    md = tmp_path / "bench.md"
    md.write_text("# old tables\n<!-- notes -->\nHand-written profile notes.\n")
    out = _run(["--batch", "4", "8", "--repeats", "1", "--steps", "1", "--warmup", "0", "--rules", "bp", "inp",
                "--sizes", "12-8-3", "--markdown", str(md)], tmp_path,
               prelude="sys.modules['torch'] = None; sys.modules['jax'] = None")
    assert 'torch not installed: pip install -e ".[bench]"  (a CPU build, torch==2.13.0); no PyTorch column' in out
    assert 'jax not installed: pip install -e ".[bench]"  (jax[cpu]); no JAX column' in out
    assert "batch 4:" in out and "batch 8:" in out and "t(8)/t(4)" in out
    text = md.read_text()
    assert "torch samples/s" not in text and "jax samples/s" not in text and "## Scaling with the batch" in text
    assert "old tables" not in text and text.endswith("<!-- notes -->\nHand-written profile notes.\n")


def test_bench_spiking_prints_the_table():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_spiking.py"), "--steps", "4", "8",
                          "--repeats", "1", "--batch", "8"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.strip() and line.split()[0] in ("4", "8")]
    assert len(rows) == 2 and float(rows[1][6]) <= 1.1  # peak memory at T=8 within 10% of T=4
