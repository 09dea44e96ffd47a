"""Constructor plumbing shared by the attention modules."""

from __future__ import annotations

from torch import nn

from .. import _validate


def setup_heads(module: nn.Module, dim: int, num_heads: int, qk_scale, attn_drop: float, proj_drop: float,
                impl: str) -> None:
    """Check and store ``dim``, ``num_heads``, ``head_dim``, ``scale``, ``attn_drop``, ``impl`` and ``proj_drop``."""
    module.head_dim = _validate.heads(dim, num_heads)
    module.dim, module.num_heads = dim, num_heads
    module.scale = qk_scale if qk_scale is not None else module.head_dim ** -0.5
    module.attn_drop = _validate.probability("attn_drop", attn_drop)
    module.impl = _validate.impl(impl)
    module.proj_drop = nn.Dropout(_validate.probability("proj_drop", proj_drop))
