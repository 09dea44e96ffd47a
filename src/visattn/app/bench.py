"""``visattn bench``: blocks (and backbones) at several sizes and batches, fast path beside the official
formulation; a table on stdout, ``bench.csv``, ``bench.json`` (with the machine) and ``bench.png``."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from ..attention import list_blocks
from ..models import list_models
from . import cpu_bf16
from .common import Progress, header, parse_ints, parse_list, parse_sizes, positive, threads, threads_arg
from .report import add_ratios, machine_info, table, write_csv, write_json, write_plot
from .runtimes import RUNTIMES
from .timing import Case, machine_noise, measure_group


def add_arguments(parser) -> None:
    parser.add_argument("--blocks", help="comma-separated blocks (default: the four paper blocks; also "
                                         "hilo_lit, window, sra, mhsa)")
    parser.add_argument("--sizes", type=parse_sizes, default=[(28, 28), (56, 56), (80, 48)],
                        help="feature-map sizes, e.g. 28,56,80x48 (default)")
    parser.add_argument("--batch", type=parse_ints, default=[1, 8], help="batch sizes (default 1,8)")
    parser.add_argument("--dim", type=positive(int), default=64, help="channels (default 64)")
    parser.add_argument("--heads", type=positive(int), default=4, help="heads (default 4)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                        help="dtype of parameters and inputs (default float32)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--mode", choices=["fwd", "fwdbwd", "both"], default="both",
                        help="forward only, forward+backward, or both (default)")
    parser.add_argument("--impl", choices=["fast", "reference", "both"], default="both",
                        help="paths to time: the fast path, the official formulation (reference), or both (default)")
    parser.add_argument("--runtime", type=_runtimes, default=["eager"],
                        help="comma-separated runtimes of the fast path: eager (default), compile (torch.compile; "
                             "the first-call column holds the compile time), onnxruntime (forward only; needs the "
                             "onnx extra). Backbones also get a 'fused' row (visattn.fuse) in forward mode")
    parser.add_argument("--models", help="comma-separated backbones to time (images/s)")
    parser.add_argument("--model-size", type=positive(int, 32), default=224, help="backbone input size (default 224)")
    parser.add_argument("--model-batch", type=parse_ints, help="backbone batch sizes (default 1,8 on CPU, 1,64 on GPU)")
    parser.add_argument("--peer", choices=["timm"], help="also time timm's implementation of the --models (VOLO "
                                                          "variants; same weights; needs timm)")
    parser.add_argument("--threads", type=threads_arg, default="auto",
                        help="CPU threads: auto (default: the cores not busy at the start) or N")
    parser.add_argument("--warmup", type=positive(int, 0), default=2, help="untimed calls per case first (default 2)")
    parser.add_argument("--repeat", type=positive(int), default=5,
                        help="timed round-robin rounds; the figure is their median (default 5)")
    parser.add_argument("--out", default="bench-out", help="folder for bench.csv, bench.json, bench.png")
    parser.add_argument("--no-plot", action="store_true", help="write no bench.png")


def _runtimes(text: str) -> list[str]:
    names = parse_list(text)
    bad = [n for n in names if n not in RUNTIMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown runtime(s) {bad or text!r}; choose from {', '.join(RUNTIMES)}")
    return list(dict.fromkeys(names))


def _with_runtimes(cases: list[Case], runtimes: list[str]) -> list[Case]:
    """A group's cases plus the fast path's other forms: for backbone inference the fused model (eager, then the
    other runtimes), otherwise the fast path under the other runtimes (onnxruntime for inference only)."""
    base = next((c for c in cases if c.impl == "fast"), None)
    if base is None:
        return cases
    inference = base.mode == "fwd"
    impl = "fused" if base.kind == "model" and inference else "fast"
    extra = [replace(base, impl="fused")] if impl == "fused" else []
    extra += [replace(base, impl=impl, runtime=rt) for rt in runtimes
              if rt != "eager" and (inference or rt != "onnxruntime")]
    return cases + extra


def _groups(args, device: str) -> list[list[Case]]:
    blocks = parse_list(args.blocks) if args.blocks else ([] if args.models else list_blocks(paper_only=True))
    models = parse_list(args.models) if args.models else []
    impls = ["fast", "reference"] if args.impl == "both" else [args.impl]
    model_impls = impls + ([args.peer] if args.peer else [])
    modes = ["fwd", "fwdbwd"] if args.mode == "both" else [args.mode]
    groups = []
    for name in blocks:
        for size in args.sizes:
            for batch in args.batch:
                for mode in modes:
                    groups.append(_with_runtimes([Case("block", name, size, batch, impl, mode, args.dim, args.heads,
                                                       args.dtype, device) for impl in impls], args.runtime))
    model_batches = args.model_batch or ([1, 64] if device.startswith("cuda") else [1, 8])
    for name in models:
        for batch in model_batches:
            for mode in modes:
                groups.append(_with_runtimes([Case("model", name, (args.model_size,) * 2, batch, impl, mode,
                                                   dtype=args.dtype, device=device) for impl in model_impls],
                                             args.runtime))
    return groups


def run(args, parser) -> int:
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not (device == "cuda" or device.startswith("cuda:")):
        parser.error(f"--device {device!r}: visattn bench measures cpu or cuda (cuda:N); choose one of them")
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    if args.dim % args.heads:
        parser.error(f"--heads {args.heads} does not divide --dim {args.dim}; pick heads that divide it (e.g. "
                     f"{max(h for h in range(1, args.heads + 1) if args.dim % h == 0)})")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file; name a folder for bench.csv, bench.json and bench.png")
    if "onnxruntime" in args.runtime and args.mode == "fwdbwd":
        parser.error("--runtime onnxruntime measures inference only: add --mode fwd")
    for b in parse_list(args.blocks or ""):
        if b not in list_blocks():
            parser.error(f"unknown block {b!r}; choose from {', '.join(list_blocks())}")
    for m in parse_list(args.models or ""):
        if m not in list_models():
            parser.error(f"unknown model {m!r}; choose from {', '.join(list_models())}")
        if args.peer == "timm" and not m.startswith("volo_"):
            parser.error(f"--peer timm: timm has no implementation of {m!r} to compare with (VOLO variants only)")
    if args.peer and not args.models:
        parser.error("--peer compares backbones: name them with --models")
    try:
        cpu_bf16.guard(args.dtype == "bfloat16", device, "bench")
    except cpu_bf16.Bf16Unavailable as err:
        parser.error(str(err))
    if "onnxruntime" in args.runtime and (device != "cpu" or args.dtype != "float32"):
        parser.error("--runtime onnxruntime is measured on the CPU in float32 (the exported graph's CPU provider)")
    if "onnxruntime" in args.runtime:
        try:  # optional: checked before anything is timed
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401  (torch's ONNX exporter)
        except ImportError:
            parser.error("--runtime onnxruntime needs onnxruntime and onnxscript: pip install 'visattn[onnx]'")
    with threads(args.threads):
        return _run(args, device)


def _run(args, device: str) -> int:
    out = Path(args.out)
    groups = _groups(args, device)
    meta = machine_info(device)
    meta["noise_before"] = machine_noise() if device == "cpu" else None
    print(header())
    print(f"device {device}, {args.dtype}; latency = median of {args.repeat} round-robin repeats after "
          f"{args.warmup} warm-up calls; peak = tensors allocated during one call; reference = the official "
          f"formulation\n", flush=True)
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
    if device == "cpu":
        meta["noise_after"] = machine_noise()
        noisy = [n for n in (meta["noise_before"], meta["noise_after"]) if n["noisy"]]
        meta["noisy"] = bool(noisy)
        for when, n in (("before", meta["noise_before"]), ("after", meta["noise_after"])):
            print(f"machine {when}: load {n['load_1min']:.2f} on {n['cores']} cores, {n['threads']} threads, "
                  f"calibration spread p75/p25 {n['calibration_spread']:.2f}")
        if noisy:
            print("WARNING: the machine was busy or noisy during this run (load above the idle cores, or the "
                  "calibration spread above 1.15): ratios can move by 2x between runs; rerun on an idle machine "
                  "or with --repeat raised")
    for r in rows:
        if "error" in r:
            print(f"{r['name']} {r['size'][0]}x{r['size'][1]} B{r['batch']} {r['mode']} {r['impl']}: {r['error']}")
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "bench.csv")
    write_json(rows, meta, out / "bench.json")
    written = ["bench.csv", "bench.json"]
    (out / "bench.png").unlink(missing_ok=True)  # never leave a plot of an earlier run beside these results
    if not args.no_plot:
        if write_plot(ok, out / "bench.png", noisy=meta.get("noisy", False)):
            written.append("bench.png")
        elif not any(r["kind"] == "block" for r in ok):
            print("(no plot: the plot shows blocks; this run timed backbones only)")
        else:
            print("(no plot: install the plot extra, pip install 'visattn[plot]')")
    print(f"\nwrote {', '.join(str(out / w) for w in written)}")
    return 0
