"""Parameter-free kernels, each with a ``"fast"`` and a ``"reference"`` path that the tests hold equal.

Modules in :mod:`visattn.attention` own the parameters and the layout and hand their ``impl`` to these kernels.
"""

from .attention import attention, window_attention, window_partition, window_reverse
from .dilated import dilated_attention
from .outlook import outlook_aggregate, outlook_attention, outlook_grid
from .projection import (
                         conv1x1,
                         from_channels_first,
                         linear_from_channels_first,
                         linear_to_channels_first,
                         pointwise,
                         to_channels_first,
)

__all__ = [
    "attention",
    "conv1x1",
    "dilated_attention",
    "from_channels_first",
    "linear_from_channels_first",
    "linear_to_channels_first",
    "outlook_aggregate",
    "outlook_attention",
    "outlook_grid",
    "pointwise",
    "to_channels_first",
    "window_attention",
    "window_partition",
    "window_reverse",
]
