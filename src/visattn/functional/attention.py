"""Softmax attention kernels: global / pooled-key-value attention and non-overlapping window attention.

Shapes: ``q (B, nh, N, hd)``, ``k, v (B, nh, M, hd)``; window attention works on maps ``(B, nh, H, W, hd)``.
``impl="reference"`` builds the explicit ``N x M`` score matrix (the papers' formulation);
``impl="fast"`` goes through ``scaled_dot_product_attention``, which never materialises it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _validate
from .._modes import attention_recorder, check, is_exporting


def attention(q, k, v, scale: float | None = None, dropout_p: float = 0.0, impl: str = "fast"):
    """Softmax attention of every query to every key: ``softmax(q k^T * scale) v``.

    This is the pooled-key/value kernel of HiLo's Lo-Fi branch and CloFormer's global branch (keys and
    values come from an average-pooled map, so ``M = N / ws^2``) and plain multi-head self-attention
    (``M = N``).

    Args:
        q: ``(..., N, hd)`` queries.
        k, v: ``(..., M, hd)`` keys and values (same leading dims as ``q``).
        scale: logit scale, ``hd ** -0.5`` when None.
        dropout_p: dropout on the attention probabilities (pass 0 in eval mode).
        impl: ``"fast"`` (SDPA) or ``"reference"`` (explicit scores).
    Returns:
        ``(..., N, hd)``.
    """
    _validate.impl(impl)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    recorder = attention_recorder()
    if recorder is not None:  # visattn.explain: the reference probabilities, beside the output computed as always
        recorder.report("softmax", probabilities(q, k, scale), values=v)
    if impl == "fast":
        if q.dim() == 4:  # (B, nh, N, hd): SDPA takes strided heads as they are, no copy
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
        lead = q.shape[:-2]
        q4 = q.reshape(-1, 1, *q.shape[-2:])  # (prod(lead), 1, N, hd)
        k4 = k.reshape(-1, 1, *k.shape[-2:])  # (prod(lead), 1, M, hd)
        v4 = v.reshape(-1, 1, *v.shape[-2:])  # (prod(lead), 1, M, hd)
        out = F.scaled_dot_product_attention(q4, k4, v4, dropout_p=dropout_p, scale=scale)
        return out.reshape(*lead, *out.shape[-2:])  # (..., N, hd)
    attn = probabilities(q, k, scale)  # (..., N, M)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    return attn @ v  # (..., N, hd)


def probabilities(q, k, scale: float):
    """The attention matrix of the reference path, ``softmax(q k^T * scale)``: ``(..., N, M)``."""
    return ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)  # (..., N, M)


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """``(B, nh, H, W, hd)`` -> ``(B, nh, nw, ws*ws, hd)`` with ``nw = (H/ws)(W/ws)`` windows, row-major.

    Exported graphs hold no tensor of more than 6 dimensions (heads and head dims merged channels-last):
    XNNPACK, ExecuTorch's CPU delegate, refuses rank-7 tensors when the program is loaded. Eager code splits the
    strided input as a 7-D view and copies once."""
    B, nh, H, W, hd = x.shape
    if is_exporting():
        x = x.permute(0, 2, 3, 1, 4).reshape(B, H // ws, ws, W // ws, ws, nh * hd)  # (B, H/ws, ws, W/ws, ws, C)
        x = x.transpose(2, 3).reshape(B, (H // ws) * (W // ws), ws * ws, nh, hd)  # (B, nw, ws*ws, nh, hd)
        return x.permute(0, 3, 1, 2, 4)  # (B, nh, nw, ws*ws, hd)
    x = x.reshape(B, nh, H // ws, ws, W // ws, ws, hd)  # (B, nh, H/ws, ws, W/ws, ws, hd), a view
    # the copy a reshape makes anyway, made first: a reshape of a contiguous tensor is a plain view
    x = x.transpose(3, 4).contiguous()  # (B, nh, H/ws, W/ws, ws, ws, hd)
    return x.reshape(B, nh, (H // ws) * (W // ws), ws * ws, hd)  # (B, nh, nw, ws*ws, hd)


def window_reverse(x: torch.Tensor, ws: int, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B, nh, nw, ws*ws, hd)`` -> ``(B, nh, H, W, hd)`` (at most 6-D when
    exported)."""
    B, nh, _, _, hd = x.shape
    if is_exporting():
        x = x.permute(0, 2, 3, 1, 4).reshape(B, H // ws, W // ws, ws, ws, nh * hd)  # (B, H/ws, W/ws, ws, ws, C)
        x = x.transpose(2, 3).reshape(B, H, W, nh, hd)  # (B, H, W, nh, hd)
        return x.permute(0, 3, 1, 2, 4)  # (B, nh, H, W, hd)
    x = x.reshape(B, nh, H // ws, W // ws, ws, ws, hd)  # (B, nh, H/ws, W/ws, ws, ws, hd)
    x = x.transpose(3, 4).contiguous()  # (B, nh, H/ws, ws, W/ws, ws, hd)
    return x.reshape(B, nh, H, W, hd)  # (B, nh, H, W, hd)


def window_attention(q, k, v, window_size: int, scale: float | None = None, dropout_p: float = 0.0,
                     impl: str = "fast"):
    """Softmax attention inside non-overlapping ``ws x ws`` windows (HiLo's Hi-Fi branch, Swin without shift).

    Args:
        q, k, v: ``(B, nh, H, W, hd)`` maps; ``H`` and ``W`` must be multiples of ``window_size``
            (pad the block's *input* before projecting, as HiLo does, so that biases see the padding).
    Returns:
        ``(B, nh, H, W, hd)``.
    """
    ws = _validate.positive_int("window_size", window_size)
    if q.dim() != 5:
        raise ValueError(f"window_attention expects (B, nh, H, W, hd) maps, got shape {tuple(q.shape)}")
    H, W = q.shape[2], q.shape[3]
    message = (f"window_attention needs H and W divisible by window_size={ws}, got {H}x{W}; zero-pad the input "
               f"of the block to {-(-H // ws) * ws}x{-(-W // ws) * ws} first")
    check(H % ws == 0, message)
    check(W % ws == 0, message)
    # On CUDA, windows of at most hd tokens (HiLo's 2x2, hd >= 4) take one batched product: the explicit scores are
    # no larger than q, SDPA's kernels tile 64+ queries per program, and cuDNN's SDPA backward fails on the ~10^5
    # windows of a training batch (bf16, H200: RESULTS 20). On the CPU SDPA stays (2x faster backward at batch 1).
    kernel = "reference" if q.device.type == "cuda" and ws * ws <= q.shape[-1] else impl
    out = attention(window_partition(q, ws), window_partition(k, ws), window_partition(v, ws),
                    scale=scale, dropout_p=dropout_p, impl=kernel)  # (B, nh, nw, ws*ws, hd)
    return window_reverse(out, ws, H, W)
