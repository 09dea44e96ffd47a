"""Command line of visattn.

``visattn`` (or ``visattn blocks``) prints every block's parameters, MACs and forward latency at a default size;
``visattn models`` prints the backbone table: parameters and MACs counted here beside the papers' figures.
"""

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


def _header() -> str:
    return (f"visattn {__version__} | torch {torch.__version__} | {platform.processor() or platform.machine()} | "
            f"{torch.get_num_threads()} threads")


def cmd_blocks(args, parser) -> int:
    H, W = args.size
    print(_header())
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


def cmd_models(args, parser) -> int:
    from .zoo import model_rows

    print(_header())
    print(f"backbones: parameters and multiply-adds counted by visattn.count_macs at {args.resolution}x"
          f"{args.resolution} (batch 1), beside the papers' figures\n")
    rows = model_rows(args.pattern, args.resolution, extra_resolutions=not args.no_extra)
    if not rows:
        parser.error(f"no model matches {args.pattern!r}")
    print(format_table(rows, [("model", "model", ""), ("params_m", "params M", ".2f"),
                              ("paper_params_m", "paper M", ".2f"), ("gmacs", "GMACs", ".2f"),
                              ("paper_gmacs", "paper G", ""), ("diff", "diff", ""), ("top1", "top-1", ".1f"),
                              ("note", "note", "")]))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="visattn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    blocks = sub.add_parser("blocks", help="parameters, MACs and latency of each block (the default command)")
    blocks.add_argument("--dim", type=int, default=64, help="channels C (default 64)")
    blocks.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    blocks.add_argument("--size", type=_size, default=(56, 56), help="feature map HxW (default 56x56)")
    blocks.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    blocks.add_argument("--repeat", type=int, default=10, help="timed forward passes per block (default 10)")
    blocks.set_defaults(func=cmd_blocks)
    models = sub.add_parser("models", help="backbone parameters and MACs beside the papers' tables")
    models.add_argument("pattern", nargs="?", default="*", help="shell pattern of model names (default: all)")
    models.add_argument("--resolution", type=int, default=224, help="square input size (default 224)")
    models.add_argument("--no-extra", action="store_true", help="skip the fine-tuned high-resolution rows")
    models.set_defaults(func=cmd_models)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["blocks", *argv]
    args = parser.parse_args(argv)
    return args.func(args, parser)


if __name__ == "__main__":
    sys.exit(main())
