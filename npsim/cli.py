"""The ``npsim`` command: train, resume, inspect, plot and compare runs.

Bad input ends with one line ``npsim: error: ...`` and exit status 2; a run
that diverges ends with exit status 1 after marking its file failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main"]

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1


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
    t.add_argument("--backend", choices=["numpy", "cupy"], help="override the config's backend")
    t.add_argument("--seed", type=int, help="override the config's seed")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set rule.sigma=0.01 (repeatable)")
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
    pl.add_argument("runs", nargs="+", help="trajectory files")
    pl.add_argument("-o", "--out", default=None, help="PNG file (default: <first run>.png)")

    c = sub.add_parser("compare", help="table of final metrics of several runs")
    c.add_argument("runs", nargs="+", help="trajectory files")

    d = sub.add_parser("data", help="which data sets were found where")
    d.add_argument("name", nargs="*", help="data set names (default: all known)")
    return p


def _fail(msg: str, code: int = EXIT_BAD_INPUT):
    print(f"npsim: error: {msg}", file=sys.stderr)
    return code


def _cmd_train(args) -> int:
    from .config import DEFAULT_CONFIG, apply_overrides, load_config, models_dir
    from .train import Diverged, default_output, resume, run

    progress = not args.quiet
    if args.resume:
        if args.config or args.overrides or args.seed is not None or args.backend or args.out:
            return _fail("--resume continues a run in its own file with its stored config; do not pass a config, "
                         "--out, --set, --seed or --backend with it")
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
        if over:
            cfg = apply_overrides(cfg, over)
        out = Path(args.out) if args.out else default_output(cfg)
        if out.exists() and not args.overwrite:
            return _fail(f"output file {out} exists; pass --overwrite to replace it, --out to choose another, "
                         f"or --resume {out} to continue it")
        try:
            res = run(cfg, out, overwrite=args.overwrite, progress=progress)
        except Diverged as exc:
            return _fail(f"{exc}; trajectory kept in {out} marked failed", EXIT_RUN_FAILED)
    print(f"run {res.status}: {res.epochs} epochs, {res.steps} updates, test accuracy {res.test_accuracy:.4f} "
          f"(test loss {res.test_loss:.4f}) -> {res.path}")
    if not args.no_plot:
        from .analysis import plot_runs

        png = res.path.with_suffix(".png")
        plot_runs([res.path], png)
        print(f"curves: {png}")
        mon = _plot_monitors_if_any(res.path, png)
        if mon is not None:
            print(f"monitors: {mon}")
    return 0


def _cmd_info(args) -> int:
    from .analysis import info_text

    print(info_text(args.run))
    return 0


def _monitors_out(out: Path) -> Path:
    """Where the spike/voltage plot of a run goes, next to its curves: ``<out stem>-monitors<suffix>``."""
    return out.with_name(f"{out.stem}-monitors{out.suffix}")


def _plot_monitors_if_any(run, out: Path) -> Path | None:
    """Plot a run's spike/voltage monitors next to ``out`` if it has any; the file written, or None."""
    from .analysis import plot_monitors
    from .trajectory import read_trajectory

    traj = read_trajectory(run, snapshots=False)
    if traj.monitors is None:
        return None
    return plot_monitors(traj, _monitors_out(out))


def _cmd_plot(args) -> int:
    from .analysis import plot_runs

    out = Path(args.out) if args.out else Path(args.runs[0]).with_suffix(".png")
    plot_runs(args.runs, out)
    print(out)
    if len(args.runs) == 1:
        mon = _plot_monitors_if_any(args.runs[0], out)
        if mon is not None:
            print(mon)
    return 0


def _cmd_compare(args) -> int:
    from .analysis import compare_text

    print(compare_text(args.runs))
    return 0


def _cmd_data(args) -> int:
    from .data import DATASETS, search_places

    names = args.name or [n for n in DATASETS if n != "npz"]
    for name in names:
        places = search_places(name)
        found = [p for p, ok in places if ok]
        print(f"{name}: {'found at ' + found[0] if found else 'not found'}")
        for place, ok in places:
            print(f"  {'*' if ok else ' '} {place}")
    print("(* usable; searched in this order: explicit path, $NPSIM_DATA, system location, bundled data/)")
    return 0


COMMANDS = {"train": _cmd_train, "info": _cmd_info, "plot": _cmd_plot, "compare": _cmd_compare, "data": _cmd_data}


def main(argv: list[str] | None = None) -> int:
    from .backend import BackendUnavailable
    from .config import ConfigError
    from .data import DataFormatError, DataNotFound
    from .trajectory import TrajectoryError

    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DataNotFound, DataFormatError, TrajectoryError, BackendUnavailable, FileExistsError) as exc:
        return _fail(str(exc))
    except (ValueError, TypeError) as exc:  # invalid combinations found while building the experiment
        if os.environ.get("NPSIM_DEBUG"):
            raise
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted; resume with npsim train --resume RUN.h5", 130)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
