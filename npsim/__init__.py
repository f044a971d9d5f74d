"""npsim: simulate and train noisy and discontinuous neural networks by node perturbation.

The package reads bottom to top (docs/design.md §7): :mod:`npsim.backend`
(arrays, random streams, kernels), :mod:`npsim.model` (node models, noise,
layers, the network), :mod:`npsim.learn` (rules, optimizers, the update),
:mod:`npsim.io` (data sets, trajectory files, sweep indexes),
:mod:`npsim.analysis` (reading runs back), :mod:`npsim.experiment` (configs,
the training loop, sweeps) and :mod:`npsim.cli`.
"""

__version__ = "0.1.0"
