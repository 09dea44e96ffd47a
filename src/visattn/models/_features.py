"""Feature extraction as a wrapper (timm's ``features_only``): a backbone without its head, returning stage maps."""

from __future__ import annotations

import torch
from torch import nn

from ._base import Backbone


class FeatureExtractor(nn.Module):
    """The NCHW maps of a backbone's feature levels ``out_indices`` (default: all), in that order: its stage maps,
    or the levels of its feature pyramid (VOLO); ``feature_info`` says which.

    What the maps do not need is removed from the backbone (the head, later stages, unused pyramid levels:
    ``backbone.pruned`` lists them), so every parameter left gets a gradient; its parameters live under
    ``backbone.`` (the prefix mmdet/mmseg use, so :func:`visattn.load_official` reads such files as they are).
    ``feature_info[j]`` describes the ``j``-th returned map.
    """

    def __init__(self, backbone: Backbone, out_indices=None):
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise TypeError(f"FeatureExtractor wraps a visattn backbone, got {type(backbone).__name__}")
        self.out_indices = backbone.feature_indices(out_indices)
        backbone.prune_features(self.out_indices)
        self.backbone = backbone

    @property
    def feature_info(self) -> list[dict]:
        return [self.backbone.feature_info[i] for i in self.out_indices]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone.forward_intermediates(x, self.out_indices)
