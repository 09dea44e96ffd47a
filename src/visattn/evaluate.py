"""``visattn eval``: top-1 of a checkpoint on the held-out digits or on an image folder's ``val/`` split.

A checkpoint written by ``visattn train`` rebuilds its own model (name, overrides, classes, input size); an
official checkpoint needs ``--model`` (and ``--set`` overrides / ``--num-classes``) and is loaded with
:func:`visattn.load_official`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from . import data as datasets
from .checkpoint import load_file, load_official
from .models import create_model


def load_for_eval(checkpoint, model: str | None = None, overrides: dict | None = None,
                  num_classes: int | None = None, use_ema: bool = False):
    """Return ``(model, info)``; ``info`` carries the input size and class names a training checkpoint recorded."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    obj = load_file(path)  # weights_only: training checkpoints hold tensors and plain containers only
    if isinstance(obj, dict) and "model_name" in obj:  # written by visattn train
        net = create_model(obj["model_name"], **obj["model_args"])
        weights = obj["ema"] if use_ema and obj.get("ema") is not None else obj["model"]
        net.load_state_dict(weights)
        return net.eval(), dict(size=obj.get("input_size"), classes=obj.get("classes"))
    if model is None:
        raise ValueError(f"{path} is not a visattn training checkpoint; name the architecture with --model")
    kwargs = dict(overrides or {})
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    net = create_model(model, **kwargs)
    load_official(net, obj, strict=False, use_ema=use_ema)
    return net.eval(), dict(size=None, classes=None)


@torch.no_grad()
def top1(model, ds, batch_size: int = 256) -> float:
    correct = total = 0
    for x, y in torch.utils.data.DataLoader(ds, batch_size=batch_size):
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


def run(args, parser) -> int:
    from .train import parse_overrides

    try:
        model, info = load_for_eval(args.checkpoint, args.model, parse_overrides(args.overrides), args.num_classes,
                                    args.ema)
        size = args.size or info["size"] or (32 if args.data is None else 224)
        ds = datasets.build(args.data, "val", size, info["classes"])
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"visattn eval: error: {err}", file=sys.stderr)
        return 2
    acc = top1(model, ds)
    where = "held-out digits" if args.data is None else f"{args.data}/val"
    print(f"top-1 {acc:.4f} on {len(ds)} images ({where}, {size}x{size})")
    return 0


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="visattn training checkpoint or official weights")
    parser.add_argument("--model", help="architecture of an official checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--num-classes", type=int, help="classes of an official checkpoint's head")
    parser.add_argument("--data", help="image folder root with val/ (default: held-out digits)")
    parser.add_argument("--size", type=int, help="input size (default: the checkpoint's)")
    parser.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
