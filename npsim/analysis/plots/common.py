"""What every npsim figure shares: the figure itself (no pyplot), styles, the legend grid, saving."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from ...errors import OutputError, UsageError
from ...io.outputs import check_output_file

__all__ = ["PLOT_SUFFIXES", "NO_ALIGNMENT", "GREY", "LAYER_STYLES", "plot_path", "new_figure", "palette", "shade",
           "legend_rows", "figure_legend", "note", "no_alignment_note", "save"]

PLOT_SUFFIXES = (".png", ".pdf", ".svg")

NO_ALIGNMENT = "no BP alignment: the network has non-differentiable units or diagnostics were off"

GREY = "0.35"

LAYER_STYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2))]


def plot_path(out) -> Path:
    """``out`` as a Path; ValueError unless it ends in .png, .pdf or .svg."""
    out = Path(out)
    if out.suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(f"{out}: plot file must end in {', '.join(PLOT_SUFFIXES)}")
    return check_output_file(out, what="plot")


def new_figure(width: float, height: float):
    """A matplotlib Figure with its own Agg canvas: no pyplot, no global backend switch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def palette(n: int) -> list:
    """``n`` distinct colours (tab10, or tab20 beyond ten)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"] if n <= 10 else colormaps["tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def shade(color, i: int, n: int):
    """The run colour, lightened towards white for later layers (layer 0 unchanged)."""
    from matplotlib.colors import to_rgb

    r = np.array(to_rgb(color))
    f = 0.3 * i / max(1, n - 1)
    return tuple(r + (1 - r) * f)


def legend_rows(handles: list, labels: list, ncol: int, blank) -> list[list[tuple]]:
    """(handle, label) pairs in rows of ``ncol``, the last row padded with invisible entries."""
    pairs = list(zip(handles, labels))
    pairs += [(blank, "")] * (-len(pairs) % ncol)
    return [pairs[i : i + ncol] for i in range(0, len(pairs), ncol)]


def figure_legend(fig, grid: list[list[tuple]], ncol: int) -> None:
    """One legend under the panels, outside the data, filled column by column from ``grid``'s rows."""
    handles = [grid[r][k][0] for k in range(ncol) for r in range(len(grid))]
    labels = [grid[r][k][1] for k in range(ncol) for r in range(len(grid))]
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=9, frameon=False)


def note(ax, text: str, *, clear: bool = False) -> None:
    """``text`` in grey in the middle of an empty panel (``clear``: also remove its ticks)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=GREY)
    if clear:
        ax.set_xticks([])
        ax.set_yticks([])


def no_alignment_note(ax) -> None:
    """The panel text for runs without BP alignment."""
    head, rest = NO_ALIGNMENT.split(": ", 1)
    note(ax, "\n".join([head + ":", *textwrap.wrap(rest, 42)]), clear=True)


def save(fig, out: Path) -> Path:
    """Write ``fig`` to ``out`` (format from the suffix), creating its folder."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120, format=out.suffix.lower().lstrip("."))
    except OSError as e:
        raise OutputError(f"{out}: cannot write the plot ({e.strerror or e})") from None
    return out
