"""Layout adapters. Every visattn attention block maps a channels-last ``(B, H, W, C)`` map to the same shape;
these wrappers run any block on NCHW maps or on token sequences."""

from __future__ import annotations

import torch
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
