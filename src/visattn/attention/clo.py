"""CloFormer attention: AttnConv local groups beside a pooled-key/value global group."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.symbolic_shapes import statically_known_true

from .. import _validate
from .._modes import attention_recorder, crop_hw, plain
from ..functional import attention, conv1x1
from ._common import AttentionPart, dropout_p, setup_heads


def _float(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float()


class AttnMap(nn.Module):
    """CloFormer's context-aware weight generator: 1x1 conv -> SiLU -> 1x1 conv, on channels-last input."""

    def __init__(self, dim: int):
        super().__init__()
        self.act_block = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.SiLU(), nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        first, act, last = self.act_block
        if type(act) is not nn.SiLU or act._forward_hooks or act._forward_pre_hooks:
            return self.act_block(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # the Sequential itself, NCHW
        if x.dtype == torch.float32 and plain(first, last) and first.weight.dtype == torch.float16:
            # float16 weights on a float32 input (CloAttention's gates run in float32: see _local)
            return F.linear(F.silu(F.linear(x, first.weight.flatten(1).float(), _float(first.bias))),
                            last.weight.flatten(1).float(), _float(last.bias))
        return conv1x1(last, F.silu(conv1x1(first, x)))


class CloAttention(nn.Module):
    """CloFormer attention (official ``EfficientAttention``, the blogs' ``CloAttention``).

    ``group_split`` lists heads per group: each of the first ``len(kernel_sizes)`` groups is an AttnConv
    local branch (1x1 qkv conv, ``k x k`` depthwise conv, ``tanh(act_block(q * k) * scale) * v``), the last
    group attends globally to ``ws x ws`` average-pooled keys/values. Groups with 0 heads are skipped.
    Outputs are concatenated (local groups, then global) and projected by a 1x1 conv.

    Maps ``(B, H, W, C)`` to ``(B, H, W, C)`` for any ``H, W >= 1`` (wrap in :class:`visattn.ChannelsFirst`
    for the official NCHW layout). Pooling is ``AvgPool2d(ws, ws)`` (floor mode): where the official module
    runs (``H, W`` multiples of ``ws``, and the sizes where floor pooling happens to fit its reshape, e.g.
    17x17 with ``ws`` 8) the results are identical, trailing rows/columns beyond the last full window are not
    pooled. Where the official reshape fails (e.g. 12x12 with ``ws`` 8) the same floor pooling is used, and a
    side shorter than ``ws`` is pooled whole (kernel ``min(ws, H) x min(ws, W)``), so every map size works.

    Args:
        dim: channels ``C``.
        num_heads: heads ``nh``; ``hd = C / nh``.
        group_split: heads per group, summing to ``num_heads``; the last entry is the global group.
        kernel_sizes: odd depthwise kernel of each local group (``len(group_split) - 1`` entries).
        window_size: pooling size ``ws`` of the global group (1: no pooling).
        attn_drop, proj_drop: dropout on the local gates and global probabilities / on the output.
        qkv_bias: bias of the q/k/v and output 1x1 convolutions.
        impl: kernel path of the global group, ``"fast"`` (SDPA) or ``"reference"`` (explicit attention matrix).
    """

    def __init__(self, dim: int, num_heads: int = 8, group_split=(4, 4), kernel_sizes=(5,), window_size: int = 4,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, qkv_bias: bool = True, impl: str = "fast"):
        super().__init__()
        setup_heads(self, dim, num_heads, None, attn_drop, proj_drop, impl, qkv_bias)
        hd = self.head_dim
        self.group_split = _validate.int_list("group_split", group_split, minimum=0)
        self.kernel_sizes = _validate.int_list("kernel_sizes", kernel_sizes, odd=True)
        if sum(self.group_split) != num_heads:
            raise ValueError(f"group_split {list(self.group_split)} sums to {sum(self.group_split)} but num_heads is "
                             f"{num_heads}; the heads of all groups must add up to num_heads")
        if len(self.kernel_sizes) + 1 != len(self.group_split):
            raise ValueError(f"kernel_sizes needs one entry per local group: len(group_split) - 1 = "
                             f"{len(self.group_split) - 1}, got {len(self.kernel_sizes)} ({list(self.kernel_sizes)})")
        self.window_size = _validate.positive_int("window_size", window_size)
        self.global_heads = self.group_split[-1]
        if self.global_heads:
            self.global_q = nn.Conv2d(dim, self.global_heads * hd, 1, bias=qkv_bias)
            self.global_kv = nn.Conv2d(dim, 2 * self.global_heads * hd, 1, bias=qkv_bias)
        local = [(g, k) for g, k in zip(self.group_split[:-1], self.kernel_sizes, strict=True) if g > 0]
        self.convs = nn.ModuleList(nn.Conv2d(3 * g * hd, 3 * g * hd, k, 1, k // 2, groups=3 * g * hd) for g, k in local)
        self.act_blocks = nn.ModuleList(AttnMap(g * hd) for g, _ in local)
        self.qkvs = nn.ModuleList(nn.Conv2d(dim, 3 * g * hd, 1, bias=qkv_bias) for g, _ in local)
        self.proj = nn.Conv2d(dim, dim, 1, bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _validate.channels_last_map(x, self.dim, type(self).__name__)
        outs = [self._local(x, i) for i in range(len(self.qkvs))]
        if self.global_heads:
            outs.append(self._global(x))
        out = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]  # (B, H, W, C)
        return self.proj_drop(conv1x1(self.proj, out))

    def _local(self, x, i):
        """AttnConv group ``i``: ``tanh(act_block(q * k) * scale) * v`` of depthwise-convolved q, k, v."""
        qkvs, conv = self.qkvs[i], self.convs[i]
        qkv = conv1x1(qkvs, x)  # (B, H, W, 3*g*hd)
        qkv = conv(qkv.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H, W, 3*g*hd)
        q, k, v = qkv.chunk(3, dim=-1)  # 3 x (B, H, W, g*hd)
        if q.dtype == torch.float16 and self.impl == "fast":  # q * k of un-normalised features overflows float16
            gate = torch.tanh(self.act_blocks[i](q.float() * k.float()) * self.scale).to(q.dtype)
        else:
            gate = torch.tanh(self.act_blocks[i](q * k) * self.scale)
        recorder = attention_recorder()
        if recorder is not None:  # visattn.explain: the gates before dropout
            recorder.report("gate", gate)
        p = dropout_p(self)
        return (F.dropout(gate, p) if p > 0 else gate) * v  # (B, H, W, g*hd)

    def _global(self, x):
        """Global group: every position attends to ``ws x ws`` average-pooled keys/values (floor mode)."""
        B, H, W, C = x.shape
        gh, hd, ws = self.global_heads, self.head_dim, self.window_size
        q = conv1x1(self.global_q, x)  # (B, H, W, gh*hd)
        q = q.reshape(B, H * W, gh, hd).transpose(1, 2)  # (B, gh, N, hd)
        pooled = x
        if ws > 1 and torch.compiler.is_compiling():  # symbolic H, W (export, compile): no guard on H >= ws
            # a named Dim range that keeps H >= ws gives the kernel ws itself (a sym_min leaves reshape guards)
            kh = ws if statically_known_true(ws <= H) else torch.sym_min(ws, H)
            kw = ws if statically_known_true(ws <= W) else torch.sym_min(ws, W)
            h2, w2 = H // kh, W // kw
            pooled = crop_hw(x, h2 * kh, w2 * kw).reshape(B, h2, kh, w2, kw, C).mean(dim=(2, 4))  # (B, H', W', C)
        elif ws > 1:
            kernel = (min(ws, H), min(ws, W))
            pooled = F.avg_pool2d(x.permute(0, 3, 1, 2), kernel, kernel).permute(0, 2, 3, 1)  # (B, H', W', C)
        kv = conv1x1(self.global_kv, pooled)  # (B, H', W', 2*gh*hd)
        M = kv.shape[1] * kv.shape[2]  # explicit: B may be 0
        kv = kv.reshape(B, M, 2, gh, hd).permute(2, 0, 3, 1, 4)  # (2, B, gh, M, hd)
        out = attention(q, kv[0], kv[1], self.scale, dropout_p(self), self.impl)  # (B, gh, N, hd)
        return out.transpose(1, 2).reshape(B, H, W, gh * hd)  # (B, H, W, gh*hd)

    def attention_parts(self, H: int, W: int) -> list[AttentionPart]:
        """The gates of each local group (its heads, in ``group_split`` order) and the global group's attention to
        pooled keys (the last heads), as :func:`visattn.explain.record_attention` records them."""
        parts, start = [], 0
        for g, k in zip(self.group_split[:-1], self.kernel_sizes, strict=True):
            if g:
                parts.append(AttentionPart(f"local {k}x{k}", "gate", (start, start + g), (H, W), kernel_size=k))
                start += g
        if self.global_heads:
            ws = self.window_size
            kh, kw = (min(ws, H), min(ws, W)) if ws > 1 else (1, 1)
            parts.append(AttentionPart("global", "global", (start, self.num_heads), (H, W), (H // kh, W // kw),
                                       (kh, kw)))
        return parts

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, group_split={list(self.group_split)}, "
                f"kernel_sizes={list(self.kernel_sizes)}, window_size={self.window_size}, impl={self.impl!r}")
