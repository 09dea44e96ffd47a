"""Dense-prediction models with each family's smallest variant beside a ResNet-50 and timm's Swin-T encoder:
segmentation_models_pytorch's Unet and torchvision's Faster R-CNN (FPN), parameters, MACs (visattn.count_macs) and
the training-step time (forward, backward, AdamW step) at 512x512, batch 2, the models interleaved.

Run in the integration environment (torch with torchvision, smp, timm):

    .venv-integration/bin/python benchmarks/dense.py --repeat 3 > benchmarks/results/dense-1.md

Prints a Markdown table (RESULTS.md section 14).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections import OrderedDict

import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

import visattn
import visattn.integrations.timm  # noqa: F401  (registers visattn_<name>)
from visattn.integrations.torchvision import fpn_backbone

VISATTN = ["litv2_s", "dilateformer_tiny", "volo_d1", "cloformer_xxs"]
SWIN = "swin_tiny_patch4_window7_224"
SIZE, BATCH = 512, 2


class TimmFPN(nn.Module):
    """timm features_only (NHWC maps turned NCHW) under torchvision's FPN: Swin-T for Faster R-CNN."""

    def __init__(self, name: str, **kwargs):
        super().__init__()
        self.body = timm.create_model(name, features_only=True, **kwargs)
        self.nhwc = getattr(self.body, "output_fmt", None) == "NHWC"
        self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), 256, extra_blocks=LastLevelMaxPool())
        self.out_channels = 256

    def forward(self, x):
        feats = [f.permute(0, 3, 1, 2) if self.nhwc else f for f in self.body(x)]
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def segmenters() -> dict[str, nn.Module]:
    models = {n: smp.Unet(f"tu-visattn_{n}", encoder_weights=None, classes=19) for n in VISATTN}
    models["resnet50"] = smp.Unet("resnet50", encoder_weights=None, classes=19)
    models["swin_t (timm)"] = smp.Unet(f"tu-{SWIN}", encoder_weights=None, classes=19, img_size=SIZE)
    return models


def detectors() -> dict[str, nn.Module]:
    common = dict(num_classes=91, min_size=SIZE, max_size=SIZE)
    models = {n: FasterRCNN(fpn_backbone(n), **common) for n in VISATTN}
    models["resnet50"] = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, trainable_backbone_layers=5,
                                                 **common)
    models["swin_t (timm)"] = FasterRCNN(TimmFPN(SWIN, img_size=SIZE), **common)
    return models


def seg_step(model, opt, x, y):
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def det_step(model, opt, images, targets):
    loss = sum(model(images, targets).values())
    opt.zero_grad()
    loss.backward()
    opt.step()


def run(task: str, models: dict[str, nn.Module], repeat: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    if task == "unet":
        x = torch.randn(BATCH, 3, SIZE, SIZE, generator=g)
        y = torch.randint(0, 19, (BATCH, SIZE, SIZE), generator=g)
        args, step, mac_input = (x, y), seg_step, (x[:1],)
    else:
        images = [torch.rand(3, SIZE, SIZE, generator=g) for _ in range(BATCH)]
        targets = [dict(boxes=torch.tensor([[40.0, 60, 200, 220], [300, 100, 420, 380]]), labels=torch.tensor([3, 7]))
                   for _ in range(BATCH)]
        args, step, mac_input = (images, targets), det_step, (images[:1],)
    rows, opts = [], {}
    for name, model in models.items():
        macs = visattn.count_macs(model, *mac_input).total  # inference, one image
        body = model.encoder if task == "unet" else model.backbone
        rows.append(dict(task=task, model=name, params_m=sum(p.numel() for p in model.parameters()) / 1e6,
                         encoder_params_m=sum(p.numel() for p in body.parameters()) / 1e6, gmacs=macs / 1e9,
                         times=[]))
        opts[name] = torch.optim.AdamW(model.parameters(), 1e-4)
        model.train()
        step(model, opts[name], *args)  # warm-up
    for _ in range(repeat):  # interleaved: every model once per round
        for row in rows:
            model = models[row["model"]]
            t0 = time.perf_counter()
            step(model, opts[row["model"]], *args)
            row["times"].append(time.perf_counter() - t0)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed training steps per model (default 3)")
    args = parser.parse_args()
    print(f"<!-- torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, float32, {SIZE}x{SIZE}, batch {BATCH}, repeat {args.repeat} -->")
    print("| task | encoder | params (M) | encoder+FPN / encoder params (M) | GMACs (1 image) | train step s "
          "(median) | p25-p75 s |")
    print("|---|---|---|---|---|---|---|")
    for task, build in (("unet", segmenters), ("faster_rcnn", detectors)):
        torch.manual_seed(0)
        for r in run(task, build(), args.repeat):
            q = statistics.quantiles(r["times"], n=4, method="inclusive") if len(r["times"]) > 1 else r["times"] * 3
            print(f"| {r['task']} | {r['model']} | {r['params_m']:.1f} | {r['encoder_params_m']:.1f} | "
                  f"{r['gmacs']:.1f} | {statistics.median(r['times']):.2f} | {q[0]:.2f}-{q[2]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
