"""Running a sweep: one Dask task per run, the index kept up to date.

:func:`run_sweep` runs what is not finished yet of a sweep
(:mod:`npsim.experiment.sweep.spec`), one Dask
task per run, on a :class:`distributed.LocalCluster` or on any scheduler,
writes one trajectory file per run and keeps the sweep index
(``<out>/index.csv``) up to date::

    from npsim.experiment.sweep import load_sweep_file, run_sweep
    sweep = load_sweep_file("models/sweep-example.toml")
    print([r.name for r in sweep.runs])
    rows = run_sweep(sweep, workers=2)          # or scheduler="tcp://host:8786", or client=Client(...)

Only the process that calls :func:`run_sweep` (the driver) writes the index;
the workers write the trajectory files, so with a remote scheduler the out
folder must be on a file system that the driver and every worker share.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ...analysis.metrics import summary
from ...errors import (
    Diverged,
    NoCheckpoint,
    SweepError,
    TrajectoryBusy,
    TrajectoryError,
    TrajectoryFinished,
    TrajectoryNotFound,
)
from ...io.sweep_index import INDEX_COLUMNS, SUMMARY_COLUMNS, read_index, write_index
from ...io.trajectory import read_checkpoint, read_trajectory, writer_alive
from .spec import SPEC_NAME, RunSpec, Sweep, load_sweep_file, spec_toml

__all__ = ["RunState", "plan", "run_sweep", "execute_run"]

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")

_RESUME_WAIT_S = 30.0  # how long a task waits for a killed writer of the same file to go away

_CONNECT_TIMEOUT_S = 30.0  # default for waiting on a scheduler file and for connecting to the scheduler


@dataclass
class RunState:
    """Where a run stands, and what the sweep will do with it.

    status : one of :data:`STATUSES`.
    action : ``"run"`` (from scratch, replacing any file), ``"resume"`` (from
        its checkpoint) or None (nothing to do).
    metrics : index columns known so far (see :data:`INDEX_COLUMNS`).
    """

    spec: RunSpec
    status: str
    action: str | None
    metrics: dict = field(default_factory=dict)
    note: str = ""

    def row(self, out: Path) -> dict:
        r = {"run": self.spec.name, "file": os.path.relpath(self.spec.path, out), **self.spec.params,
             "seed": self.spec.seed, **self.metrics, "status": self.status}
        r.setdefault("message", "")
        return r


def _metrics_of(traj) -> dict:
    s = summary(traj)
    return {k: s[k] for k in SUMMARY_COLUMNS} | {
        "resumed_count": int(traj.attrs.get("resumed_count", 0) or 0),
        "message": str(traj.attrs.get("message", "") or "")}


def _has_checkpoint(path: Path) -> bool:
    """Whether the trajectory file holds a checkpoint a resume can start from."""
    try:
        read_checkpoint(path)
    except TrajectoryError:  # NoCheckpoint, or no usable slot
        return False
    return True


def _diverged(traj) -> bool:
    """Whether a trajectory file is marked failed because its run diverged (the loop sets ``failed_step``)."""
    return traj.status == "failed" and traj.attrs.get("failed_step") is not None


def plan(sweep: Sweep, *, retry_failed: bool = False) -> list[RunState]:
    """The state of every run, from its trajectory file (and the previous index), and what to do with it.

    - finished file: nothing to do;
    - failed file: nothing, unless ``retry_failed`` (then "run": from scratch
      if it diverged, else from its checkpoint, see :func:`execute_run`);
    - a file being written by a live process on this host: nothing this time;
    - a file that is running (its writer gone) or interrupted: resume from its
      checkpoint (from scratch if it has none) -- also when the previous index
      says ``failed``, as it does when the run's Dask task died (KilledWorker),
      as long as the file has a checkpoint;
    - ``failed`` in the previous index and a file without a checkpoint, or no
      file: nothing, unless ``retry_failed``;
    - no file, or an unreadable one: run from scratch (an unreadable file is
      moved aside to ``<file>.unreadable``).
    """
    previous = {}
    if sweep.index.is_file():
        with contextlib.suppress(SweepError):
            previous = {r["run"]: r for r in read_index(sweep.index)[1]}
    states = []
    for spec in sweep.runs:
        old = previous.get(spec.name)
        failed_before = old is not None and old["status"] == "failed"
        kept = {k: old[k] for k in INDEX_COLUMNS if old and k in old and k not in ("seed", "status")}
        if not spec.path.exists():
            if failed_before and not retry_failed:
                states.append(RunState(spec, "failed", None, kept))
            else:
                states.append(RunState(spec, "pending", "run"))
            continue
        try:
            traj = read_trajectory(spec.path, snapshots=False, monitors=False)
        except TrajectoryError as exc:
            states.append(RunState(spec, "pending", "run",
                                   {"message": f"unreadable file moved aside to {spec.path.name}.unreadable: {exc}"}))
            continue
        m = _metrics_of(traj)
        note = ""
        stored = traj.attrs.get("config")
        if isinstance(stored, str) and stored != spec.config.to_toml():
            note = "its stored config differs from the sweep's (base or [set] changed?); kept as it is"
        if traj.status == "finished":
            states.append(RunState(spec, "finished", None, m, note))
        elif traj.status == "failed":
            m["message"] = kept.get("message") or m["message"]  # as the failing task reported it
            states.append(RunState(spec, "failed", "run" if retry_failed else None, m, note))
        elif traj.status == "running" and writer_alive(traj.attrs.get("writer_pid"), traj.attrs.get("writer_host"),
                                                       wait=5.0):
            states.append(RunState(spec, "running", None, m,
                                   f"still being written by process {traj.attrs.get('writer_pid')} on this host; "
                                   f"skipped (run the sweep again when it has ended)"))
        elif failed_before and not _has_checkpoint(spec.path):  # its task died before the first checkpoint
            m["message"] = kept.get("message") or m["message"]
            states.append(RunState(spec, "failed", "run" if retry_failed else None, m, note))
        else:  # interrupted, or running with its writer gone (killed; its task may have been marked failed)
            states.append(RunState(spec, "interrupted", "resume", m, note))
    return states


@contextlib.contextmanager
def _thread_limits(threads: int | None):
    """Limit BLAS (threadpoolctl, if installed) and Numba threads of this process to ``threads``."""
    if not threads:
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=threads))
        except ImportError:  # BLAS threads then follow OMP_NUM_THREADS etc. of the worker
            pass
        try:
            import numba

            old = numba.get_num_threads()
            numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
            stack.callback(numba.set_num_threads, old)
        except (ImportError, ValueError, RuntimeError):
            pass
        yield


def _log_start(topic: str | None, run: str) -> None:
    if topic is None:
        return
    try:
        from distributed import get_worker

        get_worker().log_event(topic, {"run": run, "event": "start"})
    except (ImportError, ValueError, AttributeError):  # not inside a Dask worker
        pass


def _file_state(path: str):
    """(trajectory, problem): the file read without its arrays, or None and why it cannot be read (None if absent)."""
    try:
        return read_trajectory(path, snapshots=False, monitors=False), None
    except (TrajectoryNotFound, TrajectoryBusy):
        return None, None  # nothing there, or a writer holds it: resume decides (and waits)
    except TrajectoryError as exc:
        return None, exc


def _move_aside(path: str) -> None:
    """Rename an unreadable file to ``<path>.unreadable`` (replacing an older one), so a fresh run can take its place."""
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, path + ".unreadable")


def execute_run(config_toml: str, path: str, action: str, *, threads: int | None = None,
                topic: str | None = None, run: str = "") -> dict:
    """Train one run of a sweep; the function each Dask task calls (in the worker).

    config_toml : the run's full config (``Config.to_toml()``).
    path : its trajectory file (absolute; on a file system the driver shares).
    action : ``"run"`` (from scratch) or ``"resume"`` (from its checkpoint),
        as :func:`plan` decided. The file decides in the end, as Dask may run a
        task again after its worker died: a file with a checkpoint that is not
        finished is always resumed, unless it is marked failed because its run
        diverged (``failed_step`` set), which only ``"run"`` restarts from
        scratch (``"resume"`` reports it failed again without training: it
        would diverge again). A finished file is left as it is. A file that
        cannot be read or resumed is, for ``"run"``, moved aside to
        ``<path>.unreadable`` (when unreadable) and the run starts from scratch.
    threads : BLAS/Numba threads for this run (None: as the worker is set up).
    topic, run : Dask event topic and run name to report the start on.

    Never raises for a failed run: returns a dict with ``status``
    ("finished", "failed" or "interrupted"), ``message``, the index metrics
    and ``worker`` (host:pid).
    """
    from ..config import parse_toml  # noqa: PLC0415 - the loop is heavy; a driver without workers never needs it
    from ..loop import resume
    from ..loop import run as train_run

    _log_start(topic, run)
    t0 = time.perf_counter()
    out = {"status": "failed", "message": "", "worker": f"{socket.gethostname()}:{os.getpid()}"}
    try:
        with _thread_limits(threads):
            cfg = parse_toml(config_toml, f"{path} (sweep config)")
            status, message = None, ""
            traj, unreadable = _file_state(path)
            if traj is not None and _diverged(traj):
                if action != "run":  # resuming would diverge again: only --retry-failed restarts it
                    status = "failed"
                    message = str(traj.attrs.get("message", "") or "diverged")
                    if not message.startswith("diverged"):
                        message = f"diverged: {message}"
            elif unreadable is not None and action == "run":
                _move_aside(path)
            else:
                deadline = time.monotonic() + _RESUME_WAIT_S
                while status is None:
                    try:
                        res = resume(path, progress=False)
                        status, message = res.status, res.message
                    except TrajectoryBusy:
                        if time.monotonic() >= deadline:
                            raise
                        time.sleep(0.5)  # e.g. the worker of a killed driver is still exiting
                    except TrajectoryFinished:
                        status = "finished"
                    except (NoCheckpoint, TrajectoryNotFound):
                        break  # nothing to continue from: start afresh
                    except TrajectoryError:
                        if action != "run":
                            raise
                        break  # the checkpoint cannot continue this run: start afresh, as asked
            if status is None:
                res = train_run(cfg, path, overwrite=True, progress=False)
                status, message = res.status, res.message
        out["status"], out["message"] = status, message
    except Diverged as exc:
        out["message"] = f"diverged: {exc}"
    except Exception as exc:  # a training failure is a result, not a task error
        out["message"] = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    if Path(path).exists():
        try:
            m = _metrics_of(read_trajectory(path, snapshots=False, monitors=False))
            m.pop("message", None)
            out.update(m)
        except (TrajectoryError, OSError, ValueError) as exc:
            out["message"] = (out["message"] + f"; file unreadable: {exc}").lstrip("; ")
    out.setdefault("wall_time", time.perf_counter() - t0)
    return out


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@contextlib.contextmanager
def _out_lock(out: Path):
    """Hold ``<out>/.sweep.lock`` so two drivers never write one index (POSIX; released when the process dies)."""
    out.mkdir(parents=True, exist_ok=True)
    lock = out / ".sweep.lock"
    fh = open(lock, "a+")
    try:
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover
            pass
        except OSError:
            fh.seek(0)
            who = fh.read().strip() or "another process"
            raise SweepError(f"{out}: another npsim sweep is running on this folder ({who})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        yield
    finally:
        fh.close()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """In the main thread, turn SIGTERM into KeyboardInterrupt so a terminated driver cleans up too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class _Progress:
    """A tqdm line: runs done / running / failed / queued."""

    def __init__(self, name: str, total: int, done: int, failed: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=done + failed, desc=f"sweep {name}", unit="run", disable=not enabled,
                        dynamic_ncols=True, file=sys.stderr, leave=True, mininterval=0.5)
        self.done, self.failed = done, failed

        self.shown = None
        self.running = self.queued = 0

    def _text(self) -> str:
        return f"done {self.done}, running {self.running}, failed {self.failed}, queued {self.queued}"

    def show(self, running: int, queued: int):
        """Redraw if a count changed."""
        self.running, self.queued = running, queued
        if self._text() != self.shown:
            self.shown = self._text()
            self.bar.set_postfix_str(self.shown, refresh=True)

    def advance(self, ok: bool, running: int, queued: int):
        """One more run ended (finished if ``ok``, else failed)."""
        if ok:
            self.done += 1
        else:
            self.failed += 1
        self.running, self.queued = running, queued
        self.shown = self._text()
        self.bar.set_postfix_str(self.shown, refresh=False)
        self.bar.update(1)

    def close(self):
        self.bar.close()


