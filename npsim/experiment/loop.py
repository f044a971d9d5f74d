"""The experiment loop: config -> data, network, rule, optimizer -> trajectory file.

:func:`run` trains one config and streams everything into one HDF5 file
(:mod:`npsim.io.trajectory`); :func:`resume` continues a killed run from its
checkpoint. Every random number of training comes from one stream whose
state is checkpointed, the shuffle order of each epoch is a pure function of
(seed, epoch), and evaluation draws from its own per-epoch stream, so a
resumed run continues bit for bit as the uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import math
import platform
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..backend.arrays import take_rows
from ..errors import (
    Diverged,
    NpsimError,
    OutputError,
    TrajectoryCorrupt,
    TrajectoryError,
    TrajectoryFinished,
)
from ..io.data import Dataset
from ..io.outputs import check_output_file
from ..io.trajectory import Series, TrajectoryWriter, read_attrs, read_checkpoint
from ..learn.step import evaluate, train_step, trainable
from ..model.network import Network
from ..model.spiking import Monitor
from .assemble import Experiment, build
from .config import Config, parse_toml

__all__ = ["run", "resume", "RunResult", "Diverged", "default_output", "epoch_order"]

RNG_KEY = "rng/train"


@dataclass
class RunResult:
    path: Path
    status: str
    epochs: int
    steps: int
    test_accuracy: float
    test_loss: float
    train_accuracy: float
    wall_time: float
    message: str = ""
    history: dict = field(default_factory=dict)


def default_output(cfg: Config, runs_dir: str | Path = "runs") -> Path:
    return Path(runs_dir) / f"{cfg.name}-s{cfg.seed}.h5"


def _series(net: Network):
    L = net.n_layers
    steps = {
        "step": Series((), "int64", "update", "global update index, starting at 0"),
        "epoch": Series((), "int64", "epoch", "epoch the update belongs to, starting at 0"),
        "loss": Series((), "float32", "nats" if net.loss.name == "cross_entropy" else "loss",
                       "mean per-sample loss of the clean pass on the update's batch, before the update"),
        "delta_loss": Series((), "float32", "nats" if net.loss.name == "cross_entropy" else "loss",
                             "mean per-sample loss change of the perturbed passes (NaN for BP)"),
        "update_norm": Series((L,), "float32", "parameter units",
                              "per layer: Euclidean norm of the change of (W, b) made by the update"),
        "alignment": Series((L,), "float32", "cosine",
                            "per layer: cosine between the rule's direction for (W, b) and the BP gradient "
                            "on the same batch; NaN where not measured (see attr diagnostics_every) or BP "
                            "does not exist"),
        "wall_time": Series((), "float64", "s", "seconds since the run (or its last resume) started"),
    }
    epochs = {
        "epoch": Series((), "int64", "epoch", "epochs completed (1 = after the first epoch)"),
        "step": Series((), "int64", "update", "updates completed"),
        "train_loss": Series((), "float32", "nats", "mean loss on the train-set evaluation samples"),
        "train_accuracy": Series((), "float32", "fraction", "accuracy on the train-set evaluation samples"),
        "test_loss": Series((), "float32", "nats", "mean loss on the test set"),
        "test_accuracy": Series((), "float32", "fraction", "accuracy on the test set"),
        "wall_time": Series((), "float64", "s", "seconds since the run (or its last resume) started"),
    }
    return steps, epochs


def _state_arrays(ex: Experiment, params: dict, opt_state: dict, rng) -> dict:
    be = ex.backend
    arrays = {f"params/{k}": be.to_numpy(v) for k, v in params.items()}
    arrays.update({f"optimizer/{k}": be.to_numpy(v) for k, v in opt_state.items()})
    arrays[RNG_KEY] = rng.state()
    return arrays


def _versions() -> str:
    import h5py
    import numba

    return (f"npsim {__version__}; python {platform.python_version()}; numpy {np.__version__}; "
            f"numba {numba.__version__}; h5py {h5py.__version__}")


def run(cfg: Config, out: str | Path | None = None, *, overwrite: bool = False, progress: bool = True,
        data: Dataset | None = None, stop_after_steps: int | None = None) -> RunResult:
    """Train ``cfg`` from scratch, writing the trajectory to ``out`` (default ``runs/<name>-s<seed>.h5``).

    stop_after_steps : stop (status "interrupted") after this many updates, as
        a kill would, but cleanly; used to test resume.
    """
    path = check_output_file(out if out is not None else default_output(cfg), what="trajectory file")
    if overwrite and path.exists():
        TrajectoryWriter.check_replaceable(path)  # before any data are loaded
    ex = build(cfg, data=data)
    params, rng = ex.initial_state()
    opt_state = ex.optimizer.init(trainable(params))
    steps, epochs = _series(ex.net)
    state = {k: (tuple(v.shape), str(v.dtype)) for k, v in _state_arrays(ex, params, opt_state, rng).items()}
    attrs = {
        "name": cfg.name, "config": cfg.to_toml(), "seed": cfg.seed, "backend": ex.backend.name,
        "device": ex.backend.device_name, "dtype": cfg.dtype, "rule": ex.rule.name, "network": ex.net.describe(),
        "sizes": np.asarray(ex.net.sizes, dtype=np.int64), "data": ex.data.name, "data_source": ex.data.source,
        "n_train": ex.data.n_train, "n_test": ex.data.n_test, "versions": _versions(),
        "diagnostics_every": cfg.train.diagnostics_every, "command": " ".join(sys.argv),
        "data_fingerprint": data_fingerprint(ex.data),
    }
    if progress:
        print(f"npsim: training {cfg.name}: {ex.rule.name} on {ex.data.name} ({ex.data.n_train} samples), "
              f"{ex.net.describe()}, seed {cfg.seed} -> {path}", file=sys.stderr)
    writer = TrajectoryWriter.create(path, attrs=attrs, steps=steps, epochs=epochs, state=state,
                                     snapshot_names=[f"params/{k}" for k in params], meta_names=["epoch", "batch", "step"],
                                     overwrite=overwrite)
    return _loop(ex, writer, params, opt_state, rng, epoch=0, batch=0, step=0, progress=progress,
                 stop_after_steps=stop_after_steps)


def resume(path: str | Path, *, progress: bool = True, data: Dataset | None = None,
           stop_after_steps: int | None = None) -> RunResult:
    """Continue the run stored in ``path`` from its last checkpoint.

    Everything the continuation needs (the stored config, the data, the
    checkpoint's arrays and random state) is read and checked before the file
    is opened for writing, so a resume that cannot start leaves the file as it was.
    """
    attrs = read_attrs(path)
    if attrs.get("status") == "finished":
        raise TrajectoryFinished(f"{path}: run already finished; nothing to resume")
    config = attrs.get("config")
    if not isinstance(config, str):
        raise TrajectoryCorrupt(f"{path}: the root attribute 'config' is missing or unreadable")
    cfg = parse_toml(config, f"{path} (stored config)")
    ex = build(cfg, data=data)
    stored, found = attrs.get("data_fingerprint"), data_fingerprint(ex.data)
    if stored is not None and stored != found:
        raise TrajectoryError(
            f"{path}: the data differ from those the run trained on: it used {attrs.get('data_source')} "
            f"(fingerprint {stored}), this resume found {ex.data.source} (fingerprint {found}); make the same "
            f"data set findable (data.path, NPSIM_DATA) and resume again")
    _restore(ex, path, *read_checkpoint(path))  # checks the checkpoint fits, before anything is written
    writer, arrays, meta = TrajectoryWriter.resume(path)
    try:
        params, opt_state, rng = _restore(ex, path, arrays, meta)
        if writer.resume_note:
            warnings.warn(f"{path}: {writer.resume_note}", RuntimeWarning, stacklevel=2)
    except BaseException as exc:  # the run did not start again: say so in the file, not "running"
        writer.finish("interrupted", message=f"resume failed: {exc}")
        raise
    return _loop(ex, writer, params, opt_state, rng, epoch=meta["epoch"], batch=meta["batch"], step=meta["step"],
                 progress=progress, stop_after_steps=stop_after_steps)


def _restore(ex: Experiment, path, arrays: dict, meta: dict):
    """(params, optimizer state, random stream) from a checkpoint; TrajectoryError if they do not fit the run."""
    be = ex.backend
    params = {k.removeprefix("params/"): be.asarray(v, dtype=v.dtype) for k, v in arrays.items()
              if k.startswith("params/")}
    opt_state = {k.removeprefix("optimizer/"): (be.asarray(v, dtype=v.dtype) if v.ndim else v)
                 for k, v in arrays.items() if k.startswith("optimizer/")}
    rng = be.stream(0)
    try:
        ex.net.check_params(params)
        for k, v in ex.rule.init_params(ex.net, be.stream(0), be).items():
            if k not in params or tuple(params[k].shape) != tuple(v.shape):
                raise ValueError(f"parameter {k!r} of rule {ex.rule.name} is missing or has the wrong shape")
        rng.set_state(arrays[RNG_KEY])
        missing = [k for k in ("epoch", "batch", "step") if k not in meta]
        if missing:
            raise KeyError(f"counters {missing} missing")
    except (ValueError, KeyError) as exc:  # the checkpoint does not fit this run
        raise TrajectoryError(f"{path}: its checkpoint cannot continue this run: {exc}") from None
    return params, opt_state, rng


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled sample order of one training epoch.

    A pure function of its arguments: the permutation comes from
    ``Generator(PCG64(SeedSequence([seed, epoch, 0x5EED])))``, so a resumed
    run reproduces the order of any epoch without saved random state.

    Parameters
    ----------
    n : number of training samples (>= 0).
    seed : the run's seed (>= 0).
    epoch : epoch index (>= 0).

    Returns
    -------
    (n,) int64 permutation of ``range(n)``.
    """
    for label, v in (("n", n), ("seed", seed), ("epoch", epoch)):
        if isinstance(v, bool) or int(v) != v or v < 0:
            raise ValueError(f"{label} must be a non-negative integer, got {v!r}")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch), 0x5EED])))
    return rng.permutation(int(n)).astype(np.int64, copy=False)


