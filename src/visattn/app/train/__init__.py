"""``visattn train``: train any registered backbone, on one process or many (``torchrun``), and resume exactly.

* Data: the bundled digits set (default) or ``--data root`` with ``root/{train,val}/<class>/*``.
* ``--batch-size`` is the global batch, split evenly across ``torchrun`` processes.
* ``OUTPUT`` is locked while a run owns it; a folder that holds a run needs ``--resume`` or ``--overwrite``.
* Checkpoints are atomic, sealed with their SHA-256, written after every epoch and at SIGTERM / SIGINT.
"""

from __future__ import annotations

import sys

import torch

from .. import cpu_bf16
from ..common import exit_code, threads
from .config import TrainConfig, add_arguments, config_from_args
from .loop import Interrupted, train

__all__ = ["Interrupted", "TrainConfig", "add_arguments", "run", "train"]


def run(args, parser) -> int:
    def body():
        cfg = config_from_args(args)
        on_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
        cpu_bf16.guard(cfg.amp == "bf16", "cpu" if on_cpu else "cuda", "train")
        try:
            with threads(cfg.threads):  # auto: the idle cores, read when the command starts
                train(cfg)
        except Interrupted as stop:
            print(f"visattn train: {stop}; stopping (continue with --resume)", file=sys.stderr, flush=True)
            return 128 + stop.signum
    return exit_code("train", body)
