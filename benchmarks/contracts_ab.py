"""Old vs new fast paths in one process (issue 20's module contracts: blocks now check whether their layers are
plain before reading their weights, and call them otherwise). The old package is a copy of an earlier commit
imported under another name:

    git worktree add /tmp/old e7e152e && mkdir -p /tmp/oldpkg && cp -r /tmp/old/src/visattn /tmp/oldpkg/visattn_old
    PYTHONPATH=/tmp/oldpkg python3 benchmarks/contracts_ab.py

Same weights in both, calls interleaved (old, new, old, new ...), medians of the per-round times.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import visattn_old

import visattn

CASES = [(b, s, n) for b in ("hilo", "dilated", "outlook", "clo") for s in (28, 56) for n in (1, 8)]
MODELS = ["litv2_s", "dilateformer_tiny", "volo_d1", "cloformer_xxs"]


def pair(make_old, make_new):
    torch.manual_seed(0)
    new = make_new().eval()
    old = make_old().eval()
    old.load_state_dict(new.state_dict())
    return old, new


def time_pair(old, new, x, mode: str, rounds: int) -> tuple[float, float]:
    def step(m):
        if mode == "fwd":
            with torch.inference_mode():
                m(x)
        else:
            xi = x.clone().requires_grad_(True)
            m(xi).sum().backward()
    for _ in range(2):
        step(old)
        step(new)
    times = {id(old): [], id(new): []}
    for _ in range(rounds):
        for m in (old, new):
            t0 = time.perf_counter()
            step(m)
            times[id(m)].append(time.perf_counter() - t0)
    return statistics.median(times[id(old)]) * 1e3, statistics.median(times[id(new)]) * 1e3


def main(rounds: int = 15):
    print(f"<!-- torch {torch.__version__}, {torch.get_num_threads()} threads, rounds {rounds} -->")
    print("| case | mode | old ms | new ms | new/old |")
    print("|---|---|---|---|---|")
    ratios = []
    for name, size, batch in CASES:
        old, new = pair(lambda n=name: visattn_old.create_block(n, 64, 4),
                        lambda n=name: visattn.create_block(n, 64, 4))
        x = torch.randn(batch, size, size, 64)
        for mode in ("fwd", "fwdbwd"):
            a, b = time_pair(old, new, x, mode, rounds)
            ratios.append(b / a)
            print(f"| {name} {size}x{size} b{batch} | {mode} | {a:.2f} | {b:.2f} | {b / a:.2f} |", flush=True)
    for name in MODELS:
        old, new = pair(lambda n=name: visattn_old.create_model(n), lambda n=name: visattn.create_model(n))
        x = torch.randn(1, 3, 224, 224)
        a, b = time_pair(old, new, x, "fwd", max(5, rounds // 3))
        ratios.append(b / a)
        print(f"| {name} 224 b1 | fwd | {a:.2f} | {b:.2f} | {b / a:.2f} |", flush=True)
    print(f"\nnew/old: median {statistics.median(ratios):.3f}, min {min(ratios):.2f}, max {max(ratios):.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
