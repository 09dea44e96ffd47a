"""Convolutional pieces applied to channels-last maps, keeping the official parameter names."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelsFirstSequential(nn.Sequential):
    """An ``nn.Sequential`` of NCHW layers applied to a channels-last map (keys stay ``0.weight``, ...)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H', W', C')


class Downsample(nn.Module):
    """Strided convolution between stages (``proj``: a conv or a conv + BatchNorm), channels-last in and out."""

    def __init__(self, proj: nn.Module):
        super().__init__()
        self.proj = proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H', W', C')


class PositionalConv(nn.Conv2d):
    """Depthwise 3x3 convolutional position encoding added as a residual: ``x + dwconv(x)``."""

    def __init__(self, dim: int):
        super().__init__(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class GroupNorm1(nn.GroupNorm):
    """``GroupNorm(1, C)`` (normalise over C, H, W of each sample) for channels-last maps."""

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__(1, num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.group_norm(x.permute(0, 3, 1, 2), 1, self.weight, self.bias, self.eps)  # (B, C, H, W)
        return y.permute(0, 2, 3, 1)


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``drop_prob`` and rescale the rest."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_prob}")
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"
