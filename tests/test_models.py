"""Every shipped config loads and builds its network (data shapes from the data set registry)."""

import pytest

from npsim.experiment.assemble import build_network
from npsim.experiment.config import load_config, models_dir
from npsim.io.data import DATASETS, canonical_name

CONFIGS = sorted(p for p in models_dir().glob("*.toml") if not p.name.startswith("sweep"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_builds(path):
    cfg = load_config(path)
    info = DATASETS[canonical_name(cfg.data.name)]
    n_in = 1
    for d in info.shape:
        n_in *= d
    net = build_network(cfg, n_in, info.n_classes or 10)
    assert net.sizes[0] == n_in and net.sizes[-1] == 10
    if cfg.network.conv:
        assert type(net.layers[0]).__name__ == "Conv2D"
