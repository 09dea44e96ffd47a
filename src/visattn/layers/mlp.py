"""Feed-forward layers on channels-last maps ``(B, H, W, C)``; parameter names follow the official models."""

from __future__ import annotations

import torch
from torch import nn

from .._modes import observed
from ..functional import conv1x1
from ..functional._buffers import can_overwrite


def _activate(act: nn.Module, x: torch.Tensor, producer: nn.Module | None = None) -> torch.Tensor:
    """``act(x)``; GELU in place where ``x`` (the fresh output of ``producer``) may be overwritten and nothing
    observes it: no hook on ``producer``, and none on ``act``, whose forward an in-place call would skip."""
    if (type(act) is nn.GELU and can_overwrite(x) and not observed(act) and not act._forward_pre_hooks
            and not (producer is not None and observed(producer))):
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    return act(x)


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)  # (B, C, H, W) view of a channels-last map


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)  # (B, H, W, C) view


class Mlp(nn.Module):
    """``fc1 -> act -> drop -> fc2 -> drop`` (ViT / VOLO / DilateFormer)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None,
                 act_layer=nn.GELU, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(_activate(self.act, self.fc1(x), self.fc1))))


class DWConv(nn.Module):
    """3x3 depthwise convolution of a channels-last map (zero padding); LITv2 names it ``dwconv.dwconv``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _nhwc(self.dwconv(_nchw(x)))


class DWConvMlp(nn.Module):
    """LITv2's ConvFFN: ``fc1 -> 3x3 depthwise conv -> act -> drop -> fc2 -> drop``."""

    def __init__(self, in_features: int, hidden_features: int, act_layer=nn.GELU, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = DWConv(hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(_activate(self.act, self.dwconv(self.fc1(x)), self.dwconv))))


class ConvFFN(nn.Module):
    """CloFormer's ConvFFN: ``fc1 (1x1) -> act -> k x k depthwise conv (stride s) -> drop -> fc2 (1x1) -> drop``.

    With ``stride=2`` the output map is ``ceil(H/2) x ceil(W/2)`` with ``out_features`` channels.
    """

    def __init__(self, in_features: int, hidden_features: int, kernel_size: int, stride: int,
                 out_features: int, act_layer=nn.GELU, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(in_features, hidden_features, 1)
        self.act = act_layer()
        self.dwconv = nn.Conv2d(hidden_features, hidden_features, kernel_size, stride, kernel_size // 2,
                                groups=hidden_features)
        self.fc2 = nn.Conv2d(hidden_features, out_features, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _activate(self.act, conv1x1(self.fc1, x), self.fc1)  # (B, H, W, hidden)
        x = _nhwc(self.dwconv(_nchw(x)))  # (B, H', W', hidden)
        return self.drop(conv1x1(self.fc2, self.drop(x)))  # (B, H', W', out)
