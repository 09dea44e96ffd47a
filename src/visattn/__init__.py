"""visattn: plug-and-play, efficient vision attention blocks.

Every block maps a channels-last map ``(B, H, W, C)`` to the same shape, for any ``H, W >= 1``;
:class:`ChannelsFirst` and :class:`TokenSequence` adapt NCHW maps and token sequences.
"""

from . import functional
from .attention import CloAttention, HiLoAttention, MultiScaleDilatedAttention, OutlookAttention
from .layers import ChannelsFirst, TokenSequence
from .macs import MacReport, count_macs

__version__ = "0.1.0"

__all__ = [
    "ChannelsFirst",
    "CloAttention",
    "HiLoAttention",
    "MacReport",
    "MultiScaleDilatedAttention",
    "OutlookAttention",
    "TokenSequence",
    "count_macs",
    "functional",
]
