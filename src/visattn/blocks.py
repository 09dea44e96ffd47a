"""The residual blocks every backbone is built from. Blocks take their token mixer and MLP as arguments."""

from __future__ import annotations

import torch
from torch import nn

from ._modes import observed
from .functional._buffers import residual_add
from .layers import DropPath, PositionalConv


def _add_branch(x: torch.Tensor, out: torch.Tensor, *producers: nn.Module) -> torch.Tensor:
    """``x + out`` (in eager inference written into ``out``, unless a forward hook on a producer may hold it)."""
    return residual_add(x, out, not any(observed(m) for m in producers))


class Block(nn.Module):
    """Pre-norm residual block on channels-last maps ``(B, H, W, C)``::

        x = x + pos_embed(x)                           # if pos_embed (DilateFormer's conditional position conv)
        x = x + drop_path(attn(norm1(x)))              # if attn is given (LITv2's early stages have none)
        x = downsample(x) + drop_path(mlp(norm2(x)))   # downsample: shortcut of a strided MLP (CloFormer)

    ``block(x, return_mid=True)`` returns ``(mid, out)``, ``mid`` being ``x`` before the MLP branch: the last map
    at the input resolution when the MLP downsamples (CloFormer's feature maps). A block whose MLP branch was pruned
    for feature extraction (no ``mlp``) ends at ``mid``.

    Args:
        dim: channels of the input.
        mlp: the feed-forward module (``Mlp``, ``DWConvMlp``, ``ConvFFN``).
        attn: the token mixer, any ``(B, H, W, C) -> (B, H, W, C)`` module, or None.
        norm_layer: callable ``dim -> norm module`` for ``norm1`` / ``norm2``.
        drop_path: stochastic depth rate of both residual branches.
        pos_embed: add a depthwise 3x3 position conv before the block.
        shortcut: module applied to the MLP branch's shortcut (needed when the MLP changes shape).
    """

    def __init__(self, dim: int, mlp: nn.Module, attn: nn.Module | None = None, norm_layer=nn.LayerNorm,
                 drop_path: float = 0.0, pos_embed: bool = False, shortcut: nn.Module | None = None):
        super().__init__()
        if pos_embed:
            self.pos_embed = PositionalConv(dim)
        if attn is not None:
            self.norm1 = norm_layer(dim)
            self.attn = attn
        self.drop_path = DropPath(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = mlp
        if shortcut is not None:
            self.downsample = shortcut

    def forward(self, x: torch.Tensor, return_mid: bool = False):
        if hasattr(self, "pos_embed"):
            x = self.pos_embed(x)
        if hasattr(self, "attn"):
            x = _add_branch(x, self.drop_path(self.attn(self.norm1(x))), self.attn, self.drop_path)
        if not hasattr(self, "mlp"):  # pruned after the mixer (Backbone.prune_features)
            return (x, x) if return_mid else x
        shortcut = self.downsample(x) if hasattr(self, "downsample") else x
        out = _add_branch(shortcut, self.drop_path(self.mlp(self.norm2(x))), self.mlp, self.drop_path)
        return (x, out) if return_mid else out


class ClassBlock(nn.Module):
    """CaiT class-attention block on tokens ``(B, 1 + N, C)``: only the class token (first) is updated."""

    def __init__(self, dim: int, attn: nn.Module, mlp: nn.Module, norm_layer=nn.LayerNorm, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn
        self.drop_path = DropPath(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = _add_branch(x[:, :1], self.drop_path(self.attn(self.norm1(x))), self.attn, self.drop_path)  # (B, 1, C)
        cls = _add_branch(cls, self.drop_path(self.mlp(self.norm2(cls))), self.mlp, self.drop_path)
        return torch.cat([cls, x[:, 1:]], dim=1)  # (B, 1 + N, C)
