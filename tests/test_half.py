"""Half precision without "AMP off": every block's fast path stays finite in float16 wherever float32 is, on
un-normalised inputs (YOLO applies attention to raw features) scaled up to x1000, and close to float32 where the
softmax is well conditioned. Where logits reach 1e4 and more, fp16's rounding of q and k alone moves the softmax:
there only finiteness is asserted."""

import copy

import pytest
import torch

import visattn


@pytest.mark.parametrize("name", visattn.list_blocks())
def test_fast_paths_stay_finite_in_float16(name):
    torch.manual_seed(0)
    block = visattn.create_block(name, 64, 4).eval()
    half = copy.deepcopy(block).half()
    for scale in (1, 10, 100, 300, 1000):
        x = torch.randn(2, 13, 11, 64) * scale
        with torch.no_grad():
            y32, y16 = block(x), half(x.half()).float()
        assert torch.isfinite(y32).all()
        assert torch.isfinite(y16).all(), (name, scale)
        if scale <= 10:
            assert (y16 - y32).abs().max() / y32.abs().max() < 2e-2, (name, scale)


def test_dilated_and_clo_gates_are_float32_inside():
    """The two kernels that overflowed: MSDA's q . k and CloAttention's q * k gates (x100 / x300 before)."""
    torch.manual_seed(0)
    for block in (visattn.MultiScaleDilatedAttention(64, 4, dilation=(1, 2)),
                  visattn.CloAttention(64, 4, group_split=(2, 2), kernel_sizes=(5,), window_size=4)):
        x = torch.randn(1, 9, 10, 64) * 300
        with torch.no_grad():
            y16 = copy.deepcopy(block).half()(x.half())
        assert y16.dtype == torch.float16 and torch.isfinite(y16).all()
