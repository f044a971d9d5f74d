"""scripts/bench_snn.py: its snnTorch network computes npsim's spiking MLP, and the script runs end to end."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npsim.backend import get_backend
from npsim.model import Dense, Network, Simulation, make_loss, make_node

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_snn.py"


@pytest.fixture(scope="module")
def bench(load_script):
    pytest.importorskip("snntorch", reason="snnTorch is in the test extras: pip install -e \".[test]\"")
    return load_script(SCRIPT)


def _net(steps=12, threshold=0.3, decorrelate=False):
    lif = make_node("lif", tau=5.0, threshold=threshold, reset="zero", refractory=0.0, readout="rate")
    return Network([Dense(9, 8, lif, decorrelate), Dense(8, 6, lif, decorrelate),
                    Dense(6, 3, make_node("linear"), decorrelate)], make_loss("cross_entropy"),
                   simulation=Simulation(steps=steps, dt=1.0, encoding="current"))


@pytest.mark.parametrize("decorrelate", [False, True])
def test_snntorch_forward_equals_npsim(bench, decorrelate):
    """Same weights, same input: the same spikes (both layers fire, not all the time) and the same logits."""
    import torch

    be = get_backend("numpy", "float32")
    net = _net(decorrelate=decorrelate)
    params = net.init(be.stream(0), be, scheme="he")
    x = np.random.default_rng(1).standard_normal((64, 9)).astype(np.float32)
    y = np.arange(64) % 3
    tr = net.forward(params, x, y)
    rates = [np.asarray(tr.post[0]), np.asarray(tr.post[1])]
    for r in rates:
        assert 0.05 < r.mean() < 0.8 and len(np.unique(r)) > 3  # spiking, and not saturated
    model = bench.SnnTorchMLP(net, params)
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, tr.output, rtol=1e-5, atol=1e-5)


def test_snntorch_refuses_what_it_does_not_model(bench):
    be = get_backend("numpy", "float32")
    lif = make_node("lif", tau=5.0, threshold=0.3, reset="subtract")
    net = Network([Dense(4, 3, lif), Dense(3, 2, make_node("linear"))], make_loss("cross_entropy"),
                  simulation=Simulation(steps=4))
    with pytest.raises(ValueError, match="zero-reset LIF layer"):
        bench.SnnTorchMLP(net, net.init(be.stream(0), be))


def test_variant_parsing_keeps_bracketed_lists(bench):
    assert bench.parse_variant("frozen:train.freeze=[0,1],rule.sigma=0.2") == (
        "frozen", ["train.freeze=[0,1]", "rule.sigma=0.2"])


def test_script_runs_both_and_writes_the_table_and_figure(bench, tmp_path):
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, str(SCRIPT), "--budget", "2", "--eval-every", "1", "--set",
                          "data.n_train=512", "--set", "network.hidden=[32]", "--set", "network.simulation.steps=5",
                          "--variant", "k2:rule.perturbations=2",
                          "--variant", "cos:optimizer.schedule=cosine,train.epochs=1", "--out", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    text = (out / "table.md").read_text()
    for label in ("npsim DANP", "npsim k2", "snnTorch BPTT"):
        assert f"| {label} |" in text
    # a scheduled learning rate ends after train.epochs, and so does that run (the others use the budget)
    (cos,) = [line for line in text.splitlines() if line.startswith("| npsim cos |")]
    assert cos.split("|")[4].strip() == "1.00"
    assert (out / "accuracy_vs_time.png").stat().st_size > 10_000
