"""Writing products into preallocated buffers, the eager-mode remedy for page-faulting temporaries on CPU.

While tracing (``torch.compile``, ``torch.export``, the TorchScript tracer of the legacy ONNX exporter) the same
results are produced with plain ops (dynamo rejects ``out=`` into strided slices, ONNX has no ``out=`` operators, and
inductor fuses the product and the reduction itself).
"""

from __future__ import annotations

import torch

from .._modes import is_tracing


def mul_into(tmp: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a * b`` written into ``tmp`` (shaped like the product); a fresh tensor while tracing."""
    if is_tracing():
        return a * b
    return torch.mul(a, b, out=tmp)


def dot_into(dst: torch.Tensor, a: torch.Tensor, b: torch.Tensor, tmp: torch.Tensor) -> None:
    """``dst = (a * b).sum(2)`` using ``tmp`` (shaped like ``a * b``) as scratch."""
    if is_tracing():
        dst.copy_((a * b).sum(2))
    else:
        torch.mul(a, b, out=tmp)
        torch.sum(tmp, 2, out=dst)


def residual_add(x: torch.Tensor, branch: torch.Tensor, inplace: bool = True) -> torch.Tensor:
    """``x + branch``. In eager inference (autograd off) the sum is written into ``branch``, a block's freshly
    computed output, instead of a new tensor: on CPU a fresh tensor of tens of MB page-faults on first touch and
    costs several times the addition itself. Anything that could alias ``x`` or be shared gets the plain sum, and so
    does a branch the caller marks ``inplace=False`` (one a forward hook may hold)."""
    if (not inplace or torch.is_grad_enabled() or is_tracing() or branch.shape != x.shape or branch.dtype != x.dtype
            or not branch.is_contiguous() or branch.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()):
        return x + branch
    return branch.add_(x)
