"""The decorrelation rule removes strong input correlations (issue acceptance 3)."""

import numpy as np
import pytest

from npsim.learn.rules import decorrelation_step


def mean_abs_offdiag_corr(x):
    c = np.corrcoef(x, rowvar=False)
    return np.abs(c[~np.eye(c.shape[0], dtype=bool)]).mean()


def correlated_gaussian(n, rho, seed):
    """Covariance (1-ρ) I + ρ 11ᵀ scaled per feature: every pair has correlation ρ."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 2.0, n)
    cov = ((1 - rho) * np.eye(n) + rho * np.ones((n, n))) * np.outer(scale, scale)
    return np.linalg.cholesky(cov), rng


@pytest.mark.parametrize("kappa", [0.0, 0.5])
@pytest.mark.parametrize("batch", [16, 256])  # B < n and B > n take different code paths
def test_learned_R_decorrelates(batch, kappa):
    n = 30
    chol, rng = correlated_gaussian(n, rho=0.7, seed=0)
    probe = rng.standard_normal((20000, n)) @ chol.T
    assert mean_abs_offdiag_corr(probe) >= 0.5
    R = np.eye(n)
    for _ in range(3000):
        x = rng.standard_normal((batch, n)) @ chol.T
        R = decorrelation_step(R, x @ R.T, lr=2e-3, kappa=kappa)
    after = mean_abs_offdiag_corr(probe @ R.T)
    assert after < 0.05, after
    if kappa:  # the variance term pulls each decorrelated variance towards 1
        var = (probe @ R.T).var(axis=0)
        assert np.abs(var - 1).max() < 0.2, var


def test_step_is_the_formula():
    rng = np.random.default_rng(1)
    for B in (5, 40):
        X, R = rng.standard_normal((B, 12)), np.eye(12) + 0.1 * rng.standard_normal((12, 12))
        C = X.T @ X / B
        C_off = C - np.diag(np.diag(C))
        np.testing.assert_allclose(decorrelation_step(R, X, 0.01), R - 0.01 * C_off @ R, rtol=1e-12)
        C_w = C - np.diag(0.7 * np.diag(C) + 0.3)
        np.testing.assert_allclose(decorrelation_step(R, X, 0.01, kappa=0.3), R - 0.01 * C_w @ R, rtol=1e-12)
