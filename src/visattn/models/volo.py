"""VOLO: conv stem, an outlooker stage (outlook attention) at stride 8, a 2x2 patch merge, a learned position
embedding, transformer stages at stride 16, CaiT class-attention blocks and the token-labelling head.

Any image size: the position embedding is resized (bicubic) to the token grid of the input at run time; a
checkpoint's embedding is adopted as it is on load (its grid becomes the model's), so a fine-tuned 384-px checkpoint
gives the official output at 384. The module tree and names are the official ones (``network`` mixes
stages and the merge, ``post_network`` holds the class blocks), so official checkpoints load as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._modes import is_tracing, storage_id, tensor_version
from ..attention import ClassAttention, MultiHeadSelfAttention, OutlookAttention
from ..blocks import Block, ClassBlock
from ..layers import Downsample, Mlp
from ._base import Backbone, taken
from ._common import check_arguments, per_stage
from ._pyramid import SimplePyramid
from ._registry import Paper, register_model


class PatchEmbed(nn.Module):
    """7x7 stride-2 conv + two 3x3 convs (BatchNorm, ReLU), then a (patch/2)-strided projection: stride 8 total."""

    def __init__(self, in_chans: int, hidden_dim: int, embed_dim: int, patch_size: int = 8):
        super().__init__()
        if patch_size not in (4, 8, 16):
            raise ValueError(f"patch_size must be 4, 8 or 16 (the stem has stride 2), got {patch_size}")
        self.conv = nn.Sequential(
            nn.Conv2d(in_chans, hidden_dim, 7, 2, 3, bias=False), nn.BatchNorm2d(hidden_dim), nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1, bias=False), nn.BatchNorm2d(hidden_dim), nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1, bias=False), nn.BatchNorm2d(hidden_dim), nn.ReLU(inplace=True),
        )
        self.proj = nn.Conv2d(hidden_dim, embed_dim, patch_size // 2, patch_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.conv(x)).permute(0, 2, 3, 1)  # (B, H/8, W/8, C)


def resize_pos_embed(pos: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, h, w, C) position embedding -> (1, H, W, C), bicubic (identity when the size already matches)."""
    if not is_tracing() and tuple(pos.shape[1:3]) == tuple(size):  # traced: always resize (no guard on the size)
        return pos
    resized = F.interpolate(pos.permute(0, 3, 1, 2), size=size, mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1)


