"""visattn backbones for torchvision's detectors (Faster R-CNN, Mask R-CNN, RetinaNet, FCOS, ...).

torchvision's ``BackboneWithFPN`` picks maps out of a model's children run in sequence, which a visattn backbone
is not (its stages return maps at their own resolution, and VOLO's pyramid reads two of them). :func:`fpn_backbone`
joins the route that works: visattn's feature extractor (maps at strides 4, 8, 16, 32 for every family) and
torchvision's own ``FeaturePyramidNetwork``, with the ``out_channels`` attribute the detectors read::

    from torchvision.models.detection import FasterRCNN
    from visattn.integrations.torchvision import fpn_backbone

    detector = FasterRCNN(fpn_backbone("litv2_s", pretrained="litv2_s.pth"), num_classes=91)

The defaults match torchvision's ResNet-FPN detectors: every level (strides 4-32) plus a max-pooled stride-64 level,
256 channels, so the default anchor generator and RoI pooler of Faster / Mask R-CNN fit. For RetinaNet and FCOS
(levels P3-P7), pass ``out_indices=(1, 2, 3)`` and ``extra_blocks=LastLevelP6P7(256, 256)`` as torchvision's own
builders do.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork, LastLevelMaxPool

from ..models import FeatureExtractor, create_model


class VisattnFPN(nn.Module):
    """A visattn feature extractor (``body``) and a torchvision FPN (``fpn``): image -> ``OrderedDict`` of maps
    with ``out_channels`` channels, keys ``"0"``, ``"1"``, ... (finest first) and the extra block's names."""

    def __init__(self, body: FeatureExtractor, out_channels: int = 256, extra_blocks: ExtraFPNBlock | None = None,
                 norm_layer=None):
        super().__init__()
        if not isinstance(body, FeatureExtractor):
            raise TypeError(f"VisattnFPN wraps a visattn feature extractor (create_model(name, features_only=True)), "
                            f"got {type(body).__name__}")
        self.body = body
        self.fpn = FeaturePyramidNetwork([info["num_chs"] for info in body.feature_info], out_channels,
                                         extra_blocks=LastLevelMaxPool() if extra_blocks is None else extra_blocks,
                                         norm_layer=norm_layer)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)  # [(B, C_j, H / s_j, W / s_j)]
        return self.fpn(OrderedDict((str(j), f) for j, f in enumerate(feats)))


def fpn_backbone(name: str, out_indices=None, out_channels: int = 256, extra_blocks: ExtraFPNBlock | None = None,
                 norm_layer=None, pretrained=None, **kwargs) -> VisattnFPN:
    """A detector backbone: ``create_model(name, features_only=True, out_indices=..., pretrained=..., **kwargs)``
    under a torchvision ``FeaturePyramidNetwork`` (``out_channels`` channels; ``extra_blocks`` default: a max-pooled
    extra level, as torchvision's ResNet-FPN detectors)."""
    if not isinstance(out_channels, int) or isinstance(out_channels, bool) or out_channels < 1:
        raise ValueError(f"out_channels must be a positive int (torchvision's detectors use 256), got {out_channels!r}")
    body = create_model(name, pretrained=pretrained, features_only=True, out_indices=out_indices, **kwargs)
    return VisattnFPN(body, out_channels, extra_blocks, norm_layer)
