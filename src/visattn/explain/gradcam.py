"""Grad-CAM that reads visattn's maps the right way round.

Every visattn block and backbone stage gives channels-last maps ``(B, H, W, C)``. Class-activation tools read a
layer's output as ``(B, C, H, W)``: given a channels-last map they average the gradients over ``(W, C)`` instead of
``(H, W)`` and return a plausible-looking, wrong map without any error. :func:`target_layers` names the layers to
explain, :func:`reshape_transform` gives pytorch-grad-cam the transform they need, and :func:`channels_first_view`
gives tools without a transform (Captum's ``LayerGradCam``) a module whose output is the map in NCHW.
:class:`GradCam` computes the same maps without any of those libraries.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import Block
from ..layers import ChannelsFirst, TokenSequence
from .record import attention_blocks


def to_channels_first(t: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B, C, H, W)``: the ``reshape_transform`` of channels-last layers."""
    return t.permute(0, 3, 1, 2)  # (B, C, H, W)


def target_layers(model: nn.Module, stage: int = -1) -> list[nn.Module]:
    """The layer Grad-CAM should read, as the one-element list pytorch-grad-cam takes.

    * a visattn backbone: the last block of ``stage`` (default the last; a residual block's output, channels-last;
      CloFormer's last block of stages 1-3 ends in its strided ConvFFN, so its map has the next stage's stride);
    * a :class:`~visattn.ChannelsFirst` or a network holding some: the last ``ChannelsFirst`` that runs (NCHW);
    * a visattn block or :class:`~visattn.blocks.Block` on its own: itself (channels-last).
    """
    info = getattr(model, "stage_info", None)
    if info:
        n = len(info)
        if not -n <= stage < n:
            raise ValueError(f"stage {stage} out of range: {type(model).__name__} has {n} stages (0..{n - 1}, or "
                             f"-{n}..-1 from the end)")
        container = model.get_submodule(info[stage]["module"])
        blocks = container.blocks if hasattr(container, "blocks") else list(container)
        return [blocks[-1]]
    if stage != -1:
        raise ValueError(f"stage applies to visattn backbones; {type(model).__name__} has no stages (drop stage=)")
    wrapped = [m for m in model.modules() if isinstance(m, ChannelsFirst)]
    if wrapped:
        return [wrapped[-1]]
    if isinstance(model, Block) or "" in attention_blocks(model):
        return [model]
    raise ValueError(f"{type(model).__name__} holds no visattn backbone stage, ChannelsFirst or block to explain; "
                     f"pass the layer yourself (and reshape_transform([layer]) for its layout)")


def layout(layer: nn.Module) -> str:
    """``"NHWC"`` or ``"NCHW"``: how ``layer``'s output is laid out, for the layers visattn knows."""
    if isinstance(layer, (ChannelsFirst, nn.Conv2d, nn.BatchNorm2d)):
        return "NCHW"
    if isinstance(layer, TokenSequence) or type(layer).__name__ == "ClassAttention":
        raise ValueError(f"{type(layer).__name__} gives tokens (B, N, C), not a map; explain a map layer: the block "
                         f"inside it wrapped in visattn.ChannelsFirst, or a backbone stage (target_layers(model))")
    if isinstance(layer, Block) or callable(getattr(layer, "attention_parts", None)):
        return "NHWC"
    raise ValueError(f"visattn cannot tell how {type(layer).__name__} lays out its output; pass visattn blocks, "
                     f"backbone blocks (target_layers) or ChannelsFirst layers, or write the reshape_transform")


def reshape_transform(layers) -> object | None:
    """The ``reshape_transform`` pytorch-grad-cam needs for ``layers`` (a layer or a list, e.g. from
    :func:`target_layers`): :func:`to_channels_first` for visattn's channels-last maps, ``None`` for NCHW layers.

    Example:
        >>> layers = visattn.explain.target_layers(model)
        >>> cam = GradCAM(model, layers, reshape_transform=visattn.explain.reshape_transform(layers))
    """
    layers = [layers] if isinstance(layers, nn.Module) else list(layers)
    if not layers:
        raise ValueError("reshape_transform needs the target layers (target_layers(model) gives them)")
    kinds = {layout(layer) for layer in layers}
    if len(kinds) > 1:
        raise ValueError("the target layers mix channels-last and NCHW outputs, and pytorch-grad-cam applies one "
                         "transform to all; explain them in separate calls")
    return to_channels_first if kinds == {"NHWC"} else None


@contextlib.contextmanager
def channels_first_view(layer: nn.Module):
    """A module whose output is ``layer``'s output as ``(B, C, H, W)``, for tools that take a layer and assume NCHW
    (Captum's ``LayerGradCam``, ``LayerActivation``...). For a channels-last layer a hook routes its output through an
    ``nn.Identity`` in NCHW and back, so the values are unchanged; an NCHW layer is given as it is.

    Example:
        >>> with visattn.explain.channels_first_view(visattn.explain.target_layers(model)[0]) as layer:
        ...     attributions = LayerGradCam(model, layer).attribute(images, target=3)
    """
    if layout(layer) == "NCHW":
        yield layer
        return
    view = nn.Identity()

    def hook(module, args, output):
        return view(to_channels_first(output)).permute(0, 2, 3, 1)  # (B, H, W, C), through the NCHW view

    handle = layer.register_forward_hook(hook)
    try:
        yield view
    finally:
        handle.remove()


class GradCam:
    """Grad-CAM (Selvaraju et al., 2017) on one layer: ``relu(sum_c w_c A_c)`` with ``w_c`` the spatial mean of the
    class score's gradient over channel ``c`` of the layer's map ``A``.

    A context manager, so that the model runs once (with the attention recorder, for instance) and each class
    score then costs one backward::

        with GradCam(model) as cam:
            logits = model(images)
        maps = cam(logits[:, 3])        # (B, h, w), on the layer's map; GradCam.upsample places it on the image

    Args:
        model: the network.
        layer: the layer to read (default ``target_layers(model)[0]``); its layout is handled by :func:`layout`.
    """

    def __init__(self, model: nn.Module, layer: nn.Module | None = None):
        self.layer = target_layers(model)[0] if layer is None else layer
        self.transform = reshape_transform([self.layer])
        self.output = None

    def __enter__(self):
        def hook(module, args, output):
            self.output = output
        self.handle = self.layer.register_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()
        return False

    def __call__(self, score: torch.Tensor) -> torch.Tensor:
        """The maps for ``score`` (one scalar per image, e.g. ``logits[:, c]``): ``(B, h, w)``, not normalised."""
        if self.output is None:
            raise ValueError("GradCam saw no forward of its layer; run the model inside `with GradCam(model) as cam:`")
        if not self.output.requires_grad:
            raise ValueError("the layer's output has no gradient: run the forward with autograd on (not under "
                             "torch.no_grad / inference_mode)")
        grad, = torch.autograd.grad(score.sum(), self.output, retain_graph=True)
        acts = self.output.detach()
        if self.transform is not None:
            acts, grad = self.transform(acts), self.transform(grad)  # (B, C, h, w)
        weights = grad.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        return F.relu((weights * acts).sum(dim=1))  # (B, h, w)

    @staticmethod
    def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``(B, h, w)`` maps resized (bilinear) to ``size`` and scaled to [0, 1] each, as pytorch-grad-cam shows
        them."""
        up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
        low = up.flatten(1).min(1).values[:, None, None]
        high = up.flatten(1).max(1).values[:, None, None]
        return (up - low) / (high - low).clamp_min(1e-12)
