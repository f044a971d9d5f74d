"""Checking that an output can be written where it was asked for, before any work is done."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import OutputError

__all__ = ["check_output_file"]

#: file systems that hold no user files: writing there is never meant
VIRTUAL_ROOTS = ("/proc", "/sys", "/dev")


def check_output_file(path, *, what: str = "output file") -> Path:
    """``path`` as a Path, once it is clear a file can be created there.

    Its folder is created if missing. OutputError (one line naming the path)
    if ``path`` is a directory, lies on a virtual file system (/proc, /sys,
    /dev), or its folder cannot be created or written (read-only file
    system, permissions). Whether an existing file may be replaced is the
    caller's decision.
    """
    p = Path(path)
    real = os.path.realpath(p)
    for root in VIRTUAL_ROOTS:
        if real == root or real.startswith(root + os.sep):
            raise OutputError(f"{p}: a {what} cannot be written under {root}, a virtual file system")
    if p.is_dir():
        raise OutputError(f"{p}: is a directory; give a file name for the {what}")
    folder = p.parent if str(p.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".npsim-write-test-"):
            pass
    except OSError as e:
        raise OutputError(f"{p}: cannot write the {what} in {folder} ({e.strerror or e})") from None
    return p
