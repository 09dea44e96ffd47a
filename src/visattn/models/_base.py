"""The interface every visattn backbone implements (timm's conventions).

A family subclasses :class:`Backbone` and provides four pieces; the base class turns them into
``forward``, ``forward_features``, ``forward_head`` and ``forward_intermediates``:

* ``forward_stem(img)``: ``(B, 3, H, W)`` image -> channels-last map ``(B, H', W', C)``;
* ``forward_stage(i, x, feature=True)``: run stage ``i``; returns ``(feature, next_input)``, where ``feature`` is
  the stage's map at its own resolution and ``next_input`` what the next stage receives (after any
  merging/downsampling); with ``feature=False`` (classification) a family may skip producing the map. ``x`` comes
  handed over in a one-element list (:func:`taken` unwraps it) so that the stage input can be freed as soon as the
  stage's first block has used it (inference memory: as timm's single-frame loops do).
  The default runs ``Stage`` ``i`` of the ``ModuleList`` named by ``_stages_attr``;
* ``forward_norm(x)``: the last stage's output -> the normalised representation the head pools
  (default: ``self.norm``);
* ``forward_head(x, pre_logits=False)``: pool and classify (default: global average of the map, ``self.head``).

Feature extraction is a wrapper, not a mode: :class:`FeatureExtractor` (``create_model(..., features_only=True)``)
holds a backbone without its head and returns the maps ``feature_info`` describes (the stage maps, or a feature
pyramid's levels where the family has one: VOLO); the backbone's own ``forward`` always classifies.
"""

from __future__ import annotations

import contextlib

import torch
import torch.utils.checkpoint
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .. import _validate


