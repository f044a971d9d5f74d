"""Convolution layers: forward against SciPy, BP against finite differences, rules on patches."""

import numpy as np
import pytest
from scipy.signal import correlate

from npsim.learn import alignment, make_rule
from npsim.model import make_node
from npsim.model.layers import Conv2D, Dense
from npsim.model.losses import make_loss
from npsim.model.network import Network


def _net(loss="mse", decorrelate=False, stride=1, padding=1, pool=2, pooling="max", node="tanh"):
    c1 = Conv2D((2, 7, 6), channels=3, kernel=3, stride=stride, padding=padding, pool=pool, pooling=pooling,
                node=make_node(node), decorrelate=decorrelate)
    c2 = Conv2D(c1.out_shape, channels=4, kernel=2, node=make_node(node), decorrelate=decorrelate)
    out = Dense(c2.n_out, 3, make_node("linear"), decorrelate=decorrelate)
    return Network([c1, c2, out], make_loss(loss))


def test_convolution_matches_scipy_correlate(be64):
    layer = Conv2D((2, 7, 6), channels=3, kernel=3, stride=2, padding=1, node=make_node("linear"))
    rng = be64.stream(0)
    W, b = rng.normal((3, 18)), rng.normal((3,))
    x = rng.normal((4, 2 * 7 * 6))
    got = layer.output(layer.drive(layer.layer_input(x), W, b)).reshape(4, 3, *layer.out_hw)
    img = np.pad(x.reshape(4, 2, 7, 6), ((0, 0), (0, 0), (1, 1), (1, 1)))
    for n in range(4):
        for c in range(3):
            full = correlate(img[n], W[c].reshape(2, 3, 3), mode="valid")[0]  # (H', W') at stride 1
            np.testing.assert_allclose(got[n, c], full[::2, ::2] + b[c], rtol=1e-12, atol=1e-12)


def test_pooling(be64):
    layer = Conv2D((1, 5, 4), channels=2, kernel=1, pool=2, pooling="avg", node=make_node("linear"))
    u = np.arange(5 * 4 * 2, dtype=float)[None]  # (1, P·C), positions 5x4, channels 2
    f = u.reshape(5, 4, 2)[:4]  # the 5th row does not fill a window
    want = f.reshape(2, 2, 2, 2, 2).mean(axis=(1, 3)).transpose(2, 0, 1).ravel()
    np.testing.assert_allclose(layer.output(u)[0], want)
    mx = Conv2D((1, 5, 4), channels=2, kernel=1, pool=2, node=make_node("linear")).output(u)[0]
    np.testing.assert_allclose(mx, f.reshape(2, 2, 2, 2, 2).max(axis=(1, 3)).transpose(2, 0, 1).ravel())


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("decorrelate", [False, True])
@pytest.mark.parametrize("stride, padding, pool, pooling", [(1, 1, 2, "max"), (2, 0, 1, "max"), (1, 2, 2, "avg")])
def test_conv_bp_matches_finite_differences(be64, loss, decorrelate, stride, padding, pool, pooling):
    net = _net(loss, decorrelate, stride, padding, pool, pooling)
    rng = be64.stream(1)
    params = net.init(rng, be64)
    if decorrelate:  # a non-trivial R
        for i in net.decorrelated:
            k = f"layer{i}/R"
            params[k] = params[k] + 0.1 * rng.normal(params[k].shape)
    x = rng.normal((5, net.sizes[0]))
    y = rng.normal((5, 3)) if loss == "mse" else np.array([0, 1, 2, 1, 0])
    grads = net.backward(params, net.forward(params, x, y), y)
    worst = 0.0
    h = 1e-6
    for key, g in grads.items():
        p = params[key]
        fd = np.empty_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            lp = net.forward(params, x, y).loss.mean()
            p[idx] = old - h
            lm = net.forward(params, x, y).loss.mean()
            p[idx] = old
            fd[idx] = (lp - lm) / (2 * h)
        err = np.linalg.norm(g - fd) / max(np.linalg.norm(fd), 1e-12)
        worst = max(worst, err)
    assert worst < 1e-6, worst


