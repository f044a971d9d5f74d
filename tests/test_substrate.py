"""Substrates: a network whose passes another system runs trains as npsim's own does (docs/design.md §10a)."""

import numpy as np
import pytest
from conftest import mlp

from npsim.errors import IncompatibleSettings
from npsim.io.data.synthetic import teacher_student
from npsim.learn import fit
from npsim.learn.optim import make_optimizer
from npsim.learn.rules import make_rule
from npsim.model import (
    LIF, Capabilities, Dense, FunctionSubstrate, Measurement, Network, NetworkSubstrate, Simulation, SubstrateNetwork,
    make_loss, make_node,
)

RULES = ["np", "inp", "anp", "danp", "dnp", "dinp"]


def _tanh_net(decorrelate):
    return mlp((5, 7, 6, 3), decorrelate=decorrelate)


def _spiking_net(decorrelate):
    lif = LIF(tau=5.0, threshold=0.3)
    layers = [Dense(5, 12, lif, decorrelate=decorrelate), Dense(12, 8, lif, decorrelate=decorrelate),
              Dense(8, 3, make_node("linear"), decorrelate=decorrelate)]
    return Network(layers, make_loss("cross_entropy"), simulation=Simulation(steps=12))


def _setup(be, net, seed=0):
    params = net.init(be.stream(seed), be)
    if net.decorrelated:  # an R that is not the identity, so that applying it matters
        params = {k: v + 0.05 * be.stream(7).normal(v.shape) if k.endswith("/R") else v for k, v in params.items()}
    x, y = teacher_student(16, (5, 4, 3), seed=seed)
    return params, be.asarray(x), be.asarray(y)


@pytest.mark.parametrize("build", [_tanh_net, _spiking_net], ids=["tanh", "lif"])
@pytest.mark.parametrize("name", RULES)
def test_wrapping_npsims_own_network_changes_no_bit(be64, name, build):
    net = build(name.startswith("d"))
    wrapped = SubstrateNetwork(net, NetworkSubstrate(net))
    params, x, y = _setup(be64, net)
    rule = make_rule(name, sigma=1e-2, perturbations=2)
    rule.check(wrapped)
    ref, got = rule(net, params, x, y, be64.stream(3)), rule(wrapped, params, x, y, be64.stream(3))
    assert set(ref.grads) == set(got.grads) and set(ref.assign) == set(got.assign)
    for k in ref.grads:
        assert np.array_equal(ref.grads[k], got.grads[k]), k
    for k in ref.assign:
        assert np.array_equal(ref.assign[k], got.assign[k]), k
    assert np.array_equal(np.asarray(ref.delta_loss), np.asarray(got.delta_loss))
    assert np.array_equal(ref.trace.loss, got.trace.loss)


@pytest.mark.parametrize("name", ["np", "anp", "danp"])
def test_training_through_the_wrapper_is_the_same_run(be32, name):
    net = _tanh_net(name.startswith("d"))
    wrapped = SubstrateNetwork(net, NetworkSubstrate(net))
    params, x, y = _setup(be32, net)
    runs = [fit(n, make_rule(name, sigma=1e-2), make_optimizer("adam", lr=1e-2), params, np.asarray(x),
                np.asarray(y), backend=be32, seed=4, steps=15, batch_size=8) for n in (net, wrapped)]
    (p_ref, l_ref), (p_got, l_got) = runs
    assert l_ref == l_got and all(np.array_equal(p_ref[k], p_got[k]) for k in p_ref)


def _users_forward(net):
    """The forward function a user would write for their own system: a tanh MLP in plain NumPy."""

    def run(params, x, perturb, repeats, rng):
        x = np.tile(x, (repeats, 1))
        inputs, pre = [], []
        h = x
        for i, layer in enumerate(net.layers):
            inputs.append(h)
            R = params.get(f"layer{i}/R")
            a = (h if R is None else h @ R.T) @ params[f"layer{i}/W"].T + params[f"layer{i}/b"]
            if perturb is not None and perturb[i] is not None:
                a = a + perturb[i]
            pre.append(a)
            h = np.tanh(a) if i < net.n_layers - 1 else a
        return Measurement(inputs, pre, h)

    return run


