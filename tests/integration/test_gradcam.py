"""Grad-CAM with the real pytorch-grad-cam and Captum through visattn's helpers (target_layers, reshape_transform,
channels_first_view).

* A network trained for a few steps on images whose evidence (a bright or a dark square) sits in a random quadrant:
  the helped maps find the quadrant; the map pytorch-grad-cam gives without a transform (it reads the channels-last
  block output as NCHW, and raises nothing) does not.
* Every family and stage: the libraries' maps through the helpers are visattn's own GradCam (which equals CAM where
  the two must agree, tests/test_gradcam.py); without them they are not.
"""

import numpy as np
import pytest
import torch
from tiny_models import SMALLEST, tiny
from torch import nn

import visattn
from visattn.blocks import Block
from visattn.explain import GradCam, channels_first_view, reshape_transform, target_layers
from visattn.layers import Mlp

pytest.importorskip("pytorch_grad_cam")
pytest.importorskip("captum")
from captum.attr import LayerGradCam  # noqa: E402
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.image import scale_cam_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

pytestmark = pytest.mark.integration
S, P = 32, 8  # image side, evidence square side


def evidence(n: int, g: torch.Generator):
    """Noise images with a bright (class 1) or dark (class 0) square in a random quadrant (kept 3 px off the
    quadrant borders); returns images, labels and the quadrant (0 top-left, 1 top-right, 2 bottom-left, 3
    bottom-right)."""
    x = torch.randn(n, 3, S, S, generator=g) * 0.2
    y = torch.randint(0, 2, (n,), generator=g)
    quadrant = torch.zeros(n, dtype=torch.long)
    for i in range(n):
        while True:
            r, c = torch.randint(0, S - P + 1, (2,), generator=g).tolist()
            if abs(r + P / 2 - S / 2) >= 3 and abs(c + P / 2 - S / 2) >= 3:
                break
        quadrant[i] = 2 * int(r + P / 2 > S / 2) + int(c + P / 2 > S / 2)
        x[i, :, r:r + P, c:c + P] += 2.0 if y[i] == 1 else -2.0
    return x, y, quadrant


def localised(cams: np.ndarray, quadrant: torch.Tensor) -> tuple[float, float]:
    """(share of images whose map is largest in the evidence quadrant, mean share of the map's mass there)."""
    h = S // 2
    hits, mass = [], []
    for cam, q in zip(cams, quadrant.tolist(), strict=True):
        sums = np.array([cam[:h, :h].sum(), cam[:h, h:].sum(), cam[h:, :h].sum(), cam[h:, h:].sum()])
        hits.append(sums.argmax() == q)
        mass.append(sums[q] / max(sums.sum(), 1e-12))
    return float(np.mean(hits)), float(np.mean(mass))


class CamNet(nn.Module):
    """Conv stem, one visattn residual block (channels-last, or inside ChannelsFirst), global average pooling and a
    linear classifier: the block's map is what Grad-CAM reads."""

    def __init__(self, block_name: str, wrapped: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.GELU(), nn.Conv2d(16, 16, 3, 1, 1))
        block = Block(16, Mlp(16, 32), visattn.create_block(block_name, 16, 2))
        self.body = visattn.ChannelsFirst(block) if wrapped else block
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        x = self.stem(x)  # (B, 16, S/2, S/2)
        if isinstance(self.body, visattn.ChannelsFirst):
            return self.head(self.body(x).mean(dim=(2, 3)))
        return self.head(self.body(x.permute(0, 2, 3, 1)).mean(dim=(1, 2)))  # channels-last block


def trained(model: nn.Module, seed: int = 0, steps: int = 60) -> tuple[nn.Module, tuple]:
    g = torch.Generator().manual_seed(seed)
    x, y, _ = evidence(256, g)
    test = evidence(48, g)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert (model(test[0]).argmax(1) == test[1]).float().mean() >= 0.9  # it learned the evidence
    return model, test


