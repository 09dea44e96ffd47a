"""DilateFormer: conv stem, multi-scale dilated attention in the early stages, global MHSA in the late stages,
a depthwise conditional position conv in every block, conv + BatchNorm merging between stages. No fixed image
size: every layer is convolutional or size-agnostic."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..attention import MultiHeadSelfAttention, MultiScaleDilatedAttention
from ..blocks import Block
from ..layers import Downsample, Mlp
from ._base import Backbone, Stage
from ._common import check_arguments, drop_path_schedule, per_stage
from ._registry import Paper, register_model


class PatchEmbed(nn.Module):
    """Overlapping stem: four 3x3 convs (strides 1, 2, 1, 2) with BatchNorm + GELU between them."""

    def __init__(self, in_chans: int, embed_dim: int, hidden_dim: int = 16):
        super().__init__()
        h = hidden_dim
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, h, 3, 1, 1, bias=False), nn.BatchNorm2d(h), nn.GELU(),
            nn.Conv2d(h, 2 * h, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * h), nn.GELU(),
            nn.Conv2d(2 * h, 4 * h, 3, 1, 1, bias=False), nn.BatchNorm2d(4 * h), nn.GELU(),
            nn.Conv2d(4 * h, embed_dim, 3, 2, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # (B, H/4, W/4, C)


class DilateFormer(Backbone):
    """DilateFormer backbone (official argument names; ``dilate_attention[i]`` picks MSDA or global MHSA)."""

    _stages_attr = "stages"

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, embed_dim: int = 72, depths=(2, 2, 6, 2),
                 num_heads=(3, 6, 12, 24), kernel_size: int = 3, dilation=(1, 2, 3), mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale=None, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, dilate_attention=(True, True, False, False),
                 downsamples=(True, True, True, False), cpe_per_block: bool = True, img_size: int = 224,
                 impl: str = "fast"):
        super().__init__()
        check_arguments(locals())
        n = len(depths)
        num_heads = per_stage("num_heads", num_heads, n)
        dilate_attention = per_stage("dilate_attention", dilate_attention, n)
        downsamples = per_stage("downsamples", downsamples, n)
        self.set_io(in_chans, num_classes, img_size)
        self.num_features = embed_dim * 2 ** (n - 1)
        self.patch_embed = PatchEmbed(in_chans, embed_dim)
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        self.stage_info = []
        reduction = 4
        for i in range(n):
            dim = embed_dim * 2 ** i
            blocks = []
            for j in range(depths[i]):
                if dilate_attention[i]:
                    attn = MultiScaleDilatedAttention(dim, num_heads[i], qkv_bias, qk_scale, attn_drop_rate,
                                                      kernel_size=kernel_size, dilation=dilation, impl=impl)
                else:
                    attn = MultiHeadSelfAttention(dim, num_heads[i], qkv_bias, qk_scale, attn_drop_rate, impl=impl)
                blocks.append(Block(dim, Mlp(dim, int(dim * mlp_ratio), drop=drop_rate), attn, norm_layer,
                                    dpr[sum(depths[:i]) + j], pos_embed=cpe_per_block))
            merge = None
            if downsamples[i]:
                merge = Downsample(nn.Sequential(nn.Conv2d(dim, 2 * dim, 3, 2, 1), nn.BatchNorm2d(2 * dim)))
            self.stages.append(Stage(blocks, merge))
            self.stage_info.append(dict(num_chs=dim, reduction=reduction, module=f"stages.{i}"))
            reduction *= 2 if downsamples[i] else 1
        self.norm = norm_layer(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_stem(self, x):
        return self.patch_embed(x)



# drop path 0.1: the official training script's setting (dist_train.sh), used for every variant
for _name, _cfg, _paper in (
    ("dilateformer_tiny", dict(embed_dim=72, depths=(2, 2, 6, 2)), Paper(17.24, 3.2, 82.1)),
    ("dilateformer_small", dict(embed_dim=72, depths=(3, 5, 8, 3)),
     Paper(24.06, 4.8, 83.3, note="fvcore counts 4.61 GMACs", macs_counted_g=4.61)),
    ("dilateformer_base", dict(embed_dim=96, depths=(4, 8, 10, 3)), Paper(47.43, 10.0, 84.9, note="token labelling")),
):
    register_model(_name, DilateFormer, dict(_cfg, num_heads=(3, 6, 12, 24), kernel_size=3, dilation=(1, 2, 3),
                                       mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.1), _paper)