def test_inp_on_convolutions_points_along_the_gradient(be64):
    """The mean of many INP draws on a conv net aligns with BP in every layer."""
    net = _net("mse", pool=2)
    rng = be64.stream(2)
    params = net.init(rng, be64)
    x, y = rng.normal((8, net.sizes[0])), rng.normal((8, 3))
    out = make_rule("inp", sigma=1e-5, perturbations=3000)(net, params, x, y, rng)
    cos = alignment(net, params, y, out)
    assert np.all(cos > 0.9), cos


def test_decorrelation_acts_on_patches(be64):
    """DANP's R of a conv layer is (patch, patch) and its update whitens correlated patches."""
    layer = Conv2D((1, 8, 8), channels=2, kernel=3, node=make_node("relu"), decorrelate=True)
    net = Network([layer, Dense(layer.n_out, 2, make_node("linear"), decorrelate=True)], make_loss("cross_entropy"))
    rng = be64.stream(3)
    params = net.init(rng, be64)
    assert params["layer0/R"].shape == (9, 9)
    smooth = rng.normal((32, 64)).reshape(32, 8, 8)
    smooth = (smooth + np.roll(smooth, 1, 1) + np.roll(smooth, 1, 2)).reshape(32, 64)  # correlated neighbours
    y = np.arange(32) % 2
    rule = make_rule("danp", sigma=1e-3, decorrelation_lr=5e-3)

    def offdiag(R):
        X = layer.decorrelation_rows(layer.layer_input(smooth, R))
        c = np.corrcoef(X.T)
        return np.abs(c[~np.eye(9, dtype=bool)]).mean()

    before = offdiag(params["layer0/R"])
    for _ in range(300):
        params.update(rule(net, params, smooth, y, rng).assign)
    after = offdiag(params["layer0/R"])
    assert before > 0.1 and after < 0.1 * before, (before, after)


def test_bad_conv_layers_are_named():
    with pytest.raises(ValueError, match="in_shape"):
        Conv2D((28, 28), channels=2, kernel=3, node=make_node("relu"))
    with pytest.raises(ValueError, match="kernel 9 exceeds"):
        Conv2D((1, 5, 5), channels=2, kernel=9, node=make_node("relu"))
    with pytest.raises(ValueError, match="pooling"):
        Conv2D((1, 5, 5), channels=2, kernel=3, node=make_node("relu"), pooling="median")
    c = Conv2D((1, 6, 6), channels=2, kernel=3, node=make_node("relu"))
    with pytest.raises(ValueError, match="layer 1 expects"):
        Network([c, Dense(10, 2, make_node("linear"))], make_loss("mse"))


def test_conv_config_trains_and_checks_its_input_shape(tmp_path):
    from npsim.cli import main
    from npsim.experiment.config import load_config
    from npsim.experiment.loop import run

    rng = np.random.default_rng(0)
    # 2 classes of 1x8x8 images: a bright horizontal vs vertical bar at a random place, plus noise
    def draw(n):
        y = rng.integers(0, 2, n)
        img = 0.3 * rng.standard_normal((n, 8, 8))
        pos = rng.integers(1, 7, n)
        for i in range(n):
            if y[i]:
                img[i, :, pos[i]] += 1.5
            else:
                img[i, pos[i], :] += 1.5
        return img.reshape(n, 64).astype(np.float32), y
    (xtr, ytr), (xte, yte) = draw(300), draw(100)
    np.savez(tmp_path / "bars.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    cfg_text = f"""
name = "bars"
[data]
name = "bars"
path = "{tmp_path / 'bars.npz'}"
[network]
input_shape = [1, 8, 8]
conv = [{{ channels = 4, kernel = 3, padding = 1, pool = 2 }}]
hidden = []
node = "relu"
[rule]
name = "danp"
sigma = 1e-3
perturbations = 2
decorrelation_rows = 256
[optimizer]
lr = 1e-2
[train]
epochs = 6
batch_size = 30
diagnostics_every = 5
"""
    (tmp_path / "bars.toml").write_text(cfg_text)
    res = run(load_config(tmp_path / "bars.toml"), tmp_path / "bars.h5", progress=False)
    assert res.test_accuracy > 0.9, res
    from npsim.io.trajectory import read_trajectory

    assert read_trajectory(res.path).attrs["network"].startswith("64 -> Dconv3x3s1p1x4/maxpool2:relu() -> D2:")
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg_text.replace("input_shape = [1, 8, 8]", "input_shape = [1, 8, 9]"))
    assert main(["train", str(bad), "--out", str(tmp_path / "x.h5"), "--quiet"]) == 2
