"""npsim: simulate and train noisy and discontinuous neural networks by node perturbation."""

__version__ = "0.1.0"
