"""LITv2 ("Fast Vision Transformers with HiLo Attention"): ConvFFN-only early stages, HiLo later, deformable
token merging between stages. Runs on any image size like the official detection backbone: the stem pads to a
multiple of 4, HiLo pads to its window, merging floors odd sizes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._modes import is_tracing
from ..attention import HiLoAttention
from ..blocks import Block
from ..layers import DeformableTokenMerging, DWConvMlp
from ._base import Backbone, Stage
from ._common import check_arguments, drop_path_schedule, per_stage
from ._registry import Paper, register_model


class PatchEmbed(nn.Module):
    """4x4 stride-4 conv + LayerNorm; pads the image bottom/right to a multiple of 4."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 4):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        H, W = x.shape[2:]
        if is_tracing() or H % p or W % p:  # traced: pad unconditionally (tested first: no guard on H % 4)
            x = F.pad(x, (0, (W + p - 1) // p * p - W, 0, (H + p - 1) // p * p - H))  # (B, 3, Hp, Wp)
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # (B, H/4, W/4, C)


class LITv2(Backbone):
    """LITv2 backbone. Arguments keep the official names (``local_ws``: HiLo window per stage, 0 where a stage has
    no attention; ``has_msa``: 1 where a stage has attention)."""

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, embed_dim: int = 96, depths=(2, 2, 6, 2),
                 num_heads=(3, 6, 12, 24), mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale=None,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 has_msa=(0, 0, 1, 1), alpha: float = 0.5, local_ws=(0, 0, 2, 1), img_size: int = 224,
                 impl: str = "fast"):
        super().__init__()
        check_arguments(locals())
        n = len(depths)
        num_heads = per_stage("num_heads", num_heads, n)
        has_msa = per_stage("has_msa", has_msa, n)
        local_ws = per_stage("local_ws", local_ws, n)
        for i in range(n):
            if has_msa[i] and local_ws[i] < 1:
                raise ValueError(f"stage {i} has attention (has_msa=1) but local_ws[{i}]={local_ws[i]}; "
                                 f"use a HiLo window >= 1 (1 = plain self-attention)")
        self.set_io(in_chans, num_classes, img_size)
        self.num_features = embed_dim * 2 ** (n - 1)
        self.patch_embed = PatchEmbed(in_chans, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList()
        self.stage_info = []
        for i in range(n):
            dim = embed_dim * 2 ** i
            blocks = []
            for j in range(depths[i]):
                attn = None
                if has_msa[i]:
                    attn = HiLoAttention(dim, num_heads[i], qkv_bias, qk_scale, attn_drop_rate, drop_rate,
                                         window_size=local_ws[i], alpha=alpha, impl=impl)
                blocks.append(Block(dim, DWConvMlp(dim, int(dim * mlp_ratio), drop=drop_rate), attn,
                                    drop_path=dpr[sum(depths[:i]) + j]))
            self.layers.append(Stage(blocks, DeformableTokenMerging(dim) if i < n - 1 else None))
            self.stage_info.append(dict(num_chs=dim, reduction=4 * 2 ** i, module=f"layers.{i}"))
        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_stem(self, x):
        return self.pos_drop(self.patch_embed(x))



_PAPER_NOTE = "HiLo window 2 in stage 3, MSA in stage 4, alpha 0.9"
for _name, _cfg, _paper in (
    ("litv2_s", dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2),
     Paper(27.84, 3.7, 82.0, note=_PAPER_NOTE)),
    ("litv2_m", dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3),
     Paper(48.83, 7.5, 83.3, note=_PAPER_NOTE)),
    ("litv2_b", dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5),
     Paper(86.52, 13.2, 83.6, note=_PAPER_NOTE, extra=((384, 84.7, 39.7),))),
):
    register_model(_name, LITv2, dict(_cfg, alpha=0.9, qkv_bias=True, mlp_ratio=4.0, local_ws=(0, 0, 2, 1),
                                has_msa=(0, 0, 1, 1)), _paper)
