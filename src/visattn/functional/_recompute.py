"""Higher derivatives through the kernels' custom autograd functions: when a backward must itself be
differentiable (``create_graph=True``), the gradient is recomputed from plain differentiable operations."""

from __future__ import annotations

import torch


def differentiable_grads(fn, tensors, args, gout):
    """Gradients of ``fn(*tensors, *args)`` for ``gout`` as differentiable functions of ``tensors`` (None for a
    tensor that needs none)."""
    wanted = [t for t in tensors if t.requires_grad]
    with torch.enable_grad():
        grads = iter(torch.autograd.grad(fn(*tensors, *args), wanted, gout, create_graph=True, allow_unused=True))
    return tuple(next(grads) if t.requires_grad else None for t in tensors)
