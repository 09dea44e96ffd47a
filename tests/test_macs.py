"""count_macs against closed-form counts, including the official HiLo flops() formula."""

import pytest
import torch

from visattn import CloAttention, HiLoAttention, MultiScaleDilatedAttention, OutlookAttention, count_macs


def hilo_formula(N, C, nh, ws, alpha):
    """LITv2's HiLo.flops(N) (multiply-adds), for maps divisible by ws (Np = N)."""
    hd = C // nh
    l_heads = nh if ws == 1 else int(nh * alpha)
    h_dim, l_dim = (nh - l_heads) * hd, l_heads * hd
    hifi = lofi = 0
    if h_dim:
        hifi = N * C * 3 * h_dim + (N // ws ** 2) * (ws ** 2) ** 2 * h_dim * 2 + N * h_dim * h_dim
    if l_dim:
        M = N // ws ** 2
        lofi = N * C * l_dim + M * C * 2 * l_dim + N * l_dim * M * 2 + N * l_dim * l_dim
    return hifi + lofi


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("C,nh,ws,alpha,H,W", [
    (384, 12, 2, 0.9, 14, 14), (64, 8, 2, 0.5, 8, 12), (96, 4, 4, 0.5, 16, 8), (32, 8, 1, 0.9, 7, 7),
    (64, 4, 2, 0.0, 6, 6), (64, 4, 2, 1.0, 6, 10),
])
def test_hilo_reproduces_official_formula(C, nh, ws, alpha, H, W, impl):
    block = HiLoAttention(C, nh, window_size=ws, alpha=alpha, impl=impl)
    report = count_macs(block, torch.randn(1, H, W, C))
    assert report.total == hilo_formula(H * W, C, nh, ws, alpha)


def test_batch_scales_linearly_and_breakdown_adds_up():
    block = HiLoAttention(64, 8, impl="reference")
    one = count_macs(block, torch.randn(1, 8, 8, 64))
    block.impl = "fast"
    assert count_macs(block, torch.randn(1, 8, 8, 64)).total == one.total
    four = count_macs(block, torch.randn(4, 8, 8, 64))
    assert four.total == 4 * one.total
    assert sum(one.by_op.values()) == one.total == sum(one.by_module.values())
    # counting hooks every module, so the block calls its layers (no fused [h_qkv | l_q] matmul): each projection
    # is booked on its layer, the attention products on HiLo itself ("")
    assert set(one.by_module) == {"", "h_qkv", "l_q", "l_kv", "h_proj", "l_proj"}
    assert one.by_module["l_kv"] == 4 * 4 * 64 * 2 * 32  # pooled 4x4 keys/values
    assert "total" in one.table()


def test_breakdown_books_each_submodule():
    block = HiLoAttention(64, 8, alpha=0.0)  # Hi-Fi only: projections run as modules
    with torch.enable_grad():
        report = count_macs(block, torch.randn(1, 8, 8, 64))
    assert set(report.by_module) == {"", "h_qkv", "h_proj"}
    assert report.by_module["h_qkv"] == 64 * 64 * 3 * 64
    assert report.by_module["h_proj"] == 64 * 64 * 64


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_dilated_macs(impl):
    C, H, W, k = 48, 9, 11, 3
    block = MultiScaleDilatedAttention(C, 6, kernel_size=k, impl=impl)
    N = H * W
    report = count_macs(block, torch.randn(2, H, W, C))
    assert report.total == 2 * (N * C * 3 * C + 2 * N * k * k * C + N * C * C)
    assert report.by_op["dilated_attention"] == 2 * 2 * N * k * k * C


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("stride,H,W", [(1, 7, 9), (2, 14, 14), (2, 9, 13)])
def test_outlook_macs(impl, stride, H, W):
    C, nh, k = 32, 2, 3
    block = OutlookAttention(C, nh, kernel_size=k, stride=stride, impl=impl)
    h, w = -(-H // stride), -(-W // stride)
    report = count_macs(block, torch.randn(1, H, W, C))
    assert report.total == H * W * C * C * 2 + h * w * C * k ** 4 * nh + h * w * k ** 4 * C


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_clo_macs(impl):
    C, nh, H, W, ws = 32, 4, 16, 16, 4
    block = CloAttention(C, nh, [2, 2], [5], ws, impl=impl)
    hd, N, M = C // nh, H * W, (H // ws) * (W // ws)
    gd = 2 * hd
    local = N * C * 3 * gd + N * 3 * gd * 25 + 2 * N * gd * gd
    glob = N * C * gd + M * C * 2 * gd + N * M * 2 * gd
    assert count_macs(block, torch.randn(1, H, W, C)).total == local + glob + N * C * C


def test_count_restores_training_mode_and_leaves_no_state():
    block = HiLoAttention(16, 4).train()
    count_macs(block, torch.randn(1, 4, 4, 16))
    assert block.training
    assert not block._forward_hooks and not block._forward_pre_hooks
    from visattn.functional import _counting
    assert _counting._ACTIVE.get() is None
