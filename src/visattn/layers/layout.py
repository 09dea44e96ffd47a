"""Layout adapters. Every visattn attention block maps a channels-last ``(B, H, W, C)`` map to the same shape;
these wrappers run any block on NCHW maps or on token sequences."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelsFirst(nn.Module):
    """Run a channels-last block on ``(B, C, H, W)`` maps (CNN / YOLO necks / UNets).

    Example:
        >>> layer = ChannelsFirst(HiLoAttention(64))
        >>> layer(torch.randn(2, 64, 40, 40)).shape
        torch.Size([2, 64, 40, 40])

    The wrapped block is ``layer.block`` (its state_dict keys gain the prefix ``block.``).
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        if not isinstance(block, nn.Module):
            raise TypeError(f"ChannelsFirst wraps an nn.Module, got {type(block).__name__}")
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"ChannelsFirst expects (B, C, H, W), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        y = self.block(x.permute(0, 2, 3, 1))  # (B, H, W, C)
        return y.permute(0, 3, 1, 2)  # (B, C, H, W)


class TokenSequence(nn.Module):
    """Run a channels-last block on token sequences ``(B, N, C)`` with ``N = H * W`` (row-major over H, W).

    Example:
        >>> layer = TokenSequence(HiLoAttention(64))
        >>> layer(torch.randn(2, 16 * 4, 64), 16, 4).shape
        torch.Size([2, 64, 64])

    ``H`` and ``W`` are always explicit: a 16x4 map is never guessed as 8x8.
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        if not isinstance(block, nn.Module):
            raise TypeError(f"TokenSequence wraps an nn.Module, got {type(block).__name__}")
        self.block = block

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise ValueError(f"TokenSequence expects (B, N, C), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        B, N, C = x.shape
        if H * W != N:
            raise ValueError(f"TokenSequence got N={N} tokens but H*W = {H}*{W} = {H * W}; pass the map's real H and W")
        y = self.block(x.reshape(B, H, W, C))  # (B, H, W, C)
        return y.reshape(B, N, y.shape[-1])  # (B, N, C)


def linear_to_channels_first(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``(B, N, C_in)`` tokens -> ``(B, C_out, N)`` channel-first projection, computed by one batched matmul on the
    transposed input (no copy; ``torch.matmul`` may instead transpose its result and copy it)."""
    B = x.shape[0]
    w = weight.reshape(weight.shape[0], -1)
    y = torch.bmm(w.expand(B, *w.shape), x.transpose(1, 2))  # (B, C_out, N)
    return y if bias is None else y.add_(bias[:, None])


def linear_from_channels_first(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``(B, C_in, N)`` channel-first map -> ``(B, N, C_out)`` tokens by one batched matmul (no transposing copy)."""
    B = x.shape[0]
    w = weight.reshape(weight.shape[0], -1)
    y = torch.bmm(x.transpose(1, 2), w.t().expand(B, *w.t().shape))  # (B, N, C_out)
    return y if bias is None else y.add_(bias)


def pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Apply a 1x1 ``nn.Conv2d`` to a channels-last ``(..., C)`` tensor as a matmul (same parameters)."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)  # (..., C_out)