def _local_cluster(workers: int, threads: int):
    """A LocalCluster of ``workers`` processes, one task at a time each, BLAS/Numba limited to ``threads``.

    The worker processes start with SIGINT ignored, so a Ctrl-C in the terminal
    reaches only the driver, which then closes the cluster (no tracebacks from
    every worker).
    """
    import logging

    from distributed import LocalCluster

    env = {v: str(threads) for v in _THREAD_VARS}
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # no dashboard, any free port
                            silence_logs=logging.ERROR, env=env)
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


def _scheduler_address(scheduler_file, timeout: float) -> str:
    """The address in a Dask scheduler file, after checking it (SweepError naming the file).

    A missing file, or one that is not yet valid JSON, is waited for up to
    ``timeout`` seconds (``dask scheduler --scheduler-file`` started at the same
    time may not have written it yet); an unreadable file, or JSON that is not
    an object with an ``"address"`` string, is refused at once.
    """
    path = Path(scheduler_file).expanduser()
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            problem = "not found"
        except UnicodeDecodeError:
            raise SweepError(f"scheduler file {path}: not a text (JSON) file") from None
        except OSError as exc:
            raise SweepError(f"scheduler file {path}: cannot read: {exc.strerror or exc}") from None
        else:
            try:
                info = json.loads(text)
            except json.JSONDecodeError as exc:
                problem = f"not valid JSON ({exc})"
            else:
                address = info.get("address") if isinstance(info, dict) else None
                if not isinstance(address, str) or not address.strip():
                    raise SweepError(f"scheduler file {path}: not a Dask scheduler file: expected a JSON object with "
                                     f"an \"address\" string, as `dask scheduler --scheduler-file` writes")
                return address.strip()
        if time.monotonic() >= deadline:
            raise SweepError(f"scheduler file {path}: {problem} (waited {timeout:g} s for the scheduler to write it)")
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def _connect(address: str, where: str, timeout: float):
    """A :class:`distributed.Client` connected to ``address``, or SweepError within about ``timeout`` seconds.

    Dask's own timeout does not cover every way a connection can stall (a
    server that accepts but never answers), so the client is made in a
    thread that is given up on after ``timeout`` plus a second; a client it
    makes after that is closed.
    """
    from distributed import Client

    box: dict = {}
    lock = threading.Lock()

    def connect():
        try:
            c = Client(address, timeout=f"{timeout}s")
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            box["error"] = exc
            return
        with lock:
            if box.get("abandoned"):
                with contextlib.suppress(Exception):
                    c.close(timeout=5)
                return
            box["client"] = c

    t = threading.Thread(target=connect, name="npsim-sweep-connect", daemon=True)
    t.start()
    t.join(timeout + 1.0)
    with lock:
        if "client" in box:
            return box["client"]
        if "error" not in box:
            box["abandoned"] = True
            raise SweepError(f"cannot connect to the Dask scheduler at {where}: no answer within {timeout:g} s")
    exc = box["error"]
    if isinstance(exc, KeyboardInterrupt):
        raise exc
    raise SweepError(f"cannot connect to the Dask scheduler at {where}: "
                     f"{type(exc).__name__}: {exc}".replace("\n", " ")) from None


