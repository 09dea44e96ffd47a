"""The official formulations of the four paper blocks, computed from a visattn block's own parameters.

These are the whole-block oracles: written the way the official repositories compute each block (explicit
attention matrices, unfold/fold, NCHW convolutions, reshape/transpose copies), they are what the tests hold every
path of the library equal to, and what ``visattn bench`` measures the library against (its ``reference`` column).
They are not a second implementation to use: they are slow and only as general as the official code (HiLo pads as
the official detection backbone; outlook needs ``padding == kernel_size // 2``).

``official_forward(block, x)`` dispatches on the block's type; :class:`Official` wraps a block as a module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..functional import attention
from .clo import CloAttention
from .dilated import MultiScaleDilatedAttention
from .hilo import HiLoAttention
from .outlook import OutlookAttention


def _softmax_attention(block, q, k, v):
    """The explicit-score softmax attention of the official code: the functional kernel's reference path."""
    return attention(q, k, v, block.scale, block.attn_drop if block.training else 0.0, "reference")


def hilo(block: HiLoAttention, x: torch.Tensor) -> torch.Tensor:
    """LITv2's ``HiLo.forward`` on a map zero-padded to a multiple of the window (the detection backbone)."""
    B, H, W, C = x.shape
    ws, hd = block.ws, block.head_dim
    xp = F.pad(x, (0, 0, 0, (-W) % ws, 0, (-H) % ws))  # (B, Hp, Wp, C)
    Hp, Wp = xp.shape[1:3]
    outs = []
    if block.h_heads:
        hg, wg = Hp // ws, Wp // ws
        t = xp.reshape(B, hg, ws, wg, ws, C).transpose(2, 3)  # (B, hg, wg, ws, ws, C)
        qkv = block.h_qkv(t).reshape(B, hg * wg, ws * ws, 3, block.h_heads, hd)  # (B, nw, ws*ws, 3, nh_hi, hd)
        qkv = qkv.permute(3, 0, 1, 4, 2, 5)  # (3, B, nw, nh_hi, ws*ws, hd)
        o = _softmax_attention(block, qkv[0], qkv[1], qkv[2]).transpose(2, 3)  # (B, nw, ws*ws, nh_hi, hd)
        o = o.reshape(B, hg, wg, ws, ws, block.h_dim).transpose(2, 3)  # (B, hg, ws, wg, ws, h_dim)
        outs.append(block.h_proj(o.reshape(B, Hp, Wp, block.h_dim)))  # (B, Hp, Wp, h_dim)
    if block.l_heads:
        q = block.l_q(xp).reshape(B, Hp * Wp, block.l_heads, hd).permute(0, 2, 1, 3)  # (B, nh_lo, Np, hd)
        src = F.avg_pool2d(xp.permute(0, 3, 1, 2), ws).permute(0, 2, 3, 1) if ws > 1 else xp  # (B, Hp/ws, Wp/ws, C)
        M = src.shape[1] * src.shape[2]  # explicit sizes: B may be 0
        kv = block.l_kv(src.reshape(B, M, C)).reshape(B, M, 2, block.l_heads, hd)  # (B, M, 2, nh_lo, hd)
        kv = kv.permute(2, 0, 3, 1, 4)  # (2, B, nh_lo, M, hd)
        o = _softmax_attention(block, q, kv[0], kv[1]).transpose(1, 2)  # (B, Np, nh_lo, hd)
        outs.append(block.l_proj(o.reshape(B, Hp, Wp, block.l_dim)))  # (B, Hp, Wp, l_dim)
    out = torch.cat(outs, dim=-1)[:, :H, :W]  # (B, H, W, C)
    return block.proj_drop(out)


