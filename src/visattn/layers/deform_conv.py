"""Deformable convolution (DCNv1) in plain PyTorch, and LITv2's deformable token merging.

Convention (mmcv / torchvision ``deform_conv2d``): offset channel ``2i`` is the row offset ``dy`` and
``2i + 1`` the column offset ``dx`` of kernel tap ``i`` (row-major over the kernel). Tap ``(a, b)`` of output
``(y, x)`` samples the input bilinearly at ``(y*s - p + a*d + dy, x*s - p + b*d + dx)``; the input is zero
outside the map, so a sample straddling the border mixes the in-map corners with zeros.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.utils import _pair


def _bilinear_gather(x: torch.Tensor, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W), py/px (B, K, Ho, Wo) -> (B, C, K, Ho, Wo), zero outside the map.

    ``py``/``px`` are float32 (or float64) positions whatever ``x``'s dtype: bfloat16 (8-bit mantissa) places a
    sample at 100.3 on 100 and float16 rounds a flat index past 2048. Indices are integer arithmetic."""
    B, C, H, W = x.shape
    flat = x.reshape(B, C, H * W)  # (B, C, H*W)
    y0, x0 = py.floor(), px.floor()
    wy1, wx1 = py - y0, px - x0
    out = None
    for dy, wy in ((0, 1 - wy1), (1, wy1)):
        for dx, wx in ((0, 1 - wx1), (1, wx1)):
            yi, xi = y0 + dy, x0 + dx
            valid = (yi >= 0) & (yi <= H - 1) & (xi >= 0) & (xi <= W - 1)
            # a NaN/inf position (from a NaN pixel) reads a valid index; its NaN weight keeps the NaN in its image
            yi = torch.nan_to_num(yi, nan=0.0).clamp(0, H - 1).long()
            xi = torch.nan_to_num(xi, nan=0.0).clamp(0, W - 1).long()
            idx = (yi * W + xi).reshape(B, 1, math.prod(py.shape[1:]))  # (B, 1, K*Ho*Wo); B may be 0
            vals = flat.gather(2, idx.expand(B, C, idx.shape[-1])).reshape(B, C, *py.shape[1:])  # (B, C, K, Ho, Wo)
            term = vals * (wy * wx * valid).to(x.dtype).unsqueeze(1)  # (B, C, K, Ho, Wo)
            out = term if out is None else out + term
    return out


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  stride=1, padding=0, dilation=1) -> torch.Tensor:
    """DCNv1 convolution. ``x (B, C, H, W)``, ``offset (B, 2*kh*kw, Ho, Wo)``, ``weight (Cout, C, kh, kw)``."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    B, C, H, W = x.shape
    Cout, Cin, kh, kw = weight.shape
    if Cin != C:
        raise ValueError(f"deform_conv2d: weight expects {Cin} input channels, x has {C}")
    K = kh * kw
    Ho, Wo = offset.shape[-2:]  # traced: the sizes the offset conv made, one expression for both
    if not torch.compiler.is_compiling():
        expected = (B, 2 * K, (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1)
        if offset.dim() != 4 or tuple(offset.shape) != expected:
            raise ValueError(f"offset must have shape {expected}, got {tuple(offset.shape)}")
    dev = x.device
    dt = torch.promote_types(x.dtype, torch.float32)  # sampling positions: float32 at least (see _bilinear_gather)
    tap_y = (torch.arange(kh, device=dev, dtype=dt) * dh).repeat_interleave(kw)  # (K,)
    tap_x = (torch.arange(kw, device=dev, dtype=dt) * dw).repeat(kh)  # (K,)
    base_y = tap_y[:, None, None] + (torch.arange(Ho, device=dev, dtype=dt) * sh - ph)[None, :, None]  # (K, Ho, 1)
    base_x = tap_x[:, None, None] + (torch.arange(Wo, device=dev, dtype=dt) * sw - pw)[None, None, :]  # (K, 1, Wo)
    dy, dx = offset.to(dt).reshape(B, K, 2, Ho, Wo).unbind(2)  # 2 x (B, K, Ho, Wo), strided
    if torch.compiler.is_compiling():  # strided views leave stride-order guards that named Dim ranges cannot prove
        dy, dx = dy.contiguous(), dx.contiguous()
    sampled = _bilinear_gather(x, base_y + dy, base_x + dx)  # (B, C, K, Ho, Wo)
    out = weight.reshape(Cout, C * K) @ sampled.reshape(B, C * K, Ho * Wo)  # (B, Cout, Ho*Wo)
    out = out.reshape(B, Cout, Ho, Wo)
    return out if bias is None else out + bias[:, None, None]


class DeformConv2d(nn.Module):
    """DCNv1 layer whose offsets come from a plain conv ``conv_offset`` (zero-initialised: starts as a conv).

    Parameter names match mmcv's ``DeformConv2dPack`` (``weight``, ``bias``, ``conv_offset.*``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True):
        super().__init__()
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.conv_offset = nn.Conv2d(in_channels, 2 * self.kernel_size[0] * self.kernel_size[1], self.kernel_size,
                                     self.stride, self.padding, self.dilation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, Cout, Ho, Wo)
        offset = self.conv_offset(x)
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation)


class DeformableTokenMerging(nn.Module):
    """LITv2's DTM: 2x2 stride-2 deformable conv (C -> 2C) -> BatchNorm -> GELU; channels-last in and out.

    Odd sizes floor (23x18 -> 11x9), as in the official detection backbone.
    """

    def __init__(self, dim: int, out_dim: int | None = None):
        super().__init__()
        out_dim = out_dim or 2 * dim
        self.dconv = DeformConv2d(dim, out_dim, kernel_size=2, stride=2, padding=0)
        self.norm_layer = nn.BatchNorm2d(out_dim)
        self.act_layer = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act_layer(self.norm_layer(self.dconv(x.permute(0, 3, 1, 2))))  # (B, 2C, H/2, W/2)
        return y.permute(0, 2, 3, 1)


__all__ = ["DeformConv2d", "DeformableTokenMerging", "deform_conv2d"]
