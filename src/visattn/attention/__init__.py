"""Attention modules: parameters and layout; the arithmetic is in :mod:`visattn.functional`.

Each maps a channels-last ``(B, H, W, C)`` map to the same shape and hands its ``impl`` to the kernels.
:mod:`.registry` builds blocks by name; :mod:`.official` holds the official whole-block formulations (oracles).
"""

from .baselines import SpatialReductionAttention, WindowAttention
from .clo import CloAttention
from .dilated import MultiScaleDilatedAttention
from .hilo import HiLoAttention
from .mhsa import ClassAttention, MultiHeadSelfAttention
from .official import Official, official_forward
from .outlook import OutlookAttention
from .registry import block_entry, create_block, list_blocks, register_block

__all__ = ["ClassAttention", "CloAttention", "HiLoAttention", "MultiHeadSelfAttention", "MultiScaleDilatedAttention",
           "Official", "OutlookAttention", "SpatialReductionAttention", "WindowAttention", "block_entry",
           "create_block", "list_blocks", "official_forward", "register_block"]
