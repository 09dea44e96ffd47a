"""Command line: ``visattn`` prints every block's parameters, MACs and forward latency at a default size."""

from __future__ import annotations

import argparse
import platform
import sys

import torch

from . import __version__
from .bench import format_table, summary_rows


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", " ").split()
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 56 or 56x40, got {text!r}") from None
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"size must look like 56 or 56x40, got {text!r}")
    return dims


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="visattn", description=__doc__)
    parser.add_argument("--dim", type=int, default=64, help="channels C (default 64)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    parser.add_argument("--size", type=_size, default=(56, 56), help="feature map HxW (default 56x56)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--repeat", type=int, default=10, help="timed forward passes per block (default 10)")
    args = parser.parse_args(argv)
    H, W = args.size
    print(f"visattn {__version__} | torch {torch.__version__} | {platform.processor() or platform.machine()} | "
          f"{torch.get_num_threads()} threads")
    print(f"blocks at dim {args.dim}, {args.heads} heads, {H}x{W}, batch {args.batch}, float32, fast path, "
          f"inference; latency = median of {args.repeat}\n")
    try:
        rows = summary_rows(args.dim, args.heads, (H, W), args.batch, args.repeat)
    except ValueError as err:
        parser.error(str(err))
    for r in rows:
        r["gmacs"] = r["macs"] / 1e9
    print(format_table(rows, [("block", "block", ""), ("setting", "setting", ""), ("params", "params", ",d"),
                              ("gmacs", "GMACs", ".3f"), ("latency_ms", "latency ms", ".2f")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
