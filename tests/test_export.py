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
