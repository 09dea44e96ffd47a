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


# compiling these three takes 30-90 s each on a 2-core CPU: run with -m slow
SLOW = {("outlook", False), ("outlook", True), ("dilated", True)}
CASES = [pytest.param(name, train, id=f"{name}-{'fwdbwd' if train else 'fwd'}",
                      marks=[pytest.mark.slow] if (name, train) in SLOW else [])
         for name in list_blocks() for train in (False, True)]


@pytest.mark.parametrize("name,train", CASES)
def test_compile_every_block(name, train):
    check(name, train)


@pytest.mark.parametrize("train", [False, True], ids=["fwd", "fwdbwd"])
def test_compile_strided_outlook(train):
    """VOLO-D1's outlooker (dim 192, 6 heads, stride 2, 28x28): inductor's own code for the strided window kernel
    corrupted the heap (a double free at the first call, killing the process), so the kernel runs eagerly behind a
    graph break; everything around it is compiled."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    block = create_block("outlook", 192, 6, stride=2)
    x = torch.randn(1, 28, 28, 192, requires_grad=train)
    compiled = torch.compile(block)
    with torch.set_grad_enabled(train):
        out, ref = compiled(x), block(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    if train:
        (grad,) = torch.autograd.grad(out.square().sum(), x)
        (expected,) = torch.autograd.grad(ref.square().sum(), x)
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5)
