"""Figures of runs, recordings and sweeps (matplotlib, without pyplot)."""

from .common import NO_ALIGNMENT, PLOT_SUFFIXES
from .monitors import MONITOR_RASTER_ROWS, MONITOR_TRACES, plot_monitors
from .runs import plot_runs
from .sweep import plot_sweep

__all__ = ["plot_runs", "plot_monitors", "plot_sweep", "PLOT_SUFFIXES", "NO_ALIGNMENT", "MONITOR_TRACES",
           "MONITOR_RASTER_ROWS"]
