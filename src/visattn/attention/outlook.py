"""Outlook attention (VOLO)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate
from .._modes import attention_recorder
from ..functional import from_channels_first, outlook_aggregate, outlook_attention, outlook_grid, to_channels_first
from ..functional.outlook import probabilities
from ._common import AttentionPart, dropout_p, setup_heads


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
        impl: kernel path, ``"fast"`` (strided views, no unfold/fold) or ``"reference"`` (unfold, matmul, fold).

    Parameters: ``v``, ``attn`` (``Linear(C, k^4 * nh)``), ``proj``.
    """

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 3, padding: int = 1, stride: int = 1,
                 qkv_bias: bool = False, qk_scale: float | None = None, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, impl: str = "fast"):
        super().__init__()
        setup_heads(self, dim, num_heads, qk_scale, attn_drop, proj_drop, impl, qkv_bias)
        self.kernel_size = _validate.positive_int("kernel_size", kernel_size)
        self.stride = _validate.positive_int("stride", stride)
        self.padding = _validate.positive_int("padding", padding, minimum=0)
        if self.padding >= self.kernel_size:
            raise ValueError(f"padding must be < kernel_size ({kernel_size}) so that each window covers its own "
                             f"cell; got {padding} (the usual choice is kernel_size // 2 = {kernel_size // 2})")
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn = nn.Linear(dim, self.kernel_size ** 4 * num_heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """v and the window logits are projected straight into channel-first memory: the softmax runs over a
        non-trailing axis (a trailing axis of 9 is pathologically slow on CPU) and the kernel needs no copies."""
        _validate.channels_last_map(x, self.dim, type(self).__name__)
        B, H, W, C = x.shape
        nh, hd, k, k2, s = self.num_heads, self.head_dim, self.kernel_size, self.kernel_size ** 2, self.stride
        tokens = x.reshape(B, H * W, C)  # (B, N, C)
        v = to_channels_first(self.v, tokens).view(B, nh, hd, H, W)  # (B, nh, hd, H, W)
        h, w = H, W
        centre = tokens
        if s > 1 and torch.compiler.is_compiling():  # ceil-mode pooling's shape rule puts a guard on H, W
            centre = _ceil_pool(x, s)  # (B, h, w, C)
            h, w = centre.shape[1:3]
            centre = centre.reshape(B, h * w, C)  # (B, h*w, C)
        elif s > 1:
            centre = F.avg_pool2d(x.permute(0, 3, 1, 2), s, s, ceil_mode=True).permute(0, 2, 3, 1)  # (B, h, w, C)
            h, w = centre.shape[1:3]  # the pool's own (symbolic) size: no guard when traced
            centre = centre.reshape(B, h * w, C)  # (B, h*w, C)
        logits = to_channels_first(self.attn, centre).view(B, nh, k2, k2, h, w)
        # logits: (B, nh, k*k, k*k, h, w)
        scale = self.scale
        if not torch.is_grad_enabled():  # scale our own logits in place (under autograd this would keep a copy)
            logits, scale = logits.mul_(scale), 1.0
        v = v.permute(0, 1, 3, 4, 2)  # (B, nh, H, W, hd) view
        p = dropout_p(self)
        if p > 0:  # dropout needs the normalised weights
            recorder = attention_recorder()
            if recorder is not None:  # visattn.explain: the weights before dropout
                recorder.report("outlook", probabilities(logits.permute(0, 1, 4, 5, 2, 3), scale))
            attn = F.dropout((logits * scale).softmax(dim=3), p)  # softmax over a non-trailing axis
            out = outlook_aggregate(attn.permute(0, 1, 4, 5, 2, 3), v, k, self.padding, s, self.impl)
        else:  # softmax fused into the aggregation: less memory for backward
            out = outlook_attention(logits.permute(0, 1, 4, 5, 2, 3), v, k, self.padding, s, scale, self.impl)
        # out: (B, nh, H, W, hd)
        out = out.permute(0, 1, 4, 2, 3).reshape(B, C, H * W)  # (B, C, N)
        y = from_channels_first(self.proj, out)  # (B, N, C)
        return self.proj_drop(y.view(B, H, W, C))

    def attention_parts(self, H: int, W: int) -> list[AttentionPart]:
        """The ``k^2 x k^2`` weights of every window of the ``ceil(H/s) x ceil(W/s)`` grid, all heads, as
        :func:`visattn.explain.record_attention` records them."""
        return [AttentionPart("outlook", "outlook", (0, self.num_heads), (H, W), outlook_grid(H, W, self.stride),
                              kernel_size=self.kernel_size, padding=self.padding, stride=self.stride)]

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
                f"padding={self.padding}, stride={self.stride}, impl={self.impl!r}")


def _ceil_pool(x: torch.Tensor, s: int) -> torch.Tensor:
    """``avg_pool2d(x, s, s, ceil_mode=True)`` of a channels-last map, written for symbolic sizes: zero-pad to a
    multiple of ``s`` and pool in floor mode (no ceil-mode shape rule, whose guard the exporter cannot prove), then
    divide by the share of each cell that lies inside the map (the same pooling of a padded map of ones)."""
    B, H, W, C = x.shape
    pad = (0, (-W) % s, 0, (-H) % s)  # Python modulo: exported as ONNX Mod with Python semantics
    sums = F.avg_pool2d(F.pad(x.permute(0, 3, 1, 2), pad), s, s)  # (B, C, h, w): cell sums / s^2
    share = F.avg_pool2d(F.pad(x.new_ones(1, 1, H, W), pad), s, s)  # (1, 1, h, w): inside pixels / s^2
    return (sums / share).permute(0, 2, 3, 1)  # (B, h, w, C)
