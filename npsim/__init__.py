"""npsim: simulate and train noisy, discontinuous and spiking neural networks by node perturbation."""

__version__ = "0.1.0"
