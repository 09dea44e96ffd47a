"""visattn: plug-and-play, efficient vision attention blocks.

Every block maps a channels-last map ``(B, H, W, C)`` to the same shape, for any ``H, W >= 1``;
:class:`ChannelsFirst` and :class:`TokenSequence` adapt NCHW maps and token sequences.
"""

from . import functional
from .attention import (
    CloAttention,
    HiLoAttention,
    MultiHeadSelfAttention,
    MultiScaleDilatedAttention,
    OutlookAttention,
    SpatialReductionAttention,
    WindowAttention,
)
from .checkpoint import load_official
from .layers import ChannelsFirst, DeformConv2d, TokenSequence, deform_conv2d
from .macs import MacReport, count_macs
from .models import create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "ChannelsFirst",
    "CloAttention",
    "DeformConv2d",
    "HiLoAttention",
    "MacReport",
    "MultiHeadSelfAttention",
    "MultiScaleDilatedAttention",
    "OutlookAttention",
    "SpatialReductionAttention",
    "TokenSequence",
    "WindowAttention",
    "count_macs",
    "create_model",
    "deform_conv2d",
    "functional",
    "list_models",
    "load_official",
]
