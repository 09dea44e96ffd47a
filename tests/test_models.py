"""Backbones: every registered variant on a tiny configuration of its family, plus the full-size tables."""

import pytest
import torch
from tiny_models import tiny

import visattn
from visattn.models import LITv2, model_spec

NAMES = visattn.list_models()


def test_every_variant_registered():
    assert len(NAMES) == 14 + 6  # the papers' fourteen and VOLO's six fine-tuned high-resolution rows
    assert [n for n in visattn.list_models("volo_*") if n.count("_") == 1] == [f"volo_d{i}" for i in range(1, 6)]


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_every_parameter_learns(name):
    model = tiny(name).train()
    x = torch.randn(2, 3, 64, 48, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", NAMES)
def test_features_match_feature_info(name):
    model = tiny(name).eval()
    H, W = 97, 131
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(1, 3, H, W))
    assert len(feats) == 4
    for f, info in zip(feats, model.feature_info, strict=True):
        assert f.shape[1] == info["num_chs"]
        for size, full in zip(f.shape[2:], (H, W), strict=True):
            assert abs(size - full / info["reduction"]) < 1, (f.shape, info)


@pytest.mark.parametrize("name", ["litv2_s", "dilateformer_tiny", "volo_d1", "cloformer_xxs"])
def test_features_only_and_headless(name):
    feat_model = tiny(name, features_only=True, out_indices=(1, 3)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = feat_model(x)
    assert [f.shape[1] for f in feats] == [i["num_chs"] for i in feat_model.feature_info]
    assert not any(k.startswith(("head.", "norm.", "aux_head.", "post_network.")) for k in feat_model.state_dict())
    headless = tiny(name, num_classes=0).eval()
    with torch.no_grad():
        assert headless(x).shape == (2, headless.num_features)
    headless.reset_classifier(5)
    with torch.no_grad():
        assert headless(x).shape == (2, 5)


@pytest.mark.parametrize("name", ["litv2_s", "dilateformer_tiny", "volo_d1", "cloformer_xxs"])
def test_grad_checkpointing_changes_nothing(name):
    model = tiny(name).eval()
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        out = model(x)
        out.sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["litv2_s", "dilateformer_tiny", "volo_d1", "cloformer_xxs"])
@pytest.mark.parametrize("hw", [(32, 32), (33, 47), (97, 131), (64, 40)])
def test_any_input_size(name, hw):
    model = tiny(name).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *hw))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_litv2_sizes_follow_the_official_detection_backbone():
    model = tiny("litv2_s", features_only=True).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 90, 70))
    assert [tuple(f.shape[2:]) for f in feats] == [(23, 18), (11, 9), (5, 4), (2, 2)]


def test_volo_position_embedding_follows_the_input():
    model = tiny("volo_d1", img_size=64).eval()  # stored grid 4x4
    assert model.pos_embed.shape[1:3] == (4, 4)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 80)).shape == (1, 10)  # 6x5 token grid: resized at run time


@pytest.mark.parametrize("name", NAMES)
def test_full_size_parameter_counts_match_the_papers(name):
    with torch.device("meta"):
        model = visattn.create_model(name)
    params = sum(p.numel() for p in model.parameters())
    assert abs(params / 1e6 - model_spec(name).paper.params_m) <= 0.0101  # the papers round to 0.01 M


@pytest.mark.parametrize("name", ["litv2_s", "dilateformer_tiny", "volo_d1", "cloformer_xxs"])
def test_macs_at_224_within_two_percent(name):
    model = visattn.create_model(name)
    macs = visattn.count_macs(model, torch.randn(1, 3, 224, 224)).total / 1e9
    reference = model_spec(name).paper.macs_reference_g
    assert abs(macs / reference - 1) < 0.02, (macs, reference)


def test_bad_names_and_arguments():
    with pytest.raises(ValueError, match="unknown model 'litv3_s'; available: cloformer_s"):
        visattn.create_model("litv3_s")
    with pytest.raises(ValueError, match=r"litv2_s does not take \['embed_dims'\]; its arguments are: .*embed_dim"):
        visattn.create_model("litv2_s", embed_dims=(1, 2))
    with pytest.raises(ValueError, match="num_heads needs one entry per stage"):
        visattn.create_model("dilateformer_tiny", num_heads=(3, 6))
    with pytest.raises(ValueError, match="out_indices only applies with features_only=True"):
        visattn.create_model("litv2_s", out_indices=(0,))
    model = tiny("litv2_s")
    with pytest.raises(ValueError, match=r"needs H, W >= 32"):
        model(torch.randn(1, 3, 16, 64))
    with pytest.raises(ValueError, match=r"expects images \(B, 3, H, W\)"):
        model(torch.randn(1, 64, 64, 3))
    with pytest.raises(ValueError, match="feature indices"):
        model.forward_intermediates(torch.randn(1, 3, 64, 64), indices=(4,))


