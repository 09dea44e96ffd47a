"""Properties every block must have, and degenerate settings that reduce to known operations."""

import pytest
import torch

from conftest import CONFIGS, build
from visattn import CloAttention, HiLoAttention, MultiScaleDilatedAttention, OutlookAttention


def mha_from(block, kv_source):
    """torch's nn.MultiheadAttention carrying the Lo-Fi weights of a HiLo block."""
    mha = torch.nn.MultiheadAttention(block.dim, block.l_heads, bias=True, batch_first=True,
                                      kdim=block.dim, vdim=block.dim).double()
    mha.embed_dim, mha.head_dim = block.l_dim, block.head_dim
    with torch.no_grad():
        w_k, w_v = block.l_kv.weight.chunk(2)
        b_k, b_v = block.l_kv.bias.chunk(2)
        mha.in_proj_weight.copy_(torch.cat([block.l_q.weight, w_k, w_v]))
        mha.in_proj_bias.copy_(torch.cat([block.l_q.bias, b_k, b_v]))
        mha.out_proj.weight.copy_(block.l_proj.weight)
        mha.out_proj.bias.copy_(block.l_proj.bias)
    return mha


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_hilo_window_one_is_plain_mhsa(impl):
    block = build("hilo_ws1", qkv_bias=True, impl=impl)
    assert block.h_heads == 0 and not hasattr(block, "h_qkv")
    x = torch.randn(2, 5, 7, 16, dtype=torch.float64)
    tokens = x.reshape(2, 35, 16)
    with torch.no_grad():
        expected, _ = mha_from(block, tokens)(tokens, tokens, tokens, need_weights=False)
        torch.testing.assert_close(block(x), expected.reshape(2, 5, 7, 16))


def test_hilo_alpha_one_is_mhsa_to_pooled_tokens():
    block = build("hilo_lofi_only", qkv_bias=True)
    assert block.h_heads == 0 and not hasattr(block, "h_qkv")
    x = torch.randn(2, 6, 4, 16, dtype=torch.float64)
    pooled = torch.nn.functional.avg_pool2d(x.permute(0, 3, 1, 2), 2).flatten(2).transpose(1, 2)
    with torch.no_grad():
        expected, _ = mha_from(block, pooled)(x.reshape(2, 24, 16), pooled, pooled, need_weights=False)
        torch.testing.assert_close(block(x), expected.reshape(2, 6, 4, 16))


def test_hilo_alpha_zero_is_pure_window_attention():
    block = build("hilo_hifi_only")
    assert block.l_heads == 0 and not hasattr(block, "l_q")
    x = torch.randn(1, 6, 8, 16, dtype=torch.float64)
    with torch.no_grad():
        y = block(x)
        x2 = x.clone()
        x2[:, 2:4, 6:8] += 1.0  # one 2x2 window
        y2 = block(x2)
    changed = (y - y2).abs().amax(dim=(0, 3)) > 0
    expected = torch.zeros(6, 8, dtype=torch.bool)
    expected[2:4, 6:8] = True
    assert torch.equal(changed, expected)


def receptive_change(block, H, W, at):
    """Positions whose output changes when the input at `at` changes."""
    x = torch.randn(1, H, W, block.dim, dtype=torch.float64)
    x2 = x.clone()
    x2[0, at[0], at[1]] += torch.randn(block.dim, dtype=torch.float64)
    with torch.no_grad():
        return ((block(x) - block(x2)).abs().amax(dim=(0, 3)) > 1e-12)


def test_dilated_locality():
    block = build("msda_k3_d123")  # dilations 1, 2, 3 with k=3
    changed = receptive_change(block, 13, 13, (6, 6))
    expected = torch.zeros(13, 13, dtype=torch.bool)
    for r in (1, 2, 3):
        for a in (-r, 0, r):
            for b in (-r, 0, r):
                expected[6 + a, 6 + b] = True
    assert torch.equal(changed, expected)


def test_outlook_locality():
    block = build("outlook_k3p1s1")
    changed = receptive_change(block, 11, 11, (5, 5))
    # an input feeds windows centred within 1 of it, which write within 1 of their centre: radius 2
    assert changed[3:8, 3:8].all() and changed.sum() == 25


def test_clo_local_branch_locality():
    block = build("clo_local_only")  # one 3x3 depthwise conv: q, k, v each see radius 1
    changed = receptive_change(block, 9, 9, (4, 4))
    assert changed[3:6, 3:6].all() and changed.sum() == 9


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_batch_independence(name):
    block = build(name)
    x = torch.randn(3, 7, 5, block.dim, dtype=torch.float64)
    with torch.no_grad():
        full = block(x)
        for i in range(3):
            torch.testing.assert_close(block(x[i:i + 1]), full[i:i + 1])


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("name", ["hilo_ws2", "hilo_ws1", "msda_k3_d123", "outlook_k3p1s2", "outlook_k2p0s2",
                                  "clo_three_groups"])
