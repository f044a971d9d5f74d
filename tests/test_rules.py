"""Rule mechanics: pass reuse, stacked samples, decorrelation composition, input errors."""

import re

import numpy as np
import pytest
from conftest import mlp

from npsim.errors import IncompatibleSettings
from npsim.io.data.synthetic import teacher_student
from npsim.learn import alignment
from npsim.learn.rules import ANP, INP, NP, WP, Decorrelate, decorrelate, make_rule
from npsim.model import Dense, Network, make_node, make_noise
from npsim.model.losses import make_loss


@pytest.fixture
def small(be64):
    net = mlp((5, 7, 6, 3))
    params = net.init(be64.stream(0), be64)
    x, y = teacher_student(8, (5, 4, 3), seed=0)
    return net, params, x, y


def test_partial_pass_equals_full_pass_and_shares_lower_layers(be64, small):
    net, params, x, y = small
    clean = net.forward(params, x, y)
    eps = [None, be64.stream(1).normal((8, 6)), None]
    partial = net.forward(params, x, y, perturb=eps, base=clean, start=1)
    full = net.forward(params, x, y, perturb=eps)
    assert partial.inputs[0] is clean.inputs[0] and partial.post[0] is clean.post[0]
    assert partial.drive[1] is clean.drive[1]  # the layer's product is reused, not recomputed
    np.testing.assert_allclose(partial.loss, full.loss, rtol=1e-13)


def test_stacked_repeats_equal_separate_passes(be64, small):
    net, params, x, y = small
    clean = net.forward(params, x, y)
    rng = be64.stream(2)
    eps = [rng.normal((3 * 8, n)) * 0.1 for n in (7, 6, 3)]
    stacked = net.forward(params, x, y, perturb=eps, base=clean, repeats=3)
    for k in range(3):
        one = net.forward(params, x, y, perturb=[e[k * 8:(k + 1) * 8] for e in eps])
        np.testing.assert_allclose(stacked.loss[k * 8:(k + 1) * 8], one.loss, rtol=1e-13)


@pytest.mark.parametrize("node, noise", [("tanh", None), ("leaky_relu", None), ("tanh", {"std": 0.01})])
@pytest.mark.parametrize("decorrelate", [False, True])
def test_stacked_pair_equals_clean_then_perturbed_pass(be64, node, noise, decorrelate):
    """forward_pair (one stacked pass) gives the two separate passes' numbers, fused kernel or not."""
    act = make_noise(noise) if noise else None
    net = Network([Dense(5, 7, make_node(node), decorrelate, act), Dense(7, 6, make_node(node), decorrelate, act),
                   Dense(6, 3, make_node("linear"), decorrelate)], make_loss("mse"))
    params = net.init(be64.stream(0), be64)
    if decorrelate:
        params = {k: v + 0.05 * be64.stream(5).normal(v.shape) if k.endswith("/R") else v for k, v in params.items()}
    x, y = teacher_student(8, (5, 4, 3), seed=0)
    K = 3
    eps = [be64.stream(2).normal((K * 8, n), scale=0.1) for n in (7, 6, 3)]
    clean, noisy = net.forward_pair(params, x, y, rng=be64.stream(4), perturb=eps, repeats=K)
    rng = be64.stream(4)
    clean2 = net.forward(params, x, y, rng=rng)
    noisy2 = net.forward(params, x, y, rng=rng, perturb=eps, base=clean2, repeats=K)
    if noise:  # intrinsic noise: one draw for the stacked rows, so only the noise-free parts compare
        assert np.all(clean.loss != clean2.loss)
        for tr in (clean, noisy):
            assert tr.loss.shape[0] == (8 if tr is clean else 24) and np.isfinite(tr.loss).all()
        return
    for a, b in ((clean, clean2), (noisy, noisy2)):
        assert a.repeats == b.repeats and a.start == b.start
        np.testing.assert_allclose(a.loss, b.loss, rtol=1e-12)
        for field in ("inputs", "drive", "pre", "post"):
            for l, (u, v) in enumerate(zip(getattr(a, field), getattr(b, field))):
                if u is None:  # R folded into W: the noisy rows' decorrelated input is not formed
                    assert decorrelate and a is noisy and field == "inputs" and l > 0
                    continue
                np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-15, err_msg=field)
    assert noisy.inputs[0] is clean.inputs[0] and noisy.drive[0] is clean.drive[0]
    # 8 clean rows and 3 x 8 noisy ones: layers 1 and 2 (6 and 3 units, fewer than the 24 noisy rows) fold R
    assert [tr is None for tr in noisy.inputs] == [False, decorrelate, decorrelate]


