"""The bound on HiLo's and CloAttention's block speed-up: time and memory of the fast block with its attention
kernels replaced by free stand-ins (outputs of the right shape, no arithmetic), beside the official formulation.

    python benchmarks/block_bound.py --dim 128 --size 28 --batch 8

What is left without the kernels (projections, pooling, padding, the AttnConv local branch, the concatenation)
is arithmetic the official formulation does as well, so ``bound = official / fast-without-attention`` is the
most any attention kernel could give; the same for peak memory (``fast-without-attention / official``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import visattn
from visattn.attention import Official
from visattn.attention import clo as clo_module
from visattn.attention import hilo as hilo_module
from visattn.memory import peak_memory


def free_attention(q, k, v, *args, **kwargs):
    return torch.zeros_like(q)  # the shape of the output, no arithmetic (zeros: no denormal or NaN slow paths)


def timed(fns: dict, x: torch.Tensor, repeat: int) -> dict:
    times = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn(x)
        for _ in range(repeat):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn(x)
                times[k].append(time.perf_counter() - t0)
    peaks = {}
    for k, fn in fns.items():
        with torch.inference_mode(), peak_memory() as mem:
            fn(x)
        peaks[k] = mem.peak / 2 ** 20
    return {k: (1e3 * statistics.median(v), peaks[k]) for k, v in times.items()}


class Stubbed:
    """Calls a block with the attention kernels of its module replaced by :func:`free_attention`."""

    def __init__(self, block, module, names):
        self.block, self.module, self.names = block, module, names

    def __call__(self, x):
        saved = {n: getattr(self.module, n) for n in self.names}
        try:
            for n in self.names:
                setattr(self.module, n, free_attention)
            return self.block(x)
        finally:
            for n, f in saved.items():
                setattr(self.module, n, f)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    x = torch.randn(args.batch, args.size, args.size, args.dim)
    print(f"dim {args.dim}, {args.size}x{args.size}, batch {args.batch}, forward; ms / peak MiB")
    print(f"{'block':6} {'official':>16} {'fast':>16} {'no attention':>16} {'ref/fast':>9} {'bound':>6} "
          f"{'mem fast/ref':>12} {'mem bound':>9}")
    for name, module, names in (("hilo", hilo_module, ("attention", "window_attention")),
                                ("clo", clo_module, ("attention",))):
        block = visattn.create_block(name, args.dim, args.heads).eval()
        r = timed({"official": Official(block), "fast": block, "free": Stubbed(block, module, names)}, x, args.repeat)
        (ro, mo), (rf, mf), (rn, mn) = r["official"], r["fast"], r["free"]
        print(f"{name:6} {ro:8.2f} / {mo:5.1f} {rf:8.2f} / {mf:5.1f} {rn:8.2f} / {mn:5.1f} {ro / rf:9.2f} "
              f"{ro / rn:6.2f} {mf / mo:12.2f} {mn / mo:9.2f}")


if __name__ == "__main__":
    main()
