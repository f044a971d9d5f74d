"""The ``npsim`` command: train, resume, inspect, plot and compare runs, run sweeps, and export networks (NIR).

Bad input (any :class:`~npsim.errors.NpsimError`) ends with one line
``npsim: error: ...`` and exit status 2; a run that diverges ends with exit
status 1 after marking its file failed, and so does a sweep in which not
every run finished. Anything else is a bug in npsim: its traceback is shown,
with a line asking to report it, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import traceback
import warnings
from pathlib import Path

__all__ = ["main"]

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1
EXIT_BUG = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other bad input
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="npsim", description="Train noisy and discontinuous networks by node perturbation.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    t = sub.add_parser("train", help="train a config (no config: the default job on the bundled data)",
                       description="Train one config and write its trajectory to an HDF5 file.")
    t.add_argument("config", nargs="?", help="TOML config (default: models/default.toml)")
    t.add_argument("--out", help="trajectory file (default: runs/<name>-s<seed>.h5)")
    t.add_argument("--backend", choices=["numpy", "cupy", "array-api-strict"],
                   help="override the config's backend (cupy: an NVIDIA GPU; array-api-strict: a strict CPU stand-in "
                        "for one, for testing)")
    t.add_argument("--seed", type=int, help="override the config's seed")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set rule.sigma=0.01 (repeatable)")
    t.add_argument("--unset", action="append", default=[], metavar="KEY",
                   help="remove a config key or table, so its default applies, e.g. --unset train.monitor (repeatable)")
    t.add_argument("--resume", metavar="RUN.h5", help="continue a killed or interrupted run from its checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    t.add_argument("--no-plot", action="store_true",
                   help="do not write the PNGs of the learning curves (and of spike/voltage monitors)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    i = sub.add_parser("info", help="summary of a trajectory file (works while it is being written)")
    i.add_argument("run", help="trajectory file")

    pl = sub.add_parser("plot", help="learning curves and BP alignment of one or more runs",
                        description="Plot learning curves and BP alignment of one or more runs; for a single run "
                                    "with spike/voltage monitors also their plot, <out stem>-monitors.png (or the "
                                    "suffix of --out).")
    pl.add_argument("runs", nargs="+", help="trajectory files, or one sweep (its TOML file, out folder or index.csv)")
    pl.add_argument("-o", "--out", default=None,
                    help="PNG file (default: <first run>.png; for a sweep <out folder>/sweep.png)")

    c = sub.add_parser("compare", help="table of final metrics of several runs, or of a sweep's groups")
    c.add_argument("runs", nargs="+", help="trajectory files, or one sweep (its TOML file, out folder or index.csv)")

    sw = sub.add_parser("sweep", help="run a sweep over config values and seeds as Dask tasks",
                        description="Run every unfinished run of a sweep file (docs/sweeps.md) as a Dask task, on a "
                                    "local cluster or on a running Dask scheduler; one trajectory file per run and an "
                                    "index (index.csv) in the out folder. Running it again skips finished runs and "
                                    "resumes interrupted ones.")
    sw.add_argument("sweep", help="sweep TOML file")
    sw.add_argument("--out", help="folder for the runs and the index (default: the file's out, else runs/<name>)")
    where = sw.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="use the Dask scheduler at ADDRESS (e.g. tcp://node1:8786) instead of a local cluster; "
                            "its workers must see the out folder at the same path")
    where.add_argument("--scheduler-file", metavar="FILE",
                       help="as --scheduler, reading the address from FILE (dask scheduler --scheduler-file FILE)")
    sw.add_argument("--workers", type=int, metavar="N",
                    help="local cluster: N worker processes, one run each at a time (default: one per CPU)")
    sw.add_argument("--threads-per-run", type=int, metavar="T",
                    help="BLAS/Numba threads of each run (local default: CPUs / workers)")
    sw.add_argument("--retry-failed", action="store_true", help="run failed runs again, from scratch")
    sw.add_argument("--dry-run", action="store_true", help="list the runs and what would be done; run nothing")
    sw.add_argument("--quiet", action="store_true", help="no progress line")

    ex = sub.add_parser("export", help="write a run's trained network as a NIR graph (snnTorch, Norse, Lava, ...)",
                        description="Write the trained network of a trajectory file (its stored config and its newest "
                                    "weights: the checkpoint, else the last snapshot) as a NIR graph (the "
                                    "Neuromorphic Intermediate Representation; needs pip install \"npsim[nir]\"). "
                                    "What NIR cannot express is refused with the layer named; the README section "
                                    "'Export to and import from NIR' has the mapping.")
    ex.add_argument("run", help="trajectory file")
    ex.add_argument("--nir", required=True, metavar="FILE", help="NIR file to write (HDF5, e.g. net.nir)")
    ex.add_argument("--epoch", type=int, metavar="N", help="export the weight snapshot taken after epoch N")
    ex.add_argument("--drop-noise", action="store_true",
                    help="export a network with intrinsic noise without it (the noise is described in the graph's "
                         "metadata) instead of refusing it")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing NIR file")

    d = sub.add_parser("data", help="which data sets were found where")
    d.add_argument("name", nargs="*", help="data set names (default: all known)")
    return p


def _fail(msg: str, code: int = EXIT_BAD_INPUT):
    print(f"npsim: error: {msg}", file=sys.stderr)
    return code


def _cmd_train(args) -> int:
    from .errors import Diverged
    from .experiment.config import (
        DEFAULT_CONFIG,
        apply_overrides,
        load_config,
        models_dir,
    )
    from .experiment.loop import default_output, resume, run

    progress = not args.quiet
    if args.resume:
        if args.config or args.overrides or args.unset or args.seed is not None or args.backend or args.out:
            return _fail("--resume continues a run in its own file with its stored config; do not pass a config, "
                         "--out, --set, --unset, --seed or --backend with it")
        try:
            res = resume(args.resume, progress=progress)
        except Diverged as exc:
            return _fail(f"{exc}; trajectory kept in {args.resume} marked failed", EXIT_RUN_FAILED)
    else:
        cfg_path = args.config or str(models_dir() / DEFAULT_CONFIG)
        cfg = load_config(cfg_path)
        over = list(args.overrides)
        if args.seed is not None:
            over.append(f"seed={args.seed}")
        if args.backend:
            over.append(f'backend="{args.backend}"')
        if over or args.unset:
            cfg = apply_overrides(cfg, over, args.unset)
        out = Path(args.out) if args.out else default_output(cfg)
        if out.exists() and not out.is_dir() and not args.overwrite:
            return _fail(f"output file {out} exists; pass --overwrite to replace it, --out to choose another, "
                         f"or --resume {out} to continue it")
        try:
            res = run(cfg, out, overwrite=args.overwrite, progress=progress)
        except Diverged as exc:
            return _fail(f"{exc}; trajectory kept in {out} marked failed", EXIT_RUN_FAILED)
    print(f"run {res.status}: {res.epochs} epochs, {res.steps} updates, test accuracy {res.test_accuracy:.4f} "
          f"(test loss {res.test_loss:.4f}) -> {res.path}")
    if not args.no_plot:
        from .analysis.plots import plot_runs

        png = res.path.with_suffix(".png")
        plot_runs([res.path], png)
        print(f"curves: {png}")
        mon = _plot_monitors_if_any(res.path, png)
        if mon is not None:
            print(f"monitors: {mon}")
    return 0


def _cmd_info(args) -> int:
    from .analysis.text import info_text

    print(info_text(args.run))
    return 0


def _monitors_out(out: Path) -> Path:
    """Where the spike/voltage plot of a run goes, next to its curves: ``<out stem>-monitors<suffix>``."""
    return out.with_name(f"{out.stem}-monitors{out.suffix}")


def _plot_monitors_if_any(run, out: Path) -> Path | None:
    """Plot a run's spike/voltage monitors next to ``out`` if it has any; the file written, or None."""
    from .analysis.plots import plot_monitors
    from .io.trajectory import read_trajectory

    traj = read_trajectory(run, snapshots=False)
    if traj.monitors is None:
        return None
    return plot_monitors(traj, _monitors_out(out))


