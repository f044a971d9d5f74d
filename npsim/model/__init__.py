"""The model: node models, activity noise, spiking dynamics, layers, losses and the network that runs passes.

Nothing here knows of learning rules, files or configs (docs/design.md §1, §3).
"""

from .catalog import NODE_MODELS, make_node
from .layers import Conv2D, ConvSpec, Dense, Layer
from .losses import LOSSES, Loss, accuracy, make_loss
from .network import Network, Trace, mlp, param_key
from .nodes import NodeModel
from .noise import (
    NOISE_KINDS,
    ActivityNoise,
    GaussianNoise,
    KickNoise,
    ReplayNoise,
    TelegraphNoise,
    make_noise,
)
from .spiking import LIF, LeakyIntegrator, Monitor, Simulation
from .substrate import Capabilities, FunctionSubstrate, Measurement, NetworkSubstrate, Substrate, SubstrateNetwork

__all__ = [
    "NODE_MODELS", "make_node", "Conv2D", "ConvSpec", "Dense", "Layer", "LOSSES", "Loss", "accuracy", "make_loss",
    "Network", "Trace", "mlp", "param_key", "NOISE_KINDS", "ActivityNoise", "GaussianNoise", "KickNoise",
    "ReplayNoise", "TelegraphNoise", "make_noise", "NodeModel", "LIF", "LeakyIntegrator", "Monitor", "Simulation",
    "Capabilities", "FunctionSubstrate", "Measurement", "NetworkSubstrate", "Substrate", "SubstrateNetwork",
]