def test_gradcheck_float64(name, impl):
    cls, kwargs = CONFIGS[name]
    torch.manual_seed(0)
    dim = {"hilo_ws2": 8, "hilo_ws1": 4, "msda_k3_d123": 6, "outlook_k3p1s2": 4, "outlook_k2p0s2": 4,
           "clo_three_groups": 6}[name]
    small = {**kwargs, "dim": dim}
    if cls is HiLoAttention:
        small["num_heads"] = 2
    if cls is OutlookAttention:
        small["num_heads"] = 1
    block = cls(**small, impl=impl).double().eval()
    x = torch.randn(1, 3, 5, dim, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gradients_reach_everything_and_input_is_untouched(name):
    block = build(name, dtype=torch.float32).train()
    x = torch.randn(2, 16, 17, block.dim, requires_grad=True)  # >= 2 pooled keys for every config
    before = x.detach().clone()
    out = block(x)
    (out * torch.randn_like(out)).sum().backward()
    assert torch.equal(x.detach(), before), "the block modified its input"
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in block.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{pname} gradient is zero or non-finite"


DROPOUT_CONFIGS = ["hilo_ws2", "msda_k3_d123", "outlook_k3p1s1", "outlook_k3p1s2", "clo_gs31_ws8", "clo_local_only"]


@pytest.mark.parametrize("which", ["attn_drop", "proj_drop"])
@pytest.mark.parametrize("name", DROPOUT_CONFIGS)
def test_each_dropout_applies_in_training_only_and_is_unbiased(name, which):
    """Each dropout on its own (the other at 0): training outputs vary with the seed, their mean over many draws
    is the evaluation output (inverted dropout is unbiased, and every dropped quantity enters linearly), and
    evaluation is deterministic and equal to the block without dropout."""
    cls, kwargs = CONFIGS[name]
    block = cls(**kwargs, **{which: 0.5}).double()
    x = torch.randn(2, 6, 5, block.dim, dtype=torch.float64)
    block.eval()
    with torch.no_grad():
        expected = block(x)
        plain = cls(**kwargs).double().eval()
        plain.load_state_dict(block.state_dict())
        torch.testing.assert_close(plain(x), expected)
        block.train()
        torch.manual_seed(0)
        draws = torch.stack([block(x) for _ in range(400)])
    assert not torch.allclose(draws[0], draws[1]), f"{which} was ignored in training"
    scale = expected.abs().mean()
    assert (draws.mean(0) - expected).abs().mean() < 0.1 * scale, f"{which} is biased"


@pytest.mark.parametrize("name", ["hilo_ws2", "msda_k3_d123", "outlook_k3p1s2", "clo_three_groups"])
def test_bfloat16_autocast_close_to_float32(name, bf16):
    block = build(name, dtype=torch.float32)
    x = torch.randn(2, 9, 7, block.dim)
    with torch.no_grad():
        ref = block(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = block(x)
    assert torch.isfinite(low).all()
    err = (low.float() - ref).abs().max() / ref.abs().max()
    assert err < 5e-2, f"bf16 autocast relative error {err:.3g}"


def test_pooling_extension_for_maps_smaller_than_the_window():
    """A side shorter than window_size is pooled whole: on a 3x5 map with ws=8 the global group sees one key
    (the map's mean), so every query gets that key's value."""
    block = build("clo_global_only", window_size=8)
    x = torch.randn(1, 3, 5, 16, dtype=torch.float64)
    with torch.no_grad():
        y = block(x)
        mean = x.mean(dim=(1, 2))  # (1, C)
        value = (mean @ block.global_kv.weight.flatten(1).T + block.global_kv.bias)[:, 16:]  # (1, C)
        expected = value @ block.proj.weight.flatten(1).T + block.proj.bias
    torch.testing.assert_close(y, expected.reshape(1, 1, 1, 16).expand_as(y))


def test_type_names_exported():
    for cls in (HiLoAttention, MultiScaleDilatedAttention, OutlookAttention, CloAttention):
        assert cls.__module__.startswith("visattn.attention")


@pytest.mark.parametrize("name", ["msda_k3_d123", "outlook_k3p1s1", "outlook_k3p1s2", "outlook_k2p0s2"])
def test_second_derivatives_and_torch_func_match_the_reference_path(name):
    """Higher derivatives and torch.func transforms through the fast path's custom autograd functions give the
    reference path's numbers or, where the fast path cannot (outlook's fused softmax keeps no logits), a clear
    error; never a silent zero."""
    from torch.func import grad, vmap

    fast, ref = build(name), build(name, impl="reference")
    x = torch.randn(2, 5, 6, fast.dim, dtype=torch.float64)

    def second(block):
        xi = x.clone().requires_grad_()
        g, = torch.autograd.grad(block(xi).pow(2).sum(), xi, create_graph=True)
        return torch.autograd.grad(g.pow(2).sum(), xi)[0]

    expected = second(ref)
    assert expected.abs().sum() > 0
    if isinstance(fast, OutlookAttention):
        with pytest.raises(RuntimeError, match="higher derivatives .* impl='reference'"):
            second(fast)
        fast.attn_drop = 0.5  # the unfused path (weights as input) does support them
        fast.train()
        torch.manual_seed(0)
        assert second(fast).abs().sum() > 0
        fast.attn_drop = 0.0
        fast.eval()
    else:
        torch.testing.assert_close(second(fast), expected)
    loss = {b: (lambda inp, b=b: b(inp).pow(2).sum()) for b in (fast, ref)}
    torch.testing.assert_close(grad(loss[fast])(x), grad(loss[ref])(x))
    torch.testing.assert_close(vmap(fast)(x[:, None]), vmap(ref)(x[:, None]))


def test_outlook_unfused_second_derivative_matches_the_reference_kernel():
    from visattn import functional as Fv

    h, w = Fv.outlook_grid(5, 6, 2)
    attn = torch.rand(1, 2, h, w, 9, 9, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 2, 5, 6, 3, dtype=torch.float64, requires_grad=True)

    def second(impl):
        out = Fv.outlook_aggregate(attn, v, 3, 1, 2, impl=impl)
        ga, gv = torch.autograd.grad(out.pow(2).sum(), (attn, v), create_graph=True)
        return torch.autograd.grad(ga.pow(2).sum() + gv.pow(2).sum(), (attn, v))

    for a, b in zip(second("fast"), second("reference"), strict=True):
        torch.testing.assert_close(a, b)
