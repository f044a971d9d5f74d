"""scripts/reproduce.py end to end on a tiny data set: tuning, final sweeps, results page."""

import importlib.util
from pathlib import Path

from conftest import three_class_npz

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce.py"

BASE = """
name = "reproduce-mlp"
[data]
name = "tiny"
path = "{data}"
[network]
hidden = [16, 16]
node = "tanh"
[rule]
sigma = 1e-3
[optimizer]
lr = 1e-3
[train]
epochs = 2
batch_size = 25
diagnostics_every = 3
"""


def test_reproduce_writes_the_results_page(tmp_path):
    three_class_npz(tmp_path / "tiny.npz", 300, 100, n_features=10)
    (tmp_path / "reproduce-mlp.toml").write_text(BASE.format(data=tmp_path / "tiny.npz"))
    spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    docs = tmp_path / "docs" / "results.md"
    (docs.parent).mkdir()
    docs.write_text("STALE TEXT\n<!-- discussion -->\nHand-written discussion.\n")
    args = ["--archs", "mlp", "--rules", "bp", "np", "dnp", "--seeds", "2", "--lrs", "1e-3", "1e-2",
            "--tune-epochs", "1", "--workers", "1", "--validation", "50", "--configs", str(tmp_path),
            "--out", str(tmp_path / "runs"), "--docs", str(docs)]
    assert mod.main(args) == 0
    text = docs.read_text()
    for rule in ("BP", "NP", "DNP"):
        assert f"| {rule} |" in text
    assert "Hand-written discussion." in text and "STALE TEXT" not in text
    assert "Decorrelation helps every NP variant" in text
    assert (docs.parent / "figures" / "results-mlp-curves.png").stat().st_size > 10_000
    assert len(list((tmp_path / "runs" / "mlp-np").glob("*.h5"))) == 2
