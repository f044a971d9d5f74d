import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
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


def three_class_npz(path, n_train: int, n_test: int, n_features: int = 12):
    """Write a small 3-class data set (Gaussian blobs around random centres, seed 0) as .npz; returns path."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, n_features)) * 2

    def draw(n):
        y = rng.integers(0, 3, n)
        return (centers[y] + rng.standard_normal((n, n_features))).astype(np.float32), y

    (xtr, ytr), (xte, yte) = draw(n_train), draw(n_test)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return path


_HOLD_OPEN = textwrap.dedent("""
    import sys, h5py
    f = h5py.File(sys.argv[1], "r", swmr=True)
    print("open", flush=True)
    sys.stdin.readline()
    f.close()
""")


@contextlib.contextmanager
def held_open(path):
    """Another process holds ``path`` open as a SWMR reader (as a live plot would) inside the block."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    reader = subprocess.Popen([sys.executable, "-c", _HOLD_OPEN, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert reader.stdout.readline().strip() == "open"
        yield
    finally:
        reader.communicate("\n", timeout=30)
