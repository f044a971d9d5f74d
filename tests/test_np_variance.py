"""scripts/np_variance.py: its noise budget recovers known signal, perturbation and minibatch variances."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from npsim.backend import get_backend
from npsim.model.network import param_key

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "np_variance.py"


@pytest.fixture(scope="module")
def script(load_script):
    return load_script(SCRIPT)


class _KnownRule:
    """G = mu + mean of the batch's rows + N(0, tau²) noise: S = ‖mu‖², v_batch = n s²/B, v_pert = n tau²."""

    name = "np"

    def __init__(self, mu, tau):
        self.mu, self.tau = mu, tau

    def __call__(self, net, params, x, y, rng):
        g = self.mu + x.mean(axis=0)[None, :] + rng.normal(self.mu.shape, scale=self.tau)
        return SimpleNamespace(grads={param_key(0, "W"): g})


def test_noise_budget_recovers_known_variances(script):
    be = get_backend("numpy", "float64")
    # few draws and a large tau: v_pert / M is 3x v_batch, so forgetting to subtract it fails the test
    n, B, s, tau = 50, 16, 2.0, 1.5
    J, M = 4000, 3
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, s, size=(J * B, n))
    mu = rng.normal(0.0, 1.0, size=(1, n))
    net = SimpleNamespace(n_layers=1, n_units=1, layers=[SimpleNamespace(n_units=1)])
    ex = SimpleNamespace(net=net, backend=be, x_train=x, y_train=np.zeros(J * B, dtype=np.int64))
    (row,) = script.noise_budget(ex, {}, _KnownRule(mu, tau), batch=B, batches=J, draws=M, seed=3)
    assert row["v_pert"] == pytest.approx(n * tau**2, rel=0.05)
    assert row["v_batch"] == pytest.approx(n * s**2 / B, rel=0.3)
    assert row["signal"] == pytest.approx(float(np.sum(mu * mu)), rel=0.25)
    assert row["units"] == 1


@pytest.mark.parametrize("local,units", [
    # danp and inp, three layers each. INP perturbs one layer (8 units); DANP all 8 + 8 + 10 at once, whose
    # noise all reaches the network's loss, or with local losses layer l's head only that of layers 0..l
    ("false", ["26"] * 3 + ["8", "8", "10"]),
    ("true", ["8", "16", "26"] + ["8", "8", "10"]),
])
def test_script_runs_on_a_small_spiking_net(tmp_path, local, units):
    res = subprocess.run([sys.executable, str(SCRIPT), "--widths", "8", "--batches", "2", "--draws", "2",
                          "--set", "data.n_train=512", "--set", "network.simulation.steps=3",
                          "--set", f"rule.local_losses={local}"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = [line for line in res.stdout.splitlines() if line.startswith("| 8 |")]
    assert len(rows) == 6
    assert [r.split("|")[4].strip() for r in rows] == units
