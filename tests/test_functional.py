"""Functional kernels against the loop references (float64), both impls, forward and gradients."""

import pytest
import torch

from reference import loops
from visattn import functional as Fv

IMPLS = ["fast", "reference"]


def rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n,m", [(1, 1), (5, 3), (7, 12)])
def test_attention_matches_loops(impl, n, m):
    q, k, v = rand(2, 3, n, 4, seed=1), rand(2, 3, m, 4, seed=2), rand(2, 3, m, 4, seed=3)
    out = Fv.attention(q, k, v, scale=0.7, impl=impl)
    torch.testing.assert_close(out, loops.softmax_attention(q, k, v, 0.7))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("hw,ws", [((4, 6), 2), ((3, 3), 3), ((2, 5), 1), ((6, 4), 2)])
def test_window_attention_matches_loops(impl, hw, ws):
    q, k, v = (rand(2, 2, *hw, 3, seed=s) for s in range(3))
    out = Fv.window_attention(q, k, v, ws, scale=0.5, impl=impl)
    torch.testing.assert_close(out, loops.window_attention(q, k, v, ws, 0.5))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (4, 1), (5, 7), (8, 8)])
@pytest.mark.parametrize("ks,r", [(3, 1), (3, 2), (3, 3), (5, 2), (1, 1), (3, 9)])
def test_dilated_attention_matches_loops(impl, hw, ks, r):
    q, k, v = (rand(2, 2, *hw, 3, seed=s) for s in range(3))
    out = Fv.dilated_attention(q, k, v, ks, r, scale=0.6, impl=impl)
    torch.testing.assert_close(out, loops.dilated_attention(q, k, v, ks, r, 0.6))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (4, 1), (5, 7), (6, 6)])
@pytest.mark.parametrize("ks,p,s", [(3, 1, 1), (3, 1, 2), (3, 0, 2), (3, 2, 2), (2, 0, 2), (2, 1, 1), (5, 2, 3),
                                    (1, 0, 1), (3, 1, 4)])
def test_outlook_aggregate_matches_loops(impl, hw, ks, p, s):
    H, W = hw
    h, w = Fv.outlook_grid(H, W, s)
    attn = rand(2, 2, h, w, ks * ks, ks * ks, seed=4).softmax(-1)
    v = rand(2, 2, H, W, 3, seed=5)
    out = Fv.outlook_aggregate(attn, v, ks, p, s, impl=impl)
    torch.testing.assert_close(out, loops.outlook_aggregate(attn, v, ks, p, s))


def test_outlook_official_padding_is_fold_of_unfold():
    """With p = k//2 the kernel is exactly the official fold(attn @ unfold(v))."""
    B, nh, hd, H, W, ks, s = 2, 2, 3, 9, 7, 3, 2
    h, w = Fv.outlook_grid(H, W, s)
    attn = rand(B, nh, h * w, ks * ks, ks * ks, seed=1).softmax(-1)
    v = rand(B, nh * hd, H, W, seed=2)
    cols = torch.nn.functional.unfold(v, ks, padding=1, stride=s).reshape(B, nh, hd, ks * ks, h * w)
    out = (attn @ cols.permute(0, 1, 4, 3, 2)).permute(0, 1, 4, 3, 2).reshape(B, nh * hd * ks * ks, h * w)
    official = torch.nn.functional.fold(out, (H, W), ks, padding=1, stride=s)  # (B, C, H, W)
    ours = Fv.outlook_aggregate(attn.reshape(B, nh, h, w, ks * ks, ks * ks),
                                v.reshape(B, nh, hd, H, W).permute(0, 1, 3, 4, 2), ks, 1, s)
    torch.testing.assert_close(ours.permute(0, 1, 4, 2, 3).reshape(B, nh * hd, H, W), official)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_kernels(impl):
    q, k, v = (rand(1, 1, 3, 4, 2, seed=s).requires_grad_() for s in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: Fv.dilated_attention(a, b, c, 3, 2, impl=impl), (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: Fv.window_attention(a, b, c, 2, impl=impl),
                                    tuple(t[:, :, :2].detach().requires_grad_() for t in (q, k, v)))
    attn = rand(1, 1, 2, 2, 9, 9, seed=4).softmax(-1).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: Fv.outlook_aggregate(a, b, 3, 1, 2, impl=impl), (attn, v))
    qkv = (rand(1, 2, 5, 3, seed=6).requires_grad_(), rand(1, 2, 2, 3, seed=7).requires_grad_(),
           rand(1, 2, 2, 3, seed=8).requires_grad_())
    assert torch.autograd.gradcheck(lambda a, b, c: Fv.attention(a, b, c, impl=impl), qkv)


def test_border_zero_keys_enter_the_softmax():
    """Neighbours outside the map are zero keys (logit 0) and zero values that still share the softmax."""
    q, k, v = (rand(1, 1, 1, 1, 4, seed=s) for s in range(3))
    # a 1x1 map with a 3x3 window: one real key and eight zero keys (logit 0, value 0)
    out = Fv.dilated_attention(q, k, v, 3, 1, scale=1.0)
    logit = (q * k).sum()
    expected = torch.exp(logit) / (torch.exp(logit) + 8) * v
    torch.testing.assert_close(out, expected)


def test_kernel_size_one_is_identity_on_values():
    q, k, v = (rand(2, 2, 4, 5, 3, seed=s) for s in range(3))
    torch.testing.assert_close(Fv.dilated_attention(q, k, v, 1, 1), v)
    torch.testing.assert_close(Fv.window_attention(q, k, v, 1), v)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("ks,p,s", [(3, 1, 1), (3, 1, 2), (2, 0, 2), (5, 2, 3)])
def test_outlook_attention_is_softmax_then_aggregate(impl, ks, p, s):
    """The fused kernel equals softmax(logits * scale) followed by the loop aggregation, forward and backward."""
    H, W, scale = 6, 5, 0.7
    h, w = Fv.outlook_grid(H, W, s)
    logits = rand(2, 2, h, w, ks * ks, ks * ks, seed=6).requires_grad_()
    v = rand(2, 2, H, W, 3, seed=7).requires_grad_()
    out = Fv.outlook_attention(logits, v, ks, p, s, scale, impl=impl)
    expected = loops.outlook_aggregate((logits * scale).softmax(-1), v, ks, p, s)
    torch.testing.assert_close(out, expected)
    g = rand(*out.shape, seed=8)
    got = torch.autograd.grad(out, (logits, v), g)
    want = torch.autograd.grad(expected, (logits, v), g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