class Stage(nn.Module):
    """A list of blocks plus an optional ``downsample`` applied after them (LITv2's DTM, DilateFormer's merging)."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        if downsample is not None:
            self.downsample = downsample


class Backbone(nn.Module):
    """Base class of the four backbone families. Attributes set by subclasses:

    ``num_features`` (channels the head sees), ``stage_info`` (one dict per stage: ``num_chs``, ``reduction``,
    ``module``), ``min_input_size`` and ``_head_modules`` (what a feature extractor removes); ``in_chans``,
    ``num_classes`` and ``img_size`` come from :meth:`set_io`, which every family calls with the options they all
    accept.
    """

    min_input_size = 32
    _head_modules: tuple[str, ...] = ("norm", "head")
    _new_modules: tuple[str, ...] = ("pyramid",)  # layers no official checkpoint has (load_official reports them)
    _stages_attr = "layers"

    def __init__(self):
        super().__init__()
        self.grad_checkpointing = False

    def set_io(self, in_chans: int, num_classes: int, img_size: int) -> None:
        """Check and store the options every family takes. ``img_size`` is the resolution the variant is trained
        and evaluated at (``default_input_size``); any input of at least ``min_input_size`` runs."""
        self.in_chans = _validate.positive_int("in_chans", in_chans)
        self.num_classes = _validate.positive_int("num_classes", num_classes, minimum=0)
        self.img_size = _validate.positive_int("img_size", img_size, minimum=self.min_input_size)

    @property
    def default_input_size(self) -> tuple[int, int, int]:
        """``(in_chans, img_size, img_size)``: the input the variant was trained at."""
        return (self.in_chans, self.img_size, self.img_size)

    # ---- pieces a family provides --------------------------------------------------------------------
    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_stage(self, i: int, x, feature: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        stage = getattr(self, self._stages_attr)[i]
        feat = self.run_blocks(stage.blocks, x)
        return feat, (stage.downsample(feat) if hasattr(stage, "downsample") else feat)

    def forward_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)  # (B, H, W, C)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(1, 2))  # (B, C)
        return x if pre_logits else self.head(x)

    # ---- shared machinery ----------------------------------------------------------------------------
    def run_blocks(self, blocks, x) -> torch.Tensor:
        """Run blocks in order, with activation checkpointing when enabled and gradients are on. The recomputation
        in backward leaves BatchNorm statistics as the forward left them (they are updated once per step).

        ``x`` may be handed over in a one-element list (see :func:`taken`), which this empties: then no caller's
        frame keeps the stage input alive while the blocks run, and it is freed once the first block is done."""
        x = taken(x)
        for blk in blocks:
            x = self.run_block(blk, x)
        return x

    def run_block(self, blk: nn.Module, x: torch.Tensor, **kwargs):
        """``blk(x, **kwargs)``, checkpointed as in :meth:`run_blocks`."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(
                blk, x, use_reentrant=False, context_fn=lambda: (contextlib.nullcontext(), _KeepRunningStats(blk)),
                **kwargs)
        return blk(x, **kwargs)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass instead of storing them (same results, less memory)."""
        self.grad_checkpointing = bool(enable)

    @property
    def num_stages(self) -> int:
        return len(self.stage_info)

    @property
    def feature_info(self) -> list[dict]:
        """Channels (``num_chs``) and stride (``reduction``) of each map ``forward_intermediates`` returns: the stage
        maps, or the levels of a feature pyramid where the family builds one (VOLO)."""
        pyramid = getattr(self, "pyramid", None)
        return pyramid.feature_info if pyramid is not None else list(self.stage_info)

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
        held = [self.forward_stem(x)]  # handed to each stage: this frame keeps no stage input alive
        for i in range(self.num_stages):
            held = [self.forward_stage(i, held, feature=False)[1]]
        return self.forward_norm(held.pop())

    def feature_indices(self, indices=None) -> tuple[int, ...]:
        """The levels of :attr:`feature_info` that ``indices`` asks for, timm's convention: None -> all, an int ``n``
        -> the last ``n``, a list -> those in that order (negative ones count from the end; no repeats)."""
        return take_indices(len(self.feature_info), indices)

    def forward_intermediates(self, x: torch.Tensor, indices=None) -> list[torch.Tensor]:
        """Image -> the NCHW map of each requested level of :attr:`feature_info` (default: all), in the order of
        ``indices``."""
        return self.features_and_final(x, self.feature_indices(indices))[1]

    def features_and_final(self, x: torch.Tensor, take, final: bool = False):
        """``(final, maps)``: the NCHW maps of the levels ``take`` (checked indices) and, with ``final``, the
        normalised output of the last stage (else None; the stages after the last one needed are then skipped)."""
        self.check_image(x)
        pyramid = getattr(self, "pyramid", None)
        needed = set(pyramid.sources(take) if pyramid is not None else take)
        held = [self.forward_stem(x)]  # handed to each stage: this frame keeps no stage input alive
        raw = {}
        for i in range(self.num_stages if final else max(needed) + 1):
            feat, nxt = self.forward_stage(i, held)
            if i in needed:
                raw[i] = feat  # (B, H_i, W_i, C_i)
            held, feat, nxt = [nxt], None, None
        # NCHW maps (B, C_j, H_j, W_j)
        maps = pyramid(raw, take) if pyramid is not None else [raw[i].permute(0, 3, 1, 2) for i in take]
        return (self.forward_norm(held.pop()) if final else None), maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def remove_head(self, keep_norm: bool = False) -> None:
        """Delete the modules only classification needs (``_head_modules``), for feature extraction."""
        for name in self._head_modules:
            if hasattr(self, name) and not (keep_norm and name == "norm"):
                self.prune(name)

    def prune(self, path: str) -> None:
        """Delete the submodule or parameter at ``path`` (``"layers.3"``, ``"layers.2.downsample"``) and remember it:
        :func:`visattn.load_official` leaves a checkpoint's tensors under pruned paths out."""
        parent, _, name = path.rpartition(".")
        owner = self.get_submodule(parent) if parent else self
        if not hasattr(owner, name):
            return
        delattr(owner, name)
        self.pruned = [*getattr(self, "pruned", []), path]

    def prune_features(self, take, keep_norm: bool = False) -> None:
        """Keep only what the feature levels ``take`` need: the head goes, and so do the pyramid levels not asked
        for and everything after the last stage map needed, so that every remaining parameter gets a gradient
        (``DistributedDataParallel`` without ``find_unused_parameters``) and no work is wasted."""
        self.remove_head(keep_norm)
        pyramid = getattr(self, "pyramid", None)
        if pyramid is not None:
            for name in pyramid.unused(take):
                self.prune(f"pyramid.{name}")
        self.truncate_stages(max(pyramid.sources(take) if pyramid is not None else take))

    def truncate_stages(self, last: int) -> None:
        """Delete the stages after ``last`` and the downsampling at the end of stage ``last`` (family hook)."""
        stages = getattr(self, self._stages_attr)
        for i in range(len(stages) - 1, last, -1):
            self.prune(f"{self._stages_attr}.{i}")
        self.prune(f"{self._stages_attr}.{last}.downsample")

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one for ``num_classes`` (0: no classifier, ``forward`` gives features)."""
        self.num_classes = _validate.positive_int("num_classes", num_classes, minimum=0)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def taken(x):
    """The tensor of a stage input handed over as a one-element list (the list is emptied), or ``x`` itself."""
    return x.pop() if isinstance(x, list) else x


def take_indices(n: int, indices=None) -> tuple[int, ...]:
    """Check feature indices against ``n`` levels (timm's convention, see :meth:`Backbone.feature_indices`)."""
    if indices is None:
        return tuple(range(n))
    if isinstance(indices, (bool, str, bytes)):
        raise TypeError(f"feature indices must be an int or a list of ints, got {indices!r}")
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise ValueError(f"an int out_indices takes the last n levels, 1 <= n <= {n}; got {indices}")
        return tuple(range(n - indices, n))
    try:
        indices = tuple(indices)
    except TypeError:
        raise TypeError(f"feature indices must be an int or a list of ints, got {indices!r}") from None
    if not indices or any(isinstance(i, bool) or not isinstance(i, int) for i in indices):
        raise ValueError(f"feature indices must be a non-empty list of ints, got {list(indices)}")
    bad = [i for i in indices if not -n <= i < n]
    if bad:
        raise ValueError(f"feature indices {bad} out of range: this backbone returns {n} levels, indices 0..{n - 1} "
                         f"(or -{n}..-1 from the end)")
    indices = tuple(i % n for i in indices)
    if len(set(indices)) != len(indices):
        raise ValueError(f"feature indices {list(indices)} repeat a level; list each level once")
    return indices


class _KeepRunningStats:
    """Restores the running statistics of a module's BatchNorm layers when the block is left (the recomputation
    of an activation-checkpointed block must not count its batch twice)."""

    def __init__(self, module: nn.Module):
        self.norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]

    def __enter__(self):
        self.saved = [[b.clone() for b in m.buffers()] for m in self.norms]

    def __exit__(self, *exc):
        with torch.no_grad():
            for m, saved in zip(self.norms, self.saved, strict=True):
                for b, s in zip(m.buffers(), saved, strict=True):
                    b.copy_(s)
        return False
