"""Every block configuration against its loop reference (float64), on square, non-square, non-divisible and
degenerate sizes, with both implementations; fast and reference paths equal in float32, forward and backward."""

import pytest
import torch

import visattn
from conftest import CONFIGS, REFERENCES, SIZES, build
from visattn import ChannelsFirst, OutlookAttention, TokenSequence
from visattn.attention import official_forward


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("hw", SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_block_matches_loop_reference(config_name, hw, impl):
    block = build(config_name, impl=impl)
    x = torch.randn(2, *hw, block.dim, dtype=torch.float64)
    with torch.no_grad():
        out = block(x)
        expected = REFERENCES[type(block)](block, x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("hw", [(9, 14), (16, 16), (5, 3)], ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_fast_equals_reference_float32(config_name, hw):
    fast = build(config_name, dtype=torch.float32)
    ref = build(config_name, dtype=torch.float32, impl="reference")
    x = torch.randn(3, *hw, fast.dim)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = fast(x1), ref(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=2e-5)
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    close_f32(x1.grad, x2.grad, "input")
    for (name, p1), p2 in zip(fast.named_parameters(), ref.parameters(), strict=True):
        close_f32(p1.grad, p2.grad, name)


def close_f32(actual, expected, name):
    """float32 tolerance scaled to the tensor's magnitude (gradients are sums over many positions)."""
    atol = 2e-5 * max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=atol, msg=lambda m: f"{name}: {m}")


def test_adapters_equal_channels_last(config_name):
    block = build(config_name)
    x = torch.randn(2, 5, 7, block.dim, dtype=torch.float64)
    with torch.no_grad():
        y = block(x)
        torch.testing.assert_close(ChannelsFirst(block)(x.permute(0, 3, 1, 2)), y.permute(0, 3, 1, 2))
        torch.testing.assert_close(TokenSequence(block)(x.reshape(2, 35, -1), 5, 7), y.reshape(2, 35, -1))


def test_every_config_is_listed():
    assert {cls for cls, _ in CONFIGS.values()} == set(REFERENCES)


def official_applies(block):
    """The official formulations run where the official code runs (outlook: odd k and padding k // 2)."""
    if not isinstance(block, OutlookAttention):
        return True
    return block.kernel_size % 2 == 1 and block.padding == block.kernel_size // 2


@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (7, 7), (13, 10)], ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_official_formulation_equals_loop_reference_and_both_paths(config_name, hw):
    """The whole-block oracle (what the benchmark measures against) agrees with the loops and with both paths."""
    block = build(config_name)
    if not official_applies(block):
        pytest.skip("the official outlook formulation needs padding = kernel_size // 2")
    x = torch.randn(2, *hw, block.dim, dtype=torch.float64)
    with torch.no_grad():
        expected = official_forward(block, x)
        torch.testing.assert_close(expected, REFERENCES[type(block)](block, x))
        for impl in ("fast", "reference"):
            block.impl = impl
            torch.testing.assert_close(block(x), expected)


def test_block_registry_builds_by_name():
    names = visattn.list_blocks()
    assert names[:4] == ["hilo", "dilated", "outlook", "clo"] == visattn.list_blocks(paper_only=True)
    for name in names:
        block = visattn.create_block(name, 24, 6)
        assert block(torch.randn(1, 5, 7, 24)).shape == (1, 5, 7, 24)
    hilo = visattn.create_block("hilo", 32, 4, window_size=3, impl="reference")
    assert (hilo.ws, hilo.impl, hilo.dim, hilo.num_heads) == (3, "reference", 32, 4)
    with pytest.raises(ValueError, match=r"does not take \['windowsize'\]; its arguments are: .*window_size"):
        visattn.create_block("hilo", 32, 4, windowsize=3)
    with pytest.raises(ValueError, match="unknown block 'hilo2'; choose from hilo, dilated"):
        visattn.create_block("hilo2")
    visattn.register_block("test_wide_window", visattn.WindowAttention, lambda d, h: dict(window_size=4))
    try:
        assert visattn.create_block("test_wide_window", 16, 2).window_size == 4
        with pytest.raises(ValueError, match="registered already"):
            visattn.register_block("test_wide_window", visattn.WindowAttention)
    finally:
        from visattn.attention import registry
        registry._BLOCKS.pop("test_wide_window")
