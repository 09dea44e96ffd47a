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


def can_overwrite(t: torch.Tensor) -> bool:
    """True when a freshly computed ``t`` may be overwritten in place instead of allocating the next result: eager
    inference (autograd off, not tracing) and plain contiguous memory. On CPU a fresh tensor of tens of MB
    page-faults on first touch and costs several times the arithmetic written into it."""
    return not torch.is_grad_enabled() and not is_tracing() and t.is_contiguous()


def residual_add(x: torch.Tensor, branch: torch.Tensor, inplace: bool = True) -> torch.Tensor:
    """``x + branch``, written into ``branch`` (a block's fresh output) where :func:`can_overwrite` allows it and
    ``branch`` neither aliases ``x`` nor is held elsewhere (``inplace=False``: a forward hook may hold it)."""
    if (not inplace or not can_overwrite(branch) or branch.shape != x.shape or branch.dtype != x.dtype
            or branch.untyped_storage()._cdata == x.untyped_storage()._cdata):  # no data_ptr: fakes warn
        return x + branch
    return branch.add_(x)
