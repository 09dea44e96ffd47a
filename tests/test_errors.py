"""User errors raise ValueError/TypeError that name the argument and the fix."""

import pytest
import torch

from visattn import (
    ChannelsFirst,
    CloAttention,
    HiLoAttention,
    MultiScaleDilatedAttention,
    OutlookAttention,
    TokenSequence,
    count_macs,
)
from visattn import functional as Fv

BLOCKS = [lambda: HiLoAttention(16, 4), lambda: MultiScaleDilatedAttention(12, 3), lambda: OutlookAttention(16, 2),
          lambda: CloAttention(16, 4, [2, 2], [3], 2)]


@pytest.mark.parametrize("make", BLOCKS)
def test_wrong_rank_names_the_layout(make):
    block = make()
    with pytest.raises(ValueError, match=r"channels-last map \(B, H, W, C\).*TokenSequence"):
        block(torch.randn(2, 49, block.dim))
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        block(torch.randn(7, 7, block.dim))


@pytest.mark.parametrize("make", BLOCKS)
def test_channel_mismatch_names_dim_and_adapter(make):
    block = make()
    with pytest.raises(ValueError, match=rf"dim={block.dim}.*has {block.dim + 1}"):
        block(torch.randn(1, 5, 5, block.dim + 1))
    with pytest.raises(ValueError, match="ChannelsFirst"):
        block(torch.randn(1, block.dim, 6, 5))


@pytest.mark.parametrize("make", BLOCKS)
def test_non_float_input(make):
    block = make()
    with pytest.raises(TypeError, match="floating-point.*x.float()"):
        block(torch.ones(1, 4, 4, block.dim, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        block([[1.0]])


@pytest.mark.parametrize("ctor", [HiLoAttention, MultiScaleDilatedAttention, OutlookAttention, CloAttention])
def test_dim_not_divisible_by_heads(ctor):
    kwargs = {"group_split": [3, 3], "kernel_sizes": [3]} if ctor is CloAttention else {}
    with pytest.raises(ValueError, match=r"dim \(50\) must be divisible by num_heads \(6\); choose num_heads in"):
        ctor(50, 6, **kwargs)


def test_heads_not_multiple_of_dilations():
    with pytest.raises(ValueError, match=r"num_heads \(4\) must be a multiple of len\(dilation\) \(3\).*num_heads=3"):
        MultiScaleDilatedAttention(48, 4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(kernel_size=4), "kernel_size must be odd.*use 3 or 5"),
    (dict(kernel_size=0), "kernel_size must be >= 1"),
    (dict(dilation=[1, 0, 2]), r"dilation\[1\] must be >= 1"),
    (dict(dilation=[]), "at least one dilation"),
    (dict(dilation="123"), "dilation must be a list of ints"),
    (dict(kernel_size=3.0), "kernel_size must be an int"),
])
def test_dilated_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        MultiScaleDilatedAttention(12, 3, **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(group_split=[2, 1]), r"group_split \[2, 1\] sums to 3 but num_heads is 4"),
    (dict(group_split=[2, 1, 1], kernel_sizes=[3]), "kernel_sizes needs one entry per local group.*got 1"),
    (dict(kernel_sizes=[4]), r"kernel_sizes\[0\] must be odd"),
    (dict(window_size=0), "window_size must be >= 1"),
    (dict(group_split=[-1, 5]), r"group_split\[0\] must be >= 0"),
])
def test_clo_bad_arguments(kwargs, match):
    full = dict(dim=16, num_heads=4, group_split=[2, 2], kernel_sizes=[3], window_size=2)
    with pytest.raises(ValueError, match=match):
        CloAttention(**{**full, **kwargs})


@pytest.mark.parametrize("kwargs,match", [
    (dict(alpha=1.5), r"alpha .* must be a number in \[0, 1\]"),
    (dict(window_size=0), "window_size must be >= 1"),
    (dict(attn_drop=1.0), r"attn_drop must be in \[0, 1\)"),
    (dict(impl="cuda"), "impl must be one of"),
])
def test_hilo_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HiLoAttention(16, 4, **kwargs)


def test_outlook_bad_padding():
    with pytest.raises(ValueError, match=r"padding must be < kernel_size \(3\).*kernel_size // 2 = 1"):
        OutlookAttention(16, 2, padding=3)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        OutlookAttention(16, 2, padding=-1)


def test_functional_errors():
    q = torch.randn(1, 1, 5, 6, 2)
    with pytest.raises(ValueError, match="divisible by window_size=2.*pad the input of the block to 6x6"):
        Fv.window_attention(q, q, q, 2)
    with pytest.raises(ValueError, match=r"\(B, nh, H, W, hd\)"):
        Fv.dilated_attention(q[0], q[0], q[0])
    with pytest.raises(ValueError, match="attn must have shape"):
        Fv.outlook_aggregate(torch.randn(1, 1, 2, 2, 9, 9), q, 3, 1, 1)


def test_adapter_errors():
    block = HiLoAttention(16, 4)
    with pytest.raises(ValueError, match=r"N=30 tokens but H\*W = 5\*5 = 25"):
        TokenSequence(block)(torch.randn(1, 30, 16), 5, 5)
    with pytest.raises(ValueError, match=r"ChannelsFirst expects \(B, C, H, W\)"):
        ChannelsFirst(block)(torch.randn(1, 16, 25))
    with pytest.raises(TypeError, match="wraps an nn.Module"):
        ChannelsFirst(lambda x: x)


def test_count_macs_errors():
    with pytest.raises(TypeError, match="nn.Module"):
        count_macs(lambda x: x, torch.randn(1))
    with pytest.raises(ValueError, match="at least one input"):
        count_macs(HiLoAttention(16, 4))
