"""Layers the backbones share: layout adapters, feed-forward layers, convolutional pieces, deformable conv."""

from .conv import ChannelsFirstSequential, Downsample, DropPath, GroupNorm1, PositionalConv
from .deform_conv import DeformableTokenMerging, DeformConv2d, deform_conv2d
from .layout import ChannelsFirst, TokenSequence
from .mlp import ConvFFN, DWConvMlp, Mlp

__all__ = [
    "ChannelsFirst", "ChannelsFirstSequential", "ConvFFN", "DWConvMlp", "DeformConv2d", "DeformableTokenMerging",
    "Downsample", "DropPath", "GroupNorm1", "Mlp", "PositionalConv", "TokenSequence", "deform_conv2d",
]
