"""BP equals central finite differences in float64 (issue acceptance 1)."""

import numpy as np
import pytest
from conftest import mlp

from npsim.model.network import param_key


def _batch_loss(net, params, x, y):
    return float(net.forward(params, x, y).loss.mean())


def _fd_grad(net, params, x, y, key, h=1e-6):
    p = {k: v.copy() for k, v in params.items()}
    g = np.zeros_like(p[key])
    it = np.nditer(p[key], flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        old = p[key][idx]
        p[key][idx] = old + h
        up = _batch_loss(net, p, x, y)
        p[key][idx] = old - h
        dn = _batch_loss(net, p, x, y)
        p[key][idx] = old
        g[idx] = (up - dn) / (2 * h)
    return g


@pytest.mark.parametrize("node", ["tanh", "sigmoid", "leaky_relu"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("decorrelate", [False, True])
def test_bp_matches_finite_differences(be64, node, loss, decorrelate):
    rng = be64.stream(1)
    net = mlp((6, 7, 5, 4), node=node, loss=loss, decorrelate=decorrelate)
    params = net.init(rng, be64)
    for k in params:  # non-trivial biases and R (R = I would hide transposition errors)
        if k.endswith("/b"):
            params[k] = rng.normal(params[k].shape, scale=0.3)
        if k.endswith("/R"):
            params[k] = params[k] + rng.normal(params[k].shape, scale=0.2)
    x = rng.normal((9, 6))
    y = np.arange(9) % 4 if loss == "cross_entropy" else rng.normal((9, 4))
    if node == "leaky_relu":  # keep pre-activations away from the kink, where FD is not a derivative
        trace = net.forward(params, x, y)
        assert min(np.abs(a).min() for a in trace.pre[:-1]) > 1e-4
    grads = net.backward(params, net.forward(params, x, y), y)
    for i in range(net.n_layers):
        for name in ("W", "b"):
            k = param_key(i, name)
            fd = _fd_grad(net, params, x, y, k)
            rel = np.abs(grads[k] - fd).max() / np.abs(fd).max()
            assert rel < 1e-6, (k, rel)


def test_bp_refuses_non_differentiable(be64):
    net = mlp((4, 8, 2), node="heaviside", loss="cross_entropy")
    params = net.init(be64.stream(0), be64)
    x = np.ones((3, 4))
    y = np.array([0, 1, 0])
    with pytest.raises(ValueError, match="layer 0 uses 'heaviside'"):
        net.backward(params, net.forward(params, x, y), y)
