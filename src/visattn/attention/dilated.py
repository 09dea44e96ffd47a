"""Multi-scale dilated attention (DilateFormer's MSDA)."""

from __future__ import annotations

import torch
from torch import nn

from .. import _validate
from ..functional import dilated_attention
from ..layers import linear_from_channels_first, linear_to_channels_first, pointwise


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
        if self.impl == "fast":
            return self._forward_fast(x)
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

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """q, k, v projected straight into channel-first memory (one matmul against the transposed input), so the
        kernel's shifted products run along W without permute copies."""
        B, H, W, C = x.shape
        groups = len(self.dilation)
        nhg = self.num_heads // groups
        dropout_p = self.attn_drop if self.training else 0.0
        tokens = x.reshape(B, H * W, C)
        weight = self.qkv.weight.view(3, groups, C // groups, C)
        bias = None if self.qkv.bias is None else self.qkv.bias.view(3, groups, C // groups)
        outs = []
        for g, r in enumerate(self.dilation):  # one group's projections at a time: less memory live
            w_g = weight[:, g].reshape(3 * C // groups, C)
            b_g = None if bias is None else bias[:, g].reshape(-1)
            qkv = linear_to_channels_first(w_g, b_g, tokens).view(B, 3, nhg, self.head_dim, H, W)
            # qkv: (B, 3, nhg, hd, H, W)
            q, k, v = (qkv[:, t].permute(0, 1, 3, 4, 2) for t in range(3))  # 3 x (B, nhg, H, W, hd) views
            o = dilated_attention(q, k, v, self.kernel_size, r, self.scale, dropout_p, "fast")  # (B, nhg, H, W, hd)
            outs.append(o.permute(0, 1, 4, 2, 3))  # (B, nhg, hd, H, W)
        out = torch.cat(outs, dim=1).view(B, C, H * W) if groups > 1 else outs[0].reshape(B, C, H * W)  # (B, C, N)
        y = linear_from_channels_first(self.proj.weight, self.proj.bias, out)  # (B, N, C)
        return self.proj_drop(y.view(B, H, W, C))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
                f"dilation={list(self.dilation)}, impl={self.impl!r}")
