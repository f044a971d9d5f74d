import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from npsim.backend import get_backend
from npsim.model.network import mlp  # noqa: F401 - the one MLP builder, shared by the tests


@pytest.fixture(scope="session")
def load_script():
    """``load_script(path)``: a script of ``scripts/`` imported as a module (they are not a package)."""
    import importlib.util

    def load(path: Path):
        spec = importlib.util.spec_from_file_location(Path(path).stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture
def be64():
    return get_backend("numpy", "float64")


@pytest.fixture
def be32():
    return get_backend("numpy", "float32")


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
