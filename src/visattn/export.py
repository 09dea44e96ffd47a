"""``visattn export``: ONNX export of any block or backbone with dynamic batch and spatial axes, checked by
onnxruntime against PyTorch on sizes other than the export size (the ``onnx`` extra).

Blocks take channels-last maps ``(B, H, W, C)``; backbones take images ``(B, 3, H, W)``. The exporter is
``torch.onnx.export(..., dynamo=True)``: shapes stay symbolic, so HiLo's padding, outlook's ``ceil(H/s)`` grid
and the like follow the input at run time.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn


def build_target(block: str | None = None, model: str | None = None, overrides: dict | None = None,
                 dim: int = 64, heads: int = 4, checkpoint=None) -> tuple[nn.Module, str]:
    """The module to export and its layout (``"BHWC"`` for blocks, ``"BCHW"`` for backbone images)."""
    if (block is None) == (model is None):
        raise ValueError("name exactly one of --block or --model")
    if block is not None:
        from .bench import build_block

        return build_block(block, dim, heads).eval(), "BHWC"
    if checkpoint is not None:
        from .evaluate import load_for_eval

        net, _ = load_for_eval(checkpoint, None if _is_training_checkpoint(checkpoint) else model, overrides)
        return net.eval(), "BCHW"
    from .models import create_model

    return create_model(model, **(overrides or {})).eval(), "BCHW"


def _is_training_checkpoint(path) -> bool:
    from .checkpoint import load_file

    obj = load_file(path)
    return isinstance(obj, dict) and "model_name" in obj


def example_input(layout: str, size: tuple[int, int], batch: int = 2, channels: int = 64) -> torch.Tensor:
    H, W = size
    return torch.randn(batch, H, W, channels) if layout == "BHWC" else torch.randn(batch, 3, H, W)


def export_onnx(module: nn.Module, example: torch.Tensor, path, layout: str, opset: int = 18,
                optimize: bool = False) -> Path:
    """Export with dynamic batch and spatial dimensions; returns the path. ``optimize`` runs onnxscript's graph
    optimiser (smaller files; slow on the large graphs the unrolled kernels make)."""
    from torch.export import Dim

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
    from .cli import _sizes
    from .train import parse_overrides

    try:
        module, layout = build_target(args.block, args.model, parse_overrides(args.overrides), args.dim, args.heads,
                                      args.checkpoint)
        channels = args.dim
        example = example_input(layout, args.size, args.batch, channels)
        path = export_onnx(module, example, args.output, layout, args.opset, args.optimize)
        print(f"exported {args.block or args.model} ({layout}, dynamic batch/height/width) to {path}")
        if args.no_verify:
            return 0
        sizes = _sizes(args.verify) if args.verify else None
        if sizes is None:
            H, W = args.size
            sizes = [(H + 3, W + 5), (max(H - 5, 32 if layout == "BCHW" else 1), W + 1), (H + 16, W + 8)]
        inputs = [example_input(layout, s, b, channels) for s, b in zip(sizes, (1, args.batch, 3), strict=False)]
        errors = verify(path, module, inputs)
    except (ValueError, FileNotFoundError, ImportError, AssertionError) as err:
        print(f"visattn export: error: {err}", file=sys.stderr)
        return 2
    worst = max(errors)
    for x, e in zip(inputs, errors, strict=True):
        print(f"  onnxruntime vs PyTorch at {tuple(x.shape)}: relative error {e:.2e}")
    print(f"verified on {len(inputs)} sizes: {'ok' if worst <= args.tolerance else 'FAILED'} "
          f"(max relative error {worst:.2e}, tolerance {args.tolerance:g})")
    return 0 if worst <= args.tolerance else 1


def add_arguments(parser) -> None:
    from .cli import _size

    parser.add_argument("--block", help="a block of the benchmark registry (hilo, dilated, outlook, clo, ...)")
    parser.add_argument("--model", help="a backbone (see visattn models)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--checkpoint", help="weights: a visattn training checkpoint or an official one (--model)")
    parser.add_argument("--dim", type=int, default=64, help="block channels (default 64)")
    parser.add_argument("--heads", type=int, default=4, help="block heads (default 4)")
    parser.add_argument("--size", type=_size, default=(56, 56), help="export example size HxW (default 56x56)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--verify", help="sizes to check with onnxruntime, e.g. 40x48,72x56 (default: three)")
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--optimize", action="store_true", help="run the ONNX graph optimiser (slow)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max relative error (default 1e-4)")
