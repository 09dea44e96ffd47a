"""torch.compile(fullgraph=True) traces every block's fast path, forward and backward, and matches eager."""

import pytest
import torch

from visattn import create_block, list_blocks


def check(name, train):
    torch._dynamo.reset()
    block = create_block(name, 16, 4)
    x = torch.randn(2, 9, 7, 16, requires_grad=train)
    compiled = torch.compile(block, fullgraph=True)
    with torch.set_grad_enabled(train):
        out, ref = compiled(x), block(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    if train:
        out.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_compile_dilated_inference():
    check("dilated", train=False)


@pytest.mark.slow
@pytest.mark.parametrize("train", [False, True], ids=["fwd", "fwdbwd"])
@pytest.mark.parametrize("name", list_blocks())
def test_compile_every_block(name, train):
    check(name, train)
