"""Multi-scale dilated attention (DilateFormer's MSDA)."""

from __future__ import annotations

import torch
from torch import nn

from .. import _validate
from ..functional import dilated_attention
from ..layers import pointwise


class MultiScaleDilatedAttention(nn.Module):
    """Multi-scale dilated attention: the heads are split into ``len(dilation)`` equal groups and group ``i``
    attends to the ``k x k`` neighbourhood of dilation ``dilation[i]`` around every query.

    Maps ``(B, H, W, C)`` to ``(B, H, W, C)`` for any ``H, W >= 1``. Border neighbours outside the map are
    zero keys/values that still enter the softmax, as in the official zero-padded unfold. Unlike the official
    block it never writes into its input and q, k, v stay in the autograd graph.

    Args:
        dim: channels ``C``.
        num_heads: heads ``nh``, a multiple of ``len(dilation)``.
        qkv_bias: bias of the ``qkv`` 1x1 convolution.
        qk_scale: logit scale, ``hd ** -0.5`` when None.
        attn_drop, proj_drop: dropout on the attention probabilities / on the output.
        kernel_size: odd neighbourhood size ``k``.
        dilation: one dilation per head group.
        impl: ``"fast"`` (shifted views, no unfold copies) or ``"reference"`` (official unfold formulation).

    Parameters: ``qkv`` (a 1x1 ``Conv2d(C, 3C)``, as in the official checkpoints) and ``proj``.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_scale: float | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, kernel_size: int = 3,
                 dilation=(1, 2, 3), impl: str = "fast"):
        super().__init__()
        self.head_dim = _validate.heads(dim, num_heads)
        self.kernel_size = _validate.odd_int("kernel_size", kernel_size)
        self.dilation = _validate.int_list("dilation", dilation)
        if not self.dilation:
            raise ValueError("dilation must list at least one dilation, e.g. [1, 2, 3]")
        groups = len(self.dilation)
        if num_heads % groups:
            lower, upper = groups * max(1, num_heads // groups), groups * (num_heads // groups + 1)
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of len(dilation) ({groups}) so that every "
                             f"dilation gets the same number of heads; use num_heads={lower} or {upper}")
        self.dim, self.num_heads = dim, num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim ** -0.5
        self.attn_drop = _validate.probability("attn_drop", attn_drop)
        self.impl = _validate.impl(impl)
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(_validate.probability("proj_drop", proj_drop))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _validate.channels_last_map(x, self.dim, type(self).__name__)
        B, H, W, C = x.shape
        groups = len(self.dilation)
        nhg = self.num_heads // groups
        dropout_p = self.attn_drop if self.training else 0.0
        qkv = pointwise(self.qkv, x).reshape(B, H, W, 3, groups, nhg, self.head_dim)  # (B, H, W, 3, G, nhg, hd)
        qkv = qkv.permute(3, 4, 0, 5, 1, 2, 6)  # (3, G, B, nhg, H, W, hd)
        outs = []
        for g, r in enumerate(self.dilation):
            o = dilated_attention(qkv[0, g], qkv[1, g], qkv[2, g], self.kernel_size, r, self.scale, dropout_p,
                                  self.impl)  # (B, nhg, H, W, hd)
            outs.append(o.permute(0, 2, 3, 1, 4).reshape(B, H, W, C // groups))  # (B, H, W, C/G)
        out = torch.cat(outs, dim=-1) if groups > 1 else outs[0]  # (B, H, W, C)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
                f"dilation={list(self.dilation)}, impl={self.impl!r}")
