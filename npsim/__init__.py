"""npsim: simulate and train noisy and discontinuous neural networks by node perturbation."""

__version__ = "0.1.0"

from . import spiking as _spiking  # noqa: E402,F401 - registers the time-stepped node models (lif, li)
