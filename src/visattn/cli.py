"""Command line of visattn.

``visattn`` (or ``visattn blocks``) prints every block's parameters, MACs and forward latency at a default size;
``visattn bench`` runs the benchmark sweep (fast path beside reference path; table, CSV, JSON, PNG);
``visattn models`` prints the backbone table: parameters and MACs counted here beside the papers' figures;
``visattn train`` / ``eval`` / ``export`` train a backbone (``torchrun -m visattn train`` for several processes),
score a checkpoint, and export to ONNX.
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


def _list(text: str) -> list[str]:
    return [t for t in text.replace(" ", ",").split(",") if t]


def _sizes(text: str) -> list[tuple[int, int]]:
    return [_size(t) for t in _list(text)]


def _ints(text: str) -> list[int]:
    try:
        values = [int(t) for t in _list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def cmd_bench(args, parser) -> int:
    from pathlib import Path

    from .bench import BLOCKS, PAPER_BLOCKS, Case, Progress, measure_group
    from .models import list_models
    from .report import add_ratios, machine_info, table, write_csv, write_json, write_plot

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    blocks = _list(args.blocks) if args.blocks else ([] if args.models else list(PAPER_BLOCKS))
    models = _list(args.models) if args.models else []
    for b in blocks:
        if b not in BLOCKS:
            parser.error(f"unknown block {b!r}; choose from {', '.join(BLOCKS)}")
    for m in models:
        if m not in list_models():
            parser.error(f"unknown model {m!r}; choose from {', '.join(list_models())}")
    impls = ["fast", "reference"] if args.impl == "both" else [args.impl]
    modes = ["fwd", "fwdbwd"] if args.mode == "both" else [args.mode]
    groups = []
    for name in blocks:
        for size in args.sizes:
            for batch in args.batch:
                for mode in modes:
                    groups.append([Case("block", name, size, batch, impl, mode, args.dim, args.heads, args.dtype,
                                        device) for impl in impls])
    model_batches = args.model_batch or ([1, 64] if device.startswith("cuda") else [1, 8])
    for name in models:
        for batch in model_batches:
            for mode in modes:
                groups.append([Case("model", name, (args.model_size,) * 2, batch, impl, mode, dtype=args.dtype,
                                    device=device) for impl in impls])
    meta = machine_info(device)
    print(_header())
    print(f"device {device}, {args.dtype}; latency = median of {args.repeat} round-robin repeats after "
          f"{args.warmup} warm-up calls; peak = tensors allocated during one call\n", flush=True)
    progress = Progress(len(groups))
    rows = []
    for group in groups:
        c = group[0]
        try:
            rows += measure_group(group, args.warmup, args.repeat)
        except (RuntimeError, torch.OutOfMemoryError) as err:
            if "memory" not in str(err).lower():
                raise
            rows += [dict(kind=g.kind, name=g.name, size=g.size, batch=g.batch, impl=g.impl, mode=g.mode, dim=g.dim,
                          heads=g.heads, dtype=g.dtype, device=g.device, error="out of memory") for g in group]
        progress.step(f"{c.name} {c.size[0]}x{c.size[1]} B{c.batch} {c.mode}")
    ok = add_ratios([r for r in rows if "error" not in r])
    print(table(ok))
    for r in rows:
        if "error" in r:
            print(f"{r['name']} {r['size'][0]}x{r['size'][1]} B{r['batch']} {r['mode']} {r['impl']}: {r['error']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "bench.csv")
    write_json(rows, meta, out / "bench.json")
    written = ["bench.csv", "bench.json"]
    if not args.no_plot:
        if write_plot(ok, out / "bench.png"):
            written.append("bench.png")
        else:
            print("(no plot: install the plot extra, pip install 'visattn[plot]')")
    print(f"\nwrote {', '.join(str(out / w) for w in written)}")
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
    bench = sub.add_parser("bench", help="benchmark sweep: blocks (and backbones), fast beside reference path")
    bench.add_argument("--blocks", help="comma-separated blocks (default: the four paper blocks; also "
                                        "window, sra, mhsa)")
    bench.add_argument("--sizes", type=_sizes, default=[(28, 28), (56, 56), (80, 48)],
                       help="feature-map sizes, e.g. 28,56,80x48 (default)")
    bench.add_argument("--batch", type=_ints, default=[1, 8], help="batch sizes (default 1,8)")
    bench.add_argument("--dim", type=int, default=64, help="channels (default 64)")
    bench.add_argument("--heads", type=int, default=4, help="heads (default 4)")
    bench.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    bench.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    bench.add_argument("--mode", choices=["fwd", "fwdbwd", "both"], default="both",
                       help="forward only, forward+backward, or both (default)")
    bench.add_argument("--impl", choices=["fast", "reference", "both"], default="both")
    bench.add_argument("--models", help="comma-separated backbones to time (images/s)")
    bench.add_argument("--model-size", type=int, default=224, help="backbone input size (default 224)")
    bench.add_argument("--model-batch", type=_ints, help="backbone batch sizes (default 1,8 on CPU, 1,64 on GPU)")
    bench.add_argument("--warmup", type=int, default=2)
    bench.add_argument("--repeat", type=int, default=5)
    bench.add_argument("--out", default="bench-out", help="folder for bench.csv, bench.json, bench.png")
    bench.add_argument("--no-plot", action="store_true")
    bench.set_defaults(func=cmd_bench)
    models = sub.add_parser("models", help="backbone parameters and MACs beside the papers' tables")
    models.add_argument("pattern", nargs="?", default="*", help="shell pattern of model names (default: all)")
    models.add_argument("--resolution", type=int, default=224, help="square input size (default 224)")
    models.add_argument("--no-extra", action="store_true", help="skip the fine-tuned high-resolution rows")
    models.set_defaults(func=cmd_models)
    from . import evaluate, export, train

    for name, module, text in (("train", train, "train a backbone (torchrun for several processes)"),
                               ("eval", evaluate, "top-1 of a checkpoint"),
                               ("export", export, "ONNX export with dynamic batch/size, checked by onnxruntime")):
        command = sub.add_parser(name, help=text, description=module.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(func=module.run)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["blocks", *argv]
    args = parser.parse_args(argv)
    return args.func(args, parser)


if __name__ == "__main__":
    sys.exit(main())