class VOLO(Backbone):
    """VOLO backbone (official argument names). ``img_size`` only sets the stored position-embedding grid
    (``img_size // patch_size // pooling_scale``); inputs of any size run.

    ``forward`` returns ``head(cls) + 0.5 * max_tokens(aux_head(tokens))`` (the official evaluation output) in
    training and evaluation alike; token-labelling training with dense targets and MixToken is not included.

    ``feature_pyramid=True`` (the default of ``create_model(..., features_only=True)``) adds a
    :class:`~visattn.models._pyramid.SimplePyramid` (``pyramid.*``, not in official checkpoints): ``feature_info``
    and ``forward_intermediates`` then give maps at strides 4, 8, 16, 32 instead of the stage maps (8, 16, 16, 16).
    """

    _head_modules = ("post_network", "cls_token", "norm", "head", "aux_head")

    def __init__(self, layers=(4, 4, 8, 2), img_size: int = 224, in_chans: int = 3, num_classes: int = 1000,
                 patch_size: int = 8, stem_hidden_dim: int = 64, embed_dims=(192, 384, 384, 384),
                 num_heads=(6, 12, 12, 12), downsamples=(True, False, False, False),
                 outlook_attention=(True, False, False, False), mlp_ratios=(3, 3, 3, 3), qkv_bias: bool = False,
                 qk_scale=None, drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 post_layers=("ca", "ca"), return_dense: bool = True, pooling_scale: int = 2, out_kernel: int = 3,
                 out_stride: int = 2, out_padding: int = 1, feature_pyramid: bool = False, impl: str = "fast"):
        super().__init__()
        check_arguments(locals())
        n = len(layers)
        embed_dims = per_stage("embed_dims", embed_dims, n)
        num_heads = per_stage("num_heads", num_heads, n)
        downsamples = per_stage("downsamples", downsamples, n)
        outlook_attention = per_stage("outlook_attention", outlook_attention, n)
        mlp_ratios = per_stage("mlp_ratios", mlp_ratios, n)
        post_layers = tuple(post_layers or ())
        if any(p != "ca" for p in post_layers):
            raise ValueError(f"post_layers may only contain 'ca' (class attention), got {list(post_layers)}")
        if return_dense and not post_layers:
            raise ValueError("return_dense=True needs a class token: pass post_layers=('ca', 'ca') "
                             "or return_dense=False")
        for i in range(n - 1):
            if not downsamples[i] and embed_dims[i] != embed_dims[i + 1]:
                raise ValueError(f"embed_dims[{i}] != embed_dims[{i + 1}] needs downsamples[{i}]=True to change width")
        self.set_io(in_chans, num_classes, img_size)
        self.return_dense = return_dense
        self.num_features = embed_dims[-1]
        self.patch_embed = PatchEmbed(in_chans, stem_hidden_dim, embed_dims[0], patch_size)
        self._grid_stride = patch_size * pooling_scale
        grid = img_size // self._grid_stride
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dims[-1]))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(drop_rate)
        network, self._stage_slots, self.stage_info = [], [], []
        total, reduction = sum(layers), patch_size
        for i in range(n):
            dim, blocks = embed_dims[i], []
            for j in range(layers[i]):
                mlp = Mlp(dim, int(dim * mlp_ratios[i]))
                if outlook_attention[i]:  # the official outlookers have no stochastic depth
                    attn = OutlookAttention(dim, num_heads[i], out_kernel, out_padding, out_stride, qkv_bias, qk_scale,
                                            attn_drop_rate, impl=impl)
                    blocks.append(Block(dim, mlp, attn))
                else:
                    attn = MultiHeadSelfAttention(dim, num_heads[i], qkv_bias, qk_scale, attn_drop_rate, impl=impl)
                    dp = drop_path_rate * (j + sum(layers[:i])) / max(total - 1, 1)
                    blocks.append(Block(dim, mlp, attn, drop_path=dp))
            self._stage_slots.append(len(network))
            network.append(nn.Sequential(*blocks))
            self.stage_info.append(dict(num_chs=dim, reduction=reduction, module=f"network.{len(network) - 1}"))
            if downsamples[i]:
                network.append(Downsample(nn.Conv2d(dim, embed_dims[i + 1], 2, 2)))
                reduction *= 2
        self.network = nn.ModuleList(network)
        # the position embedding (sized for the last width) enters at the input of the second stage, after the
        # first merge: network[2] in every official configuration
        self._pos_slot = self._stage_slots[1] if n > 1 else None
        if post_layers:
            dim = embed_dims[-1]
            self.post_network = nn.ModuleList(
                ClassBlock(dim, ClassAttention(dim, num_heads[-1], qkv_bias, qk_scale, attn_drop_rate, impl=impl),
                           Mlp(dim, int(dim * mlp_ratios[-1])))
                for _ in post_layers)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.norm = nn.LayerNorm(embed_dims[-1])
        self.reset_classifier(num_classes)
        if not isinstance(feature_pyramid, bool):
            raise TypeError(f"feature_pyramid must be True or False, got {feature_pyramid!r}")
        if feature_pyramid:
            fine, last = self.stage_info[0], self.stage_info[-1]
            self.pyramid = SimplePyramid((0, fine["num_chs"], fine["reduction"]),
                                         (n - 1, last["num_chs"], last["reduction"]))

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        if self.return_dense:
            self.aux_head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    MAX_GRID = 128  # an adopted position-embedding grid: up to 128 x 128 tokens (2048-px inputs at stride 16)

    def official_shapes(self, sd: dict) -> dict[str, tuple[int, ...]]:
        """The shapes the model takes from a checkpoint, checked, without changing the model: a position-embedding
        grid other than the model's (a 384-px fine-tune loaded into ``volo_d1``). Only ``(1, h, w, C)`` with the
        model's ``C`` and ``1 <= h, w <= MAX_GRID`` is adopted; any other shape is left to the shape check."""
        pos, own = sd.get("pos_embed"), getattr(self, "pos_embed", None)
        if not isinstance(pos, torch.Tensor) or own is None or pos.shape == own.shape:
            return {}
        if pos.dim() != 4 or pos.shape[0] != 1 or pos.shape[-1] != own.shape[-1]:
            return {}  # not a grid of this model: reported as a shape mismatch
        h, w = pos.shape[1:3]
        if not (1 <= h <= self.MAX_GRID and 1 <= w <= self.MAX_GRID):
            raise ValueError(f"the checkpoint's position embedding has a {h}x{w} grid; visattn adopts grids of 1 to "
                             f"{self.MAX_GRID} tokens a side (inputs up to {self.MAX_GRID * self._grid_stride} px)")
        return {"pos_embed": tuple(pos.shape)}

    def adopt_shapes(self, shapes: dict[str, tuple[int, ...]]) -> list[str]:
        """Give the model the shapes :meth:`official_shapes` found (after every check passed); returns what changed.
        The model then computes what the official one does at the checkpoint's size (other sizes still resize the
        embedding at run time)."""
        if "pos_embed" not in shapes:
            return []
        old = tuple(self.pos_embed.shape[1:3])
        self.pos_embed = nn.Parameter(self.pos_embed.new_zeros(shapes["pos_embed"]))
        grid = shapes["pos_embed"][1:3]
        if grid[0] == grid[1]:
            self.img_size = grid[0] * self._grid_stride
        return [f"pos_embed: the checkpoint's {grid[0]}x{grid[1]} grid replaces {old[0]}x{old[1]} "
                f"(img_size {self.img_size})"]

    def forward_stem(self, x):
        return self.patch_embed(x)

    def _entries(self, i: int) -> range:
        """network indices run for stage i: the stage itself and any merge after it (while not pruned)."""
        start = self._stage_slots[i]
        end = self._stage_slots[i + 1] if i + 1 < len(self._stage_slots) else len(self.network)
        return range(start, min(end, len(self.network)))

    def truncate_stages(self, last: int) -> None:
        slot = self._stage_slots[last]
        for idx in range(len(self.network) - 1, slot, -1):
            self.prune(f"network.{idx}")
        if self._pos_slot is not None and self._pos_slot > slot:
            self.prune("pos_embed")

    def _add_pos(self, x):
        return self.pos_drop(x + self._pos_embed_for(tuple(x.shape[1:3])))

    def _pos_embed_for(self, size: tuple[int, int]) -> torch.Tensor:
        """The position embedding resized to ``size``; in eager inference (autograd off) the last resize is kept and
        reused while the embedding is unchanged (same version, dtype, device), so same-sized inputs resize once."""
        pos = self.pos_embed
        if is_tracing() or torch.is_grad_enabled():
            return resize_pos_embed(pos, size)
        version = tensor_version(pos)
        if version is None:  # an inference tensor (model built under inference_mode) keeps no version: no cache
            return resize_pos_embed(pos, size)
        key = (size, version, storage_id(pos), pos.dtype, pos.device, torch.is_inference_mode_enabled())
        cached = getattr(self, "_pos_cache", None)
        if cached is None or cached[0] != key:
            cached = self._pos_cache = (key, resize_pos_embed(pos.detach(), size))
        return cached[1]

    def forward_stage(self, i, x, feature: bool = True):
        feat = None
        for idx in self._entries(i):
            if idx == self._pos_slot:
                x = self._add_pos(taken(x))
            if idx == self._stage_slots[i]:
                held, x = (x if isinstance(x, list) else [x]), None  # handed over: freed after the first block
                x = feat = self.run_blocks(self.network[idx], held)
            else:
                x = self.network[idx](taken(x))
        return feat, x

    def forward_norm(self, x):
        B, H, W, C = x.shape
        x = x.reshape(B, H * W, C)  # (B, N, C)
        if hasattr(self, "post_network"):
            x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, 1 + N, C)
            for blk in self.post_network:
                x = blk(x)
        return self.norm(x)

    def forward_head(self, x, pre_logits: bool = False):
        if not hasattr(self, "post_network"):  # no class token: mean of the tokens
            pooled = x.mean(dim=1)
            return pooled if pre_logits else self.head(pooled)
        if pre_logits or self.num_classes == 0:
            return x[:, 0]
        logits = self.head(x[:, 0])
        if self.return_dense:
            logits = logits + 0.5 * self.aux_head(x[:, 1:]).max(dim=1).values
        return logits


