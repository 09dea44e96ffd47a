"""The three ways a model runs here: eager PyTorch, ``torch.compile`` and ONNX Runtime. ONNX export with dynamic
batch and spatial axes, the onnxruntime parity check, and ``runtime_module`` (what ``visattn bench --runtime``
times). onnx, onnxscript and onnxruntime are optional (the ``onnx`` extra) and imported only here, when used.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim

RUNTIMES = ("eager", "compile", "onnxruntime")
COMPILE_OPTIONS = {"fwd": {"freezing": True}, "fwdbwd": {}}  # the recommended torch.compile options per use


def export_onnx(module: nn.Module, example: torch.Tensor, path, layout: str, opset: int = 18,
                optimize: bool = True, verbose: bool | None = None) -> Path:
    """Export with dynamic batch and spatial dimensions; returns the path. ``optimize`` runs onnxscript's graph
    optimiser (constant folding and the like: about 5x fewer nodes for a second or two)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spatial = (1, 2) if layout == "BHWC" else (2, 3)
    dynamic = {0: Dim.AUTO, spatial[0]: Dim.AUTO, spatial[1]: Dim.AUTO}
    with torch.no_grad():
        program = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=({**dynamic},),
                                    input_names=["input"], output_names=["output"], opset_version=opset,
                                    optimize=optimize, verbose=verbose)
    program.save(str(path))
    return path


def verify(path, module: nn.Module, inputs: list[torch.Tensor]) -> list[float]:
    """Relative error ``max|onnx - torch| / max|torch|`` for each input, the graph run by :class:`OrtModule`."""
    session = OrtModule(path)
    errors = []
    for x in inputs:
        with torch.no_grad():
            expected = module(x)
        try:
            got = session(x)
        except Exception as err:  # noqa: BLE001  (onnxruntime raises its own types)
            raise AssertionError(f"onnxruntime failed at input {tuple(x.shape)}: {str(err)[:300]}") from None
        if got.shape != expected.shape:
            raise AssertionError(f"ONNX output shape {tuple(got.shape)} != PyTorch {tuple(expected.shape)}")
        errors.append(float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12)))
    return errors


class OrtModule(nn.Module):
    """An ONNX Runtime session behind a module's call: ``forward(x)`` runs the exported graph on ``x``'s numpy view
    with as many intra-op threads as PyTorch uses (a like-for-like comparison), and returns a tensor."""

    def __init__(self, path, threads: int | None = None):
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError("running ONNX graphs needs onnxruntime: pip install 'visattn[onnx]'") from err
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # no busy-waiting between runs: spinning threads would steal the CPU from whatever runs next (an
        # interleaved benchmark's other paths, or the rest of the caller's program)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = str(path)
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: x.detach().cpu().numpy()})[0])


def runtime_module(module: nn.Module, runtime: str, example: torch.Tensor, layout: str = "BCHW",
                   mode: str = "fwd") -> nn.Module:
    """``module`` as ``runtime`` runs it: itself (eager), ``torch.compile(module)`` (compiled on the first call), or
    an :class:`OrtModule` of its ONNX export (inference only; exported from ``example``'s shape into a temporary
    file that the session has read before it is deleted)."""
    if runtime == "eager":
        return module
    if runtime == "compile":
        # inference: inductor's freezing (weights become constants: folded, pre-packed for the CPU's GEMM and
        # convolution kernels); training: the default mode. RESULTS.md section 11 measures both.
        return torch.compile(module, options=dict(COMPILE_OPTIONS[mode]))
    if runtime != "onnxruntime":
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if mode != "fwd":
        raise ValueError("onnxruntime runs inference only: use mode 'fwd'")
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(module.eval(), example, Path(tmp) / "model.onnx", layout, verbose=False)
        session = OrtModule(path)
    return session


