"""Sliding-window dilated attention (DilateFormer's SWDA), one dilation per call.

A query at ``(i, j)`` attends to the ``k x k`` keys at ``(i + a*r, j + b*r)``, ``a, b in [-(k//2), k//2]``.
Positions outside the map are zero vectors that still take part in the softmax (logit 0, value 0): this
is exactly the zero-padded unfold of the official code, kept so that official checkpoints behave the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _validate
from .._modes import attention_recorder, is_tracing, records_grad, under_transform
from ._buffers import dot_into, mul_into
from ._counting import counted
from ._recompute import differentiable_grads


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
        impl: ``"fast"`` (shifted views of one padded K and V, no k*k copies; float16 inputs are computed in float32
            inside, since their logits overflow on un-normalised features) or ``"reference"`` (the official unfold
            formulation, k*k copies of K and V, in the inputs' dtype).
    Returns:
        ``(B, nh, H, W, hd)``.
    """
    _check(q, k, v, kernel_size, dilation)
    _validate.impl(impl)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    B, nh, H, W, hd = q.shape
    ks2 = kernel_size * kernel_size
    recorder = attention_recorder()
    if recorder is not None:  # visattn.explain: the reference probabilities, beside the output computed as always
        recorder.report("dilated", probabilities(q, k, kernel_size, dilation, scale))
    fn = _reference if impl == "reference" else _fast
    return counted("dilated_attention", 2 * B * nh * H * W * ks2 * hd,
                   fn, q, k, v, kernel_size, dilation, scale, dropout_p)


