"""``visattn eval``: top-1 of a checkpoint on the held-out digits or on an image folder's ``val/`` split.

A checkpoint written by ``visattn train`` rebuilds its own model (name, overrides, classes, input size); an
official checkpoint needs ``--model`` (and ``--set`` overrides / ``--num-classes``). Every weight of the model must
come from the file; ``--allow-partial`` evaluates anyway and says what was left out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from . import data as datasets
from .common import exit_code, parse_overrides, positive, threads, threads_arg
from .weights import load_model


@torch.no_grad()
def top1(model, ds, batch_size: int = 256) -> float:
    correct = total = 0
    for x, y in torch.utils.data.DataLoader(ds, batch_size=batch_size):
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="visattn training checkpoint or official weights")
    parser.add_argument("--model", help="architecture of an official checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="constructor argument of an official checkpoint's model (repeatable)")
    parser.add_argument("--num-classes", type=positive(int), help="classes of an official checkpoint's head")
    parser.add_argument("--data", help="image folder root with val/ (default: held-out digits)")
    parser.add_argument("--size", type=positive(int), help="input size (default: the checkpoint's)")
    parser.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    parser.add_argument("--threads", type=threads_arg, default="auto",
                        help="CPU threads: auto (default: the cores not busy at the start) or N")
    parser.add_argument("--allow-partial", action="store_true",
                        help="evaluate even if the checkpoint does not cover every weight (reported)")


def run(args, parser) -> int:
    def body():
        with threads(args.threads):
            return _evaluate(args)
    return exit_code("eval", body)


def _evaluate(args) -> None:
    loaded = load_model(args.checkpoint, args.model, parse_overrides(args.overrides), args.num_classes,
                        args.ema, args.allow_partial)
    for note in loaded.notes:
        print(f"visattn eval: warning: {note}", file=sys.stderr)
    size = args.size or loaded.size or (32 if args.data is None else 224)
    if args.data is not None and loaded.source == "training" and loaded.classes is None:
        raise ValueError(f"{args.checkpoint} was trained on the bundled digits (its classes have no names); "
                         f"evaluate it without --data, or train on the folder first")
    ds = datasets.build(args.data, "val", size, loaded.classes)
    outputs = getattr(loaded.model, "num_classes", None)
    n_data = datasets.num_classes(ds) if loaded.classes is None else len(loaded.classes)
    if outputs and n_data > outputs:
        raise ValueError(f"{args.data}/val has {n_data} classes but the model scores {outputs}; it was trained on "
                         f"other data (pass the matching --data, or --num-classes for an official head)")
    if args.data is not None and loaded.classes is not None:
        extra = sorted({p.name for p in (Path(args.data) / "val").iterdir() if p.is_dir()} - set(loaded.classes))
        if extra:
            print(f"visattn eval: warning: {args.data}/val has class folders the checkpoint does not know, not "
                  f"scored: {', '.join(extra[:10])}", file=sys.stderr)
    acc = top1(loaded.model, ds)
    where = "held-out digits" if args.data is None else f"{args.data}/val"
    print(f"top-1 {acc:.4f} on {len(ds)} images ({where}, {size}x{size}, {loaded.name})")
