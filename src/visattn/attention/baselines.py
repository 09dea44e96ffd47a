"""The attention blocks the papers compare against, with the same channels-last contract and fast path.

* :class:`WindowAttention`: Swin-style attention inside non-overlapping ``ws x ws`` windows (no shift, no
  relative position bias), zero-padding maps that are not multiples of the window.
* :class:`SpatialReductionAttention`: PVT's attention to keys/values from a strided ``sr x sr`` conv + LayerNorm.
* :class:`visattn.MultiHeadSelfAttention` (in ``mhsa.py``): global attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate
from .._modes import crop_hw, is_tracing, round_up
from ..functional import attention, window_attention
from ._common import AttentionPart, dropout_p, setup_heads


class WindowAttention(nn.Module):
    """Multi-head attention inside non-overlapping ``window_size x window_size`` windows (``qkv``, ``proj``).

    Maps not divisible by the window are zero-padded at the bottom/right (the padded tokens take part, as in
    HiLo's Hi-Fi branch) and cropped.
    """

    def __init__(self, dim: int, num_heads: int = 8, window_size: int = 7, qkv_bias: bool = True,
                 qk_scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0, impl: str = "fast"):
        super().__init__()
        setup_heads(self, dim, num_heads, qk_scale, attn_drop, proj_drop, impl, qkv_bias)
        self.window_size = _validate.positive_int("window_size", window_size)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _validate.channels_last_map(x, self.dim, type(self).__name__)
        B, H, W, C = x.shape
        ws = self.window_size
        Hp, Wp = round_up(H, ws), round_up(W, ws)
        pad_h, pad_w = Hp - H, Wp - W
        # traced: pad unconditionally, no branch on H % ws
        xp = F.pad(x, (0, 0, 0, pad_w, 0, pad_h)) if is_tracing() or pad_h or pad_w else x  # (B, Hp, Wp, C)
        qkv = self.qkv(xp).reshape(B, Hp, Wp, 3, self.num_heads, self.head_dim).permute(3, 0, 4, 1, 2, 5)
        # qkv: (3, B, nh, Hp, Wp, hd)
        out = window_attention(qkv[0], qkv[1], qkv[2], ws, self.scale, dropout_p(self), self.impl)
        # out: (B, nh, Hp, Wp, hd)
        out = crop_hw(out, H, W).permute(0, 2, 3, 1, 4).reshape(B, H, W, C)  # (B, H, W, C)
        return self.proj_drop(self.proj(out))

    def attention_parts(self, H: int, W: int) -> list[AttentionPart]:
        """Windows of the zero-padded map, all heads (see :class:`~visattn.attention._common.AttentionPart`)."""
        ws = self.window_size
        return [AttentionPart("window", "window", (0, self.num_heads), (H, W), (round_up(H, ws), round_up(W, ws)),
                              window=ws)]


class SpatialReductionAttention(nn.Module):
    """PVT attention: queries at every position, keys/values from ``sr(x)`` (an ``sr_ratio``-strided conv) + norm.

    Parameters ``q``, ``kv``, ``proj``, ``sr``, ``norm`` (PVT's names). Maps smaller than ``sr_ratio`` are
    reduced by a kernel clipped to the map, so every size works.
    """

    def __init__(self, dim: int, num_heads: int = 8, sr_ratio: int = 2, qkv_bias: bool = True,
                 qk_scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0, impl: str = "fast"):
        super().__init__()
        setup_heads(self, dim, num_heads, qk_scale, attn_drop, proj_drop, impl, qkv_bias)
        self.sr_ratio = _validate.positive_int("sr_ratio", sr_ratio)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        if self.sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, self.sr_ratio, self.sr_ratio)
            self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _validate.channels_last_map(x, self.dim, type(self).__name__)
        B, H, W, C = x.shape
        nh, hd = self.num_heads, self.head_dim
        q = self.q(x).reshape(B, H * W, nh, hd).transpose(1, 2)  # (B, nh, N, hd)
        src = x
        if self.sr_ratio > 1:
            r = self.sr_ratio
            if r > H or r > W:  # clip the reduction kernel to the map
                kh, kw = min(r, H), min(r, W)
                reduced = F.conv2d(x.permute(0, 3, 1, 2), self.sr.weight[:, :, :kh, :kw], self.sr.bias, (kh, kw))
            else:
                reduced = self.sr(x.permute(0, 3, 1, 2))  # (B, C, H/r, W/r)
            src = self.norm(reduced.permute(0, 2, 3, 1))  # (B, H/r, W/r, C)
        M = src.shape[1] * src.shape[2]  # explicit: B may be 0
        kv = self.kv(src).reshape(B, M, 2, nh, hd).permute(2, 0, 3, 1, 4)  # (2, B, nh, M, hd)
        out = attention(q, kv[0], kv[1], self.scale, dropout_p(self), self.impl)  # (B, nh, N, hd)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, H, W, C)))

    def attention_parts(self, H: int, W: int) -> list[AttentionPart]:
        """Every query to the ``sr x sr``-reduced keys (a kernel clipped to the map), all heads."""
        kh, kw = (min(self.sr_ratio, H), min(self.sr_ratio, W))
        return [AttentionPart("reduced", "global", (0, self.num_heads), (H, W), (H // kh, W // kw), (kh, kw))]
