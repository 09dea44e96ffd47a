"""How much of a whole backbone's forward time its token mixers take, on the reference and the fast path: the
bound on what faster attention kernels can give a whole model (Amdahl: even free attention leaves the rest).

    python benchmarks/attention_share.py --size 224 --batch 8
    python benchmarks/attention_share.py --size 512 --batch 1

For each family's smallest variant: median forward latency of each path (fused for the fast path, as deployed),
the time inside the ``attn`` modules of its blocks (timed by forward hooks; the CPU runs synchronously), and two
bounds on the ref/fast ratio: ``module bound = reference total / (reference total - reference attention)`` (if
the whole token mixers cost nothing, projections and CloFormer's conv branch included) and ``kernel bound =
reference total / fused total with free attention kernels`` (the functional kernels replaced by stand-ins that
return zeros of the right shape: what the rest of the fast model costs, so the most that any
attention kernel could give).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import visattn
from visattn.attention import clo, dilated, hilo, mhsa, outlook
from visattn.blocks import Block, ClassBlock

FAMILIES = ["litv2_s", "dilateformer_tiny", "volo_d1", "cloformer_xxs"]


KERNELS = [(hilo, "attention", 0), (hilo, "window_attention", 0), (clo, "attention", 0), (mhsa, "attention", 0),
           (dilated, "dilated_attention", 0), (outlook, "outlook_attention", 1), (outlook, "outlook_aggregate", 1)]


class free_kernels:  # noqa: N801  (a context manager)
    """Replace the attention kernels the blocks call by stand-ins returning ``empty_like`` of the output's shape."""

    def __enter__(self):
        self.saved = [(mod, name, getattr(mod, name)) for mod, name, _ in KERNELS]
        for mod, name, like in KERNELS:
            setattr(mod, name, lambda *args, like=like, **kwargs: torch.zeros_like(args[like]))

    def __exit__(self, *exc):
        for mod, name, fn in self.saved:
            setattr(mod, name, fn)


def timed(model, x, repeat):
    spent = []

    def pre(module, args):
        module._t0 = time.perf_counter()

    def post(module, args, out):
        spent.append(time.perf_counter() - module._t0)

    mixers = [m.attn for m in model.modules() if isinstance(m, (Block, ClassBlock)) and hasattr(m, "attn")]
    handles = [h for m in mixers for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    totals, shares = [], []
    with torch.inference_mode():
        model(x)
        for _ in range(repeat):
            spent.clear()
            t0 = time.perf_counter()
            model(x)
            totals.append(time.perf_counter() - t0)
            shares.append(sum(spent))
    for h in handles:
        h.remove()
    return statistics.median(totals), statistics.median(shares)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--models", default=",".join(FAMILIES))
    args = parser.parse_args()
    x = torch.randn(args.batch, 3, args.size, args.size)
    print(f"{'model':18} {'ref ms':>8} {'ref attn':>9} {'share':>6} {'fused ms':>9} {'fast attn':>9} "
          f"{'ref/fused':>9} {'module bound':>12} {'no-kernel ms':>12} {'kernel bound':>12}")
    for name in args.models.split(","):
        ref = visattn.create_model(name, impl="reference", img_size=args.size).eval()
        fused = visattn.fuse(visattn.create_model(name, img_size=args.size))
        r_total, r_attn = timed(ref, x, args.repeat)
        f_total, f_attn = timed(fused, x, args.repeat)
        with free_kernels():
            n_total, _ = timed(fused, x, args.repeat)
        print(f"{name:18} {1e3 * r_total:8.1f} {1e3 * r_attn:9.1f} {r_attn / r_total:6.0%} {1e3 * f_total:9.1f} "
              f"{1e3 * f_attn:9.1f} {r_total / f_total:9.2f} {r_total / (r_total - r_attn):12.2f} "
              f"{1e3 * n_total:12.1f} {r_total / n_total:12.2f}", flush=True)


if __name__ == "__main__":
    main()