@pytest.mark.parametrize("name, floor", [("np", 0.8), ("inp", 0.8), ("anp", 0.8), ("wp", 0.7)])
def test_more_samples_align_better(be64, small, name, floor):
    """WP's estimate is noisier (its noise has one dimension per parameter, 111 here, not per unit):
    with K = 400 its expected cosine is about √(K / (K + 111)) ≈ 0.88 overall, and a layer's
    cosine varies around 0.76-0.86 between seeds, hence its lower floor."""
    net, params, x, y = small
    cos = [alignment(net, params, y, make_rule(name, sigma=1e-5, perturbations=k)(net, params, x, y, be64.stream(3)))
           for k in (1, 400)]
    assert cos[1].mean() > cos[0].mean() and cos[1].min() > floor, cos


def test_inp_noise_is_confined_to_its_layer(be64, small):
    """INP's pass for layer l perturbs only layer l, so δa_l = ε_l exactly."""
    net, params, x, y = small
    calls = []
    orig = net.forward

    def spy(*a, **kw):
        calls.append((kw.get("start", 0), [p is not None for p in (kw.get("perturb") or [None] * 3)]))
        return orig(*a, **kw)

    net.forward = spy
    INP(sigma=1e-3, perturbations=2)(net, params, x, y, be64.stream(0))
    assert calls == [(0, [False] * 3), (0, [True, False, False]), (1, [False, True, False]), (2, [False, False, True])]


def test_decorrelation_composes_with_every_rule(be64):
    net = mlp((5, 7, 3), decorrelate=True)
    params = net.init(be64.stream(0), be64)
    x, y = teacher_student(16, (5, 4, 3), seed=0)
    for base in (NP(), INP(), ANP(), WP(), make_rule("bp")):
        rule = decorrelate(base, lr=0.01)
        assert isinstance(rule, Decorrelate) and rule.name == "d" + base.name
        out = rule(net, params, x, y, be64.stream(1))
        assert set(out.assign) == {"layer0/R", "layer1/R"}
        assert not np.allclose(out.assign["layer0/R"], params["layer0/R"])
    assert make_rule("danp", sigma=0.01) == decorrelate(ANP(sigma=0.01))


def test_anp_learns_from_intrinsic_noise_only(be64):
    """With noise='intrinsic' nothing is injected: the only perturbation is the node noise."""
    noise = make_noise({"std": 1e-3})
    layers = [Dense(5, 9, make_node("tanh"), noise=noise), Dense(9, 3, make_node("linear"), noise=noise)]
    net = Network(layers, make_loss("mse"))
    params = net.init(be64.stream(0), be64)
    # the clean pass's own noise is shared by all K noisy samples of a batch row, so its effect
    # averages out over the batch, not over K: a large batch makes the check seed-independent
    x, y = teacher_student(512, (5, 4, 3), seed=0)
    rule = make_rule("anp", noise="intrinsic", perturbations=500)
    rule.check(net)
    out = rule(net, params, x, y, be64.stream(1))
    # ANP is not exactly unbiased when noise propagates between layers (the
    # measured δa of layer 1 carries layer 0's noise); with injected noise it
    # reaches the same alignment on this network
    cos = alignment(net, params, y, out)
    assert cos.min() > 0.85, cos
    injected = alignment(net, params, y, make_rule("anp", sigma=1e-3, perturbations=500)(net, params, x, y, be64.stream(1)))
    assert np.all(np.abs(cos - injected) < 0.1), (cos, injected)