@pytest.mark.parametrize("name", ["litv2_s", "dilateformer_tiny", "volo_d1", "cloformer_xxs"])
def test_every_family_takes_the_common_options(name):
    model = tiny(name, in_chans=1, num_classes=7, img_size=96, drop_rate=0.1, drop_path_rate=0.05, impl="reference")
    assert model.default_input_size == (1, 96, 96)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 80)).shape == (2, 7)
    model.train()
    torch.manual_seed(0)
    a = model(torch.randn(2, 1, 64, 64))
    assert a.shape == (2, 7)
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        tiny(name, num_classes=-1)
    with pytest.raises(ValueError, match="img_size must be >= 32"):
        tiny(name, img_size=8)


@pytest.mark.parametrize("out_indices", [(3, 1), (2,), (0, 3, 1)])
def test_feature_extractor_returns_maps_in_the_order_asked(out_indices):
    fx = tiny("dilateformer_tiny", features_only=True, out_indices=out_indices).eval()
    assert isinstance(fx, visattn.FeatureExtractor)
    with torch.no_grad():
        feats = fx(torch.randn(1, 3, 64, 96))
    assert len(feats) == len(out_indices) == len(fx.feature_info)
    for f, info, i in zip(feats, fx.feature_info, out_indices, strict=True):
        assert info == fx.backbone.feature_info[i]
        assert f.shape[1] == info["num_chs"] and f.shape[2] == 64 // info["reduction"]
    with pytest.raises(ValueError, match="repeat a level"):
        tiny("dilateformer_tiny", features_only=True, out_indices=(1, 1))


def test_register_model_adds_a_variant_row():
    visattn.register_model("test_litv2_pico", LITv2, dict(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 4)))
    try:
        assert "test_litv2_pico" in visattn.list_models("test_*")
        assert visattn.create_model("test_litv2_pico", num_classes=3).eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)
        with pytest.raises(ValueError, match="registered already"):
            visattn.register_model("test_litv2_pico", LITv2, {})
    finally:
        from visattn.models import _registry
        _registry._REGISTRY.pop("test_litv2_pico")
    with pytest.raises(ValueError, match=r"LITv2 does not take \['embed_dims'\]"):
        visattn.register_model("test_bad", LITv2, dict(embed_dims=(1,)))
    with pytest.raises(TypeError, match="Backbone subclass"):
        visattn.register_model("test_bad", torch.nn.Linear, {})


def test_pretrained_true_without_published_weights_says_why():
    with pytest.raises(ValueError, match="not published CloFormer checkpoints.*pretrained='path/to/file'"):
        visattn.create_model("cloformer_xxs", pretrained=True)  # nothing to fetch: says why, downloads nothing
    with pytest.raises(ValueError, match="Google Drive folder.*pass its path"):
        visattn.create_model("dilateformer_tiny", pretrained=True)


@pytest.mark.parametrize("name", ["litv2_s", "cloformer_xxs", "dilateformer_tiny"])
def test_grad_checkpointing_in_training_updates_batchnorm_once(name):
    """Train mode (BatchNorm statistics, drop path): the same outputs, gradients and buffers with checkpointing."""
    import copy

    base = tiny(name, drop_path_rate=0.1).train()
    x = torch.randn(2, 3, 64, 64)
    results = []
    for enable in (False, True):
        model = copy.deepcopy(base)
        model.set_grad_checkpointing(enable)
        torch.manual_seed(3)
        out = model(x)
        out.sum().backward()
        results.append((out.detach(), [p.grad for p in model.parameters()], [b.clone() for b in model.buffers()]))
    (o1, g1, b1), (o2, g2, b2) = results
    torch.testing.assert_close(o1, o2)
    for a, b in zip(g1 + b1, g2 + b2, strict=True):
        torch.testing.assert_close(a, b)


def test_empty_batches_and_one_bad_image():
    """B = 0 runs everywhere; a NaN or inf pixel stays inside its own image (LITv2's deformable merging too)."""
    for name in ["litv2_s", "dilateformer_tiny", "volo_d1", "cloformer_xxs"]:
        model = tiny(name).eval()
        with torch.no_grad():
            assert model(torch.empty(0, 3, 64, 64)).shape == (0, 10)
            x = torch.randn(3, 3, 64, 64)
            for bad in (float("nan"), float("inf")):
                x[1, 0, 10, 10] = bad
                finite = torch.isfinite(model(x)).all(dim=1)
                assert finite.tolist() == [True, False, True], (name, bad)
    for block_name in visattn.list_blocks():
        for impl in ("fast", "reference"):
            block = visattn.create_block(block_name, 16, 4, impl=impl)
            x = torch.randn(0, 5, 6, 16, requires_grad=True)
            block(x).sum().backward()
            assert x.grad.shape == x.shape