@pytest.mark.parametrize("block_name", ["dilated", "outlook"])
def test_helped_maps_find_the_evidence_and_the_wrong_axis_map_does_not(block_name):
    model, (x, y, quadrant) = trained(CamNet(block_name))
    layers = [model.body]  # a channels-last block
    targets = [ClassifierOutputTarget(int(c)) for c in y]
    with GradCAM(model, layers, reshape_transform=reshape_transform(layers)) as cam:
        helped = cam(x, targets)
    with GradCAM(model, layers) as cam:  # no transform: raises nothing, reads (B, H, W, C) as (B, C, H, W)
        unhelped = cam(x, targets)
    hits, mass = localised(helped, quadrant)
    assert hits >= 0.85 and mass >= 0.5, (hits, mass)
    hits, mass = localised(unhelped, quadrant)
    assert hits <= 0.5 and mass <= 0.35, (hits, mass)

    def captum(layer):
        maps = LayerGradCam(model, layer).attribute(x, target=y, relu_attributions=True)  # (B, 1, h, w)
        return nn.functional.interpolate(maps, size=(S, S), mode="bilinear")[:, 0].detach().numpy()

    with channels_first_view(model.body) as view:
        hits, mass = localised(captum(view), quadrant)
    assert hits >= 0.85 and mass >= 0.5, (hits, mass)
    hits, mass = localised(captum(model.body), quadrant)  # Captum on the block itself: the wrong axes
    assert hits <= 0.5 and mass <= 0.35, (hits, mass)


def test_blocks_inside_channels_first():
    """target_layers finds the ChannelsFirst (NCHW: no transform); the block inside it, with its transform, gives the
    same maps."""
    model, (x, y, quadrant) = trained(CamNet("dilated", wrapped=True))
    layers = target_layers(model)
    assert layers == [model.body] and reshape_transform(layers) is None
    targets = [ClassifierOutputTarget(int(c)) for c in y]
    with GradCAM(model, layers) as cam:
        outer = cam(x, targets)
    inner = [model.body.block]
    with GradCAM(model, inner, reshape_transform=reshape_transform(inner)) as cam:
        np.testing.assert_allclose(cam(x, targets), outer, atol=1e-5)
    hits, mass = localised(outer, quadrant)
    assert hits >= 0.85 and mass >= 0.5, (hits, mass)


@pytest.mark.parametrize("name", SMALLEST)
@pytest.mark.parametrize("stage", [0, -1])
def test_every_family_gives_the_grad_cam_of_its_map(name, stage):
    """pytorch-grad-cam and Captum through the helpers compute visattn's GradCam of the stage's map (CAM where the
    two must agree); without the helpers they compute something else, silently."""
    model = tiny(name, num_classes=4).eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 48)
    (layer,) = target_layers(model, stage)
    with GradCam(model, layer) as own:
        logits = model(x)
    reference = own(logits[:, 2]).detach().numpy()  # (B, h, w) on the stage's map
    expected = scale_cam_image(scale_cam_image(reference, (48, 64)))  # pytorch-grad-cam's scaling and resizing
    targets = [ClassifierOutputTarget(2)] * 2
    with GradCAM(model, [layer], reshape_transform=reshape_transform([layer])) as cam:
        np.testing.assert_allclose(cam(x, targets), expected, atol=1e-4)
    with GradCAM(model, [layer]) as cam:
        wrong = cam(x, targets)
    assert np.abs(wrong - expected).max() > 0.3
    with channels_first_view(layer) as view:
        captum = LayerGradCam(model, view).attribute(x, target=2, relu_attributions=True)  # (B, 1, h, w)
    np.testing.assert_allclose(captum[:, 0].detach().numpy(), reference, rtol=1e-4, atol=1e-6)
    raw = LayerGradCam(model, layer).attribute(x, target=2, relu_attributions=True)
    assert raw.shape[2:] != captum.shape[2:] or not torch.allclose(raw, captum)
