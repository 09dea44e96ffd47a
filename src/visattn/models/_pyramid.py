"""A simple feature pyramid (after ViTDet's) for backbones whose stages do not halve the resolution each time.

VOLO's stage maps have strides 8, 16, 16, 16; detection and segmentation decoders (FPN, UPerNet, smp's decoders)
expect four maps at strides 4, 8, 16, 32. :class:`SimplePyramid` makes them from the backbone's finest map (stride 8,
the outlooker stage) and its last map (stride 16, after every transformer stage):

    stride  4: 2x2 stride-2 transposed conv of the fine map, LayerNorm     (new, trainable)
    stride  8: the fine map, LayerNorm
    stride 16: the last map, LayerNorm
    stride 32: 2x2 max pool of the last map (ceil mode), LayerNorm

Its layers are not in any official checkpoint: :func:`visattn.load_official` loads everything else strictly and
reports them as new (``LoadReport.new``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SimplePyramid(nn.Module):
    """Four levels at strides ``4, 8, 16, 32`` from two stage maps of a backbone.

    Args:
        fine: ``(stage index, channels, stride)`` of the stride-8 map.
        coarse: ``(stage index, channels, stride)`` of the stride-16 map.
    """

    def __init__(self, fine: tuple[int, int, int], coarse: tuple[int, int, int]):
        super().__init__()
        (self.fine, c_fine, s_fine), (self.coarse, c_coarse, s_coarse) = fine, coarse
        if (s_fine, s_coarse) != (8, 16):
            raise ValueError(f"the feature pyramid is built from maps at strides 8 and 16, got {s_fine} and "
                             f"{s_coarse}; use the official stage layout or feature_pyramid=False")
        self.up = nn.ConvTranspose2d(c_fine, c_fine, 2, 2)
        levels = ((c_fine, 4), (c_fine, 8), (c_coarse, 16), (c_coarse, 32))
        for c, r in levels:
            self.add_module(f"norm{r}", nn.LayerNorm(c))
        self.feature_info = [dict(num_chs=c, reduction=r, module=f"pyramid.norm{r}") for c, r in levels]

    def sources(self, take) -> list[int]:
        """The stage maps levels ``take`` read."""
        return [i for i, used in ((self.fine, min(take) < 2), (self.coarse, max(take) >= 2)) if used]

    def unused(self, take) -> list[str]:
        """Names of the layers the levels ``take`` do not use (deleted by ``Backbone.prune_features``)."""
        names = [f"norm{4 << j}" for j in range(4) if j not in take]
        return names + (["up"] if 0 not in take else [])

    def level(self, j: int, maps: dict[int, torch.Tensor]) -> torch.Tensor:
        """Level ``j`` (0: stride 4 ... 3: stride 32) from the channels-last stage maps, NCHW."""
        x = maps[self.fine] if j < 2 else maps[self.coarse]  # (B, H, W, C)
        if j == 0:
            x = self.up(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, 2H, 2W, C)
        elif j == 3:
            x = F.max_pool2d(x.permute(0, 3, 1, 2), 2, 2, ceil_mode=True).permute(0, 2, 3, 1)  # (B, H/2, W/2, C)
        return getattr(self, f"norm{4 << j}")(x).permute(0, 3, 1, 2)  # (B, C, H_j, W_j)

    def forward(self, maps: dict[int, torch.Tensor], take) -> list[torch.Tensor]:
        return [self.level(j, maps) for j in take]
