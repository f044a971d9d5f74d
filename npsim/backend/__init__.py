"""The array backend: which library and device run the numbers, random streams, and the fused kernels.

Nothing here knows of networks or rules; the engine above reaches arrays
only through a :class:`Backend` and its :class:`RandomStream`.
"""

from ..errors import BackendUnavailable
from .arrays import array_module, tile_rows
from .device import BACKENDS, Backend, get_backend
from .random import RandomStream

__all__ = ["Backend", "BackendUnavailable", "RandomStream", "get_backend", "array_module", "tile_rows", "BACKENDS"]
