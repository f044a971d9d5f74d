"""On a real NVIDIA GPU (CuPy): the CUDA kernels against their NumPy twins, the same noise as on the CPU,
training steps equal to the NumPy backend's, and resume across backends. Skipped without a GPU;
``scripts/gpu_check.sh`` runs them (``pytest -m gpu``)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

cupy = pytest.importorskip("cupy")
try:
    if cupy.cuda.runtime.getDeviceCount() < 1:
        pytest.skip("no CUDA device", allow_module_level=True)
except Exception as exc:  # noqa: BLE001 - no driver
    pytest.skip(f"no usable CUDA device ({exc})", allow_module_level=True)

from conftest import three_class_npz  # noqa: E402
from npsim.backend import get_backend  # noqa: E402
from npsim.backend.kernels import cuda, reference  # noqa: E402
from npsim.backend.kernels.normal import standard_normal  # noqa: E402
from npsim.backend.kernels.uniform import standard_uniform  # noqa: E402
from npsim.experiment.config import load_config  # noqa: E402
from npsim.experiment.loop import resume, run  # noqa: E402
from npsim.io.trajectory import read_trajectory  # noqa: E402
from npsim.learn import adam, make_rule, train_step, trainable  # noqa: E402
from npsim.model import LIF, Dense, Network, Simulation, make_loss, make_node  # noqa: E402


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("start", [0, 7, 123457])
def test_random_streams_match_the_cpu_bit_for_bit(dtype, start):
    n = 1_000_003
    gpu = cuda.standard_normal(12345, n, dtype, start=start)
    np.testing.assert_array_equal(cupy.asnumpy(gpu), standard_normal(12345, n, dtype, start=start))
    gpu = cuda.standard_uniform(12345, n, dtype, start=start)
    np.testing.assert_array_equal(cupy.asnumpy(gpu), standard_uniform(12345, n, dtype, start=start))


def test_kernels_match_their_twins():
    rng = np.random.default_rng(0)
    d, bias, perturb = (rng.standard_normal(s).astype(np.float32) for s in ((64, 300), (300,), (128, 300)))
    a_ref, x_ref = reference.drive_activate(d.copy(), bias, perturb, 3, 0.01, clean_rows=64)
    a, x = cuda.drive_activate(cupy.asarray(d), cupy.asarray(bias), cupy.asarray(perturb), 3, 0.01, clean_rows=64)
    np.testing.assert_array_equal(cupy.asnumpy(a), a_ref)
    np.testing.assert_array_equal(cupy.asnumpy(x), x_ref)
    p, g, m, v = (rng.standard_normal(10_000).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    host = [p.copy(), g, m.copy(), v.copy()]
    dev = [cupy.asarray(a) for a in (p, g, m, v)]
    sq_ref = float(reference.adam_step(*host, b1=0.9, b2=0.999, step_size=1e-3, eps=1e-8))
    sq = float(cuda.adam_step(*dev, b1=0.9, b2=0.999, step_size=1e-3, eps=1e-8))
    for a, b in zip(dev, host):
        np.testing.assert_allclose(cupy.asnumpy(a), b, rtol=1e-6, atol=1e-9)
    assert sq == pytest.approx(sq_ref, rel=1e-5)


def _net():
    return Network([Dense(20, 64, make_node("leaky_relu"), True), Dense(64, 3, make_node("linear"), True)],
                   make_loss("cross_entropy"))


@pytest.mark.parametrize("rule", ["bp", "np", "inp", "anp", "danp"])
def test_a_training_step_on_the_gpu_equals_the_cpu(rule):
    x = np.random.default_rng(1).standard_normal((128, 20)).astype(np.float32)
    y = np.arange(128) % 3
    results = []
    for name in ("numpy", "cupy"):
        be = get_backend(name)
        net = _net()
        params = {k: be.asarray(v) for k, v in net.init(get_backend("numpy").stream(0), get_backend("numpy")).items()}
        opt = adam(1e-2)
        state, rng = opt.init(trainable(params)), be.stream(1)
        r = make_rule(rule, **({} if rule == "bp" else {"sigma": 1e-2, "perturbations": 2}))
        for _ in range(3):
            params, state, _, st = train_step(net, r, opt, params, state, be.asarray(x), be.asarray(y, dtype=np.int64),
                                              rng, stats=True, align=True)
        results.append(({k: be.to_numpy(v) for k, v in params.items()}, st))
    (a, sa), (b, sb) = results
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(sb.update_norm, sa.update_norm, rtol=1e-3)


def test_spiking_step_on_the_gpu():
    net = Network([Dense(20, 32, LIF(tau=8.0, threshold=0.2, membrane_noise=0.05)), Dense(32, 3, make_node("linear"))],
                  make_loss("cross_entropy"), simulation=Simulation(steps=30, encoding="poisson"))
    x = np.abs(np.random.default_rng(2).standard_normal((64, 20))).astype(np.float32) / 3
    out = []
    for name in ("numpy", "cupy"):
        be = get_backend(name)
        params = {k: be.asarray(v) for k, v in net.init(get_backend("numpy").stream(0), get_backend("numpy")).items()}
        tr = net.forward(params, be.asarray(x), be.asarray(np.arange(64) % 3, dtype=np.int64), rng=be.stream(3))
        out.append(be.to_numpy(tr.post[0]))
    moved = np.abs(out[0] - out[1]) > 1e-6  # the same draws; products may round differently on the GPU
    assert moved.mean() < 0.01


def test_a_run_moves_between_gpu_and_cpu(tmp_path):
    import h5py

    data = three_class_npz(tmp_path / "tiny.npz", 400, 100)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'name = "g"\nbackend = "cupy"\n[data]\nname = "tiny"\npath = "{data}"\n[network]\nhidden = [32]\n'
                   f'[rule]\nname = "danp"\nsigma = 1e-2\n[train]\nepochs = 3\nbatch_size = 40\n')
    full = run(load_config(cfg), tmp_path / "full.h5", progress=False)
    part = run(load_config(cfg), tmp_path / "part.h5", progress=False, stop_after_steps=12)
    with h5py.File(part.path, "r+") as f:
        f.attrs["config"] = f.attrs["config"].replace('backend = "cupy"', 'backend = "numpy"')
    assert resume(part.path, progress=False).status == "finished"
    a, b = read_trajectory(full.path), read_trajectory(part.path)
    np.testing.assert_allclose(b.steps["loss"], a.steps["loss"], rtol=1e-3, atol=1e-4)
    assert a.attrs["device"].startswith("cuda:")
