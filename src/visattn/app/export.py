"""``visattn export``: ONNX export of any block or backbone with dynamic batch and spatial axes, checked by
onnxruntime against PyTorch on sizes other than the export size (the ``onnx`` extra).

Blocks take channels-last maps ``(B, H, W, C)``; backbones take images ``(B, 3, H, W)``. The exporter is
``torch.onnx.export(..., dynamo=True)``: shapes stay symbolic, so HiLo's padding, outlook's ``ceil(H/s)`` grid
and the like follow the input at run time.

While exporting, outlook attention records its unfold / matmul / fold formulation and dilated attention its
stacked shifted products (compact graphs that onnxruntime runs well); the graph optimiser then folds the shape
arithmetic. Export times of every family's smallest variant are in benchmarks/RESULTS.md (section 10).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from ..attention import create_block
from ..models import create_model
from .common import exit_code, parse_overrides, parse_size, parse_sizes, positive
from .runtimes import export_onnx, verify
from .weights import load_model


def build_target(block: str | None = None, model: str | None = None, overrides: dict | None = None,
                 dim: int = 64, heads: int = 4, checkpoint=None) -> tuple[nn.Module, str, str]:
    """The module to export, its layout (``"BHWC"`` for blocks, ``"BCHW"`` for backbone images) and its name."""
    if block is not None and (model is not None or checkpoint is not None):
        raise ValueError("--block exports a freshly built block; it does not combine with --model / --checkpoint")
    if block is not None:
        return create_block(block, dim, heads, **(overrides or {})).eval(), "BHWC", block
    if checkpoint is not None:
        loaded = load_model(checkpoint, model, overrides)
        return loaded.model, "BCHW", loaded.name
    if model is None:
        raise ValueError("name what to export: --block NAME, --model NAME, or --checkpoint FILE")
    return create_model(model, **(overrides or {})).eval(), "BCHW", model


def example_input(layout: str, size: tuple[int, int], batch: int = 2, channels: int = 64) -> torch.Tensor:
    H, W = size
    return torch.randn(batch, H, W, channels) if layout == "BHWC" else torch.randn(batch, 3, H, W)


OPSETS = range(18, 24)  # what torch's ONNX exporter writes (18: its own; 19-23 through the version converter)


def check_output(output) -> Path:
    """The ``--output`` path, refused before any work when a parent is a file or it is a folder."""
    path = Path(output)
    if path.is_dir():
        raise ValueError(f"--output {path} is a folder; name the .onnx file to write")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"--output {path}: {parent} is a file, not a folder")
    return path


def written_opset(path: Path) -> int | None:
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def run(args, parser) -> int:
    def body():
        if args.opset not in OPSETS:
            raise ValueError(f"--opset {args.opset} is not written by torch's ONNX exporter; use "
                             f"{OPSETS.start}-{OPSETS.stop - 1} (default 18)")
        output = check_output(args.output)
        module, layout, name = build_target(args.block, args.model, parse_overrides(args.overrides), args.dim,
                                            args.heads, args.checkpoint)
        channels = args.dim
        example = example_input(layout, args.size, args.batch, channels)
        if hasattr(module, "check_image"):
            module.check_image(example)  # the model's own message (e.g. too small), not the exporter's
        print(f"exporting {name} ({layout}, dynamic batch/height/width) to {output} ...", flush=True)
        path = export_onnx(module, example, output, layout, args.opset, not args.no_optimize)
        opset = written_opset(path)
        if opset is not None and opset != args.opset:
            path.unlink(missing_ok=True)
            raise ValueError(f"the exporter wrote opset {opset}, not the --opset {args.opset} asked for; the file was "
                             f"removed. Use --opset {opset}")
        print(f"exported {name} to {path} ({path.stat().st_size / 2 ** 20:.1f} MiB)")
        if args.no_verify:
            return 0
        sizes = args.verify
        if sizes is None:
            H, W = args.size
            sizes = [(H + 3, W + 5), (max(H - 5, 32 if layout == "BCHW" else 1), W + 1), (H + 16, W + 8)]
        batches = (1, args.batch, 3)
        inputs = [example_input(layout, s, batches[i % 3], channels) for i, s in enumerate(sizes)]
        try:
            errors = verify(path, module, inputs)
        except AssertionError as err:
            path.unlink(missing_ok=True)
            print(f"visattn export: verification failed: {err}; {path} was removed (pass --no-verify to keep an "
                  f"unchecked file)", file=sys.stderr)
            return 1
        worst = max(errors)
        for x, e in zip(inputs, errors, strict=True):
            print(f"  onnxruntime vs PyTorch at {tuple(x.shape)}: relative error {e:.2e}")
        print(f"verified on {len(inputs)} sizes: {'ok' if worst <= args.tolerance else 'FAILED'} "
              f"(max relative error {worst:.2e}, tolerance {args.tolerance:g})")
        if worst > args.tolerance:
            path.unlink(missing_ok=True)
            print(f"visattn export: {path} was removed: it does not compute what the PyTorch module does (pass "
                  f"--tolerance to accept larger errors, --no-verify to keep an unchecked file)", file=sys.stderr)
            return 1
        return 0
    return exit_code("export", body)


def add_arguments(parser) -> None:
    parser.add_argument("--block", help="a registered block (hilo, dilated, outlook, clo, ...)")
    parser.add_argument("--model", help="a backbone (see visattn models)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="constructor argument of the block or model")
    parser.add_argument("--checkpoint", help="weights: a visattn training checkpoint (names its own model) or an "
                                             "official one (needs --model)")
    parser.add_argument("--dim", type=positive(int), default=64, help="block channels (default 64)")
    parser.add_argument("--heads", type=positive(int), default=4, help="block heads (default 4)")
    parser.add_argument("--size", type=parse_size, default=(56, 56), help="export example size HxW (default 56x56)")
    parser.add_argument("--batch", type=positive(int), default=2, help="batch of the export example (default 2)")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset, 18-23 (default 18)")
    parser.add_argument("--verify", type=parse_sizes, help="sizes to check with onnxruntime, e.g. 40x48,72x56 "
                                                           "(default: three)")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check (keeps the file as is)")
    parser.add_argument("--no-optimize", action="store_true",
                        help="skip the ONNX graph optimiser (on by default: ~5x fewer nodes for a second or two)")
    parser.add_argument("--tolerance", type=positive(float, 0.0), default=1e-4,
                        help="max relative error (default 1e-4)")
