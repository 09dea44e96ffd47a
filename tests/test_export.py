"""ONNX export with dynamic batch and spatial axes, checked by onnxruntime against PyTorch at three other sizes."""

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from tiny_models import tiny  # noqa: E402

from visattn import create_block  # noqa: E402
from visattn.app.export import example_input, export_onnx, verify  # noqa: E402


@pytest.mark.parametrize("name", ["hilo", "dilated", "outlook", "clo"])
def test_block_onnx_parity_at_other_sizes(name, tmp_path):
    torch.manual_seed(0)
    block = create_block(name, 16, 4).eval()
    path = export_onnx(block, example_input("BHWC", (12, 16), 2, 16), tmp_path / f"{name}.onnx", "BHWC")
    # odd, non-square, smaller and larger than the export size, other batch sizes
    inputs = [torch.randn(1, 13, 9, 16), torch.randn(3, 7, 22, 16), torch.randn(2, 24, 17, 16)]
    assert max(verify(path, block, inputs)) < 1e-4


def backbone_parity(name, tmp_path):
    model = tiny(name).eval()
    path = export_onnx(model, example_input("BCHW", (64, 64), 2), tmp_path / f"{name}.onnx", "BCHW")
    inputs = [torch.randn(1, 3, 67, 69), torch.randn(2, 3, 59, 65), torch.randn(3, 3, 96, 80)]
    assert max(verify(path, model, inputs)) < 1e-4


def test_litv2_onnx_parity(tmp_path):
    backbone_parity("litv2_s", tmp_path)


def test_cloformer_onnx_parity(tmp_path):
    backbone_parity("cloformer_xxs", tmp_path)


@pytest.mark.slow  # about two minutes each: the unrolled dilated / outlook kernels make large graphs
@pytest.mark.parametrize("name", ["dilateformer_tiny", "volo_d1"])
def test_slow_family_onnx_parity(name, tmp_path):
    backbone_parity(name, tmp_path)


@pytest.mark.parametrize("name,limit", [("outlook", 300), ("dilated", 600)])
def test_exported_kernels_are_compact(name, limit, tmp_path):
    """While exporting, outlook records unfold / matmul / fold and dilated its stacked products (no in-place slice
    writes), and the optimiser folds the shape arithmetic: graphs of ~80 and ~220 nodes instead of ~16,000 and ~2,000
    (the unrolled fast path), which onnxruntime also runs 3x / 1.7x faster."""
    import onnx

    torch.manual_seed(0)
    block = create_block(name, 16, 4).eval()
    path = export_onnx(block, example_input("BHWC", (12, 16), 2, 16), tmp_path / f"{name}.onnx", "BHWC")
    assert len(onnx.load(str(path)).graph.node) < limit
    assert max(verify(path, block, [torch.randn(1, 13, 9, 16), torch.randn(2, 5, 21, 16)])) < 1e-4


def test_volo_exports_at_its_own_grid_size(tmp_path):
    """An example input whose token grid equals the stored position-embedding grid used to make the exporter fail
    (a guard on the symbolic size); the graph must still resize for other sizes."""
    model = tiny("volo_d1", img_size=64).eval()
    path = export_onnx(model, example_input("BCHW", (64, 64), 1), tmp_path / "volo.onnx", "BCHW")
    assert max(verify(path, model, [torch.randn(1, 3, 64, 64), torch.randn(2, 3, 80, 48)])) < 1e-4
