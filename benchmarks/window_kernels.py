"""HiLo's Hi-Fi kernel: attention inside 2x2 windows (4 tokens, head dim 16), three ways, side by side.

    python benchmarks/window_kernels.py --device cpu --batch 8 --size 56
    python benchmarks/window_kernels.py --device cuda --batch 64 --size 56 --dtype bfloat16

``sdpa-1head``: ``scaled_dot_product_attention`` on ``(B*nh*nw, 1, 4, hd)`` (the fast path before RESULTS 20);
``sdpa-nw-heads``: the same with the windows as SDPA's head axis, ``(B*nh, nw, 4, hd)``; ``explicit``: one
batched product, softmax, product (what ``window_attention`` runs for windows of at most ``hd`` tokens).
Forward and forward+backward, median of round-robin repeats; a variant that raises is reported with its error.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def sdpa_one_head(q, k, v):
    Bw = q.shape[0] * q.shape[1] * q.shape[2]
    out = F.scaled_dot_product_attention(*(t.reshape(Bw, 1, *t.shape[-2:]) for t in (q, k, v)))  # (Bw, 1, L, hd)
    return out.reshape(q.shape)


def sdpa_window_heads(q, k, v):
    B, nh, nw, L, hd = q.shape
    out = F.scaled_dot_product_attention(*(t.reshape(B * nh, nw, L, hd) for t in (q, k, v)))  # (B*nh, nw, L, hd)
    return out.reshape(q.shape)


def explicit(q, k, v):
    attn = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, nh, nw, L, L)
    return attn.softmax(-1) @ v  # (B, nh, nw, L, hd)


VARIANTS = {"sdpa-1head": sdpa_one_head, "sdpa-nw-heads": sdpa_window_heads, "explicit": explicit}


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=56)
    p.add_argument("--heads", type=int, default=2, help="Hi-Fi heads")
    p.add_argument("--head-dim", type=int, default=16)
    p.add_argument("--repeat", type=int, default=10)
    a = p.parse_args()
    dtype = getattr(torch, a.dtype)
    nw = (a.size // 2) ** 2
    shape = (a.batch, a.heads, nw, 4, a.head_dim)  # (B, nh, nw, L, hd)
    qkv = [torch.randn(shape, device=a.device, dtype=dtype, requires_grad=True) for _ in range(3)]
    g = torch.randn(shape, device=a.device, dtype=dtype)
    ref = explicit(*(t.detach().double() for t in qkv))

    def fwd(fn):
        with torch.no_grad():
            fn(*qkv)

    def fwdbwd(fn):
        fn(*qkv).backward(g)

    times, errors = {}, {}
    for name, fn in VARIANTS.items():
        try:
            out = fn(*qkv)
            errors[name] = f"max err {(out.double() - ref).abs().max().item():.2e}"
            for mode in (fwd, fwdbwd):
                mode(fn)
            sync(a.device)
        except Exception as err:  # noqa: BLE001 - a failing backend is a result here
            errors[name] = f"FAILS: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
    ok = [n for n in VARIANTS if not errors[n].startswith("FAILS")]
    for mode in (fwd, fwdbwd):
        samples = {n: [] for n in ok}
        for _ in range(a.repeat):
            for n in ok:
                sync(a.device)
                t0 = time.perf_counter()
                mode(VARIANTS[n])
                sync(a.device)
                samples[n].append(1e3 * (time.perf_counter() - t0))
        for n in ok:
            times[(n, mode.__name__)] = statistics.median(samples[n])
    print(f"window attention {shape} {a.dtype} on {a.device} "
          f"({torch.cuda.get_device_name() if a.device == 'cuda' else 'cpu'}, torch {torch.__version__})")
    print(f"{'variant':15} {'fwd ms':>9} {'fwdbwd ms':>10}  note")
    for n in VARIANTS:
        f = times.get((n, "fwd")), times.get((n, "fwdbwd"))
        cells = [f"{t:9.3f}" if t is not None else f"{'-':>9}" for t in f]
        print(f"{n:15} {cells[0]} {cells[1]:>10}  {errors[n]}")


if __name__ == "__main__":
    main()
