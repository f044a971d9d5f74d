import pytest

from npsim.backend import get_backend
from npsim.losses import make_loss
from npsim.network import Dense, Network
from npsim.nodes import make_node


@pytest.fixture
def be64():
    return get_backend("numpy", "float64")


@pytest.fixture
def be32():
    return get_backend("numpy", "float32")


def mlp(sizes, node="tanh", out="linear", loss="mse", decorrelate=False, **node_params):
    """A dense network of ``sizes`` with ``node`` hidden units and ``out`` output units."""
    layers = []
    for i in range(len(sizes) - 1):
        last = i == len(sizes) - 2
        nd = make_node(out) if last else make_node(node, **node_params)
        layers.append(Dense(sizes[i], sizes[i + 1], nd, decorrelate=decorrelate))
    return Network(layers, make_loss(loss))
