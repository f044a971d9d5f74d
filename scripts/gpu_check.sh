#!/usr/bin/env bash
# The one command a person with an NVIDIA GPU runs: scripts/gpu_check.sh OUT_DIR
# Needs no network: it uses the installed packages (pip install -e ".[cuda12,test]" beforehand, or
# ".[cuda13,test]"; torch with CUDA for the PyTorch column) and names any that are missing.
# Writes to OUT_DIR: gpu-tests.txt (the gpu-marked tests on the real device), benchmarks-gpu.md
# (npsim on CuPy against PyTorch on CUDA, batch 256, 1024, 4096, interleaved rounds), epoch.txt (the
# wall time of one Fashion-MNIST epoch of DANP at the paper's settings) and spiking.txt (the spiking
# step at T = 25, 50, 100, 200 on the GPU and on the CPU). About 3-4 minutes on a current GPU.
set -uo pipefail
out=${1:?usage: scripts/gpu_check.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)  # absolute: the script runs from the repository root
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
missing=$($py - <<'PY'
import importlib.util
need = {"cupy": "cupy-cuda12x or cupy-cuda13x", "numba": "numba", "numba.cuda": "numba-cuda", "pytest": "pytest",
        "array_api_compat": "array-api-compat"}
print(" ".join(f"{m} ({pkg})" for m, pkg in need.items() if importlib.util.find_spec(m.split(".")[0]) is None))
PY
)
if [ -n "$missing" ]; then echo "gpu_check: missing packages: $missing" | tee "$out/missing.txt"; exit 2; fi
$py -c "import cupy; n = cupy.cuda.runtime.getDeviceCount(); print('devices:', n); assert n > 0" || {
    echo "gpu_check: no usable CUDA device"; exit 2; }
torch_flag=""
$py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null || {
    torch_flag="--no-torch"; echo "gpu_check: torch with CUDA not found: the PyTorch column is left out"; }
t0=$(date +%s)
echo "== gpu-marked tests"
timeout 900 $py -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.txt" | tail -3
echo "== step benchmark (GPU)"
timeout 900 $py scripts/bench_rules.py --device cuda --batch 256 1024 4096 --rules bp np anp danp --repeats 5 \
    --steps 5 $torch_flag --markdown "$out/benchmarks-gpu.md" 2>&1 | tee "$out/bench.txt" | tail -20
echo "== one Fashion-MNIST epoch of DANP, paper settings (784-1000-1000-1000-10, batch 1000)"
timeout 600 env NPSIM_CHECK_OUT="$out" $py - <<'PY' 2>&1 | tee "$out/epoch.txt"
import os
import time
from npsim.experiment import load_config, models_dir, run
from npsim.io.data import search_places
from npsim.io.trajectory import read_trajectory
full = any(ok and "npsim" not in place for place, ok in search_places("fashion-mnist"))
cfg = load_config(models_dir() / "fmnist-danp.toml").with_overrides(
    {"backend": "cupy", "train.epochs": 1, "train.diagnostics_every": 0, "train.eval_train_samples": 1000,
     "name": "gpu-epoch"} | ({} if full else {"data.path": str(models_dir().parent / "data" / "fashion-mnist")}))
run(cfg.with_overrides({"train.epochs": 1, "data.n_train": 2000}), os.path.join(os.environ["NPSIM_CHECK_OUT"], "warm.h5"), overwrite=True,
    progress=False)  # compiles the kernels
t0 = time.perf_counter()
res = run(cfg, os.path.join(os.environ["NPSIM_CHECK_OUT"], "epoch.h5"), overwrite=True, progress=False)
wall = time.perf_counter() - t0
t = read_trajectory(res.path)
train = float(t.steps["wall_time"][-1])
n = int(t.attrs["n_train"])
print(f"data: {t.attrs['data_source']} ({n} training images)")
print(f"training steps of the epoch: {train:.2f} s ({train * 60000 / n:.2f} s per 60,000 images); whole run "
      f"with evaluation: {wall:.2f} s; test accuracy {res.test_accuracy:.4f}")
PY
echo "== spiking step against T"
{ echo "GPU:"; timeout 600 $py scripts/bench_spiking.py --backend cupy --repeats 5;
  echo "CPU:"; timeout 900 $py scripts/bench_spiking.py --repeats 3; } 2>&1 | tee "$out/spiking.txt"
echo "gpu_check: done in $(( $(date +%s) - t0 )) s -> $out"
