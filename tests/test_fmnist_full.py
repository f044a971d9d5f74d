"""The paper's Fashion-MNIST configs run end to end on the full data set (slow).

Needs the full Fashion-MNIST (60,000 training images): Debian's
dataset-fashion-mnist package, or NPSIM_DATA. Skips with the reason otherwise.
"""

import numpy as np
import pytest

from npsim.experiment.config import load_config, models_dir
from npsim.experiment.loop import run
from npsim.io.data import DataNotFound, load_dataset
from npsim.io.trajectory import read_trajectory

RULES = ["bp", "np", "inp", "anp", "dnp", "dinp", "danp"]


@pytest.fixture(scope="module")
def full_data():
    try:
        ds = load_dataset("fashion-mnist")
    except DataNotFound as exc:
        pytest.skip(f"full Fashion-MNIST not installed: {exc}")
    if ds.n_train < 60000:
        pytest.skip(f"only {ds.n_train} training images found at {ds.source} (the bundled subset); "
                    f"install dataset-fashion-mnist or set NPSIM_DATA for the full set")
    return ds


@pytest.mark.slow
@pytest.mark.parametrize("rule", RULES)
def test_paper_config_one_epoch(full_data, rule, tmp_path):
    cfg = load_config(models_dir() / f"fmnist-{rule}.toml").with_overrides({"train.epochs": 1})
    res = run(cfg, tmp_path / f"{rule}.h5", progress=False, data=full_data)
    tr = read_trajectory(res.path)
    assert tr.status == "finished" and res.steps == 60
    assert tr.attrs["n_train"] == 60000 and tr.attrs["n_test"] == 10000
    assert res.test_accuracy > 0.3, res.test_accuracy  # chance is 0.1
    first, last = tr.steps["loss"][:5].mean(), tr.steps["loss"][-5:].mean()
    assert last < first, (first, last)
    measured = tr.steps["alignment"][::10]  # diagnostics_every = 10 in the configs
    assert not np.isnan(measured).any() and (measured[:, -1] > 0).all()
