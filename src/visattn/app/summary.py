"""``visattn blocks`` (the default command): each paper block's parameters, MACs and forward latency."""

from __future__ import annotations

from .common import format_table, header, parse_size, positive
from .timing import summary_rows


def add_arguments(parser) -> None:
    parser.add_argument("--dim", type=positive(int), default=64, help="channels C (default 64)")
    parser.add_argument("--heads", type=positive(int), default=4, help="attention heads (default 4)")
    parser.add_argument("--size", type=parse_size, default=(56, 56), help="feature map HxW (default 56x56)")
    parser.add_argument("--batch", type=positive(int), default=1, help="batch size (default 1)")
    parser.add_argument("--repeat", type=positive(int), default=10, help="timed forward passes per block (default 10)")


def run(args, parser) -> int:
    H, W = args.size
    print(header())
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
