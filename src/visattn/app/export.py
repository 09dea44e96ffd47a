"""``visattn export``: ONNX export of any block or backbone with dynamic batch and spatial axes, checked by
onnxruntime against PyTorch on sizes other than the export size (the ``onnx`` extra).

Blocks take channels-last maps ``(B, H, W, C)``; backbones take images ``(B, 3, H, W)``. The exporter is
``torch.onnx.export(..., dynamo=True)``: shapes stay symbolic, so HiLo's padding, outlook's ``ceil(H/s)`` grid
and the like follow the input at run time.

Export time grows with the number of kernel slices the tracer unrolls: HiLo and CloFormer blocks take seconds,
one dilated block ~10 s and one outlook block ~1 min on a 2-core CPU, whole DilateFormer / VOLO models several
minutes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim

from ..attention import MultiScaleDilatedAttention, OutlookAttention, create_block
from ..models import create_model
from .common import exit_code, parse_overrides, parse_size, parse_sizes, positive
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


def export_onnx(module: nn.Module, example: torch.Tensor, path, layout: str, opset: int = 18,
                optimize: bool = False) -> Path:
    """Export with dynamic batch and spatial dimensions; returns the path. ``optimize`` runs onnxscript's graph
    optimiser (smaller files; slow on the large graphs the unrolled kernels make)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spatial = (1, 2) if layout == "BHWC" else (2, 3)
    dynamic = {0: Dim.AUTO, spatial[0]: Dim.AUTO, spatial[1]: Dim.AUTO}
    with torch.no_grad():
        program = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=({**dynamic},),
                                    input_names=["input"], output_names=["output"], opset_version=opset,
                                    optimize=optimize)
    program.save(str(path))
    return path


def verify(path, module: nn.Module, inputs: list[torch.Tensor]) -> list[float]:
    """Relative error ``max|onnx - torch| / max|torch|`` for each input (needs onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError("verification needs onnxruntime: pip install 'visattn[onnx]'") from err
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    errors = []
    for x in inputs:
        with torch.no_grad():
            expected = module(x)
        try:
            got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        except Exception as err:  # noqa: BLE001  (onnxruntime raises its own types)
            raise AssertionError(f"onnxruntime failed at input {tuple(x.shape)}: {str(err)[:300]}") from None
        if got.shape != expected.shape:
            raise AssertionError(f"ONNX output shape {tuple(got.shape)} != PyTorch {tuple(expected.shape)}")
        errors.append(float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12)))
    return errors


def run(args, parser) -> int:
    def body():
        module, layout, name = build_target(args.block, args.model, parse_overrides(args.overrides), args.dim,
                                            args.heads, args.checkpoint)
        channels = args.dim
        example = example_input(layout, args.size, args.batch, channels)
        print(f"exporting {name} ({layout}, dynamic batch/height/width) to {args.output} ...", flush=True)
        slow = sum(isinstance(m, (OutlookAttention, MultiScaleDilatedAttention)) for m in module.modules())
        if slow:
            print(f"note: {slow} outlook/dilated attention layer(s): the tracer unrolls their k x k kernels, so this "
                  f"export takes about a minute per layer on a 2-core CPU and the file grows by ~10 MB per layer",
                  flush=True)
        path = export_onnx(module, example, args.output, layout, args.opset, args.optimize)
        print(f"exported {name} to {path} ({path.stat().st_size / 2 ** 20:.1f} MiB)")
        if args.no_verify:
            return 0
        sizes = args.verify
        if sizes is None:
            H, W = args.size
            sizes = [(H + 3, W + 5), (max(H - 5, 32 if layout == "BCHW" else 1), W + 1), (H + 16, W + 8)]
        inputs = [example_input(layout, s, b, channels) for s, b in zip(sizes, (1, args.batch, 3), strict=False)]
        try:
            errors = verify(path, module, inputs)
        except AssertionError as err:
            print(f"visattn export: verification failed: {err}", file=sys.stderr)
            return 1
        worst = max(errors)
        for x, e in zip(inputs, errors, strict=True):
            print(f"  onnxruntime vs PyTorch at {tuple(x.shape)}: relative error {e:.2e}")
        print(f"verified on {len(inputs)} sizes: {'ok' if worst <= args.tolerance else 'FAILED'} "
              f"(max relative error {worst:.2e}, tolerance {args.tolerance:g})")
        return 0 if worst <= args.tolerance else 1
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
    parser.add_argument("--batch", type=positive(int), default=2)
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=positive(int, 18), default=18)
    parser.add_argument("--verify", type=parse_sizes, help="sizes to check with onnxruntime, e.g. 40x48,72x56 "
                                                           "(default: three)")
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--optimize", action="store_true", help="run the ONNX graph optimiser (slow)")
    parser.add_argument("--tolerance", type=positive(float, 0.0), default=1e-4,
                        help="max relative error (default 1e-4)")
