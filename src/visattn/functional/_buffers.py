"""Writing products into preallocated buffers, the eager-mode remedy for page-faulting temporaries on CPU.

Under ``torch.compile`` the same results are produced with plain ops (dynamo rejects ``out=`` into strided
slices, and inductor fuses the product and the reduction itself).
"""

from __future__ import annotations

import torch

from .._modes import is_tracing


def dot_into(dst: torch.Tensor, a: torch.Tensor, b: torch.Tensor, tmp: torch.Tensor) -> None:
    """``dst = (a * b).sum(2)`` using ``tmp`` (shaped like ``a * b``) as scratch."""
    if is_tracing():
        dst.copy_((a * b).sum(2))
    else:
        torch.mul(a, b, out=tmp)
        torch.sum(tmp, 2, out=dst)
