"""Outlook attention (VOLO)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate
from ..functional import outlook_aggregate, outlook_grid


class OutlookAttention(nn.Module):
    """Outlook attention: the ``k^2 x k^2`` weights of each window are predicted by a linear layer from the
    (stride-pooled) centre token, applied to the window's values and folded back onto the map.

    Maps ``(B, H, W, C)`` to ``(B, H, W, C)`` for any ``H, W >= 1``. Windows sit on a
    ``ceil(H/s) x ceil(W/s)`` grid; window ``(a, b)`` starts at row ``a*s - padding``, column
    ``b*s - padding``. With ``padding = kernel_size // 2`` (the official setting) this equals the official
    unfold/fold module; other paddings (rejected by the official code) keep the grid and shift every window
    by ``kernel_size // 2 - padding``, and even kernel sizes are allowed.

    Args:
        dim: channels ``C``.
        num_heads: heads ``nh``.
        kernel_size, padding, stride: window ``k``, offset ``p`` (``0 <= p < k``), stride ``s``.
        qkv_bias: bias of the value projection ``v``.
        qk_scale: weight scale, ``hd ** -0.5`` when None.
        attn_drop, proj_drop: dropout on the window weights / on the output.
        impl: ``"fast"`` (strided views, no unfold/fold) or ``"reference"`` (unfold, matmul, fold).

    Parameters: ``v``, ``attn`` (``Linear(C, k^4 * nh)``), ``proj``.
    """

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 3, padding: int = 1, stride: int = 1,
                 qkv_bias: bool = False, qk_scale: float | None = None, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, impl: str = "fast"):
        super().__init__()
        self.head_dim = _validate.heads(dim, num_heads)
        self.kernel_size = _validate.positive_int("kernel_size", kernel_size)
        self.stride = _validate.positive_int("stride", stride)
        self.padding = _validate.positive_int("padding", padding, minimum=0)
        if self.padding >= self.kernel_size:
            raise ValueError(f"padding must be < kernel_size ({kernel_size}) so that each window covers its own "
                             f"cell; got {padding} (the usual choice is kernel_size // 2 = {kernel_size // 2})")
        self.dim, self.num_heads = dim, num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim ** -0.5
        self.impl = _validate.impl(impl)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn = nn.Linear(dim, self.kernel_size ** 4 * num_heads)
        self.attn_drop = nn.Dropout(_validate.probability("attn_drop", attn_drop))
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(_validate.probability("proj_drop", proj_drop))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _validate.channels_last_map(x, self.dim, type(self).__name__)
        B, H, W, C = x.shape
        nh, hd, k2, s = self.num_heads, self.head_dim, self.kernel_size ** 2, self.stride
        h, w = outlook_grid(H, W, s)
        v = self.v(x).reshape(B, H, W, nh, hd).permute(0, 3, 1, 2, 4)  # (B, nh, H, W, hd)
        centre = x
        if s > 1:
            centre = F.avg_pool2d(x.permute(0, 3, 1, 2), s, s, ceil_mode=True).permute(0, 2, 3, 1)  # (B, h, w, C)
        a = self.attn(centre).reshape(B, h, w, nh, k2, k2).permute(0, 3, 1, 2, 4, 5)  # (B, nh, h, w, k*k, k*k)
        a = self.attn_drop((a * self.scale).softmax(dim=-1))
        out = outlook_aggregate(a, v, self.kernel_size, self.padding, s, self.impl)  # (B, nh, H, W, hd)
        out = out.permute(0, 2, 3, 1, 4).reshape(B, H, W, C)  # (B, H, W, C)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
                f"padding={self.padding}, stride={self.stride}, impl={self.impl!r}")
