"""Constructor plumbing every attention module shares."""

from __future__ import annotations

from torch import nn

from .. import _validate


def setup_heads(module: nn.Module, dim: int, num_heads: int, qk_scale, attn_drop: float, proj_drop: float,
                impl: str, qkv_bias: bool = False) -> None:
    """Check and store ``dim``, ``num_heads``, ``head_dim``, ``scale`` (``qk_scale`` or ``hd ** -0.5``),
    ``attn_drop`` (a probability, applied by the kernels), ``impl`` and ``proj_drop`` (an ``nn.Dropout``); check
    that ``qkv_bias`` is a bool."""
    _validate.flag("qkv_bias", qkv_bias)
    module.head_dim = _validate.heads(dim, num_heads)
    module.dim, module.num_heads = dim, num_heads
    qk_scale = _validate.qk_scale(qk_scale)
    module.scale = qk_scale if qk_scale is not None else module.head_dim ** -0.5
    module.attn_drop = _validate.probability("attn_drop", attn_drop)
    module.impl = _validate.impl(impl)
    module.proj_drop = nn.Dropout(_validate.probability("proj_drop", proj_drop))


def dropout_p(module: nn.Module) -> float:
    """The attention-dropout probability to apply now: ``attn_drop`` in training, 0 in evaluation."""
    return module.attn_drop if module.training else 0.0