def _unfold(t, ks, r):
    """The zero-padded ``k x k`` dilated neighbourhoods (the official unfold): ``(B, nh, H, W, hd)`` ->
    ``(B, nh, hd, k*k, N)``, neighbour ``a*k + b`` at offset ``((a - k//2) r, (b - k//2) r)``."""
    B, nh, H, W, hd = t.shape
    t = t.permute(0, 1, 4, 2, 3).reshape(B * nh, hd, H, W)  # (B*nh, hd, H, W)
    t = F.unfold(t, ks, dilation=r, padding=r * (ks // 2))  # (B*nh, hd*k*k, N)
    return t.reshape(B, nh, hd, ks * ks, H * W)  # (B, nh, hd, k*k, N)


def probabilities(q, k, kernel_size: int, dilation: int, scale: float):
    """The attention weights of the reference path: ``(B, nh, H, W, k*k)``, neighbour ``a*k + b`` of each query at
    offset ``((a - k//2) r, (b - k//2) r)``; neighbours outside the map are zero keys that take part."""
    B, nh, H, W, hd = q.shape
    kk = _unfold(k, kernel_size, dilation).permute(0, 1, 4, 2, 3)  # (B, nh, N, hd, k*k)
    qq = q.reshape(B, nh, H * W, 1, hd)  # (B, nh, N, 1, hd)
    attn = ((qq @ kk) * scale).softmax(dim=-1)  # (B, nh, N, 1, k*k)
    return attn.reshape(B, nh, H, W, kernel_size * kernel_size)  # (B, nh, H, W, k*k)


def _reference(q, k, v, ks, r, scale, dropout_p):
    B, nh, H, W, hd = q.shape
    vv = _unfold(v, ks, r).permute(0, 1, 4, 3, 2)  # (B, nh, N, k*k, hd)
    attn = probabilities(q, k, ks, r, scale).reshape(B, nh, H * W, 1, ks * ks)  # (B, nh, N, 1, k*k)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    out = attn @ vv  # (B, nh, N, 1, hd)
    return out.reshape(B, nh, H, W, hd)  # (B, nh, H, W, hd)


def _fast(q, k, v, ks, r, scale, dropout_p):
    """Shifted views of one zero-padded K and V, computed in (B, nh, hd, H, W) memory order so that the k*k
    products vectorise along W. Free of copies when the caller lays q, k, v out channel-first (as the module does);
    the result is a (B, nh, H, W, hd) view of channel-first memory."""
    if q.dtype == torch.float16:  # q . k of un-normalised features overflows float16 (65504): float32 inside
        return _fast(q.float(), k.float(), v.float(), ks, r, scale, dropout_p).to(torch.float16)
    qc, kc, vc = (t.permute(0, 1, 4, 2, 3) for t in (q, k, v))  # (B, nh, hd, H, W)
    shifts = [(a * r, b * r) for a in range(ks) for b in range(ks)]
    needs_grad = records_grad(q, k, v)
    if under_transform() or is_tracing() or (needs_grad and dropout_p > 0):
        return _fast_autograd(qc, kc, vc, r * (ks // 2), shifts, scale, dropout_p).permute(0, 1, 3, 4, 2)
    if needs_grad:
        return _DilatedAttention.apply(qc, kc, vc, r * (ks // 2), shifts, scale).permute(0, 1, 3, 4, 2)
    return _attend(qc.contiguous(), kc, vc, r * (ks // 2), shifts, scale, dropout_p)[0].permute(0, 1, 3, 4, 2)


def _pad(t, pad):
    return F.pad(t, (pad, pad, pad, pad))  # (B, nh, hd, H+2p, W+2p)


def _attend(qc, kc, vc, pad, shifts, scale, dropout_p=0.0):
    """Forward with every product written into preallocated buffers (fresh multi-MB temporaries cost page
    faults on CPU). Returns (out, attn, padded v) in channel-first layout."""
    B, nh, hd, H, W = qc.shape
    kp, vp = _pad(kc, pad), _pad(vc, pad)
    logits = qc.new_empty(B, nh, len(shifts), H, W)  # (B, nh, k*k, H, W)
    tmp = qc.new_empty(B, nh, hd, H, W)
    for i, (a, b) in enumerate(shifts):
        dot_into(logits[:, :, i], qc, kp[..., a:a + H, b:b + W], tmp)
    del kp
    attn = logits.mul_(scale).softmax(dim=2)  # softmax over a non-trailing axis: fast on CPU
    del logits
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    out = mul_into(tmp, attn[:, :, 0, None], vp[..., :H, :W])  # (B, nh, hd, H, W); tmp is contiguous
    for i, (a, b) in enumerate(shifts[1:], start=1):
        out.addcmul_(attn[:, :, i, None], vp[..., a:a + H, b:b + W])
    return out, attn, vp


class _DilatedAttention(torch.autograd.Function):
    """Saves only q, k, v; the attention map is recomputed in backward (as flash attention does). A backward that
    builds a graph (``create_graph=True``: higher derivatives) recomputes with differentiable operations."""

    @staticmethod
    def forward(ctx, qc, kc, vc, pad, shifts, scale):
        ctx.save_for_backward(qc, kc, vc)
        ctx.pad, ctx.shifts, ctx.scale = pad, shifts, scale
        return _attend(qc.contiguous(), kc, vc, pad, shifts, scale)[0]

    @staticmethod
    def backward(ctx, gout):
        qc, kc, vc = ctx.saved_tensors
        pad, shifts, scale = ctx.pad, ctx.shifts, ctx.scale
        if torch.is_grad_enabled():  # create_graph: the gradient must itself be differentiable
            return (*differentiable_grads(_fast_autograd, (qc, kc, vc), (pad, shifts, scale, 0.0), gout),
                    None, None, None)
        qc, gout = qc.contiguous(), gout.contiguous()
        B, nh, hd, H, W = qc.shape
        _, attn, vp = _attend(qc, kc, vc, pad, shifts, scale)
        kp = _pad(kc, pad)
        tmp = qc.new_empty(B, nh, hd, H, W)
        grad_attn = attn.new_empty(attn.shape)  # (B, nh, k*k, H, W)
        dvp = torch.zeros_like(vp)
        for i, (a, b) in enumerate(shifts):
            dot_into(grad_attn[:, :, i], gout, vp[..., a:a + H, b:b + W], tmp)
            dvp[..., a:a + H, b:b + W].addcmul_(attn[:, :, i, None], gout)
        del vp
        # softmax backward: dL = A * (dA - sum(A * dA)), then the logit scale
        grad_logits = grad_attn.sub_((attn * grad_attn).sum(2, keepdim=True)).mul_(attn).mul_(scale)
        dq = torch.zeros_like(qc)
        dkp = torch.zeros_like(kp)
        for i, (a, b) in enumerate(shifts):
            dq.addcmul_(grad_logits[:, :, i, None], kp[..., a:a + H, b:b + W])
            dkp[..., a:a + H, b:b + W].addcmul_(grad_logits[:, :, i, None], qc)
        crop = (slice(None),) * 3 + (slice(pad, pad + H), slice(pad, pad + W))
        return dq, dkp[crop], dvp[crop], None, None, None


def _fast_autograd(qc, kc, vc, pad, shifts, scale, dropout_p):
    """The same computation from differentiable ops without in-place writes: with attention dropout (which needs
    its mask), inside ``torch.func`` transforms, for higher derivatives, and while tracing (compact graphs)."""
    H, W = qc.shape[-2:]
    kp, vp = _pad(kc, pad), _pad(vc, pad)
    logits = torch.stack([(qc * kp[..., a:a + H, b:b + W]).sum(2) for a, b in shifts], dim=2)  # (B, nh, k*k, H, W)
    attn = (logits * scale).softmax(dim=2)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    out = attn[:, :, 0, None] * vp[..., :H, :W]  # (B, nh, hd, H, W)
    for i, (a, b) in enumerate(shifts[1:], start=1):
        out = out.addcmul(attn[:, :, i, None], vp[..., a:a + H, b:b + W])
    return out

