"""``fuse(model)``: exact inference-time folds, called explicitly, never behind ``forward``'s back.

What it does (each fold changes outputs by float rounding only; ``tests/test_fuse.py`` holds every family to that):

* **BatchNorm into the convolution before it** (``Conv2d -> BatchNorm2d`` inside any ``nn.Sequential``: the stems,
  DilateFormer's merging, CloFormer's shortcut): the running statistics become the convolution's weight and bias,
  the BatchNorm becomes ``nn.Identity`` (one pass over the largest maps of the network less per layer).
* **A norm's affine into the projections that read it**: in a pre-norm block, ``LayerNorm``/``GroupNorm(1, C)``
  ``y = g * xhat + b`` feeds linear layers only; ``W y + c = (W g) xhat + (W b + c)``, so ``g`` and ``b`` move into
  those layers' weights and the norm keeps only its normalisation. Folded where it is exact on every input size:
  ``norm2`` into the MLP's first layer in every block, ``norm1`` into the input projections of MHSA, class
  attention, dilated, outlook and CloFormer attention (their zero padding and pooling act after the projection
  or commute with a per-channel affine). Not folded: HiLo's ``norm1`` (HiLo zero-pads the *normalised* map when
  the size is not a multiple of its window, and a padded zero is not ``b``).
* **Precomputed weight concatenations**: HiLo's ``[h_qkv | l_q]`` input projection is built once instead of per
  call.

The returned model is in eval mode with ``requires_grad=False`` parameters: it is an inference/export artefact.
Its ``state_dict`` holds folded weights, so save and load the unfused model for training and for official
checkpoints. The original is left untouched unless ``inplace=True``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .attention import (
    ClassAttention,
    CloAttention,
    HiLoAttention,
    MultiHeadSelfAttention,
    MultiScaleDilatedAttention,
    OutlookAttention,
)
from .blocks import Block, ClassBlock
from .layers import ConvFFN, DWConvMlp, GroupNorm1, Mlp

# the projections that read norm1's output, for attention classes where folding the affine is exact at any size
_ATTN_INPUTS = {
    MultiHeadSelfAttention: lambda a: [a.qkv],
    ClassAttention: lambda a: [a.q, a.kv],
    MultiScaleDilatedAttention: lambda a: [a.qkv],
    OutlookAttention: lambda a: [a.v, a.attn],
    CloAttention: lambda a: [*a.qkvs, *([a.global_q, a.global_kv] if a.global_heads else [])],
}
_MLP_INPUTS = (Mlp, DWConvMlp, ConvFFN)


def fuse(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold BatchNorm into convolutions and norm affines into the projections after them, and precompute weight
    concatenations, for inference. Returns the fused model (a copy unless ``inplace``), in eval mode."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse expects the model, an nn.Module, got {type(model).__name__}; build it first, e.g. "
                        f"visattn.fuse(visattn.create_model(name))")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    with torch.no_grad():
        for module in list(model.modules()):
            if isinstance(module, nn.Sequential):
                _fold_batchnorms(module)
            if isinstance(module, (Block, ClassBlock)):
                _fold_block_norms(module)
            if isinstance(module, HiLoAttention):
                module.precompute_projections()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _fold_batchnorms(seq: nn.Sequential) -> None:
    for i in range(len(seq) - 1):
        conv, bn = seq[i], seq[i + 1]
        if type(conv) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats \
                and bn.running_var is not None and bn.num_features == conv.out_channels:
            seq[i] = _conv_with_bn(conv, bn)
            seq[i + 1] = nn.Identity()


def _conv_with_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale = bn.running_var.add(bn.eps).rsqrt()  # (C_out,)
    if bn.affine:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale + (bn.bias if bn.affine else 0.0)  # (C_out,)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    fused.bias.copy_(shift + (conv.bias * scale if conv.bias is not None else 0.0))
    return fused


def _fold_block_norms(block: nn.Module) -> None:
    attn = getattr(block, "attn", None)
    targets = _ATTN_INPUTS.get(type(attn))
    if targets is not None:
        _fold_affine(block.norm1, targets(attn))
    if isinstance(block.mlp, _MLP_INPUTS):
        _fold_affine(block.norm2, [block.mlp.fc1])


def _fold_affine(norm: nn.Module, layers: list[nn.Module]) -> None:
    """Move a per-channel affine ``g * xhat + b`` of ``norm`` into the linear layers (or 1x1 convs) reading it."""
    if not (isinstance(norm, nn.LayerNorm) and len(norm.normalized_shape) == 1 or type(norm) is GroupNorm1):
        return
    g, b = norm.weight, norm.bias
    if g is None and b is None:
        return  # already folded (or a norm without affine)
    for layer in layers:
        weight = layer.weight.view(layer.weight.shape[0], -1)  # (out, C): a Linear or a 1x1 conv's weight
        if b is not None:
            shift = weight @ b  # (out,): computed before g scales the weight
            if layer.bias is None:
                layer.bias = nn.Parameter(shift)
            else:
                layer.bias.add_(shift)
        if g is not None:
            weight.mul_(g)
    norm.weight, norm.bias = None, None
