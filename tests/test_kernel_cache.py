"""Numba's kernel cache goes to the user's cache folder, never into the installed package."""

import os
import subprocess
import sys
from pathlib import Path

import npsim

PACKAGE = Path(npsim.__file__).resolve().parent

_COMPILE_ONE = """
import numpy as np, numba
from npsim.backend import kernels
x = np.ones((3, 4), dtype=np.float32)
kernels.scale_rows(x, np.ones(3, dtype=np.float32))
print(numba.config.CACHE_DIR)
"""


def _run(env_update, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "NPSIM_KERNELS")}
    env.update(env_update)
    res = subprocess.run([sys.executable, "-c", _COMPILE_ONE], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip().splitlines()[-1])


def test_cache_goes_to_the_user_cache_folder(tmp_path):
    used = _run({"XDG_CACHE_HOME": str(tmp_path / "cache")}, tmp_path)
    assert used == tmp_path / "cache" / "npsim" / "numba"
    assert list(used.rglob("*.nbi")), "the compiled kernel was not cached there"
    assert PACKAGE not in used.parents


def test_a_users_numba_cache_dir_is_kept(tmp_path):
    used = _run({"NUMBA_CACHE_DIR": str(tmp_path / "mine"), "XDG_CACHE_HOME": str(tmp_path / "cache")}, tmp_path)
    assert used == tmp_path / "mine"
    assert list(used.rglob("*.nbi")) and not (tmp_path / "cache").exists()
