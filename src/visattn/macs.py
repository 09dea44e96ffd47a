"""Multiply-accumulate counting: the "FLOPs" of the papers' tables (one multiply-add = one MAC).

:func:`count_macs` runs one forward pass under a dispatch mode and counts, per aten op:

* matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``mv``, ``addmv``): ``m * k * n`` (batched:
  times the batch), so every ``nn.Linear`` counts ``tokens * in * out``;
* convolutions (``aten.convolution``, grouped and transposed too): output elements times
  ``in_channels / groups * kernel area``;
* fused scaled-dot-product attention (the CPU flash kernel, the CUDA flash / efficient / cuDNN kernels):
  ``B * nh * L * S * (hd_qk + hd_v)``, i.e. the two products ``q k^T`` and ``attn v``;
* visattn's own kernels (dilated attention, outlook aggregation) by their definition, whatever path
  computes them: ``2 * N * k^2 * hd`` per head for dilated attention (``q . k`` and ``attn . v``) and
  ``h * w * k^4 * hd`` per head for the outlook product ``attn @ v``. The fast paths evaluate these with
  fewer or differently shaped operations; the count stays that of the operation, as in the papers.

``by_module`` books each op on the innermost module running it. Counting hooks every module, and a block whose
layers carry hooks calls them as modules (:func:`visattn._modes.plain`), so each projection is booked on its own
layer; the attention products computed by the kernels are booked on the attention module itself.

Left out, as in fvcore and the papers: bias additions, normalisation, softmax, activations, pooling,
elementwise products (CloFormer's ``q * k`` and ``attn * v`` gates), residual additions, unfold/fold and
padding. Results are exact integers for the given input; nothing is estimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .functional._counting import counting

aten = torch.ops.aten


def _mm(args, out):
    return args[0].shape[0] * args[0].shape[1] * args[1].shape[1]


def _addmm(args, out):
    return _mm(args[1:], out)


def _bmm(args, out):
    a, b = args[0], args[1]
    return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def _baddbmm(args, out):
    return _bmm(args[1:], out)


def _mv(args, out):
    return args[0].shape[0] * args[0].shape[1]


def _addmv(args, out):
    return _mv(args[1:], out)


def _conv(args, out):
    x, weight, transposed = args[0], args[1], args[6]
    kernel = math.prod(weight.shape[2:])
    if transposed:  # weight (Cin, Cout/g, *k): every input element scatters to Cout/g * k outputs
        return x.numel() * weight.shape[1] * kernel
    return out.numel() * weight.shape[1] * kernel  # weight (Cout, Cin/g, *k)


def _sdpa(args, out):
    q, k, v = args[0], args[1], args[2]
    lead = math.prod(q.shape[:-2])
    return lead * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])


_RULES = {
    aten.mm: _mm, aten.addmm: _addmm, aten.bmm: _bmm, aten.baddbmm: _baddbmm,
    aten.mv: _mv, aten.addmv: _addmv, aten.convolution: _conv,
}
for _name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
              "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"):
    if hasattr(aten, _name):
        _RULES[getattr(aten, _name)] = _sdpa


@dataclass
class MacReport:
    """Result of :func:`count_macs`: ``total`` MACs, split by op and by (innermost) module."""

    total: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    by_module: dict[str, int] = field(default_factory=dict)

    def __int__(self) -> int:
        return self.total

    def table(self) -> str:
        width = max([len(k) for k in self.by_op] + [5])
        lines = [f"{'op':<{width}}  {'MACs':>15}  share"]
        for name, n in sorted(self.by_op.items(), key=lambda kv: -kv[1]):
            lines.append(f"{name:<{width}}  {n:>15,}  {n / max(self.total, 1):6.1%}")
        lines.append(f"{'total':<{width}}  {self.total:>15,}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


class _Counter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.report = MacReport()
        self.suppress = 0
        self.stack: list[str] = [""]

    def book(self, name: str, macs: int) -> None:
        macs = int(macs)
        self.report.total += macs
        self.report.by_op[name] = self.report.by_op.get(name, 0) + macs
        module = self.stack[-1]
        self.report.by_module[module] = self.report.by_module.get(module, 0) + macs

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        rule = _RULES.get(func.overloadpacket)
        if rule is not None and self.suppress == 0:
            self.book(func.overloadpacket.__name__, rule(args, out))
        return out


def count_macs(module: torch.nn.Module, *inputs, **kwargs) -> MacReport:
    """Count the multiply-accumulates of ``module(*inputs, **kwargs)`` (see the module docstring).

    Runs one forward pass without gradients in eval mode (the training flag is restored afterwards).

    Example:
        >>> report = count_macs(HiLoAttention(64), torch.randn(1, 14, 14, 64))
        >>> report.total, report.by_op
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"count_macs expects an nn.Module, got {type(module).__name__}")
    if not inputs:
        raise ValueError("count_macs needs at least one input, e.g. count_macs(block, torch.randn(1, 56, 56, 64))")
    counter = _Counter()

    def enter(name):
        def hook(mod, args):
            counter.stack.append(name)
        return hook

    def leave(mod, args, out):
        counter.stack.pop()

    handles = []
    for name, sub in module.named_modules():
        handles.append(sub.register_forward_pre_hook(enter(name)))
        handles.append(sub.register_forward_hook(leave))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), counting(counter), counter:
            module(*inputs, **kwargs)
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return counter.report
