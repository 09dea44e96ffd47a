"""visattn.fuse and the eager-inference buffer reuse: outputs equal the unfused model's up to float rounding, on
every family at non-square, non-divisible sizes; the original model is untouched; inputs are never written."""

import pytest
import torch
from tiny_models import SMALLEST, tiny
from torch import nn

import visattn
from visattn import fuse
from visattn.blocks import Block
from visattn.layers import Mlp


def randomised(name):
    """A tiny model whose norms and BatchNorm statistics are far from identity (a fold that dropped them shows)."""
    model = tiny(name).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
                m.weight.normal_()
                m.bias.normal_()
    return model


@pytest.mark.parametrize("name", SMALLEST)
def test_fused_model_computes_the_same(name):
    model = randomised(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse(model)
    for size in [(64, 48), (75, 97)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            expected = model(x)
            got = fused(x)
        assert (got - expected).abs().max() <= 1e-5 * expected.abs().max(), size
    # the original is untouched: same weights, still trainable, BatchNorms still there
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in fused.parameters())
    assert not fused.training


@pytest.mark.parametrize("name", SMALLEST)
def test_what_fuse_folds(name):
    fused = fuse(randomised(name))
    blocks = [m for m in fused.modules() if isinstance(m, Block)]
    folded = [b for b in blocks if b.norm2.weight is None]
    assert folded == blocks  # every MLP's norm is folded into its first layer
    if name == "litv2_s":  # HiLo pads the normalised map: its norm1 keeps its affine
        hilo = [b for b in blocks if isinstance(getattr(b, "attn", None), visattn.HiLoAttention)]
        assert hilo and all(b.norm1.weight is not None for b in hilo)
        assert all(b.attn.fused_in_weight is not None for b in hilo if b.attn.h_heads and b.attn.l_heads)
    else:
        assert all(b.norm1.weight is None for b in blocks if hasattr(b, "attn"))
    if name != "litv2_s":  # the three families with BatchNorm after a convolution
        for seq in (m for m in fused.modules() if isinstance(m, nn.Sequential)):
            pairs = zip(list(seq)[:-1], list(seq)[1:], strict=True)
            assert not any(isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d) for a, b in pairs)


def test_fuse_inplace_and_bad_input():
    model = randomised("cloformer_xxs")
    assert fuse(model, inplace=True) is model
    with pytest.raises(TypeError, match="nn.Module"):
        fuse("cloformer_xxs")


def test_fused_hilo_keeps_official_state_dict_keys():
    block = visattn.HiLoAttention(32, 4, window_size=2, alpha=0.5)
    keys = set(block.state_dict())
    block.precompute_projections()
    assert set(block.state_dict()) == keys  # the concatenation is a non-persistent buffer
    plain = visattn.HiLoAttention(32, 4, window_size=2, alpha=0.5)
    plain.load_state_dict(block.state_dict())
    x = torch.randn(1, 5, 7, 32)
    with torch.no_grad():
        assert torch.allclose(block(x), plain(x), atol=1e-6)


def test_inference_reuse_never_writes_the_input():
    # a block whose branches return their input: the sums must not be written into the caller's tensor
    block = Block(8, nn.Identity(), nn.Identity(), norm_layer=lambda d: nn.Identity()).eval()
    x = torch.randn(2, 3, 4, 8)
    original = x.clone()
    with torch.no_grad():
        y = block(x)
    assert torch.equal(x, original)
    assert torch.equal(y, 4 * original)


def test_inference_gelu_in_place_matches_autograd_path():
    mlp = Mlp(8, 32).eval()
    x = torch.randn(2, 5, 5, 8)
    with torch.no_grad():
        fast = mlp(x)
    assert torch.allclose(fast, mlp(x), atol=1e-6)  # grad mode: the out-of-place GELU


def test_volo_position_embedding_cache_follows_the_weights():
    model = tiny("volo_d1").eval()
    x, other = torch.randn(1, 3, 96, 80), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        first = model(x)
        model(other)  # a second size replaces the cached resize
        assert torch.equal(model(x), first)
        model.pos_embed.mul_(2.0)  # an in-place change of the weights invalidates the cache
        changed = model(x)
    with torch.enable_grad():
        assert torch.allclose(model(x), changed, atol=1e-6)
    assert not torch.allclose(changed, first)


def test_hooked_outputs_are_never_overwritten():
    """A forward hook that keeps a module's output (feature extraction, visualisation) sees that output, not the
    residual sum or the in-place GELU written over it by the eager-inference buffer reuse."""
    torch.manual_seed(0)
    block = Block(8, Mlp(8, 16), visattn.create_block("mhsa", 8, 2)).eval()
    kept = {}
    hooks = [block.attn.register_forward_hook(lambda m, a, out: kept.__setitem__("attn", out)),
             block.mlp.fc1.register_forward_hook(lambda m, a, out: kept.__setitem__("fc1", out))]
    x = torch.randn(2, 3, 5, 8)
    with torch.no_grad():
        block(x)
        for h in hooks:
            h.remove()
        expected_attn = block.attn(block.norm1(x))
        expected_fc1 = block.mlp.fc1(block.norm2(x + expected_attn))
    assert torch.allclose(kept["attn"], expected_attn, atol=1e-6)
    assert torch.allclose(kept["fc1"], expected_fc1, atol=1e-6)
