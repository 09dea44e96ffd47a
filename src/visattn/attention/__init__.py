"""Attention modules. Each maps a channels-last ``(B, H, W, C)`` map to the same shape."""

from .baselines import SpatialReductionAttention, WindowAttention
from .clo import CloAttention
from .dilated import MultiScaleDilatedAttention
from .hilo import HiLoAttention
from .mhsa import ClassAttention, MultiHeadSelfAttention
from .outlook import OutlookAttention

__all__ = ["ClassAttention", "CloAttention", "HiLoAttention", "MultiHeadSelfAttention", "MultiScaleDilatedAttention",
           "OutlookAttention", "SpatialReductionAttention", "WindowAttention"]
