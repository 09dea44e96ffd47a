"""Feature extraction as a wrapper (timm's ``features_only``): a backbone without its head, returning stage maps."""

from __future__ import annotations

import torch
from torch import nn

from ._base import Backbone


class FeatureExtractor(nn.Module):
    """The NCHW output maps of a backbone's stages ``out_indices`` (default: all), in that order.

    The backbone's head modules are removed (their weights are not needed); its parameters live under
    ``backbone.`` (the prefix mmdet/mmseg use, so :func:`visattn.load_official` reads such files as they are).
    ``feature_info[j]`` describes the ``j``-th returned map.
    """

    def __init__(self, backbone: Backbone, out_indices=None):
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise TypeError(f"FeatureExtractor wraps a visattn backbone, got {type(backbone).__name__}")
        self.out_indices = backbone.stage_indices(out_indices)
        backbone.remove_head()
        self.backbone = backbone

    @property
    def feature_info(self) -> list[dict]:
        return [self.backbone.stage_info[i] for i in self.out_indices]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone.forward_intermediates(x, self.out_indices)