def msda(block: MultiScaleDilatedAttention, x: torch.Tensor) -> torch.Tensor:
    """DilateFormer's ``MultiDilatelocalAttention``: a 1x1 conv, then per dilation group a zero-padded unfold of
    k and v, a ``(1 x k*k)`` score row per query, softmax, and the weighted sum (without writing into its input)."""
    B, H, W, C = x.shape
    G, ks, hd = len(block.dilation), block.kernel_size, block.head_dim
    nhg, N = block.num_heads // G, H * W
    qkv = block.qkv(x.permute(0, 3, 1, 2)).reshape(B, 3, G, C // G, H, W)  # (B, 3, G, C/G, H, W)
    outs = []
    for g, r in enumerate(block.dilation):
        q = qkv[:, 0, g].reshape(B, nhg, hd, 1, N).permute(0, 1, 4, 3, 2)  # (B, nhg, N, 1, hd)
        k = F.unfold(qkv[:, 1, g], ks, dilation=r, padding=r * (ks // 2))  # (B, C/G*k*k, N)
        k = k.reshape(B, nhg, hd, ks * ks, N).permute(0, 1, 4, 2, 3)  # (B, nhg, N, hd, k*k)
        v = F.unfold(qkv[:, 2, g], ks, dilation=r, padding=r * (ks // 2))  # (B, C/G*k*k, N)
        v = v.reshape(B, nhg, hd, ks * ks, N).permute(0, 1, 4, 3, 2)  # (B, nhg, N, k*k, hd)
        attn = ((q @ k) * block.scale).softmax(dim=-1)  # (B, nhg, N, 1, k*k)
        if block.training and block.attn_drop > 0:
            attn = F.dropout(attn, block.attn_drop)
        outs.append((attn @ v).transpose(1, 2).reshape(B, H, W, C // G))  # (B, H, W, C/G)
    return block.proj_drop(block.proj(torch.cat(outs, dim=-1)))


def outlook(block: OutlookAttention, x: torch.Tensor) -> torch.Tensor:
    """VOLO's ``OutlookAttention``: unfold v, softmax over the trailing window axis, matmul, fold."""
    B, H, W, C = x.shape
    nh, hd, ks, p, s = block.num_heads, block.head_dim, block.kernel_size, block.padding, block.stride
    if ks % 2 == 0 or p != ks // 2:
        raise ValueError(f"the official outlook formulation needs an odd kernel_size and padding = kernel_size // 2, "
                         f"got kernel_size={ks}, padding={p}")
    h, w = -(-H // s), -(-W // s)
    v = F.unfold(block.v(x).permute(0, 3, 1, 2), ks, padding=p, stride=s)  # (B, C*k*k, h*w)
    v = v.reshape(B, nh, hd, ks * ks, h * w).permute(0, 1, 4, 3, 2)  # (B, nh, h*w, k*k, hd)
    centre = F.avg_pool2d(x.permute(0, 3, 1, 2), s, s, ceil_mode=True).permute(0, 2, 3, 1)  # (B, h, w, C)
    attn = block.attn(centre).reshape(B, h * w, nh, ks * ks, ks * ks).permute(0, 2, 1, 3, 4)  # (B, nh, hw, kk, kk)
    attn = (attn * block.scale).softmax(dim=-1)
    if block.training and block.attn_drop > 0:
        attn = F.dropout(attn, block.attn_drop)
    out = (attn @ v).permute(0, 1, 4, 3, 2).reshape(B, C * ks * ks, h * w)  # (B, C*k*k, h*w)
    out = F.fold(out, (H, W), ks, padding=p, stride=s)  # (B, C, H, W)
    return block.proj_drop(block.proj(out.permute(0, 2, 3, 1)))  # (B, H, W, C)


def clo(block: CloAttention, x: torch.Tensor) -> torch.Tensor:
    """CloFormer's ``EfficientAttention``: NCHW convolutions, reshape/transpose copies and an explicit attention
    matrix for the global group (pooled in floor mode; a side shorter than ``window_size`` pooled whole)."""
    xc = x.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W), as the official module receives it
    B, C, H, W = xc.shape
    hd, res = block.head_dim, []
    for qkvs, conv, act in zip(block.qkvs, block.convs, block.act_blocks, strict=True):
        qkv = conv(qkvs(xc))  # (B, 3*g*hd, H, W)
        q, k, v = qkv.reshape(B, 3, -1, H, W).transpose(0, 1).contiguous()  # 3 x (B, g*hd, H, W)
        gate = torch.tanh(act.act_block(q * k) * block.scale)
        if block.training and block.attn_drop > 0:
            gate = F.dropout(gate, block.attn_drop)
        res.append(gate * v)
    if block.global_heads:
        gh = block.global_heads
        q = block.global_q(xc).reshape(B, gh, hd, H * W).transpose(-1, -2).contiguous()  # (B, gh, N, hd)
        pooled = xc
        if block.window_size > 1:
            kernel = (min(block.window_size, H), min(block.window_size, W))
            pooled = F.avg_pool2d(xc, kernel, kernel)  # (B, C, H', W')
        M = pooled.shape[2] * pooled.shape[3]
        kv = block.global_kv(pooled).view(B, 2, gh, hd, M).permute(1, 0, 2, 4, 3).contiguous()  # (2, B, gh, M, hd)
        o = _softmax_attention(block, q, kv[0], kv[1])  # (B, gh, N, hd)
        res.append(o.transpose(2, 3).reshape(B, gh * hd, H, W).contiguous())  # (B, gh*hd, H, W)
    out = block.proj(torch.cat(res, dim=1))  # (B, C, H, W)
    return block.proj_drop(out.permute(0, 2, 3, 1))  # (B, H, W, C)


FORMULATIONS = {HiLoAttention: hilo, MultiScaleDilatedAttention: msda, OutlookAttention: outlook, CloAttention: clo}


def official_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The official formulation of ``block`` (one of the four paper blocks) on a channels-last map."""
    fn = FORMULATIONS.get(type(block))
    if fn is None:
        raise TypeError(f"no official formulation for {type(block).__name__}; the paper blocks are "
                        f"{', '.join(c.__name__ for c in FORMULATIONS)}")
    return fn(block, x)


class Official(nn.Module):
    """A paper block run through its official formulation (same parameters: ``block.*``)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        if type(block) not in FORMULATIONS:
            raise TypeError(f"no official formulation for {type(block).__name__}")
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return official_forward(self.block, x)
