"""The names configs use for node models, and building one by name.

One explicit table of every node model, the time-stepped ones of
:mod:`npsim.model.spiking` included; activity noise has its own table in
:mod:`npsim.model.noise` (``NOISE_KINDS``).
"""

from __future__ import annotations

from ..errors import ParameterError
from ..registry import Registry
from .nodes import (
    Heaviside,
    LeakyReLU,
    Linear,
    NodeModel,
    Quantizer,
    ReLU,
    Sigmoid,
    Sign,
    StochasticBinary,
    Tanh,
)
from .spiking import LIF, LeakyIntegrator

__all__ = ["NODE_MODELS", "make_node"]

NODE_MODELS: Registry[type[NodeModel]] = Registry(
    "node model",
    {
        "linear": Linear, "relu": ReLU, "leaky_relu": LeakyReLU, "tanh": Tanh, "sigmoid": Sigmoid,
        "heaviside": Heaviside, "sign": Sign, "quantize": Quantizer, "stochastic_binary": StochasticBinary,
        "lif": LIF, "li": LeakyIntegrator,
    },
    aliases={"step": "heaviside", "binary": "heaviside"},
    renamed={"bernoulli": "stochastic_binary"},
)


def make_node(name: str, **params) -> NodeModel:
    """Build a node model by name, e.g. ``make_node("leaky_relu", slope=0.1)``.

    Unknown names or parameters, and bad values, raise ParameterError naming them.
    """
    try:
        cls = NODE_MODELS.lookup(name)
    except ValueError:
        raise ParameterError("node model", "name", f"must be one of {', '.join(NODE_MODELS.names(aliases=True))}",
                             name) from None
    return cls(**params)