_VOLO_SMALL = dict(embed_dims=(192, 384, 384, 384), num_heads=(6, 12, 12, 12))
_VOLO_MID = dict(embed_dims=(256, 512, 512, 512), num_heads=(8, 16, 16, 16))
_VOLO_LARGE = dict(embed_dims=(384, 768, 768, 768), num_heads=(12, 16, 16, 16))
# drop path: the official README's training commands (D1 0.1, D2 0.2, D3 0.5); D4 and D5 have no published
# command, D3's 0.5 is used for them. The fine-tuned high-resolution checkpoints are rows of their own (timm's names
# without the size suffix for 224): the same weights with a position embedding for a larger grid.
_VOLO_VARIANTS = {
    "d1": (dict(layers=(4, 4, 8, 2), **_VOLO_SMALL, mlp_ratios=(3,) * 4, drop_path_rate=0.1), 26.63, 6.94, 84.2,
           {384: 85.2}),
    "d2": (dict(layers=(6, 4, 10, 4), **_VOLO_MID, mlp_ratios=(3,) * 4, drop_path_rate=0.2), 58.68, 14.34, 85.2,
           {384: 86.0}),
    "d3": (dict(layers=(8, 8, 16, 4), **_VOLO_MID, mlp_ratios=(3,) * 4, drop_path_rate=0.5), 86.33, 20.78, 85.4,
           {448: 86.3}),
    "d4": (dict(layers=(8, 8, 16, 4), **_VOLO_LARGE, mlp_ratios=(3,) * 4, drop_path_rate=0.5), 192.96, 44.34, 85.7,
           {448: 86.8}),
    "d5": (dict(layers=(12, 12, 20, 4), **_VOLO_LARGE, mlp_ratios=(4,) * 4, stem_hidden_dim=128,
                drop_path_rate=0.5), 295.46, 72.40, 86.1, {448: 87.0, 512: 87.1}),
}
for _v, (_cfg, _params, _macs, _top1, _hires) in _VOLO_VARIANTS.items():
    _cfg = dict(_cfg, downsamples=(True, False, False, False), outlook_attention=(True, False, False, False),
                post_layers=("ca", "ca"))
    register_model(f"volo_{_v}", VOLO, _cfg, Paper(_params, _macs, _top1))
    for _size, _hi_top1 in _hires.items():  # the paper's count is at 224: add the larger position embedding
        _extra = ((_size // 16) ** 2 - 14 ** 2) * _cfg["embed_dims"][-1] / 1e6
        register_model(f"volo_{_v}_{_size}", VOLO, dict(_cfg, img_size=_size),
                       Paper(round(_params + _extra, 2), None, _hi_top1, resolution=_size,
                             note=f"fine-tuned at {_size}; params: the paper's {_params} M + {_extra:.2f} M of "
                                  f"position embedding"))
