"""Parameter-free projections between layouts: a weight matrix applied to channels-last tokens or to channel-first
maps without a transposing copy. Attention blocks use them to project straight into the memory order their kernel
wants."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._modes import plain


def linear_to_channels_first(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``(B, N, C_in)`` tokens -> ``(B, C_out, N)`` channel-first projection, computed by one batched matmul on the
    transposed input (no copy; ``torch.matmul`` may instead transpose its result and copy it)."""
    B = x.shape[0]
    w = weight.reshape(weight.shape[0], -1)  # (C_out, C_in), also for 1x1 conv weights
    y = torch.bmm(w.expand(B, *w.shape), x.transpose(1, 2))  # (B, C_out, N)
    return y if bias is None else y.add_(bias[:, None])


def linear_from_channels_first(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``(B, C_in, N)`` channel-first map -> ``(B, N, C_out)`` tokens by one batched matmul (no transposing copy)."""
    B = x.shape[0]
    w = weight.reshape(weight.shape[0], -1)  # (C_out, C_in)
    y = torch.bmm(x.transpose(1, 2), w.t().expand(B, *w.t().shape))  # (B, N, C_out)
    return y if bias is None else y.add_(bias)


def pointwise(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution's parameters applied to a channels-last ``(..., C)`` tensor as a matmul."""
    return F.linear(x, weight.flatten(1), bias)  # (..., C_out)


def conv1x1(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A block's 1x1 ``nn.Conv2d`` slot applied to a channels-last ``(B, H, W, C)`` map: a matmul on its weight while
    the layer is :func:`~visattn._modes.plain`, else the layer itself called on the NCHW view (its hooks,
    parametrizations or replacement take effect)."""
    if plain(layer):
        return pointwise(layer.weight, layer.bias, x)  # (B, H, W, C_out)
    return layer(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H, W, C_out)


def to_channels_first(layer: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """A block's ``nn.Linear`` slot on ``(B, N, C_in)`` tokens -> ``(B, C_out, N)``: :func:`linear_to_channels_first`
    while the layer is plain, else the layer called (and its output transposed)."""
    if plain(layer):
        return linear_to_channels_first(layer.weight, layer.bias, tokens)  # (B, C_out, N)
    return layer(tokens).transpose(1, 2)  # (B, C_out, N)


def from_channels_first(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A block's ``nn.Linear`` slot on a ``(B, C_in, N)`` map -> ``(B, N, C_out)`` tokens, as above."""
    if plain(layer):
        return linear_from_channels_first(layer.weight, layer.bias, x)  # (B, N, C_out)
    return layer(x.transpose(1, 2))  # (B, N, C_out)
