"""Dense-prediction features: every family gives four maps at strides 4, 8, 16, 32 by default (CloFormer's taken
where each stage's resolution changes, VOLO's through its feature pyramid), indices follow timm's rules, and a
4-level FPN written once runs on every family."""

import copy

import pytest
import torch
import torch.nn.functional as F
from tiny_models import SMALLEST, tiny
from torch import nn

import visattn
from visattn.models import take_indices


@pytest.mark.parametrize("name", SMALLEST)
def test_default_features_are_a_4_8_16_32_pyramid(name):
    fx = tiny(name, features_only=True).eval()
    assert [i["reduction"] for i in fx.feature_info] == [4, 8, 16, 32]
    assert fx.out_indices == (0, 1, 2, 3)
    H, W = 96, 160
    with torch.no_grad():
        feats = fx(torch.randn(2, 3, H, W))
    assert [tuple(f.shape) for f in feats] == [(2, i["num_chs"], H // i["reduction"], W // i["reduction"])
                                               for i in fx.feature_info]
    with torch.no_grad():  # non-divisible sizes: each map within one pixel of size / stride
        for f, info in zip(fx(torch.randn(1, 3, 97, 131)), fx.feature_info, strict=True):
            assert all(abs(s - full / info["reduction"]) <= 1 for s, full in zip(f.shape[2:], (97, 131), strict=True))


def test_indices_follow_timms_rules():
    assert take_indices(4, None) == (0, 1, 2, 3)
    assert take_indices(4, 2) == (2, 3)  # an int: the last n
    assert take_indices(4, (-1, 0)) == (3, 0)  # negative from the end, order kept
    for bad, match in [((4,), r"out of range: this backbone returns 4 levels, indices 0..3"), ((-5,), "out of range"),
                       (5, r"1 <= n <= 4"), (0, r"1 <= n <= 4"), ((1, -3), "repeat a level"), ((), "non-empty"),
                       ((1.0,), "list of ints")]:
        with pytest.raises(ValueError, match=match):
            take_indices(4, bad)
    with pytest.raises(TypeError, match="int or a list of ints"):
        take_indices(4, "01")
    with pytest.raises(ValueError, match="out of range"):
        tiny("litv2_s", features_only=True, out_indices=(7,))
    fx = tiny("litv2_s", features_only=True, out_indices=2)  # the last two
    assert [i["reduction"] for i in fx.feature_info] == [16, 32]


def test_volo_pyramid_and_its_stage_maps():
    raw = tiny("volo_d1", features_only=True, feature_pyramid=False).eval()
    assert [i["reduction"] for i in raw.feature_info] == [8, 16, 16, 16]
    pyr = tiny("volo_d1", features_only=True).eval()
    info = pyr.feature_info
    assert [i["reduction"] for i in info] == [4, 8, 16, 32] and [i["num_chs"] for i in info] == [32, 32, 64, 64]
    pyr.backbone.load_state_dict(raw.backbone.state_dict(), strict=False)  # same backbone weights
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        r, p = raw(x), pyr(x)
        norms = [getattr(pyr.backbone.pyramid, f"norm{4 << j}") for j in range(4)]
        torch.testing.assert_close(p[1], norms[1](r[0].permute(0, 2, 3, 1)).permute(0, 3, 1, 2))  # stride 8
        torch.testing.assert_close(p[2], norms[2](r[3].permute(0, 2, 3, 1)).permute(0, 3, 1, 2))  # stride 16
        pooled = F.max_pool2d(r[3], 2, 2, ceil_mode=True)
        torch.testing.assert_close(p[3], norms[3](pooled.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))  # stride 32
    names = [n for n, _ in pyr.named_parameters() if ".pyramid." in f".{n}"]
    assert names and all(n.startswith("backbone.pyramid.") for n in names)
    pyr.train()
    sum(f.square().mean() for f in pyr(x)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in pyr.named_parameters() if n in names)
    with pytest.raises(TypeError, match="feature_pyramid must be True or False"):
        tiny("volo_d1", feature_pyramid="yes")


def test_volo_pyramid_is_reported_new_by_load_official():
    official = tiny("volo_d1").state_dict()  # a classification checkpoint: no pyramid
    fx = tiny("volo_d1", features_only=True)
    report = visattn.load_official(fx, {"model": official})
    assert report.new and all(k.startswith("pyramid.") for k in report.new)
    assert not report.missing and not report.unexpected
    for k, v in fx.backbone.state_dict().items():
        if not k.startswith("pyramid."):
            assert torch.equal(v, official[k]), k
    broken = {k: v for k, v in official.items() if not k.startswith("network.0.")}
    with pytest.raises(ValueError, match="missing keys"):
        visattn.load_official(tiny("volo_d1", features_only=True), broken)  # still strict for the rest


def test_cloformer_maps_are_taken_before_each_strided_convffn():
    """Stage i's map is the input of the last block's ConvFFN branch (its norm2), the last tensor at stride 4 * 2^i;
    the last stage's map is its output."""
    model = tiny("cloformer_xxs").eval()
    seen = {}
    for i, stage in enumerate(model.layers[:-1]):
        stage.blocks[-1].norm2.register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(i, args[0].clone()))
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        feats = model.forward_intermediates(x)
        logits = model(x)
    for i in range(3):
        torch.testing.assert_close(feats[i], seen[i].permute(0, 3, 1, 2))
    assert feats[3].shape[2:] == (3, 2)
    with torch.no_grad():  # the classification path is untouched by the feature path
        torch.testing.assert_close(logits, model.forward_head(model.forward_features(x)))


