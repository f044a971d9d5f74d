"""NP and INP are unbiased gradient estimators for small σ (issue acceptance 2).

Fixed network 20-30-30-5 (tanh, float64), fixed batch of 32 teacher-student
samples. The mean of many noise draws must align with the BP gradient; a
single draw's alignment must follow the analytic law for isotropic noise.
"""

import numpy as np
import pytest
from conftest import mlp
from scipy.special import gammaln

from npsim.io.data.synthetic import teacher_student
from npsim.learn import alignment, make_rule

DRAWS = 2000


@pytest.fixture
def setup(be64):
    net = mlp((20, 30, 30, 5))
    params = net.init(be64.stream(0), be64)
    x, y = teacher_student(32, seed=1)
    return net, params, x, y


@pytest.mark.parametrize("rule,threshold", [("inp", 0.99), ("np", 0.95), ("anp", 0.85)])
def test_mean_update_aligns_with_bp(be64, setup, rule, threshold):
    net, params, x, y = setup
    # `perturbations` stacks DRAWS independent noise draws and averages their updates
    out = make_rule(rule, sigma=1e-5, perturbations=DRAWS)(net, params, x, y, be64.stream(2))
    cos = alignment(net, params, y, out)
    assert cos.min() >= threshold, cos


def expected_abs_cos(n: int) -> float:
    """E|z_1| / ‖z‖ for z ~ N(0, I_n): Γ(n/2) / (√π Γ((n+1)/2)) ≈ √(2/(π n))."""
    return float(np.exp(gammaln(n / 2) - gammaln((n + 1) / 2)) / np.sqrt(np.pi))


@pytest.mark.parametrize("hidden", [8, 64])
def test_single_draw_inp_alignment_follows_isotropic_law(be64, hidden):
    """For one sample, INP's update for layer l is (gᵀε) ε N_l/‖ε‖² x^T: its cosine
    with BP is |gᵀε|/(‖g‖‖ε‖), whose mean depends only on the width N_l."""
    net = mlp((20, hidden, hidden, 5))
    params = net.init(be64.stream(0), be64)
    x, y = teacher_student(1, seed=3)
    bp = net.backward(params, net.forward(params, x, y), y)
    rule, rng = make_rule("inp", sigma=1e-5), be64.stream(4)
    cos = np.array([alignment(net, params, y, rule(net, params, x, y, rng), bp) for _ in range(3000)])
    mean, se = cos.mean(axis=0), cos.std(axis=0) / np.sqrt(len(cos))
    want = np.array([expected_abs_cos(n) for n in (hidden, hidden, 5)])
    assert np.all(np.abs(mean - want) < 5 * se), (mean, want, se)


def test_single_draw_np_alignment_is_worse_than_inp(be64, setup):
    """NP perturbs every unit at once, so each layer's estimate also carries the other
    layers' noise: its single-draw alignment is below INP's in every layer."""
    net, params, x, y = setup
    x, y = x[:1], y[:1]
    bp = net.backward(params, net.forward(params, x, y), y)
    means = {}
    for name in ("np", "inp"):
        rule, rng = make_rule(name, sigma=1e-5), be64.stream(5)
        means[name] = np.mean([alignment(net, params, y, rule(net, params, x, y, rng), bp)
                               for _ in range(1500)], axis=0)
    assert np.all(means["np"] < means["inp"]), means
