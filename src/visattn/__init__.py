"""visattn: plug-and-play, efficient vision attention blocks.

Every block maps a channels-last map ``(B, H, W, C)`` to the same shape, for any ``H, W >= 1``;
:class:`ChannelsFirst` and :class:`TokenSequence` adapt NCHW maps and token sequences.
"""

from . import explain, functional
from ._version import __version__
from .app.weights import Trained, load_checkpoint
from .attention import (
    CloAttention,
    HiLoAttention,
    MultiHeadSelfAttention,
    MultiScaleDilatedAttention,
    OutlookAttention,
    SpatialReductionAttention,
    WindowAttention,
    create_block,
    list_blocks,
    register_block,
)
from .checkpoint import load_official
from .fuse import fuse
from .layers import ChannelsFirst, DeformConv2d, TokenSequence, deform_conv2d
from .macs import MacReport, count_macs
from .models import FeatureExtractor, create_model, list_models, register_model

__all__ = [
    "ChannelsFirst",
    "CloAttention",
    "DeformConv2d",
    "FeatureExtractor",
    "HiLoAttention",
    "MacReport",
    "MultiHeadSelfAttention",
    "MultiScaleDilatedAttention",
    "OutlookAttention",
    "SpatialReductionAttention",
    "TokenSequence",
    "Trained",
    "WindowAttention",
    "__version__",
    "count_macs",
    "create_block",
    "create_model",
    "deform_conv2d",
    "explain",
    "functional",
    "fuse",
    "list_blocks",
    "list_models",
    "load_checkpoint",
    "load_official",
    "register_block",
    "register_model",
]
