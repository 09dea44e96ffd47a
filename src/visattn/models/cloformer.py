"""CloFormer: conv stem, blocks of CloFormer attention (AttnConv + pooled global) and ConvFFN; the last block of
stages 1-3 downsamples inside its ConvFFN (stride-2 depthwise conv) with a conv shortcut. GroupNorm(1) norms.
Any image size: the global branch pools in floor mode (see :class:`visattn.CloAttention`).

Feature maps (strides 4, 8, 16, 32) are each stage's last map at its own resolution: inside the stage's last block,
after its attention branch and before the strided ConvFFN (stage 4: the last block's output)."""

from __future__ import annotations

import torch
from torch import nn

from ..attention import CloAttention
from ..blocks import Block
from ..layers import ChannelsFirstSequential, ConvFFN, GroupNorm1
from ._base import Backbone, Stage
from ._common import check_arguments, drop_path_schedule, per_stage
from ._registry import Paper, register_model


class ConvBNReLU(nn.Module):
    def __init__(self, in_chans: int, out_chans: int, stride: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_chans, out_chans, 3, stride, 1), nn.BatchNorm2d(out_chans), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PatchEmbed(nn.Module):
    """Four 3x3 conv + BatchNorm + ReLU (strides 2, 2, 1, 1), a 1x1 conv and GroupNorm(1): stride 4."""

    def __init__(self, in_chans: int, embed_dim: int):
        super().__init__()
        self.conv1 = ConvBNReLU(in_chans, embed_dim // 2, 2)
        self.conv2 = ConvBNReLU(embed_dim // 2, embed_dim, 2)
        self.conv3 = ConvBNReLU(embed_dim, embed_dim, 1)
        self.conv4 = ConvBNReLU(embed_dim, embed_dim, 1)
        self.conv5 = nn.Conv2d(embed_dim, embed_dim, 1)
        self.layernorm = nn.GroupNorm(1, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(x)))))
        return self.layernorm(x).permute(0, 2, 3, 1)  # (B, H/4, W/4, C)


