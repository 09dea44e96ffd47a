"""``visattn explain IMAGE``: what a model looks at in one image.

Runs the model once on the image (autograd on, attention recorded), prints the top classes, and writes PNGs into
``--output``: ``gradcam.png`` (Grad-CAM of each top class, read the right way round from the channels-last stage
map), ``attention.png`` (where the query pixels attend, per stage and head), ``distance.png`` (mean attention
distance of every head against depth) and, for models with HiLo attention, ``hilo.png`` (Hi-Fi beside Lo-Fi).

The model comes from a ``visattn train`` checkpoint (``--checkpoint run/checkpoint.pt``: its classes, input size and
normalisation), from official weights (``--model NAME --pretrained``, or ``--model NAME --checkpoint FILE``:
ImageNet normalisation at the variant's size; classes are printed as indices).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..explain import GradCam, record_attention, target_layers
from ..explain.views import distance_figure, distances, gradcam_figure, hilo_figure, query_figure
from ..models import create_model
from . import data
from .common import exit_code, positive, threads, threads_arg
from .weights import load_model

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the official models' normalisation


def point(text: str) -> tuple[float, float]:
    """An argparse type: ``Y,X`` pixel coordinates."""
    try:
        y, x = (float(t) for t in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--point takes Y,X (pixel row and column of the image), got {text!r}") \
            from None
    if min(y, x) < 0:
        raise argparse.ArgumentTypeError(f"--point takes non-negative pixel coordinates, got {text!r}")
    return y, x


def add_arguments(parser) -> None:
    parser.add_argument("image", help="the image file to explain")
    parser.add_argument("--checkpoint", help="visattn training checkpoint, or an official weights file with --model")
    parser.add_argument("--model", help="architecture of official weights (with --pretrained or --checkpoint FILE)")
    parser.add_argument("--pretrained", action="store_true", help="the official weights of --model (fetched once)")
    parser.add_argument("--output", default="explain", help="folder for the PNGs (default: explain)")
    parser.add_argument("--topk", type=positive(int), default=3, help="classes to show (default 3)")
    parser.add_argument("--point", dest="points", type=point, action="append", metavar="Y,X",
                        help="query pixel of the attention maps, in the image's pixels (repeatable; default: the "
                             "image centre and the top class's Grad-CAM peak)")
    parser.add_argument("--stage", type=int, help="stage whose last block Grad-CAM reads (default: the deepest whose "
                                                  "map is at least 7 cells a side, else the first)")
    parser.add_argument("--heads", type=positive(int), default=4, help="heads shown per map (default 4)")
    parser.add_argument("--size", type=positive(int), help="input size (default: the checkpoint's or the variant's)")
    parser.add_argument("--ema", action="store_true", help="the EMA weights of a training checkpoint")
    parser.add_argument("--threads", type=threads_arg, default="auto",
                        help="CPU threads: auto (default: the cores not busy at the start) or N")


def run(args, parser) -> int:
    def body():
        with threads(args.threads):
            return _explain(args)
    return exit_code("explain", body)


def _load(args):
    """(model, name, class names or None, input size, mean, std)."""
    if args.checkpoint and args.pretrained:
        raise ValueError("pass --checkpoint FILE or --model NAME --pretrained, not both")
    if args.checkpoint:
        loaded = load_model(args.checkpoint, args.model, use_ema=args.ema)
        if loaded.source == "training":
            n = loaded.model.num_classes
            return loaded.model, loaded.name, loaded.classes or [str(i) for i in range(n)], loaded.size or 32, \
                data.MEAN, data.STD
        return loaded.model, loaded.name, None, loaded.model.img_size, IMAGENET_MEAN, IMAGENET_STD
    if not args.pretrained or not args.model:
        raise ValueError("name the model to explain: --checkpoint run/checkpoint.pt (a visattn training run), or "
                         "--model NAME --pretrained (official weights; visattn weights lists them)")
    if args.ema:
        raise ValueError("--ema applies to training checkpoints; drop it")
    model = create_model(args.model, pretrained=True).eval()
    return model, args.model, None, model.img_size, IMAGENET_MEAN, IMAGENET_STD


def default_stage(model, size: int) -> int:
    """The deepest stage whose map has at least 7 cells a side at ``size`` (Grad-CAM's usual 7x7), else the first."""
    sides = [size // info["reduction"] for info in model.stage_info]
    deep = [i for i, side in enumerate(sides) if side >= 7]
    return deep[-1] if deep else 0


def _explain(args) -> None:
    model, name, classes, size, mean, std = _load(args)
    size = args.size or size
    image = Path(args.image)
    if not image.is_file():
        raise FileNotFoundError(f"no image at {image}")
    pixels = data.read_image(image, size)  # (3, S, S) in [0, 1]
    x = ((pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])[None]  # (1, 3, S, S)
    stage = default_stage(model, size) if args.stage is None else args.stage
    with torch.enable_grad(), record_attention(model) as record, \
            GradCam(model, target_layers(model, stage)[0]) as cam:
        logits = model(x)  # the one forward: the predictions, the recorded attention and Grad-CAM's activations
        probs = logits.detach().softmax(dim=-1)[0]
        top = probs.topk(min(args.topk, len(probs)))
        cams = torch.cat([GradCam.upsample(cam(logits[:, c]), (size, size)) for c in top.indices.tolist()])
    labels = [classes[c] if classes else f"class {c}" for c in top.indices.tolist()]
    print(f"{name} on {image} ({size}x{size}):")
    for rank, (label, p) in enumerate(zip(labels, top.values.tolist(), strict=True), start=1):
        print(f"  {rank}. {label:<12} {p:.4f}")

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "gradcam.png"]
    gradcam_figure(pixels, cams, [f"{label} ({p:.2f})" for label, p in zip(labels, top.values.tolist(),
                                                                          strict=True)], written[-1])
    points = _points(args.points, image, size, cams[0])
    if len(record):
        written.append(out / "attention.png")
        query_figure(pixels, record, points, args.heads, written[-1])
    if distances(record):
        written.append(out / "distance.png")
        distance_figure(record, written[-1])
    if any(m.part.name == "hifi" for m in record) and any(m.part.name == "lofi" for m in record):
        written.append(out / "hilo.png")
        try:
            hilo_figure(pixels, record, points[0], written[-1])
        except ValueError as err:  # HiLo blocks whose branches never run together
            print(f"visattn explain: no hilo.png: {err}", file=sys.stderr)
            written.pop()
    for path in written:
        print(f"wrote {path}")


def _points(given, image: Path, size: int, cam: torch.Tensor) -> list[tuple[float, float]]:
    """Query pixels in the model input's coordinates: the given ones (image pixels, scaled to the input), or the
    centre and the top class's Grad-CAM peak."""
    if given:
        from PIL import Image

        with Image.open(image) as img:
            w, h = img.size
        for y, x in given:
            if y >= h or x >= w:
                raise ValueError(f"--point {y:g},{x:g} is outside the {h}x{w} image; rows 0..{h - 1}, "
                                 f"columns 0..{w - 1}")
        return [(y * size / h, x * size / w) for y, x in given]
    peak = int(cam.flatten().argmax())
    return [((size - 1) / 2, (size - 1) / 2), (float(peak // size), float(peak % size))]
