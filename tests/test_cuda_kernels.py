"""CUDA kernels (npsim.backend.kernels.cuda) against their NumPy twins, under Numba's CUDA simulator.

NUMBA_ENABLE_CUDASIM must be set before numba is imported, so one subprocess
(started once per test session) runs every case of CASES under the simulator
and reports per case which outputs differ from the twin's; the tests assert on
that report. Sizes are small (the simulator runs each GPU thread as a Python
thread). Comparisons are bitwise, except the squared norm Adam returns
(float64 sum against the twin's sum in the array dtype: rtol 1e-5 for float32,
1e-12 for float64). Cases lower ``MAX_BLOCKS`` to 1 or 2 so that the
grid-stride loops run more than one pass.

A second subprocess (without the simulator, skipped where libNVVM is missing)
compiles every kernel to PTX for sm_90 and checks that NVVM's default FMA
contraction (-fma=1) changes nothing: the PTX equals the one compiled with
-fma=0, except for the normal kernel, whose only difference must be the one
libdevice's own exp/log show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# --- the cases ------------------------------------------------------------------------------------------

KEYS = [0, 12345, 2**64 - 1]


def _cases():
    cases = []
    for dt in ("float32", "float64"):
        for key in KEYS:
            for n, start in [(1, 0), (7, 3), (600, 0), (601, 12345), (257, 2**40 + 1)]:
                cases.append({"kernel": "normal", "dtype": dt, "key": key, "n": n, "start": start, "max_blocks": 2})
                cases.append({"kernel": "uniform", "dtype": dt, "key": key, "n": n, "start": start, "max_blocks": 2})
        # windows around the first draws of a key that take the tail, or fail the wedge test and retry
        for kind, occurrence in [("tail", 0), ("tail", 1), ("tail", 2), ("tail_retry", 0), ("wedge_reject", 0),
                                 ("retry_reject", 0)]:
            cases.append({"kernel": "normal_window", "dtype": dt, "key": 2024, "kind": kind, "occurrence": occurrence, "n": 48,
                              "max_blocks": 1})
        cases.append({"kernel": "normal_out", "dtype": dt, "key": 7, "n": 300, "start": 5})
        for B, n, repeats, clean, bias, perturb, slope in [
            (5, 9, 1, 0, True, False, 0.0),  # a is d, ReLU
            (5, 9, 1, 0, False, False, None),  # nothing to do: a is d, x is a
            (5, 9, 1, 0, True, True, 0.1),  # leaky ReLU, perturbed, not tiled
            (5, 9, 1, 2, True, True, None),  # a copy of d with its first rows clean, linear
            (4, 7, 3, 0, True, True, 0.0),  # tiled and perturbed
            (4, 7, 3, 4, False, True, 0.2),  # clean copy stacked above the perturbed rows
            (4, 7, 3, 0, True, False, 0.0),  # tiled, no perturbation
            (6, 50, 4, 6, True, True, 0.05),  # more elements than 1 block x 256 threads: grid-stride
        ]:
            cases.append({"kernel": "drive", "dtype": dt, "B": B, "n": n, "repeats": repeats, "clean_rows": clean, "bias": bias,
                              "perturb": perturb, "slope": slope, "max_blocks": 1})
        cases.append({"kernel": "scale_rows", "dtype": dt, "N": 13, "n": 31, "max_blocks": 1})
        cases.append({"kernel": "decorrelation", "dtype": dt, "n": 17, "m": 23, "B": 64, "lr": 0.013, "max_blocks": 1})
        cases.append({"kernel": "adam", "dtype": dt, "shape": [7, 101], "max_blocks": 2})
        cases.append({"kernel": "adam", "dtype": dt, "shape": [5], "max_blocks": 1024})
        for const, noise, n_ref, subtract, record, spiking, threshold in [
            (True, False, 0, False, False, True, 1.0),
            (True, True, 0, True, True, True, 1.0),
            (False, False, 2, False, True, True, 1.0),
            (False, True, 2, True, False, True, 1.0),
            (False, True, 3, False, True, True, 1.0),
            (True, True, 1, False, True, True, 1.0),
            (False, True, 0, False, True, False, 1.0),  # leaky integrator
            (False, True, 1, False, True, True, -0.5),  # reset of negative potentials: the sign of v·0
        ]:
            cases.append({"kernel": "membrane", "dtype": dt, "rows": 3, "n": 37, "steps": 6, "const": const, "noise": noise,
                              "n_ref": n_ref, "subtract": subtract, "record": record, "spiking": spiking, "threshold": threshold,
                              "max_blocks": 1})
    for i, c in enumerate(cases):
        c["id"] = f"{i:03d}-" + "-".join(f"{k}={v}" for k, v in c.items() if k not in ("max_blocks",))
    return cases


CASES = _cases()

# --- what runs under the simulator ----------------------------------------------------------------------

SCRIPT = textwrap.dedent(r'''
    import json, os, sys, time
    assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    import numpy as np
    from npsim.backend.kernels import cuda as ck, normal, reference, uniform

    def same(a, b):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()

    def diff(pairs):
        return [name for name, a, b in pairs if not same(a, b)]

    def words(key, start, n):
        first = start - start % 2
        return normal._words_np(normal._mix_int(key), n + start % 2, first)[start % 2:]

    def branches(aux, i, word):
        """The slow-path branches draw i takes (an instrumented copy of normal._slow_py's decisions)."""
        seen = set()
        seed = normal._mix_int((aux + (i + 1) * normal._GOLD) & normal._MASK)
        c, first = 0, True
        while True:
            l, u = word & 0xFF, word >> 9
            if u < normal.K[l]:
                seen.add("retry_rect")
                return seen
            if not first:
                seen.add("retry_reject")
            first = False
            if l == 0:
                seen.add("tail")
                while True:
                    c += 2
                    u1, u2 = ((float(normal._mix_int((seed + (c + d) * normal._GOLD) & normal._MASK) >> 12) + 0.5)
                              * 2.0 ** -52 for d in (-1, 0))
                    tt, y = -np.log(u1) / normal.R, -np.log(u2)
                    if y + y > tt * tt:
                        return seen
                    seen.add("tail_retry")
            z = float(u) * float(normal.W64[l])
            c += 1
            y = float(normal._mix_int((seed + c * normal._GOLD) & normal._MASK) >> 11) * 2.0 ** -53
            fl, fl1 = float(normal.F[l]), float(normal.F[l + 1])
            if fl + y * (fl1 - fl) < np.exp(-0.5 * z * z):
                seen.add("wedge_accept")
                return seen
            seen.add("wedge_reject")
            c += 1
            word = normal._mix_int((seed + c * normal._GOLD) & normal._MASK) & 0xFFFFFFFF

    def coverage(key, start, n):
        w = words(key, start, n)
        slow = np.flatnonzero((w >> 9) >= normal.K[w & 0xFF])
        aux = normal._mix_int(key ^ normal._AUX)
        kinds = {}
        for i in slow.tolist():
            for b in branches(aux, start + i, int(w[i])):
                kinds[b] = kinds.get(b, 0) + 1
        return {"slow": int(slow.size), **kinds}

    def run_normal(c, dt):
        got = ck.standard_normal(c["key"], c["n"], dt, start=c["start"])
        want = normal.standard_normal(c["key"], c["n"], dt, start=c["start"], use_numba=False)
        return {"mismatch": diff([("draws", got, want)]), "coverage": coverage(c["key"], c["start"], c["n"])}

    def run_normal_window(c, dt):
        key, kind = c["key"], c["kind"]
        w = words(key, 0, 400_000)
        slow = np.flatnonzero((w >> 9) >= normal.K[w & 0xFF])
        aux = normal._mix_int(key ^ normal._AUX)
        hits = (i for i in slow.tolist() if kind in branches(aux, i, int(w[i])))
        idx = [next(hits) for _ in range(c["occurrence"] + 1)][-1]
        c = dict(c, start=max(0, idx - 7))
        return dict(run_normal(c, dt), start=c["start"])

    def run_normal_out(c, dt):
        out = np.full(c["n"], np.nan, dt)
        got = ck.standard_normal(c["key"], c["n"], dt, start=c["start"], out=out)
        want = normal.standard_normal(c["key"], c["n"], dt, start=c["start"])
        empty = ck.standard_normal(c["key"], 0, dt)
        u = np.full(c["n"], np.nan, dt)
        gu = ck.standard_uniform(c["key"], c["n"], dt, start=c["start"], out=u)
        dev = ck._cuda().device_array(c["n"], dt)  # a device array as out (the simulator's)
        gd = ck.standard_normal(c["key"], c["n"], dt, start=c["start"], out=dev)
        return {"mismatch": diff([("draws", out, want), ("uniform", u, uniform.standard_uniform(
                    c["key"], c["n"], dt, start=c["start"])), ("device out", dev.copy_to_host(), want)])
                + ([] if gd is dev else ["device out not returned"])
                + ([] if got is out and gu is u else ["out not returned"])
                + ([] if empty.shape == (0,) and empty.dtype == dt else ["n = 0"])}

    def run_uniform(c, dt):
        got = ck.standard_uniform(c["key"], c["n"], dt, start=c["start"])
        want = uniform.standard_uniform(c["key"], c["n"], dt, start=c["start"], use_numba=False)
        return {"mismatch": diff([("draws", got, want)])}

    def run_drive(c, dt):
        rng = np.random.default_rng(1)
        B, n, reps, clean = c["B"], c["n"], c["repeats"], c["clean_rows"]
        d = rng.standard_normal((B, n)).astype(dt)
        d[0, :3] = [0.0, -0.0, np.nan]
        bias = rng.standard_normal(n).astype(dt) if c["bias"] else None
        perturb = rng.standard_normal((B * reps - clean, n)).astype(dt) if c["perturb"] else None
        d1, d2 = d.copy(), d.copy()
        a1, x1 = reference.drive_activate(d1, bias, perturb, reps, c["slope"], clean)
        a2, x2 = ck.drive_activate(d2, bias, perturb, reps, c["slope"], clean)
        bad = diff([("d", d2, d1), ("a", a2, a1), ("x", x2, x1)])
        if (a1 is d1) != (a2 is d2):
            bad.append("a is d")
        if (x1 is a1) != (x2 is a2):
            bad.append("x is a")
        return {"mismatch": bad}

    def run_scale_rows(c, dt):
        rng = np.random.default_rng(2)
        a = rng.standard_normal((c["N"], c["n"])).astype(dt)
        w = rng.standard_normal(c["N"]).astype(dt)
        a1, a2 = a.copy(), a.copy()
        r1 = reference.scale_rows(a1, w)
        r2 = ck.scale_rows(a2, w)
        return {"mismatch": diff([("a", a2, a1)]) + ([] if r2 is a2 else ["returns a"])}

    def run_decorrelation(c, dt):
        rng = np.random.default_rng(3)
        n, m, B, lr = c["n"], c["m"], c["B"], c["lr"]
        X = rng.standard_normal((B, n)).astype(dt)
        R = (np.eye(n, m) + 0.1 * rng.standard_normal((n, m))).astype(dt)
        CR = (X.T @ X @ R).astype(dt)
        v = (np.mean(X * X, axis=0) * 0.9 + 0.1).astype(dt)
        want = reference.decorrelation_finish(CR.copy(), R, v, B, lr)
        cr = CR.copy()
        got = ck.decorrelation_finish(cr, R, v, B, lr)
        return {"mismatch": diff([("new R", got, want), ("CR", cr, want)]) + ([] if got is cr else ["returns CR"])}

    def run_adam(c, dt):
        rng = np.random.default_rng(4)
        shape = tuple(c["shape"])
        p, g = rng.standard_normal(shape).astype(dt), rng.standard_normal(shape).astype(dt)
        m = (0.1 * rng.standard_normal(shape)).astype(dt)
        v = (0.01 * rng.random(shape)).astype(dt)
        hyper = dict(b1=0.9, b2=0.999, step_size=1e-3, eps=1e-8)
        ref = [a.copy() for a in (p, g, m, v)]
        got = [a.copy() for a in (p, g, m, v)]
        t = np.dtype(dt).type
        norm_ref = float(reference.adam_step(*ref, **hyper))  # Python floats, as kernels.adam_step passes them
        norm = ck.adam_step(*got, **hyper)
        return {"mismatch": diff([(k, b, a) for k, a, b in zip("pgmv", ref, got)]),
                "norm": norm, "norm_ref": norm_ref, "norm_type": type(norm).__name__}

    def run_membrane(c, dt):
        rng = np.random.default_rng(5)
        rows, n, T = c["rows"], c["n"], c["steps"]
        I = rng.uniform(0.0, 3.0, (1 if c["const"] else T, rows, n)).astype(dt)
        if c["threshold"] < 0:
            I = (I - 3.5).astype(dt)
        noise = rng.normal(0.0, 0.5, (T, rows, n)).astype(dt) if c["noise"] else None
        state = dict(v=rng.uniform(-0.5, 1.0, (rows, n)).astype(dt),
                     refr=rng.integers(0, 3, (rows, n)).astype(np.int32),
                     count=rng.integers(0, 4, (rows, n)).astype(dt),
                     sum_i=rng.standard_normal((rows, n)).astype(dt),
                     sum_v=rng.standard_normal((rows, n)).astype(dt),
                     spikes=np.full((T, rows, n), 7.0, dt),
                     vrec=np.full((T, rows, n), 7.0, dt))
        s1 = {k: a.copy() for k, a in state.items()}
        s2 = {k: a.copy() for k, a in state.items()}
        alpha, beta, thr = 0.9, 0.35, c["threshold"]
        t = np.dtype(dt).type
        order = ("v", "refr", "count", "sum_i", "sum_v", "spikes", "vrec")
        reference.membrane_run(I, noise, *(s1[k] for k in order), t(alpha), t(beta), t(thr), c["subtract"],
                               c["n_ref"], c["spiking"], noise is not None, c["record"])
        ck.membrane_run(I, noise, *(s2[k] for k in order), alpha=alpha, beta=beta, threshold=thr,
                        subtract=c["subtract"], n_ref=c["n_ref"], spiking=c["spiking"], record=c["record"])
        resets = int(np.sum(s1["count"] - state["count"]))
        negzero = int(np.sum((s1["v"] == 0) & np.signbit(s1["v"])))
        return {"mismatch": diff([(k, s2[k], s1[k]) for k in order]), "spikes": resets, "negative_zeros": negzero,
                "refractory": int(np.sum(s1["refr"] > 0))}

    RUN = {k[4:]: f for k, f in list(globals().items()) if k.startswith("run_")}
    results = {}
    total = time.perf_counter()
    for c in json.load(sys.stdin):
        ck.MAX_BLOCKS = c.get("max_blocks", 1024)
        t0 = time.perf_counter()
        try:
            rec = RUN[c["kernel"]](c, np.dtype(c["dtype"]))
        except Exception as e:  # reported per case
            import traceback
            rec = {"error": traceback.format_exc()}
        rec["seconds"] = time.perf_counter() - t0
        results[c["id"]] = rec
    results["_total_seconds"] = time.perf_counter() - total
    json.dump(results, sys.stdout)
''')


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def sim():
    """Per case id: {"mismatch": [outputs differing from the twin's], ...}, from one simulator subprocess."""
    proc = subprocess.run([sys.executable, "-c", SCRIPT], input=json.dumps(CASES), capture_output=True, text=True, check=False,
                          env=_env(NUMBA_ENABLE_CUDASIM="1"), cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def _result(sim, case):
    rec = sim[case["id"]]
    assert "error" not in rec, rec["error"]
    return rec


def _ids(kernel):
    return [c for c in CASES if c["kernel"] == kernel]


@pytest.mark.parametrize("case", _ids("normal") + _ids("normal_out"), ids=lambda c: c["id"])
def test_normal_bitwise(sim, case):
    assert _result(sim, case)["mismatch"] == []


def test_normal_covers_the_slow_path(sim):
    """The plain cases include rejected draws, wedges among them, for both dtypes."""
    for dt in ("float32", "float64"):
        cov = [_result(sim, c)["coverage"] for c in _ids("normal") if c["dtype"] == dt]
        assert sum(k["slow"] for k in cov) >= 20
        assert sum(k.get("wedge_accept", 0) for k in cov) >= 5


@pytest.mark.parametrize("case", _ids("normal_window"), ids=lambda c: c["id"])
def test_normal_tail_and_retries_bitwise(sim, case):
    rec = _result(sim, case)
    assert rec["coverage"].get(case["kind"], 0) >= 1, rec["coverage"]  # the window holds such a draw
    assert rec["mismatch"] == []


@pytest.mark.parametrize("case", _ids("uniform"), ids=lambda c: c["id"])
def test_uniform_bitwise(sim, case):
    assert _result(sim, case)["mismatch"] == []


@pytest.mark.parametrize("case", _ids("drive"), ids=lambda c: c["id"])
def test_drive_activate_bitwise(sim, case):
    assert _result(sim, case)["mismatch"] == []


@pytest.mark.parametrize("case", _ids("scale_rows") + _ids("decorrelation"), ids=lambda c: c["id"])
def test_scale_rows_and_decorrelation_bitwise(sim, case):
    assert _result(sim, case)["mismatch"] == []


@pytest.mark.parametrize("case", _ids("adam"), ids=lambda c: c["id"])
def test_adam_arrays_bitwise_norm_within_tolerance(sim, case):
    rec = _result(sim, case)
    assert rec["mismatch"] == []
    assert rec["norm_type"] == "float"
    rtol = 1e-5 if case["dtype"] == "float32" else 1e-12
    assert rec["norm"] == pytest.approx(rec["norm_ref"], rel=rtol, abs=0) and rec["norm"] > 0


@pytest.mark.parametrize("case", _ids("membrane"), ids=lambda c: c["id"])
def test_membrane_run_bitwise(sim, case):
    rec = _result(sim, case)
    assert rec["mismatch"] == []
    if case["spiking"]:
        assert rec["spikes"] > 0  # the case exercises resets
    if case["threshold"] < 0:
        assert rec["negative_zeros"] > 0  # and the sign of a reset to v·0
    if case["n_ref"] > 0 and case["spiking"]:
        assert rec["refractory"] > 0


def test_simulator_time(sim):
    assert sim["_total_seconds"] < 120  # ~20 s on a 2-core machine


# --- without the simulator --------------------------------------------------------------------------------


def test_import_needs_no_cuda():
    """Importing the module (and npsim's kernels) imports no numba.cuda, so no machine without CUDA fails."""
    code = ("import sys; import npsim.backend.kernels, npsim.backend.kernels.cuda as ck; "
            "assert 'numba.cuda' not in sys.modules, 'numba.cuda imported'; print(ck.TPB)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=_env(), cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("call, message", [
    (lambda ck: ck.standard_normal(-1, 3), "standard_normal: key must be an integer in [0, 2**64)"),
    (lambda ck: ck.standard_normal(1, 2.0), "standard_normal: n must be an integer"),
    (lambda ck: ck.standard_normal(1, 3, np.int32), "standard_normal: dtype must be float32 or float64"),
    (lambda ck: ck.standard_normal(1, 3, start=-1), "standard_normal: start must be an integer in [0, 2**62)"),
    (lambda ck: ck.standard_uniform(1, -3), "standard_uniform: n must be a non-negative integer"),
    (lambda ck: ck.standard_uniform(1, 3, np.float64, out=np.empty(3, np.float32)),
     "standard_uniform: out must be a writeable contiguous float64 array of shape (3,)"),
    (lambda ck: ck.standard_normal(1, 4, out=np.empty(8, np.float32)[::2]),
     "standard_normal: out must be a writeable contiguous float32 array of shape (4,)"),
    (lambda ck: ck.adam_step(*(np.zeros(8)[::2],) * 4, b1=0.9, b2=0.99, step_size=1e-3, eps=1e-8),
     "adam_step: p must be a contiguous array"),
    (lambda ck: ck.adam_step(np.zeros(4), np.zeros(4, np.float32), np.zeros(4), np.zeros(4), b1=0.9, b2=0.99,
                             step_size=1e-3, eps=1e-8), "adam_step: arrays must share one dtype"),
    (lambda ck: ck.drive_activate(np.zeros((2, 3)), None, np.zeros((3, 3)), 2, 0.0, 0),
     "drive_activate: perturb has shape (3, 3), expected (4, 3)"),
])
def test_argument_errors_before_any_launch(call, message):
    from npsim.backend.kernels import cuda as ck

    with pytest.raises(ValueError) as e:
        call(ck)
    assert str(e.value).startswith(message)


PTX_SCRIPT = textwrap.dedent(r'''
    import json, math, re, sys, types
    import numba.cuda.dispatcher as dispatcher
    import numba.cuda.codegen as codegen
    from numba import cuda, types as T
    # compile for sm_90 with no GPU: device functions ask the current device for its compute capability
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
    compile_ir, FMA = codegen.nvvm.compile_ir, {}

    def compile_ir_with(llvmir, **opts):
        opts.update(FMA)
        return compile_ir(llvmir, **opts)

    codegen.nvvm.compile_ir = compile_ir_with
    from npsim.backend.kernels import cuda as ck

    def ptx(fn, sig, fma):
        FMA.clear()
        if not fma:
            FMA["fma"] = 0
        text = cuda.compile_ptx(getattr(fn, "py_func", fn), sig, cc=(9, 0))[0]
        return re.sub(r"_ZN\w+|_cudapy_smem_\d+", "NAME", text)  # names carry a compile counter

    def fmas(p):
        return len(re.findall(r"\bfma\.", p))

    def stats(fn, sig):
        p1, p0 = ptx(fn, sig, True), ptx(fn, sig, False)
        strip = lambda p: re.sub(r"\b(add|sub|mul)\.rn\.", r"\1.", p)  # -fma=0 also marks adds .rn
        return {"fma_added": fmas(p1) - fmas(p0), "plain_mul": len(re.findall(r"\tmul\.f(?:32|64)\b", p1)),
                "same_but_rn": strip(p1) == strip(p0)}

    def libm(a, b, c, o):
        i = cuda.grid(1)
        if i < o.shape[0]:
            x = -math.log(a[i])
            y = -math.log(b[i])
            if y > x:
                o[i] = math.exp(c[i])

    def control(a, b):  # what the check must catch: a * b + 2.0 is contracted
        i = cuda.grid(1)
        if i < a.shape[0]:
            a[i] = a[i] * b + 2.0

    f64 = T.Array(T.float64, 1, "C")
    out = {"libm": stats(libm, (f64,) * 4), "control": stats(control, (f64, T.float64))}
    for f in (T.float32, T.float64):
        a1, a2, a3 = (T.Array(f, d, "C") for d in (1, 2, 3))
        k = ck._kernels_for(f.name)
        sigs = {"normal": (T.uint64, T.uint64, T.int64, T.int64, a1, T.Array(T.uint32, 1, "C"), a1, f64, f64),
                "uniform": (T.uint64, T.int64, T.int64, a1),
                "adam": (a1, a1, a1, a1, f, f, f, f, f, f, f64),
                "drive": (a2, a1, a2, a2, a2, f, T.boolean, T.boolean, T.int64, T.int64, T.boolean, T.boolean),
                "scale": (a2, a1), "decorrelation": (a2, a2, a1, f, f),
                "membrane": (a3, a3, a2, T.Array(T.int32, 2, "C"), a2, a2, a2, a3, a3, f, f, f, T.boolean, T.int32,
                             T.boolean, T.boolean, T.boolean)}
        for name, sig in sigs.items():
            out[f"{name}/{f}"] = stats(k[name], sig)
    json.dump(out, sys.stdout)
''')


def test_ptx_has_no_contracted_multiply_adds():
    """NVVM's default contraction (-fma=1) fuses nothing of ours, and no product is left for ptxas to fuse.

    Per kernel: compiled with -fma=0 the PTX is the same (up to the .rn NVVM
    then puts on every add), and every float multiply is an explicit mul.rn
    (PTX: never fused into an FMA). The normal kernel may differ in libdevice's
    exp and log alone, which contract inside themselves: exactly as much as a
    kernel calling exp once and log twice.
    """
    probe = subprocess.run([sys.executable, "-c", "from numba.cuda.cudadrv import nvvm; nvvm.NVVM()"],
                           capture_output=True, text=True, check=False, env=_env(), timeout=120)
    if probe.returncode != 0:
        pytest.skip("libNVVM (CUDA toolkit) not found: PTX not checked")
    proc = subprocess.run([sys.executable, "-c", PTX_SCRIPT], capture_output=True, text=True, check=False, env=_env(), cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(proc.stdout)
    libm = res.pop("libm")
    assert res.pop("control")["fma_added"] == 1  # the check sees a contraction where there is one
    assert len(res) == 14
    for name, r in res.items():
        if name.startswith("normal/"):
            assert (r["fma_added"], r["plain_mul"]) == (libm["fma_added"], libm["plain_mul"]), (name, r, libm)
        else:
            assert r == {"fma_added": 0, "plain_mul": 0, "same_but_rn": True}, (name, r)
