"""How much memory a run will need, estimated before anything large is allocated.

The estimate counts what a run holds at its peak: the parameters with their
optimizer state, update directions and checkpoint copies; the activity of
the largest pass (the clean rows and the K perturbed copies of a batch, or an
evaluation batch), each layer's input, drive, activity and output; and the
backend's copy of the data set (the loaded data set is already in use). It errs on the high side by a small factor, not by
orders of magnitude, so a run it refuses would not have fitted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import ResourceError
from ..model.layers import Conv2D

__all__ = ["MemoryEstimate", "estimate_memory", "available_memory", "check_memory"]

#: rows of one evaluation pass (npsim.learn.step.evaluate's batch size)
EVAL_ROWS = 10000


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs, by part."""

    parameters: int
    activity: int
    data: int

    @property
    def total(self) -> int:
        return self.parameters + self.activity + self.data

    def describe(self) -> str:
        return (f"{size_text(self.total)} (parameters and optimizer state {size_text(self.parameters)}, "
                f"activity {size_text(self.activity)}, copy of the data {size_text(self.data)})")


def size_text(n: float) -> str:
    """Bytes in binary units: "3.2 GiB", "4.1 TiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def estimate_memory(net, rule, *, batch_size: int, n_train: int, n_test: int, n_features: int, dtype) -> MemoryEstimate:
    """The memory a run of ``net`` trained by ``rule`` needs (see the module docstring)."""
    item = np.dtype(dtype).itemsize
    n_params = sum(int(np.prod(s)) for layer in net.layers for s in layer.param_shapes().values())
    # parameters, Adam's two moments, the update direction, BP's gradient and the checkpoint's host copies
    parameters = 6 * n_params * item
    perturbations = getattr(getattr(rule, "inner", rule), "perturbations", 1)
    per_row = 0
    for layer in net.layers:
        inputs = layer.n_units // layer.channels * layer.patch_size if isinstance(layer, Conv2D) else layer.n_in
        per_row += inputs + 3 * layer.n_units + layer.n_out  # input, drive, activity (+ noise), output
    # training: the stacked pass keeps the clean and the perturbed trace alive together, plus the rule's
    # temporaries; evaluation: one plain pass over up to EVAL_ROWS samples
    train = 2 * (1 + perturbations) * batch_size * per_row * item
    evaluation = min(EVAL_ROWS, max(n_train, n_test)) * per_row * item
    activity = max(train, evaluation)
    # the data set is already loaded (float32); the backend copies it unless it can use it as it is
    data = 0 if np.dtype(dtype) == np.float32 else (n_train + n_test) * n_features * item
    return MemoryEstimate(parameters, activity, data)


def available_memory() -> tuple[int | None, int | None]:
    """(available, total) bytes of memory on this machine (MemAvailable and MemTotal on Linux; None if unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh if line.count(":") == 1}
        return info.get("MemAvailable"), info.get("MemTotal")
    except (OSError, ValueError, IndexError):
        pass
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return None, total
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None, None


def check_memory(estimate: MemoryEstimate, what: str) -> None:
    """ResourceError with the estimate and the machine's memory if ``estimate`` cannot fit."""
    available, total = available_memory()
    limit = available if available is not None else total
    if limit is None or estimate.total <= limit:
        return
    have = f"{size_text(available)} available" if available is not None else ""
    have += (", " if have else "") + (f"{size_text(total)} in all" if total is not None else "")
    raise ResourceError(f"{what} needs about {estimate.describe()}; this machine has {have}. Make the network, "
                        f"train.batch_size or rule.perturbations smaller")