def _is_sweep(paths: list[str]) -> bool:
    """One argument that names a sweep: its TOML file, its out folder or its index (.csv)."""
    if len(paths) != 1:
        return False
    p = Path(paths[0])
    return p.is_dir() or p.suffix.lower() in (".toml", ".csv")


def _cmd_plot(args) -> int:
    from .analysis.plots import plot_runs

    if _is_sweep(args.runs):
        from .analysis.plots import plot_sweep
        from .io.sweep_index import index_path

        out = Path(args.out) if args.out else index_path(args.runs[0]).parent / "sweep.png"
        print(plot_sweep(args.runs[0], out))
        return 0
    out = Path(args.out) if args.out else Path(args.runs[0]).with_suffix(".png")
    plot_runs(args.runs, out)
    print(out)
    if len(args.runs) == 1:
        mon = _plot_monitors_if_any(args.runs[0], out)
        if mon is not None:
            print(mon)
    return 0


def _cmd_compare(args) -> int:
    from .analysis.text import compare_text

    if _is_sweep(args.runs):
        from .analysis.text import sweep_text

        print(sweep_text(args.runs[0]))
        return 0
    print(compare_text(args.runs))
    return 0


def _cmd_sweep(args) -> int:
    from .experiment.sweep import load_sweep_file, plan, run_sweep

    for opt in ("workers", "threads_per_run"):
        v = getattr(args, opt)
        if v is not None and v < 1:
            return _fail(f"--{opt.replace('_', '-')} must be >= 1 (got {v})")
    if args.workers is not None and (args.scheduler or args.scheduler_file):
        return _fail("--workers sizes the local cluster; with --scheduler/--scheduler-file the scheduler's "
                     "workers run the sweep")
    sweep = load_sweep_file(args.sweep, out=args.out)
    if args.dry_run:
        states = plan(sweep, retry_failed=args.retry_failed)
        doing = {"run": "run", "resume": "resume", None: "-"}
        width = max(len(s.status) for s in states)
        print(f"sweep {sweep.name}: {len(states)} runs in {sweep.out}")
        for s in states:
            print(f"{s.status:<{width}}  {doing[s.action]:<6}  {s.spec.name}" + (f"  ({s.note})" if s.note else ""))
        return 0
    try:
        rows = run_sweep(sweep, scheduler=args.scheduler, scheduler_file=args.scheduler_file, workers=args.workers,
                         threads_per_run=args.threads_per_run, retry_failed=args.retry_failed,
                         progress=not args.quiet, log=sys.stderr)
    except KeyboardInterrupt:
        return _fail(f"sweep interrupted; run the same command again to resume (index: {sweep.index})", 130)
    n_fin = sum(r["status"] == "finished" for r in rows)
    n_fail = sum(r["status"] == "failed" for r in rows)
    print(f"sweep {sweep.name}: {n_fin} of {len(rows)} runs finished, {n_fail} failed -> {sweep.index}")
    return 0 if n_fin == len(rows) else EXIT_RUN_FAILED


