"""Parameter-free attention kernels. Modules in :mod:`visattn.attention` own the parameters and the layout."""

from .attention import attention, window_attention, window_partition, window_reverse
from .dilated import dilated_attention
from .outlook import outlook_aggregate, outlook_attention, outlook_grid

__all__ = [
    "attention",
    "dilated_attention",
    "outlook_aggregate",
    "outlook_attention",
    "outlook_grid",
    "window_attention",
    "window_partition",
    "window_reverse",
]