class CloFormer(Backbone):
    """CloFormer backbone (official argument names; per-stage lists, ``group_splits``/``kernel_sizes`` nested).

    ``drop_rate`` (not an official CloFormer option; every visattn family takes it) is dropout on the pooled
    features before the classifier, as in timm.
    """

    _head_modules = ("norm", "head_drop", "head")

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, embed_dims=(32, 64, 128, 256), depths=(2, 2, 6, 2),
                 num_heads=(4, 4, 8, 16), group_splits=((3, 1), (2, 2), (4, 4), (4, 12)),
                 kernel_sizes=((3,), (5,), (7,), (9,)), window_sizes=(8, 4, 2, 1), mlp_kernel_sizes=(5, 5, 5, 5),
                 mlp_ratios=(4, 4, 4, 4), attn_drop: float = 0.0, mlp_drop: float = 0.0, qkv_bias: bool = True,
                 drop_path_rate: float = 0.1, drop_rate: float = 0.0, img_size: int = 224, impl: str = "fast"):
        super().__init__()
        check_arguments(locals())
        n = len(depths)
        embed_dims = per_stage("embed_dims", embed_dims, n)
        for name in ("num_heads", "group_splits", "kernel_sizes", "window_sizes", "mlp_kernel_sizes", "mlp_ratios"):
            per_stage(name, locals()[name], n)
        if min(depths) < 1:
            raise ValueError(f"every CloFormer stage needs at least one block (it holds the downsampling), "
                             f"got {depths}")
        self.set_io(in_chans, num_classes, img_size)
        self.num_features = embed_dims[-1]
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList()
        self.stage_info = []
        reduction = 4
        for i in range(n):
            dim, blocks = embed_dims[i], []
            for j in range(depths[i]):
                last = j == depths[i] - 1
                stride = 2 if last and i < n - 1 else 1
                out_dim = embed_dims[i + 1] if last and i < n - 1 else dim
                mk = mlp_kernel_sizes[i]
                attn = CloAttention(dim, num_heads[i], group_splits[i], kernel_sizes[i], window_sizes[i], attn_drop,
                                    mlp_drop, qkv_bias, impl=impl)
                mlp = ConvFFN(dim, int(dim * mlp_ratios[i]), mk, stride, out_dim, drop=mlp_drop)
                shortcut = None
                if stride == 2:
                    shortcut = ChannelsFirstSequential(nn.Conv2d(dim, dim, mk, 2, mk // 2), nn.BatchNorm2d(dim),
                                                       nn.Conv2d(dim, out_dim, 1))
                blocks.append(Block(dim, mlp, attn, GroupNorm1, dpr[sum(depths[:i]) + j], shortcut=shortcut))
            self.layers.append(Stage(blocks))
            # the stage's map: the last tensor at its resolution (in the last block, before the strided ConvFFN)
            self.stage_info.append(dict(num_chs=dim, reduction=reduction, module=f"layers.{i}"))
            reduction *= 2
        self.norm = GroupNorm1(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_stem(self, x):
        return self.patch_embed(x)

    def forward_stage(self, i: int, x: torch.Tensor, feature: bool = True):
        """The stage's map is taken inside its last block, after the attention branch and before the ConvFFN that
        halves the resolution (for the last stage: the block's output): strides 4, 8, 16, 32."""
        blocks = self.layers[i].blocks
        x = self.run_blocks(blocks[:-1], x)
        if not feature or i == self.num_stages - 1:  # the last stage does not downsample: its output
            x = self.run_block(blocks[-1], x)
            return x, x
        return self.run_block(blocks[-1], x, return_mid=True)

    def truncate_stages(self, last: int) -> None:
        for i in range(len(self.layers) - 1, last, -1):
            self.prune(f"layers.{i}")
        if last < self.num_stages - 1:  # the strided ConvFFN branch of its last block is past the map
            j = len(self.layers[last].blocks) - 1
            for name in ("norm2", "mlp", "downsample"):
                self.prune(f"layers.{last}.blocks.{j}.{name}")

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(1, 2))  # (B, C)
        return x if pre_logits else self.head(self.head_drop(x))


_SPEC_NOTE = "the paper's figure leaves out the shortcut convs of the stride-2 blocks"
# drop path: the official configs (cloformer_xxs.yaml 0.0, cloformer_xs.yaml / cloformer_s.yaml 0.06)
for _name, _cfg, _paper in (
    ("cloformer_xxs", dict(embed_dims=(32, 64, 128, 256), num_heads=(4, 4, 8, 16),
                           group_splits=((3, 1), (2, 2), (4, 4), (4, 12)), drop_path_rate=0.0),
     Paper(4.17, 0.6, 77.0, note=_SPEC_NOTE, macs_counted_g=0.66, excludes=".downsample.")),
    ("cloformer_xs", dict(embed_dims=(48, 96, 160, 352), num_heads=(3, 6, 10, 22),
                          group_splits=((2, 1), (3, 3), (5, 5), (7, 15)), drop_path_rate=0.06),
     Paper(7.17, 1.1, 79.8, note=_SPEC_NOTE, macs_counted_g=1.23, excludes=".downsample.")),
    ("cloformer_s", dict(embed_dims=(64, 128, 224, 448), num_heads=(4, 8, 14, 28),
                         group_splits=((3, 1), (4, 4), (7, 7), (7, 21)), drop_path_rate=0.06),
     Paper(12.35, 2.0, 81.6, note=_SPEC_NOTE, macs_counted_g=2.18, excludes=".downsample.")),
):
    register_model(_name, CloFormer, dict(_cfg, depths=(2, 2, 6, 2), kernel_sizes=((3,), (5,), (7,), (9,)),
                                    window_sizes=(8, 4, 2, 1), mlp_kernel_sizes=(5, 5, 5, 5), mlp_ratios=(4, 4, 4, 4)),
             _paper)
