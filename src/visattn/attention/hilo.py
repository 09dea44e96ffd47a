"""HiLo attention (LITv2, "Fast Vision Transformers with HiLo Attention")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate
from .._modes import crop_hw, is_tracing, plain, round_up, storage_id, tensor_version
from ..functional import attention, window_attention
from ._common import AttentionPart, dropout_p, setup_heads


class HiLoAttention(nn.Module):
    """HiLo attention: Hi-Fi heads attend inside ``ws x ws`` windows, Lo-Fi heads attend globally to
    ``ws x ws`` average-pooled keys and values.

    Maps ``(B, H, W, C)`` to ``(B, H, W, C)`` for any ``H, W >= 1``. When ``H`` or ``W`` is not a multiple of
    ``window_size`` the input is zero-padded at the bottom/right, both branches run on the padded map (the
    zeros take part in the Hi-Fi windows and in the pooled averages, unmasked) and the result is cropped:
    exactly the official LITv2 detection backbone. On divisible sizes this equals the classification
    ``HiLo(x, H, W)``.

    Args:
        dim: channels ``C``.
        num_heads: heads ``nh``; ``hd = C / nh``.
        qkv_bias: bias of the q/k/v projections.
        qk_scale: logit scale, ``hd ** -0.5`` when None.
        attn_drop: dropout on the attention probabilities of both branches.
        proj_drop: dropout on the output (the official module accepts and ignores both; here they apply).
        window_size: ``s``; ``1`` gives plain multi-head self-attention (every head Lo-Fi, no pooling).
        alpha: share of Lo-Fi heads, ``int(nh * alpha)``; 0 gives pure Hi-Fi, 1 pure Lo-Fi.
        impl: ``"fast"`` (SDPA) or ``"reference"`` (explicit attention matrices).

    Parameter names match the official module (``h_qkv``, ``h_proj``, ``l_q``, ``l_kv``, ``l_proj``).
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_scale: float | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, window_size: int = 2, alpha: float = 0.5,
                 impl: str = "fast"):
        super().__init__()
        setup_heads(self, dim, num_heads, qk_scale, attn_drop, proj_drop, impl, qkv_bias)
        self.ws = _validate.positive_int("window_size", window_size)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha (share of Lo-Fi heads) must be a number in [0, 1], got {alpha!r}")
        self.alpha = alpha
        self.l_heads = num_heads if self.ws == 1 else int(num_heads * alpha)
        self.h_heads = num_heads - self.l_heads
        self.l_dim, self.h_dim = self.l_heads * self.head_dim, self.h_heads * self.head_dim
        if self.l_heads > 0:
            self.l_q = nn.Linear(dim, self.l_dim, bias=qkv_bias)
            self.l_kv = nn.Linear(dim, 2 * self.l_dim, bias=qkv_bias)
            self.l_proj = nn.Linear(self.l_dim, self.l_dim)
        if self.h_heads > 0:
            self.h_qkv = nn.Linear(dim, 3 * self.h_dim, bias=qkv_bias)
            self.h_proj = nn.Linear(self.h_dim, self.h_dim)
        # [h_qkv | l_q] built once by precompute_projections (non-persistent: the state_dict keeps official keys)
        self.register_buffer("fused_in_weight", None, persistent=False)
        self.register_buffer("fused_in_bias", None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _validate.channels_last_map(x, self.dim, type(self).__name__)
        B, H, W, C = x.shape
        ws, hd, p = self.ws, self.head_dim, dropout_p(self)
        Hp, Wp = round_up(H, ws), round_up(W, ws)
        pad_h, pad_w = Hp - H, Wp - W
        # traced: pad unconditionally, so the graph does not specialise on H % ws
        xp = F.pad(x, (0, 0, 0, pad_w, 0, pad_h)) if is_tracing() or pad_h or pad_w else x  # (B, Hp, Wp, C)
        hi_qkv, lo_q = self._input_projections(x, xp, H, W)
        outs = []
        if self.h_heads:
            qkv = hi_qkv.reshape(B, Hp, Wp, 3, self.h_heads, hd)  # (B, Hp, Wp, 3, nh_hi, hd)
            qkv = qkv.permute(3, 0, 4, 1, 2, 5)  # (3, B, nh_hi, Hp, Wp, hd)
            hi = window_attention(qkv[0], qkv[1], qkv[2], ws, self.scale, p, self.impl)  # (B, nh_hi, Hp, Wp, hd)
            hi = crop_hw(hi, H, W).permute(0, 2, 3, 1, 4).reshape(B, H, W, self.h_dim)  # (B, H, W, h_dim)
            outs.append((self.h_proj, hi))
        if self.l_heads:
            q = lo_q.reshape(B, H * W, self.l_heads, hd).transpose(1, 2)  # (B, nh_lo, N, hd)
            if ws > 1:
                pooled = F.avg_pool2d(xp.permute(0, 3, 1, 2), ws)  # (B, C, Hp/ws, Wp/ws)
                pooled = pooled.flatten(2).transpose(1, 2)  # (B, M, C)
            else:
                pooled = x.reshape(B, H * W, C)  # (B, N, C)
            kv = self.l_kv(pooled).reshape(B, pooled.shape[1], 2, self.l_heads, hd)  # (B, M, 2, nh_lo, hd)
            kv = kv.permute(2, 0, 3, 1, 4)  # (2, B, nh_lo, M, hd)
            lo = attention(q, kv[0], kv[1], self.scale, p, self.impl)  # (B, nh_lo, N, hd)
            lo = lo.transpose(1, 2).reshape(B, H, W, self.l_dim)  # (B, H, W, l_dim)
            outs.append((self.l_proj, lo))
        return self.proj_drop(self._project(outs, x))

    def attention_parts(self, H: int, W: int) -> list[AttentionPart]:
        """The Hi-Fi windows (heads ``[0, h_heads)``) and the Lo-Fi attention to ``ws x ws`` average-pooled keys of
        the padded map (the other heads), as :func:`visattn.explain.record_attention` records them."""
        ws = self.ws
        Hp, Wp = round_up(H, ws), round_up(W, ws)
        parts = []
        if self.h_heads:
            parts.append(AttentionPart("hifi", "window", (0, self.h_heads), (H, W), (Hp, Wp), window=ws))
        if self.l_heads:
            grid = (Hp // ws, Wp // ws) if ws > 1 else (H, W)
            parts.append(AttentionPart("lofi", "global", (self.h_heads, self.num_heads), (H, W), grid, (ws, ws)))
        return parts

    def _input_projections(self, x, xp, H, W):
        """Hi-Fi ``qkv`` of the padded map and Lo-Fi ``q`` of the map; one matmul ``[h_qkv | l_q]`` when both
        branches exist (the two read the same input)."""
        if not (self.h_heads and self.l_heads and plain(self.h_qkv, self.l_q)):  # each layer called
            return (self.h_qkv(xp) if self.h_heads else None), (self.l_q(x) if self.l_heads else None)
        if self.fused_in_weight is not None and (is_tracing() or self._fused_key == self._source_key()):
            weight, bias = self.fused_in_weight, self.fused_in_bias
        elif self.fused_in_weight is not None:  # h_qkv / l_q changed since precompute_projections: rebuild
            self.precompute_projections()
            weight, bias = self.fused_in_weight, self.fused_in_bias
        else:
            weight, bias = self._concat_input()
        fused = F.linear(xp, weight, bias)  # (B, Hp, Wp, 3 h_dim + l_dim)
        return fused[..., :3 * self.h_dim], crop_hw(fused[..., 3 * self.h_dim:], H, W)  # (B,Hp,Wp,3h), (B,H,W,l)

    def _concat_input(self):
        weight = torch.cat([self.h_qkv.weight, self.l_q.weight])  # (3 h_dim + l_dim, C)
        bias = None if self.h_qkv.bias is None else torch.cat([self.h_qkv.bias, self.l_q.bias])
        return weight, bias

    def _source_key(self):
        """What identifies the weights the precomputed concatenation was built from: each tensor's storage and
        in-place version (``load_state_dict``, optimiser steps and ``copy_`` bump it)."""
        tensors = [t for t in (self.h_qkv.weight, self.h_qkv.bias, self.l_q.weight, self.l_q.bias) if t is not None]
        return tuple((storage_id(t), tensor_version(t), t.dtype, t.device) for t in tensors)

    def precompute_projections(self) -> None:
        """Build the concatenated ``[h_qkv | l_q]`` weight once (``visattn.fuse`` calls this for inference). In eager
        mode a later change of ``h_qkv`` / ``l_q`` (new weights loaded, an in-place edit, another device) is seen at
        the next call and the concatenation rebuilt; traced graphs use it as it was when traced."""
        if self.h_heads and self.l_heads:
            with torch.no_grad():
                weight, bias = self._concat_input()
                self.fused_in_weight = weight.detach().clone()
                self.fused_in_bias = None if bias is None else bias.detach().clone()
            self._fused_key = self._source_key()

    def _project(self, branches, x):
        """Per-branch output projections, concatenated along channels (Hi-Fi first)."""
        if len(branches) == 1:
            proj, feats = branches[0]
            return proj(feats)
        if not plain(*(proj for proj, _ in branches)):
            return torch.cat([proj(feats) for proj, feats in branches], dim=-1)  # (B, H, W, C)
        same_dtype = all(feats.dtype == proj.weight.dtype == x.dtype for proj, feats in branches)  # not autocast
        if not torch.is_grad_enabled() and same_dtype and not is_tracing():  # both written into one map
            out = x.new_empty(x.shape)  # (B, H, W, C)
            flat, start = out.view(-1, self.dim), 0  # (B*N, C)
            for proj, feats in branches:
                end = start + proj.out_features
                torch.addmm(proj.bias, feats.reshape(-1, proj.in_features), proj.weight.t(), out=flat[:, start:end])
                start = end
            return out
        return torch.cat([proj(feats) for proj, feats in branches], dim=-1)  # (B, H, W, C)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.ws}, hifi_heads={self.h_heads}, "
                f"lofi_heads={self.l_heads}, impl={self.impl!r}")
