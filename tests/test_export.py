"""ONNX export with dynamic batch and spatial axes, checked by onnxruntime against PyTorch at three other sizes."""

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from visattn import create_block  # noqa: E402
from visattn.app.export import example_input, export_onnx, verify  # noqa: E402
from visattn.models import create_model  # noqa: E402

FAMILIES = {
    "litv2_s": dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)),
    "dilateformer_tiny": dict(embed_dim=12, depths=(1, 1, 1, 1), num_heads=(3, 3, 6, 12)),
    "volo_d1": dict(layers=(1, 1, 1, 1), embed_dims=(32, 64, 64, 64), num_heads=(2, 4, 4, 4), stem_hidden_dim=16),
    "cloformer_xxs": dict(embed_dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_heads=(2, 2, 4, 8),
                          group_splits=((1, 1), (1, 1), (2, 2), (2, 6))),
}


@pytest.mark.parametrize("name", ["hilo", "dilated", "outlook", "clo"])
def test_block_onnx_parity_at_other_sizes(name, tmp_path):
    torch.manual_seed(0)
    block = create_block(name, 16, 4).eval()
    path = export_onnx(block, example_input("BHWC", (12, 16), 2, 16), tmp_path / f"{name}.onnx", "BHWC")
    # odd, non-square, smaller and larger than the export size, other batch sizes
    inputs = [torch.randn(1, 13, 9, 16), torch.randn(3, 7, 22, 16), torch.randn(2, 24, 17, 16)]
    assert max(verify(path, block, inputs)) < 1e-4


def backbone_parity(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, **FAMILIES[name]).eval()
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
    torch.manual_seed(0)
    model = create_model("volo_d1", num_classes=10, img_size=64, **FAMILIES["volo_d1"]).eval()
    path = export_onnx(model, example_input("BCHW", (64, 64), 1), tmp_path / "volo.onnx", "BCHW")
    assert max(verify(path, model, [torch.randn(1, 3, 64, 64), torch.randn(2, 3, 80, 48)])) < 1e-4
