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
