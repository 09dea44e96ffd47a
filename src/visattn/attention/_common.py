"""Constructor plumbing every attention module shares."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class AttentionPart:
    """One attention computation of a block, in the order the block runs them: what
    :func:`visattn.explain.record_attention` pairs with each map the kernels report, and where that map lies.

    ``layout`` says how the recorded tensor is laid out (``B`` batch, ``nh`` the part's heads):

    * ``"window"``: ``(B, nh, nw, ws*ws, ws*ws)``, softmax over non-overlapping ``ws x ws`` windows of the map
      zero-padded to ``key_size`` (row-major windows, row-major positions inside them);
    * ``"global"``: ``(B, nh, H*W, h*w)``, every query to a ``key_size = (h, w)`` grid of keys, each averaged over
      ``key_cell`` map cells (pooled keys; ``(1, 1)``: plain self-attention);
    * ``"dilated"``: ``(B, nh, H, W, k*k)``, neighbour ``a*k + b`` at offset ``((a - k//2) r, (b - k//2) r)``;
    * ``"outlook"``: ``(B, nh, h, w, k*k, k*k)``, window ``(i, j)`` of the ``key_size`` grid starting at map cell
      ``(i*s - p, j*s - p)``, indexed ``[m, n]``: position ``m`` gathers from position ``n``;
    * ``"gate"``: ``(B, H, W, nh*hd)``, CloFormer's local gates ``tanh(...)`` (not a softmax: no keys);
    * ``"class"``: ``(B, nh, 1, 1 + N)``, a class token's softmax over itself and the ``N`` tokens.
    """

    name: str  # "hifi", "lofi", "dilation 2", "outlook", "local 5x5", "global", "window", "reduced", "class"
    layout: str
    heads: tuple[int, int]  # [first, stop) of the block's heads
    size: tuple[int, ...]  # the query map (H, W); (N,) tokens for "class"
    key_size: tuple[int, int] | None = None
    key_cell: tuple[int, int] = (1, 1)
    window: int = 0
    kernel_size: int = 0
    dilation: int = 0
    padding: int = 0
    stride: int = 0

    @property
    def report(self) -> str:
        """The kernel report this part pairs with."""
        return {"window": "softmax", "global": "softmax", "class": "softmax"}.get(self.layout, self.layout)
