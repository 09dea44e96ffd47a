"""How much of a whole backbone's forward time its token mixers take, on the reference and the fast path: the
bound on what faster attention kernels can give a whole model (Amdahl: even free attention leaves the rest).

    python benchmarks/attention_share.py --size 224 --batch 8
    python benchmarks/attention_share.py --size 512 --batch 1

For each family's smallest variant: median forward latency of each path (fused for the fast path, as deployed),
the time inside the ``attn`` modules of its blocks (timed by forward hooks; the CPU runs synchronously), and
``bound = reference total / (reference total - reference attention)``: the ref/fast ratio if attention cost nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import visattn
from visattn.blocks import Block, ClassBlock

FAMILIES = ["litv2_s", "dilateformer_tiny", "volo_d1", "cloformer_xxs"]


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
          f"{'ref/fused':>9} {'bound':>6}")
    for name in args.models.split(","):
        ref = visattn.create_model(name, impl="reference", img_size=args.size).eval()
        fused = visattn.fuse(visattn.create_model(name, img_size=args.size))
        r_total, r_attn = timed(ref, x, args.repeat)
        f_total, f_attn = timed(fused, x, args.repeat)
        print(f"{name:18} {1e3 * r_total:8.1f} {1e3 * r_attn:9.1f} {r_attn / r_total:6.0%} {1e3 * f_total:9.1f} "
              f"{1e3 * f_attn:9.1f} {r_total / f_total:9.2f} {r_total / (r_total - r_attn):6.2f}", flush=True)


if __name__ == "__main__":
    main()