@pytest.mark.parametrize("bad,exc,match", [
    (lambda: make_rule("np", sigma=0), ValueError, r"np: sigma must be greater than 0 \(got 0\)"),
    (lambda: make_rule("danp", sigma=-1e-3), ValueError, "anp: sigma must be greater than 0"),
    (lambda: make_rule("inp", sigma="big"), ValueError, r"inp: sigma must be a valid number \(got 'big'\)"),
    (lambda: make_rule("np", sigma=float("nan")), ValueError, "np: sigma must be a finite number"),
    (lambda: make_rule("np", perturbations=0), ValueError, "np: perturbations must be greater than or equal to 1"),
    (lambda: make_rule("npx"), ValueError, r"rule: name must be one of anp, bp, .* \(got 'npx'\)"),
    (lambda: make_rule("np", sigmaa=1), ValueError, "np: sigmaa is not a parameter; np takes sigma, perturbations"),
    (lambda: make_rule("dnp", decorrelation_lr=0), ValueError, "decorrelate: lr must be greater than 0"),
    (lambda: make_rule("dnp", decorrelation_kappa=2), ValueError, "decorrelate: kappa must be less than or equal"),
    (lambda: make_rule("np", noise="intrinsic"), ValueError, "cannot learn from inaccessible"),
    (lambda: make_rule("dinp", noise="intrinsic"), ValueError, "cannot learn from inaccessible"),
    (lambda: make_rule("anp", noise="ambient"), ValueError, "noise"),
])
def test_bad_rule_parameters(bad, exc, match):
    with pytest.raises(exc, match=match):
        bad()


def test_bad_networks(be64):
    with pytest.raises(ValueError, match="layer 1 expects 8 inputs but layer 0 has 7 outputs"):
        Network([Dense(5, 7, make_node("tanh")), Dense(8, 3, make_node("linear"))], make_loss("mse"))
    with pytest.raises(ValueError, match="Dense: n_out must be greater than or equal to 1"):
        Dense(5, 0, make_node("tanh"))
    with pytest.raises(ValueError, match="Dense: node must be a valid dictionary or instance of NodeModel"):
        Dense(5, 3, "tanh")
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("hinge")
    with pytest.raises(ValueError, match="no decorrelating layer"):
        make_rule("dnp").check(mlp((4, 3)))
    with pytest.raises(ValueError, match="needs units with intrinsic noise"):
        make_rule("anp", noise="intrinsic").check(mlp((4, 3)))
    net = mlp((4, 3))
    with pytest.raises(ValueError, match="shape"):
        net.check_params({"layer0/W": np.zeros((4, 3)), "layer0/b": np.zeros(3)})
    with pytest.raises(ValueError, match="layer 0 uses 'sign'"):
        make_rule("bp").check(mlp((4, 5, 3), node="sign"))


def test_decorrelation_from_a_batch_subsample(be64):
    """rows = S: the R update uses only S rows of the clean inputs, spread evenly over the batch."""
    from npsim.learn.rules import decorrelation_step

    net = mlp((5, 7, 3), decorrelate=True)
    params = net.init(be64.stream(0), be64)
    x, y = teacher_student(16, (5, 4, 3), seed=0)
    out = make_rule("dnp", decorrelation_lr=0.01, decorrelation_rows=4)(net, params, x, y, be64.stream(1))
    for i in range(2):
        want = decorrelation_step(params[f"layer{i}/R"], out.trace.inputs[i][::4], 0.01)  # rows 0, 4, 8, 12
        np.testing.assert_array_equal(out.assign[f"layer{i}/R"], want)
    for bad in (1, 2.5, "some", True):
        with pytest.raises(ValueError, match="decorrelate: rows must be 'auto', 'all' or a whole number of rows"):
            make_rule("dnp", decorrelation_rows=bad)
    # "auto": 32 rows of a dense layer's batch; "all" and None: every row
    big = teacher_student(80, (5, 4, 3), seed=0)
    for rows, want_rows in (("auto", slice(None, None, 2)), ("all", slice(None)), (None, slice(None))):
        out = make_rule("dnp", decorrelation_lr=0.01, decorrelation_rows=rows)(net, params, *big, be64.stream(1))
        want = decorrelation_step(params["layer0/R"], out.trace.inputs[0][want_rows][:32 if rows == "auto" else None],
                                  0.01)
        np.testing.assert_array_equal(out.assign["layer0/R"], want)


