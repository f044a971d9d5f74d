"""keep_freed_memory: freed arrays are reused by the next step instead of page-faulting back in."""

import subprocess
import sys
import textwrap

import pytest

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")

# Each cycle holds twelve 4 MB arrays at once and frees them, like a training step.
_PROBE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from npsim.backend.memory import keep_freed_memory

    on = keep_freed_memory() if sys.argv[1] == "keep" else False
    def cycle():
        arrays = [np.ones((1024, 1000), np.float32) for _ in range(12)]
        return sum(float(a[0, 0]) for a in arrays)

    cycle()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        cycle()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
    print(on, faults)
""")


def _probe(mode: str, env=None):
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True,
                         env=env).stdout.split()
    return out[0] == "True", float(out[1])


@glibc
def test_freed_arrays_are_reused_without_page_faults():
    on, faults = _probe("keep")
    assert on
    assert faults < 100  # 12 arrays x 1000 pages would fault in again without it
    off, faults_default = _probe("default")
    assert not off
    assert faults_default > 5000  # the control: by default each cycle faults its arrays' pages again


@glibc
def test_opt_out_by_environment(monkeypatch):
    import os

    env = dict(os.environ, NPSIM_KEEP_MEMORY="0")
    on, faults = _probe("keep", env)
    assert not on
    assert faults > 5000
