"""Grad-CAM helpers (core environment): the target layers of every family and of ChannelsFirst networks, the
transform for their layout, the NCHW view for tools without one, and visattn's own GradCam against the CAM it must
equal. The real pytorch-grad-cam and Captum are exercised in tests/integration/test_gradcam.py."""

import pytest
import torch
from tiny_models import SMALLEST, tiny
from torch import nn

import visattn
from visattn.explain import GradCam, channels_first_view, reshape_transform, target_layers, to_channels_first


@pytest.mark.parametrize("name", SMALLEST)
def test_every_family_names_its_last_block_and_the_channels_last_transform(name):
    model = tiny(name).eval()
    for stage in (0, -1, 3):
        (layer,) = target_layers(model, stage)
        container = model.get_submodule(model.stage_info[stage]["module"])
        blocks = container.blocks if hasattr(container, "blocks") else list(container)
        assert layer is blocks[-1]
        assert reshape_transform([layer]) is to_channels_first
    seen = []
    handle = target_layers(model)[0].register_forward_hook(lambda m, a, out: seen.append(out.shape))
    model(torch.randn(1, 3, 64, 48))
    handle.remove()
    assert len(seen) == 1 and seen[0][-1] == model.num_features  # (B, H, W, C): channels last
    with pytest.raises(ValueError, match="out of range"):
        target_layers(model, 4)


def test_channels_first_networks_and_unknown_layouts():
    block = visattn.create_block("hilo", 16, 4)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), visattn.ChannelsFirst(block), nn.ReLU())
    assert target_layers(net) == [net[1]] and reshape_transform(target_layers(net)) is None
    assert reshape_transform(block) is to_channels_first  # the block inside: channels last
    assert target_layers(block) == [block]
    with pytest.raises(ValueError, match="mix channels-last and NCHW"):
        reshape_transform([net[1], block])
    with pytest.raises(ValueError, match="tokens"):
        reshape_transform(visattn.TokenSequence(block))
    with pytest.raises(ValueError, match="cannot tell"):
        reshape_transform(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no visattn backbone stage"):
        target_layers(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="drop stage"):
        target_layers(net, stage=0)


def test_channels_first_view_gives_nchw_and_changes_nothing():
    model = tiny("cloformer_xxs").eval()
    x = torch.randn(2, 3, 64, 64)
    layer = target_layers(model, 0)[0]
    plain = model(x)
    raw, viewed = [], []
    h = layer.register_forward_hook(lambda m, a, out: raw.append(out.detach().clone()))
    with channels_first_view(layer) as view:
        h2 = view.register_forward_hook(lambda m, a, out: viewed.append(out.detach()))
        out = model(x)
        h2.remove()
    h.remove()
    assert torch.equal(out, plain)
    assert torch.equal(viewed[0], raw[0].permute(0, 3, 1, 2))  # (B, C, H, W)
    net = nn.Sequential(visattn.ChannelsFirst(visattn.create_block("clo", 8, 2)))
    with channels_first_view(net[0]) as view:
        assert view is net[0]  # NCHW already


class GapClassifier(nn.Module):
    """A channels-last block, global average pooling and a linear classifier: Grad-CAM equals CAM here,
    ``relu(sum_c w[k, c] A[:, :, c])`` up to the factor 1 / (H W)."""

    def __init__(self, block, dim, classes):
        super().__init__()
        self.block, self.head = block, nn.Linear(dim, classes)

    def forward(self, x):  # (B, H, W, C)
        return self.head(self.block(x).mean(dim=(1, 2)))


@pytest.mark.parametrize("name", ["hilo", "dilated", "outlook", "clo"])
def test_gradcam_equals_cam_where_they_must_agree(name):
    torch.manual_seed(0)
    model = GapClassifier(visattn.create_block(name, 12, 3), 12, 5).eval()
    x = torch.randn(2, 7, 10, 12)
    with GradCam(model, model.block) as cam:
        logits = model(x)
    feats = model.block(x).detach()  # (B, H, W, C)
    for k in range(5):
        expected = torch.relu(feats @ model.head.weight[k].detach()) / (7 * 10)  # (B, H, W)
        torch.testing.assert_close(cam(logits[:, k]), expected, atol=1e-6, rtol=1e-5)



def test_upsample_places_the_map_over_the_image_scaled_to_one():
    maps = torch.tensor([[[0.0, 1.0], [2.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    up = GradCam.upsample(maps, (8, 6))
    assert up.shape == (2, 8, 6) and up[0].min() == 0 and up[0].max() == 1 and up[1].abs().max() == 0
    assert up[0, -1, -1] == 1 and up[0, 0, 0] == 0  # corners stay where they were


def test_gradcam_errors_name_the_fix():
    model = GapClassifier(visattn.create_block("hilo", 8, 2), 8, 3).eval()
    cam = GradCam(model, model.block)
    with pytest.raises(ValueError, match="saw no forward"):
        cam(torch.zeros(1))
    with cam, torch.no_grad():
        logits = model(torch.randn(1, 4, 4, 8))
    with pytest.raises(ValueError, match="autograd on"):
        cam(logits[:, 0])