def run_sweep(sweep, *, client=None, scheduler: str | None = None, scheduler_file: str | None = None,
              workers: int | None = None, threads_per_run: int | None = None, retry_failed: bool = False,
              progress: bool = True, out=None, log=None, connect_timeout: float | None = None) -> list[dict]:
    """Run every unfinished run of a sweep as a Dask task and keep the index up to date.

    sweep : a :class:`Sweep` or the path of a sweep file.
    client : a connected :class:`distributed.Client` to use (e.g. on a
        ``dask_jobqueue.SLURMCluster``); else ``scheduler`` (an address such as
        ``tcp://host:8786``) or ``scheduler_file`` (the JSON file of
        ``dask scheduler --scheduler-file``); else a LocalCluster of
        ``workers`` processes (default: one per CPU, at most one per run) of one
        thread each, started here and closed at the end.
    threads_per_run : BLAS/Numba threads of each run (LocalCluster default:
        CPUs // workers; remote default: as the workers are set up).
    retry_failed : run failed runs again from scratch.
    progress : show a progress line on stderr.
    out : the runs' folder, overriding the sweep file's.
    log : where to print the start and end lines (default stderr; None to silence with progress=False).
    connect_timeout : seconds to wait for ``scheduler_file`` to appear and,
        separately, to connect to the scheduler (default 30); then a
        :class:`SweepError`. The scheduler file is checked before connecting:
        a JSON object with an ``"address"`` string.

    Returns the final index rows (as :func:`read_index` reads them). A
    KeyboardInterrupt (Ctrl-C, or SIGTERM in the main thread) stops the sweep:
    runs in flight are marked ``interrupted`` in the index and resume from their
    checkpoints on the next call.
    """
    if not isinstance(sweep, Sweep):
        sweep = load_sweep_file(sweep, out=out)
    elif out is not None:
        sweep = load_sweep_file(sweep.path, out=out)
    say = (lambda msg: print(msg, file=log or sys.stderr)) if (progress or log is not None) else (lambda msg: None)
    timeout = _CONNECT_TIMEOUT_S if connect_timeout is None else float(connect_timeout)
    address = where = None
    if client is None and (scheduler or scheduler_file):  # a bad scheduler file stops the sweep before it starts
        if scheduler:
            address = where = scheduler
        else:
            address = _scheduler_address(scheduler_file, timeout)
            where = f"{address} (from {scheduler_file})"
    with _out_lock(sweep.out), _sigterm_as_interrupt():
        states = plan(sweep, retry_failed=retry_failed)
        (sweep.out / SPEC_NAME).write_text(spec_toml(sweep), encoding="utf-8")
        keys = sweep.keys
        write_index(sweep.index, [s.row(sweep.out) for s in states], keys)
        todo = [s for s in states if s.action is not None]
        n_fin = sum(s.status == "finished" for s in states)
        n_fail = sum(s.status == "failed" and s.action is None for s in states)
        n_res = sum(s.action == "resume" for s in todo)
        noted = [s for s in states if s.note]
        say(f"npsim: sweep {sweep.name}: {len(states)} runs: {n_fin} finished, {n_fail} failed, {n_res} to resume, "
            f"{len(todo) - n_res} to run -> {sweep.index}")
        if n_fail:
            say(f"npsim: the {n_fail} failed run{'s are' if n_fail > 1 else ' is'} not run again; "
                f"--retry-failed runs {'them' if n_fail > 1 else 'it'} from scratch")
        for s in noted[:5]:
            say(f"npsim: warning: {s.spec.name}: {s.note}")
        if not todo:
            return read_index(sweep.index)[1]

        from distributed import Client

        cluster = own_client = None
        try:
            if client is None:
                if address is not None:
                    client = _connect(address, where, timeout)
                else:
                    n = max(1, min(workers or _cpus(), len(todo)))
                    threads_per_run = threads_per_run or max(1, _cpus() // n)
                    cluster = _local_cluster(n, threads_per_run)
                    client = Client(cluster)
                own_client = client
            info = client.scheduler_info()
            nw = len(info.get("workers", {}))
            say(f"npsim: Dask scheduler {info.get('address', '?')}, {nw} worker{'s' if nw != 1 else ''}"
                + (" (local cluster)" if cluster is not None else ""))
            return _drive(sweep, states, todo, client, threads_per_run, progress, say)
        finally:
            if own_client is not None:
                with contextlib.suppress(Exception):
                    own_client.close(timeout=10)
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.close(timeout=10)


def _drive(sweep: Sweep, states, todo, client, threads, progress, say) -> list[dict]:
    """Submit one task per run in ``todo``, then record results and events as they come (see run_sweep)."""
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    topic = f"npsim-sweep-{token}"
    events: queue.SimpleQueue = queue.SimpleQueue()
    client.subscribe_topic(topic, events.put)
    by_key = {}
    futures = []
    for s in todo:
        key = f"npsim-sweep-{sweep.name}-{s.spec.name}-{token}"
        fut = client.submit(execute_run, s.spec.config.to_toml(), str(s.spec.path), s.action, threads=threads,
                            topic=topic, run=s.spec.name, key=key, pure=False,
                            priority=1 if s.action == "resume" else 0)  # finish started work first
        by_key[fut.key] = s
        s.status = "pending"
        futures.append(fut)
    n_done = sum(s.status == "finished" for s in states)
    n_failed_kept = sum(s.status == "failed" and s.action is None for s in states)
    bar = _Progress(sweep.name, len(states), n_done, n_failed_kept, progress)
    by_name = {s.spec.name: s for s in todo}
    remaining = set(by_key)
    last_write = 0.0
    dirty = True
    ac = as_completed(futures)
    try:
        while remaining:
            while True:
                try:
                    ev = events.get_nowait()
                except queue.Empty:
                    break
                msg = ev[1] if isinstance(ev, tuple) and len(ev) == 2 else ev
                name = msg.get("run") if isinstance(msg, dict) else None
                if name in by_name and by_name[name].status == "pending":
                    by_name[name].status = "running"
                    dirty = True
            batch = ac.next_batch(block=False)
            for fut in batch:
                s = by_key[fut.key]
                remaining.discard(fut.key)
                _record(s, fut)
                running = sum(by_key[k].status == "running" for k in remaining)
                bar.advance(s.status == "finished", running, len(remaining) - running)
                dirty = True
            running = sum(by_key[k].status == "running" for k in remaining)
            bar.show(running, len(remaining) - running)
            now = time.monotonic()
            if dirty and (batch or now - last_write > 1.0 or not remaining):
                write_index(sweep.index, [s.row(sweep.out) for s in states], sweep.keys)
                last_write, dirty = now, False
            if not batch and remaining:
                time.sleep(0.1)
    except BaseException:
        for k in remaining:  # lost with the cluster; their files resume on the next call
            s = by_key[k]
            s.status = "interrupted" if s.status == "running" or s.action == "resume" else "pending"
        with contextlib.suppress(Exception):
            client.cancel([f for f in futures if f.key in remaining])
        write_index(sweep.index, [s.row(sweep.out) for s in states], sweep.keys)
        raise
    finally:
        bar.close()
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(topic)
    write_index(sweep.index, [s.row(sweep.out) for s in states], sweep.keys)
    n_fin = sum(s.status == "finished" for s in states)
    failed = [s for s in states if s.status == "failed"]
    say(f"npsim: sweep {sweep.name}: {n_fin} of {len(states)} runs finished, {len(failed)} failed -> {sweep.index}")
    for s in failed[:10]:
        say(f"npsim:   failed {s.spec.name}: {s.metrics.get('message', '')}")
    return read_index(sweep.index)[1]


def _record(s: RunState, fut) -> None:
    """Put a finished task's result (or its error) into the run's state."""
    if fut.status != "finished":  # the task itself failed (e.g. its worker died) or was cancelled
        exc = fut.exception() if fut.status == "error" else None
        s.status = "failed" if fut.status == "error" else "interrupted"
        s.metrics["message"] = (f"Dask task {fut.status}" + (f": {type(exc).__name__}: {exc}" if exc else "")
                                ).replace("\n", " ")
        return
    res = fut.result()
    s.status = res.get("status", "failed")
    s.metrics.update({k: v for k, v in res.items() if k in INDEX_COLUMNS and k not in ("seed", "status")})
