"""Heaviside hidden units learn under DANP (issue acceptance 4).

6-bit parity on a 6-32-32-2 network with Heaviside hidden units. The control
freezes both hidden layers at their initial weights and trains only the
readout with the same budget: it must stay below 90%, so reaching 100% shows
the hidden layers learned.
"""

import numpy as np
from conftest import mlp

from npsim.backend import get_backend
from npsim.io.data.synthetic import parity, separable
from npsim.learn.optim import adam
from npsim.learn.rules import make_rule
from npsim.learn.step import evaluate, fit
from npsim.model.network import param_key

SEEDS = range(5)


def _train(x, y, sizes, seed, steps, frozen_hidden=False, batch_size=None):
    be = get_backend("numpy", "float32")
    net = mlp(sizes, node="heaviside", loss="cross_entropy", decorrelate=True)
    params = net.init(be.stream(seed), be)
    last = net.n_layers - 1
    frozen = tuple(k for k in params if not k.startswith(f"layer{last}/")) if frozen_hidden else ()
    rule = make_rule("danp", sigma=0.5, perturbations=4)
    params, _ = fit(net, rule, adam(0.01), params, x, y, backend=be, seed=seed, steps=steps,
                    batch_size=batch_size, frozen=frozen)
    if frozen_hidden:  # the control really kept its hidden layers
        init = net.init(be.stream(seed), be)
        assert all(np.array_equal(params[param_key(i, "W")], init[param_key(i, "W")]) for i in range(last))
    return evaluate(net, params, be.asarray(x), y)[1]


def test_heaviside_parity_learned_by_danp_and_not_by_readout_alone():
    x, y = parity(6)
    trained = [_train(x, y, (6, 32, 32, 2), s, steps=4000) for s in SEEDS]
    frozen = [_train(x, y, (6, 32, 32, 2), s, steps=4000, frozen_hidden=True) for s in SEEDS]
    print("trained:", trained, "frozen hidden:", frozen)
    assert sum(a == 1.0 for a in trained) >= 4, trained
    assert max(frozen) < 0.9, frozen


def test_heaviside_separable_task():
    x, y = separable(512, 10, seed=3)
    accs = [_train(x, y, (10, 32, 2), s, steps=600, batch_size=64) for s in SEEDS]
    print("separable:", accs)
    assert sum(a >= 0.95 for a in accs) >= 4, accs