@pytest.mark.parametrize("name", ["cloformer_xxs", "volo_d1"])
def test_feature_maps_with_grad_checkpointing(name):
    fx = tiny(name, features_only=True).train()
    x = torch.randn(2, 3, 64, 64)
    results = []
    for enable in (False, True):
        model = copy.deepcopy(fx)
        model.set_grad_checkpointing(enable)
        torch.manual_seed(0)
        feats = model(x)
        sum(f.sum() for f in feats).backward()
        results.append(([f.detach() for f in feats], [p.grad for p in model.parameters()]))
    for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1], strict=True):
        torch.testing.assert_close(a, b)


class TinyFPN(nn.Module):
    """A 4-level FPN written once from ``feature_info`` (lateral 1x1, top-down 2x nearest upsampling, 3x3 out)."""

    def __init__(self, feature_info, width=16):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(i["num_chs"], width, 1) for i in feature_info)
        self.out = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in feature_info)

    def forward(self, feats):
        x = self.lateral[-1](feats[-1])
        outs = [self.out[-1](x)]
        for j in range(len(feats) - 2, -1, -1):
            x = self.lateral[j](feats[j]) + F.interpolate(x, scale_factor=2.0, mode="nearest")
            outs.insert(0, self.out[j](x))
        return outs


@pytest.mark.parametrize("name", SMALLEST)
def test_one_fpn_for_every_family(name):
    fx = tiny(name, features_only=True)
    fpn = TinyFPN(fx.feature_info)
    outs = fpn(fx(torch.randn(2, 3, 128, 96)))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 128 // s, 96 // s) for s in (4, 8, 16, 32)]


@pytest.mark.parametrize("name", SMALLEST)
@pytest.mark.parametrize("out_indices", [None, (1, 2, 3), (0,), (2, 0)])
def test_extractors_keep_only_what_their_maps_need(name, out_indices):
    """Every parameter left gets a gradient (DDP without find_unused_parameters), the maps equal the full model's,
    and a whole checkpoint still loads (pruned tensors reported as dropped)."""
    full = tiny(name, **({"feature_pyramid": True} if name.startswith("volo") else {})).eval()
    fx = tiny(name, features_only=True, out_indices=out_indices)
    fx.backbone.load_state_dict(full.state_dict(), strict=False)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = full.forward_intermediates(x, out_indices)
        for a, b in zip(fx.eval()(x), expected, strict=True):
            torch.testing.assert_close(a, b)
    sum(f.square().mean() for f in fx.train()(x)).backward()
    assert [n for n, p in fx.named_parameters() if p.grad is None] == []
    report = visattn.load_official(fx, full.state_dict())
    assert report.dropped and not report.missing and not report.unexpected
