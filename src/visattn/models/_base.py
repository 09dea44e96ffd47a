"""The interface every visattn backbone implements (timm's conventions).

A family subclasses :class:`Backbone` and provides four pieces; the base class turns them into
``forward``, ``forward_features``, ``forward_head``, ``forward_intermediates`` and the feature-only mode:

* ``forward_stem(img)``: ``(B, 3, H, W)`` image -> channels-last map ``(B, H', W', C)``;
* ``forward_stage(i, x)``: run stage ``i``; returns ``(feature, next_input)``, where ``feature`` is the
  stage's output map and ``next_input`` what the next stage receives (after any merging/downsampling).
  The default runs ``Stage`` ``i`` of the ``ModuleList`` named by ``_stages_attr``;
* ``forward_norm(x)``: the last stage's output -> the normalised representation the head pools
  (default: ``self.norm``);
* ``forward_head(x, pre_logits=False)``: pool and classify (default: global average of the map, ``self.head``).
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import nn


class Stage(nn.Module):
    """A list of blocks plus an optional ``downsample`` applied after them (LITv2's DTM, DilateFormer's merging)."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        if downsample is not None:
            self.downsample = downsample


class Backbone(nn.Module):
    """Base class of the four backbone families. Attributes set by subclasses:

    ``num_classes``, ``num_features`` (channels the head sees), ``in_chans``, ``stage_info`` (one dict per stage:
    ``num_chs``, ``reduction``, ``module``), ``min_input_size`` and ``_head_modules`` (what feature-only mode
    removes).
    """

    min_input_size = 32
    _head_modules: tuple[str, ...] = ("norm", "head")
    _stages_attr = "layers"

    def __init__(self):
        super().__init__()
        self.grad_checkpointing = False
        self.features_only = False
        self.out_indices: tuple[int, ...] = ()

    # ---- pieces a family provides --------------------------------------------------------------------
    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_stage(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stage = getattr(self, self._stages_attr)[i]
        feat = self.run_blocks(stage.blocks, x)
        return feat, (stage.downsample(feat) if hasattr(stage, "downsample") else feat)

    def forward_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)  # (B, H, W, C)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(1, 2))  # (B, C)
        return x if pre_logits else self.head(x)

    # ---- shared machinery ----------------------------------------------------------------------------
    def run_blocks(self, blocks, x: torch.Tensor) -> torch.Tensor:
        """Run blocks in order, with activation checkpointing when enabled and gradients are on."""
        for blk in blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass instead of storing them (same results, less memory)."""
        self.grad_checkpointing = bool(enable)

    @property
    def num_stages(self) -> int:
        return len(self.stage_info)

    @property
    def feature_info(self) -> list[dict]:
        """Channels (``num_chs``) and stride (``reduction``) of each map ``forward_intermediates`` / feature-only
        ``forward`` returns: all stages, or the ``out_indices`` of a feature-only model."""
        if self.features_only:
            return [self.stage_info[i] for i in self.out_indices]
        return list(self.stage_info)

    def check_image(self, x) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor image batch, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects a floating-point image, got {x.dtype}; use x.float()")
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"{type(self).__name__} expects images (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        if min(x.shape[2:]) < self.min_input_size:
            raise ValueError(f"{type(self).__name__} needs H, W >= {self.min_input_size} (four stages of "
                             f"downsampling), got {x.shape[2]}x{x.shape[3]}; resize or pad the image")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> the normalised output of the last stage, before pooling."""
        self.check_image(x)
        x = self.forward_stem(x)
        for i in range(self.num_stages):
            _, x = self.forward_stage(i, x)
        return self.forward_norm(x)

    def forward_intermediates(self, x: torch.Tensor, indices=None) -> list[torch.Tensor]:
        """Image -> the output map of each requested stage (default: all), as NCHW tensors.

        Channels and reductions are listed in ``feature_info``.
        """
        self.check_image(x)
        indices = tuple(range(self.num_stages)) if indices is None else tuple(indices)
        bad = [i for i in indices if not 0 <= i < self.num_stages]
        if bad:
            raise ValueError(f"stage indices {bad} out of range; this backbone has stages 0..{self.num_stages - 1}")
        x = self.forward_stem(x)
        feats = []
        for i in range(max(indices) + 1):
            feat, x = self.forward_stage(i, x)
            if i in indices:
                feats.append(feat.permute(0, 3, 1, 2))  # (B, C_i, H_i, W_i)
        return feats

    def forward(self, x: torch.Tensor):
        if self.features_only:
            return self.forward_intermediates(x, self.out_indices)
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one for ``num_classes`` (0: no classifier, ``forward`` gives features)."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def as_features_only(self, out_indices=None) -> Backbone:
        """Turn the model into a feature extractor: ``forward`` returns the NCHW stage maps; the head is removed."""
        out_indices = tuple(range(self.num_stages)) if out_indices is None else tuple(out_indices)
        bad = [i for i in out_indices if not 0 <= i < self.num_stages]
        if bad or not out_indices:
            raise ValueError(f"out_indices must pick stages from 0..{self.num_stages - 1}, got {list(out_indices)}")
        for name in self._head_modules:
            if hasattr(self, name):
                delattr(self, name)
        self.features_only, self.out_indices = True, out_indices
        return self
