"""Named points in a trajectory file's life where a test can kill the writing process.

Set ``NPSIM_FAULT=<point>`` (or ``<point>:<n>`` for the n-th time the point is
reached, counting from 1, or ``<point>:<n>:enospc`` to fail that write with a
full disk instead of a kill) in the environment of a run; the writer calls
:func:`reach` at each point of :data:`POINTS`. Without the variable,
:func:`reach` costs one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal

__all__ = ["ENV", "POINTS", "reach"]

ENV = "NPSIM_FAULT"

#: every point, in the order a run reaches them
POINTS = (
    "create:layout",       # the new file's groups and datasets are written, not yet flushed
    "create:swmr",         # the new file is in SWMR mode, no checkpoint yet
    "checkpoint:slot",     # the inactive slot holds the new arrays, its counters and digest not yet
    "checkpoint:digest",   # the slot, its counters and digest are on disk, meta still names the old slot
    "checkpoint:meta",     # meta names the new slot, not yet synced
    "finish:reopen",       # the SWMR handle is closed and the file reopened to write its status
    "finish:status",       # the status attributes are written, the file not yet closed
    "resume:reopen",       # resume has reopened the file for writing, nothing changed yet
    "resume:status",       # status is back to running, the file not yet in SWMR mode
    "resume:truncate",     # in SWMR mode, the rows after the checkpoint are dropped
    "monitors:reopen",     # the file is reopened to write /monitors
    "monitors:written",    # /monitors is written, the file not yet back in SWMR mode
)

_counts: dict[str, int] = {}


def reach(point: str) -> None:
    """Kill this process (or raise ENOSPC) here if ``NPSIM_FAULT`` names ``point``."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    parts = spec.split(":")  # stage:step[:n[:action]]
    if ":".join(parts[:2]) != point:
        return
    nth = int(parts[2]) if len(parts) > 2 and parts[2] else 1
    action = parts[3] if len(parts) > 3 else "kill"
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] != nth:
        return
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    os.kill(os.getpid(), signal.SIGKILL)