def test_antithetic_pairs_negate_and_need_even_k(be64, small):
    """Copy k + K/2 of the stacked noise is copy k negated; an odd K is refused, naming the setting."""
    net, _, _, _ = small
    eps = NP(sigma=0.1, perturbations=4, antithetic=True)._noise(net, be64.stream(0), 4 * 8, range(3))
    for e in eps:
        assert e.shape[0] == 32 and np.array_equal(e[16:], -e[:16]) and not np.array_equal(e[:8], e[8:16])
    with pytest.raises(ValueError, match="antithetic perturbations come in pairs.*must be even, got 3"):
        make_rule("anp", perturbations=3, antithetic=True)
    noisy = Network([Dense(5, 4, make_node("tanh"), noise=make_noise({"std": 0.1})), Dense(4, 3, make_node("linear"))],
                    make_loss("mse"))
    with pytest.raises(IncompatibleSettings, match="cannot pair its perturbations antithetically"):
        make_rule("anp", noise="intrinsic", perturbations=2, antithetic=True).check(noisy)


@pytest.mark.parametrize("name", ["np", "inp", "anp"])
def test_antithetic_estimate_of_a_quadratic_loss_does_not_depend_on_sigma(be64, name):
    """A linear network with an MSE loss is quadratic in the perturbation: the pair's central difference
    (ℓ₊ − ℓ₋)/2 is exactly the first-order term, so with the same unit draws the update is the same at
    σ = 1 as at σ = 1e-4; the clean-baseline estimate is not (it carries ½ εᵀHε / σ)."""
    net = Network([Dense(5, 4, make_node("linear")), Dense(4, 3, make_node("linear"))], make_loss("mse"))
    params = net.init(be64.stream(0), be64)
    x, y = teacher_student(8, (5, 4, 3), seed=0)
    y = y.astype(np.float64) if y.ndim == 2 else np.eye(3)[y]

    def grads(sigma, anti):
        out = make_rule(name, sigma=sigma, perturbations=2, antithetic=anti)(net, params, x, y, be64.stream(3))
        return np.concatenate([np.ravel(g) for g in out.grads.values()])

    big, small_sigma = grads(1.0, True), grads(1e-4, True)
    np.testing.assert_allclose(big, small_sigma, rtol=1e-6, atol=1e-9 * np.abs(small_sigma).max())
    plain_big, plain_small = grads(1.0, False), grads(1e-4, False)
    assert np.abs(plain_big - plain_small).max() > 0.1 * np.abs(plain_small).max()


@pytest.mark.parametrize("name, sigma", [("np", 2.0), ("inp", 2.0), ("wp", 0.3)])
def test_antithetic_pairs_align_better_at_large_sigma(be64, small, name, sigma):
    """Where σ is large enough that the loss's curvature dominates the loss change, the clean-baseline
    estimate carries the noise of ½ εᵀHε; the pairs cancel it, so at the same K = 2 noisy passes the
    update points closer to the gradient (mean BP cosine over 40 draws). At small σ the plain K = 2,
    with two independent directions to the pair's one, does as well or better (docs/results.md)."""
    net, params, x, y = small
    cos = {}
    for anti in (False, True):
        rule = make_rule(name, sigma=sigma, perturbations=2, antithetic=anti)
        cos[anti] = np.mean([alignment(net, params, y, rule(net, params, x, y, be64.stream(s))).mean()
                             for s in range(40)])
    assert cos[True] > cos[False] + 0.03, cos


