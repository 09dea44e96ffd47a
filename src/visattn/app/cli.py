"""The ``visattn`` command (also ``python -m visattn`` and ``torchrun -m visattn``).

``visattn`` (or ``visattn blocks``) prints every paper block's parameters, MACs and forward latency;
``visattn bench`` runs the benchmark sweep (fast path beside the official formulation; table, CSV, JSON, PNG);
``visattn models`` prints the backbone table (parameters and MACs beside the papers' figures);
``visattn train`` / ``eval`` / ``export`` train a backbone, score a checkpoint, and export to ONNX;
``visattn weights`` lists the official weights (and fetches one with ``--fetch NAME``);
``visattn explain IMAGE`` shows what a model looks at (Grad-CAM, attention maps).
"""

from __future__ import annotations

import argparse
import sys

from .._version import __version__
from . import bench, evaluate, explain, export, pretrained, summary, train, zoo

COMMANDS = (
    ("blocks", summary, "parameters, MACs and latency of each block (the default command)"),
    ("bench", bench, "benchmark sweep: blocks (and backbones), fast path beside the official formulation"),
    ("models", zoo, "backbone parameters and MACs beside the papers' tables"),
    ("train", train, "train a backbone (torchrun for several processes)"),
    ("eval", evaluate, "top-1 of a checkpoint"),
    ("export", export, "ONNX export with dynamic batch/size, checked by onnxruntime"),
    ("weights", pretrained, "official weights of every variant: location, licence, top-1, cached or not"),
    ("explain", explain, "what a model looks at in an image: Grad-CAM, attention maps and distances (PNGs)"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visattn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"visattn {__version__}")
    sub = parser.add_subparsers(dest="command")
    for name, module, text in COMMANDS:
        command = sub.add_parser(name, help=text, description=module.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["blocks", *argv]
    args = parser.parse_args(argv)
    return args.func(args, parser)
