"""Sliding-window dilated attention (DilateFormer's SWDA), one dilation per call.

A query at ``(i, j)`` attends to the ``k x k`` keys at ``(i + a*r, j + b*r)``, ``a, b in [-(k//2), k//2]``.
Positions outside the map are zero vectors that still take part in the softmax (logit 0, value 0): this
is exactly the zero-padded unfold of the official code, kept so that official checkpoints behave the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _validate
from ..macs import counted


def _check(q, k, v, kernel_size, dilation):
    _validate.odd_int("kernel_size", kernel_size)
    _validate.positive_int("dilation", dilation)
    if q.dim() != 5:
        raise ValueError(f"dilated_attention expects (B, nh, H, W, hd) maps, got shape {tuple(q.shape)}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must share one shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")


def dilated_attention(q, k, v, kernel_size: int = 3, dilation: int = 1, scale: float | None = None,
                      dropout_p: float = 0.0, impl: str = "fast"):
    """Dilated neighbourhood attention with zero-padded borders.

    Args:
        q, k, v: ``(B, nh, H, W, hd)`` maps.
        kernel_size: odd ``k``; each query sees ``k*k`` keys.
        dilation: spacing ``r`` between the keys.
        scale: logit scale, ``hd ** -0.5`` when None.
        dropout_p: dropout on the attention probabilities.
        impl: ``"fast"`` (shifted views of one padded K and V, no k*k copies) or ``"reference"``
            (the official unfold formulation, k*k copies of K and V).
    Returns:
        ``(B, nh, H, W, hd)``.
    """
    _check(q, k, v, kernel_size, dilation)
    _validate.impl(impl)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    B, nh, H, W, hd = q.shape
    ks2 = kernel_size * kernel_size
    fn = _reference if impl == "reference" else _fast
    return counted("dilated_attention", 2 * B * nh * H * W * ks2 * hd,
                   fn, q, k, v, kernel_size, dilation, scale, dropout_p)


def _reference(q, k, v, ks, r, scale, dropout_p):
    B, nh, H, W, hd = q.shape
    pad = r * (ks // 2)

    def unfold(t):
        t = t.permute(0, 1, 4, 2, 3).reshape(B * nh, hd, H, W)  # (B*nh, hd, H, W)
        t = F.unfold(t, ks, dilation=r, padding=pad)  # (B*nh, hd*k*k, N)
        return t.reshape(B, nh, hd, ks * ks, H * W)  # (B, nh, hd, k*k, N)

    kk = unfold(k).permute(0, 1, 4, 2, 3)  # (B, nh, N, hd, k*k)
    vv = unfold(v).permute(0, 1, 4, 3, 2)  # (B, nh, N, k*k, hd)
    qq = q.reshape(B, nh, H * W, 1, hd)  # (B, nh, N, 1, hd)
    attn = (qq @ kk) * scale  # (B, nh, N, 1, k*k)
    attn = attn.softmax(dim=-1)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    out = attn @ vv  # (B, nh, N, 1, hd)
    return out.reshape(B, nh, H, W, hd)  # (B, nh, H, W, hd)


def _fast(q, k, v, ks, r, scale, dropout_p):
    B, nh, H, W, hd = q.shape
    pad = r * (ks // 2)
    kp = F.pad(k, (0, 0, pad, pad, pad, pad))  # (B, nh, H+2p, W+2p, hd)
    vp = F.pad(v, (0, 0, pad, pad, pad, pad))  # (B, nh, H+2p, W+2p, hd)
    offsets = [(a * r, b * r) for a in range(ks) for b in range(ks)]
    qs = q * scale
    # logits stacked on dim 2 so that the softmax runs over a non-trailing axis (fast on CPU)
    logits = torch.stack([(qs * kp[:, :, a:a + H, b:b + W]).sum(-1) for a, b in offsets], dim=2)  # (B, nh, k*k, H, W)
    attn = logits.softmax(dim=2)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    out = None
    for i, (a, b) in enumerate(offsets):
        term = attn[:, :, i].unsqueeze(-1) * vp[:, :, a:a + H, b:b + W]  # (B, nh, H, W, hd)
        out = term if out is None else out + term
    return out
