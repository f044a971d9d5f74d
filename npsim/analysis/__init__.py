"""Read, summarise, compare and plot run trajectories and sweeps.

::

    from npsim.analysis import table, curves, plot_runs
    rows = table(["runs/a.h5", "runs/b.h5"])        # one summary dict per run
    c = curves("runs/a.h5")                         # arrays for custom plots
    plot_runs(["runs/a.h5", "runs/b.h5"], "ab.png")
    plot_monitors("runs/snn.h5", "snn-monitors.png")  # spike rasters and voltages, if recorded

Sweeps (``npsim sweep``; see ``docs/sweeps.md``) are read from their index::

    rows = load_sweep("runs/my-sweep")              # one dict per run (the index rows)
    groups = aggregate(rows)                        # mean, sd, 95% CI over seeds per parameter set
    print(sweep_text("runs/my-sweep"))
    plot_sweep("runs/my-sweep", "sweep.png")

The CLI uses :func:`info_text` (``npsim info``), :func:`compare_text`
(``npsim compare``), :func:`plot_runs` and :func:`plot_monitors` (``npsim plot``),
and for a sweep :func:`sweep_text` and :func:`plot_sweep`. Nothing here
imports the engine: analysis reads files only.
"""

from .metrics import ALIGNMENT_TAIL, curves, load, running_mean, summary, table
from .plots import NO_ALIGNMENT, plot_monitors, plot_runs, plot_sweep
from .stats import SWEEP_METRICS, aggregate, load_sweep, sweep_curves, sweep_keys
from .text import compare_text, info_text, monitors_text, sweep_text

__all__ = ["load", "summary", "table", "curves", "running_mean", "info_text", "compare_text", "plot_runs",
           "plot_monitors", "monitors_text", "ALIGNMENT_TAIL", "NO_ALIGNMENT",
           "load_sweep", "sweep_keys", "aggregate", "sweep_curves", "sweep_text", "plot_sweep", "SWEEP_METRICS"]