def _eval_stream(ex: Experiment, epoch: int):
    """Evaluation's own random stream (stochastic node models), so evaluation never shifts training's stream."""
    return ex.backend.stream(np.random.SeedSequence([ex.config.seed, epoch, 0xE7A1]))


def _evaluate_epoch(ex: Experiment, params: dict, epoch: int) -> dict:
    cfg = ex.config
    n_eval = ex.data.n_train if cfg.train.eval_train_samples is None else min(cfg.train.eval_train_samples,
                                                                               ex.data.n_train)
    rng = _eval_stream(ex, epoch)
    bs = ex.net.eval_batch_size
    tr_loss, tr_acc = evaluate(ex.net, params, ex.x_train[:n_eval, ...], ex.y_train[:n_eval, ...], rng, bs)
    te_loss, te_acc = evaluate(ex.net, params, ex.x_test, ex.y_test, rng, bs)
    return {"train_loss": tr_loss, "train_accuracy": tr_acc, "test_loss": te_loss, "test_accuracy": te_acc}


# the loop checks finiteness itself and stops a diverging run with a clear message
@np.errstate(over="ignore", invalid="ignore", divide="ignore")
def _loop(ex: Experiment, writer: TrajectoryWriter, params, opt_state, rng, *, epoch: int, batch: int, step: int,
          progress: bool, stop_after_steps: int | None) -> RunResult:
    from tqdm.auto import tqdm

    cfg, net, be = ex.config, ex.net, ex.backend
    tc = cfg.train
    n = ex.data.n_train
    per_epoch = n // tc.batch_size
    diag = tc.diagnostics_every if net.differentiable else 0
    frozen = ex.frozen
    nan_l = np.full(net.n_layers, np.nan, dtype=np.float32)
    t0 = time.perf_counter()
    last = {"test_accuracy": float("nan"), "test_loss": float("nan"), "train_accuracy": float("nan")}
    steps_done = 0
    bar = tqdm(total=tc.epochs * per_epoch, initial=epoch * per_epoch + batch, disable=not progress,
               unit="step", dynamic_ncols=True, leave=True, file=sys.stderr, mininterval=0.5)
    try:
        while epoch < tc.epochs:
            bar.set_description(f"epoch {epoch + 1}/{tc.epochs}")
            order = epoch_order(n, cfg.seed, epoch)
            while batch < per_epoch:
                idx = order[batch * tc.batch_size:(batch + 1) * tc.batch_size]
                x, y = take_rows(ex.x_train, idx), take_rows(ex.y_train, idx)  # indexed on the device
                params, opt_state, out, st = train_step(net, ex.rule, ex.optimizer, params, opt_state, x, y, rng,
                                                        frozen, stats=True, align=bool(diag) and step % diag == 0)
                loss, norms = st.loss, st.update_norm
                if not (math.isfinite(loss) and np.all(np.isfinite(norms))):
                    raise Diverged(f"loss became {loss} at step {step} (epoch {epoch + 1}); lower the learning "
                                   f"rate or sigma")
                cos = nan_l if st.alignment is None else st.alignment.astype(np.float32)
                writer.append_steps(step=step, epoch=epoch, loss=loss, delta_loss=st.delta_loss,
                                    update_norm=norms, alignment=cos, wall_time=time.perf_counter() - t0)
                step += 1
                batch += 1
                steps_done += 1
                bar.update(1)
                if steps_done % 20 == 0 or batch == per_epoch:
                    bar.set_postfix(loss=f"{loss:.3f}", test_acc=f"{last['test_accuracy']:.3f}", refresh=False)
                if stop_after_steps is not None and steps_done >= stop_after_steps:
                    return _result(writer, "interrupted", epoch, step, last, t0,
                                   f"stopped after {steps_done} updates")
                if tc.checkpoint_steps and step % tc.checkpoint_steps == 0 and batch < per_epoch:
                    writer.checkpoint(_state_arrays(ex, params, opt_state, rng),
                                      {"epoch": epoch, "batch": batch, "step": step})
            epoch += 1
            batch = 0
            last = _evaluate_epoch(ex, params, epoch)
            writer.append_epoch(epoch=epoch, step=step, wall_time=time.perf_counter() - t0, **last)
            if not math.isfinite(last["test_loss"]):
                raise Diverged(f"test loss became {last['test_loss']} after epoch {epoch}")
            if (tc.snapshot_every and epoch % tc.snapshot_every == 0) or epoch == tc.epochs:
                writer.snapshot(epoch, {f"params/{k}": be.to_numpy(v) for k, v in params.items()})
            writer.checkpoint(_state_arrays(ex, params, opt_state, rng), {"epoch": epoch, "batch": 0, "step": step})
            bar.set_postfix(loss=f"{loss:.3f}", test_acc=f"{last['test_accuracy']:.3f}")
        if tc.monitor is not None and net.temporal:
            _record_monitors(ex, params, writer, epoch)
        return _result(writer, "finished", epoch, step, last, t0, "")
    except Diverged as exc:
        writer.flush()
        writer.finish("failed", failed_step=step, message=str(exc))
        raise
    except KeyboardInterrupt as exc:
        by = "SIGTERM" if getattr(exc, "signum", None) == signal.SIGTERM else "the user"
        _end(writer, "interrupted", f"interrupted by {by} at step {step}")
        raise
    except OutputError as exc:  # a full disk: what is flushed stays; the rows since the last checkpoint may not
        _end(writer, "interrupted", str(exc), flush=False)
        raise
    except MemoryError as exc:
        _end(writer, "interrupted", f"out of memory at step {step}: {exc}", flush=False)
        raise
    except Exception as exc:  # a bug: say so in the file rather than leave it "running"
        _end(writer, "failed", f"internal error at step {step}: {type(exc).__name__}: {exc}")
        raise
    finally:
        bar.close()