def _cmd_export(args) -> int:
    from .experiment.assemble import build_network
    from .experiment.nir import export_trained, require_nir, stored_network

    require_nir()  # a missing package is the first thing to say
    cfg, n_in, n_out = stored_network(args.run)
    net = build_network(cfg, n_in, n_out)
    out, source = export_trained(net, args.run, args.nir, epoch=args.epoch, drop_noise=args.drop_noise,
                                 overwrite=args.overwrite)
    print(f"{net.describe()} ({source}) -> {out}")
    return 0


def _cmd_data(args) -> int:
    from .io.data import DATASETS, search_places

    names = args.name or [n for n in DATASETS if n != "npz"]
    for name in names:
        places = search_places(name)
        found = [p for p, ok in places if ok]
        print(f"{name}: {'found at ' + found[0] if found else 'not found'}")
        for place, ok in places:
            print(f"  {'*' if ok else ' '} {place}")
    print("(* usable; searched in this order: explicit path, $NPSIM_DATA, system location, bundled data/)")
    return 0


COMMANDS = {"train": _cmd_train, "info": _cmd_info, "plot": _cmd_plot, "compare": _cmd_compare, "data": _cmd_data,
            "sweep": _cmd_sweep, "export": _cmd_export}


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"npsim: warning: {message}", file=sys.stderr)


def _stop_on_signals():
    """SIGTERM (what SLURM, Dask and ``kill`` send) stops a command as Ctrl-C does: the run in progress
    is marked interrupted and can be resumed. Returns the handlers to put back."""
    from .errors import Interrupted

    def handler(signum, frame):
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM,)}


def _how_to_continue(args) -> str:
    """What to type to continue the command ``args`` after an interruption."""
    if args.command == "train":
        path = args.resume or args.out
        return f"resume with npsim train --resume {path or 'RUN.h5 (the file it was writing)'}"
    if args.command == "sweep":
        return "run the same npsim sweep command again: finished runs are kept and the others resume"
    return "run the command again"


def main(argv: list[str] | None = None) -> int:
    from .errors import NpsimError, ParameterError

    args = _parser().parse_args(argv)
    old_show = warnings.showwarning
    warnings.showwarning = _show_warning
    old_handlers = _stop_on_signals()
    try:
        return COMMANDS[args.command](args)
    except (NpsimError, ParameterError, FileExistsError) as exc:  # what the user gave cannot work: one line
        return _fail(str(exc))
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
        return _fail(f"{what}; {_how_to_continue(args)}", 128 + signum)
    except BrokenPipeError:
        return 0
    except Exception:  # noqa: BLE001 - anything else is a bug in npsim: keep its traceback
        traceback.print_exc()
        print("npsim: internal error: this is a bug in npsim, not a problem with your input; please report it "
              "with the traceback above", file=sys.stderr)
        return EXIT_BUG
    finally:
        warnings.showwarning = old_show
        for sig, old in old_handlers.items():
            signal.signal(sig, old)


if __name__ == "__main__":
    sys.exit(main())
