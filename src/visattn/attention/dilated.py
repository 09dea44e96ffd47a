"""Multi-scale dilated attention (DilateFormer's MSDA)."""

from __future__ import annotations

import torch
from torch import nn

from .. import _validate
from .._modes import is_tracing, plain
from ..functional import dilated_attention, from_channels_first, linear_to_channels_first
from ._common import AttentionPart, dropout_p, setup_heads


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
        impl: kernel path, ``"fast"`` (shifted views, no unfold copies) or ``"reference"`` (unfold).

    Parameters: ``qkv`` (a 1x1 ``Conv2d(C, 3C)``, as in the official checkpoints) and ``proj``.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_scale: float | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, kernel_size: int = 3,
                 dilation=(1, 2, 3), impl: str = "fast"):
        super().__init__()
        setup_heads(self, dim, num_heads, qk_scale, attn_drop, proj_drop, impl, qkv_bias)
        self.kernel_size = _validate.odd_int("kernel_size", kernel_size)
        self.dilation = _validate.int_list("dilation", dilation)
        if not self.dilation:
            raise ValueError("dilation must list at least one dilation, e.g. [1, 2, 3]")
        groups = len(self.dilation)
        if num_heads % groups:
            lower, upper = groups * max(1, num_heads // groups), groups * (num_heads // groups + 1)
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of len(dilation) ({groups}) so that every "
                             f"dilation gets the same number of heads; use num_heads={lower} or {upper}")
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """q, k, v of one head group at a time are projected straight into channel-first memory (one matmul
        against the transposed input), so the kernel's shifted products run along W without permute copies."""
        _validate.channels_last_map(x, self.dim, type(self).__name__)
        B, H, W, C = x.shape
        groups = len(self.dilation)
        nhg, hd = self.num_heads // groups, self.head_dim
        tokens = x.reshape(B, H * W, C)  # (B, N, C)
        direct = plain(self.qkv)
        if direct:
            weight = self.qkv.weight.view(3, groups, C // groups, C)  # (3, G, C/G, C)
            bias = None if self.qkv.bias is None else self.qkv.bias.view(3, groups, C // groups)  # (3, G, C/G)
        else:  # the layer itself, once (hooks, wrappers, quantized or parametrized layers)
            qkv_all = self.qkv(x.permute(0, 3, 1, 2)).reshape(B, 3, groups, C // groups, H * W)  # (B, 3, G, C/G, N)
        outs = []
        for g, r in enumerate(self.dilation):  # one group's projections at a time: less memory live
            if direct:
                w_g = weight[:, g].reshape(3 * C // groups, C)  # (3C/G, C)
                b_g = None if bias is None else bias[:, g].reshape(-1)  # (3C/G,)
                qkv = linear_to_channels_first(w_g, b_g, tokens)  # (B, 3C/G, N)
            else:
                qkv = qkv_all[:, :, g]  # (B, 3, C/G, N)
            qkv = qkv.reshape(B, 3, nhg, hd, H, W)  # (B, 3, nhg, hd, H, W)
            q, k, v = (qkv[:, t].permute(0, 1, 3, 4, 2) for t in range(3))  # 3 x (B, nhg, H, W, hd) views
            r = r if is_tracing() else _bounded(r, H, W)
            o = dilated_attention(q, k, v, self.kernel_size, r, self.scale, dropout_p(self), self.impl)
            outs.append(o.permute(0, 1, 4, 2, 3))  # (B, nhg, hd, H, W)
        out = torch.cat(outs, dim=1) if groups > 1 else outs[0]  # (B, nh, hd, H, W)
        y = from_channels_first(self.proj, out.reshape(B, C, H * W))  # (B, N, C)
        return self.proj_drop(y.view(B, H, W, C))

    def attention_parts(self, H: int, W: int) -> list[AttentionPart]:
        """One part per dilation group (heads ``[g*nh/G, (g+1)*nh/G)``), as :func:`visattn.explain.record_attention`
        records them."""
        nhg = self.num_heads // len(self.dilation)
        return [AttentionPart(f"dilation {r}", "dilated", (g * nhg, (g + 1) * nhg), (H, W),
                              kernel_size=self.kernel_size, dilation=_bounded(r, H, W))
                for g, r in enumerate(self.dilation)]

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
                f"dilation={list(self.dilation)}, impl={self.impl!r}")


def _bounded(r: int, H: int, W: int) -> int:
    """A dilation of max(H, W) or more puts every neighbour but the centre in the zero padding: the same result for
    any such dilation, so the padding is bounded by the map (dilation 2000 would pad by 2000)."""
    return min(r, max(H, W, 1))
