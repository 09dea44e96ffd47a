"""Global multi-head self-attention over a channels-last map (DilateFormer's late stages, VOLO's transformers)."""

from __future__ import annotations

import torch
from torch import nn

from .. import _validate
from ..functional import attention
from ._common import AttentionPart, dropout_p, setup_heads


class MultiHeadSelfAttention(nn.Module):
    """Plain multi-head self-attention over all ``N = H * W`` positions; ``qkv`` laid out as ``(3, nh, hd)``.

    Args:
        dim, num_heads, qkv_bias, qk_scale, attn_drop, proj_drop: as in ViT.
        impl: ``"fast"`` (SDPA, no N x N matrix) or ``"reference"`` (explicit attention matrix).
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_scale: float | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, impl: str = "fast"):
        super().__init__()
        setup_heads(self, dim, num_heads, qk_scale, attn_drop, proj_drop, impl, qkv_bias)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _validate.channels_last_map(x, self.dim, type(self).__name__)
        B, H, W, C = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        # qkv: (3, B, nh, N, hd)
        out = attention(qkv[0], qkv[1], qkv[2], self.scale, dropout_p(self), self.impl)  # (B, nh, N, hd)
        out = out.transpose(1, 2).reshape(B, H, W, C)  # (B, H, W, C)
        return self.proj_drop(self.proj(out))

    def attention_parts(self, H: int, W: int) -> list[AttentionPart]:
        """Every query to every position, all heads."""
        return [AttentionPart("global", "global", (0, self.num_heads), (H, W), (H, W))]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, impl={self.impl!r}"


class ClassAttention(nn.Module):
    """CaiT class attention: the class token (first token) attends to all tokens; only it is updated.

    Input ``(B, 1 + N, C)`` tokens, output ``(B, 1, C)``: the new class embedding (before the residual).
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_scale: float | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, impl: str = "fast"):
        super().__init__()
        setup_heads(self, dim, num_heads, qk_scale, attn_drop, proj_drop, impl, qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        kv = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (2, B, nh, N, hd)
        q = self.q(x[:, :1]).reshape(B, 1, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, 1, hd)
        out = attention(q, kv[0], kv[1], self.scale, dropout_p(self), self.impl)  # (B, nh, 1, hd)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, 1, C)))  # (B, 1, C)

    def attention_parts(self, N: int) -> list[AttentionPart]:
        """The class token's softmax over itself and the other ``N - 1`` tokens, all heads."""
        return [AttentionPart("class", "class", (0, self.num_heads), (N,))]