@pytest.mark.parametrize("name", RULES)
def test_a_users_own_forward_function_gives_the_built_in_updates(be64, name):
    # Only run() is given: the clean and perturbed copies go through one call, INP's passes
    # run every layer. The same arithmetic on other shapes: equal to float64 rounding.
    net = _tanh_net(name.startswith("d"))
    user = SubstrateNetwork(net, FunctionSubstrate(_users_forward(net), name="mine"))
    params, x, y = _setup(be64, net)
    rule = make_rule(name, sigma=1e-3, perturbations=3)
    ref, got = rule(net, params, x, y, be64.stream(3)), rule(user, params, x, y, be64.stream(3))
    for k in ref.grads:
        # NP-type updates divide loss differences (~σ) by σ²: rounding of 1e-16 grows to ~1e-12 relative
        np.testing.assert_allclose(got.grads[k], ref.grads[k], rtol=1e-8, atol=1e-10, err_msg=k)
    for k in ref.assign:
        np.testing.assert_allclose(got.assign[k], ref.assign[k], rtol=1e-12, atol=1e-14, err_msg=k)


def test_a_wrong_measurement_is_refused_with_its_shape(be64):
    net = _tanh_net(False)
    params, x, y = _setup(be64, net)
    bad = SubstrateNetwork(net, FunctionSubstrate(lambda p, x, e, r, g: Measurement(None, None, x[:, :3]),
                                                  name="short"))
    with pytest.raises(ValueError, match=r"substrate 'short': output has shape \(16, 3\), expected \(32, 3\)"):
        bad.forward_pair(params, x, y, perturb=None, repeats=2)  # the 2 perturbed copies of 16 rows
    wrong = SubstrateNetwork(net, FunctionSubstrate(lambda p, x, e, r, g: x, name="raw"))
    with pytest.raises(TypeError, match="must return a Measurement"):
        wrong.forward(params, x, y)


@pytest.mark.parametrize("caps, name, message", [
    (Capabilities(perturbation=False, noisy=True), "np", "injects a perturbation into the layers' activities, but "
     "substrate 'chip' takes none; use 'anp' or 'danp' with rule.noise = 'intrinsic'"),
    (Capabilities(perturbation=False), "inp", "takes none; use 'wp', which perturbs the weights it sets"),
    (Capabilities(perturbation=False, noisy=True), "anp", "injects a perturbation"),
    (Capabilities(hidden=False), "anp", "rule 'anp' needs every layer's input and activity, but substrate 'chip' "
     "reports only its outputs; train it with 'wp', which needs only the outputs"),
    (Capabilities(hidden=False), "np", "reports only its outputs"),
    (Capabilities(hidden=False), "danp", "rule 'danp' needs every layer's input"),
    (Capabilities(), "bp", "BP needs the derivative of every layer, but substrate 'chip' runs forward only"),
    (Capabilities(), "dbp", "runs forward only"),
])
def test_rules_refuse_what_a_substrate_cannot_do_in_one_line(caps, name, message):
    net = _tanh_net(name.startswith("d"))
    chip = SubstrateNetwork(net, FunctionSubstrate(_users_forward(net), caps, name="chip"))
    with pytest.raises(IncompatibleSettings) as e:
        make_rule(name, **({} if name.endswith("bp") else {"sigma": 1e-3})).check(chip)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_what_a_substrate_can_do_is_accepted(be64):
    net = _tanh_net(False)
    noisy_chip = SubstrateNetwork(net, FunctionSubstrate(_users_forward(net), Capabilities(perturbation=False,
                                                                                           noisy=True)))
    make_rule("anp", noise="intrinsic").check(noisy_chip)
    silent = SubstrateNetwork(net, FunctionSubstrate(_users_forward(net), Capabilities(perturbation=False)))
    with pytest.raises(IncompatibleSettings, match="needs units with intrinsic noise"):
        make_rule("anp", noise="intrinsic").check(silent)
    make_rule("wp").check(SubstrateNetwork(net, FunctionSubstrate(_users_forward(net),
                                                                  Capabilities(perturbation=False, hidden=False))))


def test_weight_perturbation_trains_a_system_that_shows_only_its_outputs(be64):
    # outputs only: no layer inputs, no activities; WP needs neither. Control: the loss it starts from.
    net = _tanh_net(False)
    user = _users_forward(net)

    def outputs_only(params, x, perturb, repeats, rng):
        return Measurement(None, None, user(params, x, perturb, repeats, rng).output)

    blind = SubstrateNetwork(net, FunctionSubstrate(outputs_only, Capabilities(perturbation=False, hidden=False)))
    params, x, y = _setup(be64, net)
    rule = make_rule("wp", sigma=1e-3, perturbations=4)
    rule.check(blind)
    _, losses = fit(blind, rule, make_optimizer("adam", lr=1e-2), params, np.asarray(x), np.asarray(y),
                    backend=be64, seed=1, steps=300)
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:5])