# -- per-layer sigma ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["np", "inp", "anp", "wp"])
def test_a_sigma_list_of_one_value_is_that_sigma(be64, name):
    net = mlp((6, 5, 4, 3))
    params = net.init(be64.stream(0), be64)
    x, y = np.random.default_rng(1).standard_normal((8, 6)), np.random.default_rng(2).standard_normal((8, 3))
    a = make_rule(name, sigma=0.01, perturbations=2)(net, params, x, y, be64.stream(3))
    b = make_rule(name, sigma=[0.01, 0.01, 0.01], perturbations=2)(net, params, x, y, be64.stream(3))
    for k in a.grads:
        np.testing.assert_array_equal(a.grads[k], b.grads[k], err_msg=k)


def test_each_layer_is_perturbed_at_its_own_sigma(be64):
    net = mlp((6, 50, 40, 30))
    rule = make_rule("np", sigma=[0.1, 0.01, 1.0])
    eps = rule._noise(net, be64.stream(0), 400, range(3))
    np.testing.assert_allclose([float(np.std(e)) for e in eps], [0.1, 0.01, 1.0], rtol=0.05)


@pytest.mark.parametrize("name,sigma,draws,min_cos,tol", [
    ("np", [1e-5, 2e-5, 4e-5], 4000, 0.93, 0.15),
    ("inp", [1e-5, 1e-4, 1e-3], 2000, 0.99, 0.05),
    ("wp", [1e-6, 2e-6, 4e-6], 4000, 0.3, 0.4),
])
def test_mean_update_with_per_layer_sigma_is_the_gradient(be64, name, sigma, draws, min_cos, tol):
    """Each layer is perturbed at its own σ_l and NP and WP divide its update by that σ_l²: the mean
    update points along BP's gradient in every layer, and its projection on it has BP's length (a
    single σ in the 1/σ² would scale layers 1 and 2 by 4 and 16). (With all layers perturbed at once,
    the largest σ_l's noise enters every layer's loss change, so NP's σ_l are kept within a factor 4.)"""
    net = mlp((20, 30, 30, 5))
    params = net.init(be64.stream(0), be64)
    x, y = teacher_student(32, seed=1)
    out = make_rule(name, sigma=sigma, perturbations=draws)(net, params, x, y, be64.stream(2))
    bp = net.backward(params, net.forward(params, x, y), y)
    assert alignment(net, params, y, out, bp).min() >= min_cos
    proj = [float(np.sum(out.grads[f"layer{i}/W"] * bp[f"layer{i}/W"]) / np.sum(bp[f"layer{i}/W"] ** 2))
            for i in range(3)]
    np.testing.assert_allclose(proj, 1.0, atol=tol)


def test_a_sigma_list_must_name_every_layer():
    net = mlp((6, 5, 4, 3), decorrelate=True)
    with pytest.raises(IncompatibleSettings, match="sigma lists 2 values, but the network has 3 layers"):
        make_rule("danp", sigma=[0.1, 0.2]).check(net)


@pytest.mark.parametrize("value,match", [
    ("[0.1, 0.2]", "rule.sigma lists 2 values, but the network has 3 layers"),
    ("[0.1, 0, 0.2]", "key 'rule.sigma': must be greater than 0"),
    ("[]", "key 'rule.sigma': must be a number, or a list of one number per layer"),
    ("[1e-9, 1e-3, 1e-3]", "key 'rule.sigma': 1e-09 is below the resolution of float32"),
])
def test_a_config_names_a_bad_sigma_list(tmp_path, capsys, value, match):
    from npsim.cli import main

    out = str(tmp_path / "run.h5")  # a fresh path: an existing runs/default-s0.h5 would be refused first
    assert main(["train", "--set", f"rule.sigma={value}", "--quiet", "--no-plot", "--out", out]) != 0
    assert re.search(match, capsys.readouterr().err)