def _end(writer: TrajectoryWriter, status: str, message: str, *, flush: bool = True) -> None:
    """Mark the file ended if the disk and the file allow it; never hide the error being handled."""
    try:
        writer.finish(status, message=message.replace("\n", " "), flush=flush)
    except (NpsimError, OSError, RuntimeError, ValueError):
        if not writer.closed:
            writer.abandon()


def data_fingerprint(ds: Dataset) -> str:
    """A short hash of the arrays a run trains and evaluates on (after preprocessing), to recognise them again."""
    h = hashlib.blake2b(digest_size=12)
    for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _record_monitors(ex: Experiment, params: dict, writer: TrajectoryWriter, epoch: int) -> None:
    """Spikes and potentials of the monitored layers on the first test samples (a clean pass)."""
    mc, sim = ex.config.train.monitor, ex.net.simulation
    n = min(mc.samples, ex.data.n_test)
    tr = ex.net.forward(params, ex.x_test[:n, ...], ex.y_test[:n, ...], rng=_eval_stream(ex, epoch),
                        monitor=Monitor(layers=tuple(mc.layers), units=mc.units))
    monitors = {}
    for layer, rec in tr.records.items():
        node = rec["node"]
        m = {"v": ex.backend.to_numpy(rec["v"]).astype(np.float32), "units": rec["units"].astype(np.int64),
             "node": node.name}
        if "spikes" in rec:
            m["spikes"] = rec["spikes"]
            m["threshold"] = float(node.threshold)
        monitors[layer] = m
    writer.write_monitors(monitors, dt=sim.dt, steps=sim.steps, samples=np.arange(n, dtype=np.int64), epoch=epoch)


def _result(writer, status, epoch, step, last, t0, message) -> RunResult:
    writer.finish(status, **({"message": message} if message else {}))
    return RunResult(Path(writer.path), status, epoch, step, last["test_accuracy"], last["test_loss"],
                     last["train_accuracy"], time.perf_counter() - t0, message)
