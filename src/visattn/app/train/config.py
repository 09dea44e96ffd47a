"""What a training run is: :class:`TrainConfig`, its command-line flags (declared once, in the fields' metadata)
and its checks."""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from ...hub import WEIGHTS
from ...models import list_models
from ..common import parse_overrides

# the default small model: LITv2 reduced to a few thousand parameters per stage, for 32x32 inputs
DEFAULT_MODEL = "litv2_s"
DEFAULT_OVERRIDES = {"embed_dim": 32, "depths": (1, 1, 2, 1), "num_heads": (1, 2, 4, 8), "drop_path_rate": 0.0}


def _flag(help: str, **argparse_kwargs):
    return dict(help=help, **argparse_kwargs)


@dataclass
class TrainConfig:
    model: str | None = field(default=None, metadata=_flag(
        f"model name (default: the --pretrained variant, else {DEFAULT_MODEL} reduced by {DEFAULT_OVERRIDES})"))
    overrides: dict = field(default_factory=dict, metadata=_flag(
        'model constructor override, e.g. --set embed_dim=32 --set "depths=(1,1,1,1)"', flag="--set",
        action="append", metavar="KEY=VALUE"))
    epochs: int = field(default=25, metadata=_flag("epochs (default 25)"))
    batch_size: int = field(default=64, metadata=_flag("global batch, split across processes (default 64)"))
    output: str = field(default="runs/visattn", metadata=_flag("folder for checkpoint.pt and metrics.jsonl"))
    pretrained: str | None = field(default=None, metadata=_flag(
        "weights to fine-tune from: a checkpoint file (official or timm), or a variant name whose official weights "
        "are fetched (visattn weights lists them); loaded with visattn.load_official, a classifier of another class "
        "count re-initialised"))
    data: str | None = field(default=None, metadata=_flag(
        "image folder root with train/ and val/ (default: bundled digits)"))
    resume: bool = field(default=False, metadata=_flag("continue from OUTPUT/checkpoint.pt"))
    overwrite: bool = field(default=False, metadata=_flag("start afresh in an OUTPUT folder that holds a run"))
    size: int | None = field(default=None, metadata=_flag("input size (default 32 for digits, 224 for folders)"))
    lr: float = field(default=2e-3, metadata=_flag("peak learning rate (default 2e-3)"))
    weight_decay: float = field(default=0.05, metadata=_flag("AdamW weight decay (default 0.05)"))
    warmup_epochs: float = field(default=1.0, metadata=_flag("linear warm-up, in epochs (default 1)"))
    label_smoothing: float = field(default=0.1, metadata=_flag("label smoothing in [0, 1) (default 0.1)"))
    clip_grad: float = field(default=1.0, metadata=_flag("max gradient norm (0: off; default 1)"))
    amp: str = field(default="none", metadata=_flag("autocast dtype", choices=["none", "bf16", "fp16"]))
    ema: float = field(default=0.0, metadata=_flag("EMA decay in [0, 1), e.g. 0.999 (0: off)"))
    seed: int = field(default=0, metadata=_flag("seed of weights, data order and dropout (default 0)"))
    workers: int = field(default=0, metadata=_flag("data-loader worker processes (default 0)"))
    threads: str = field(default="auto", metadata=_flag(
        "CPU threads: auto (default: the cores not busy at the start, shared among torchrun processes) or N"))
    device: str = field(default="auto", metadata=_flag("cpu, cuda or auto (default)"))
    quiet: bool = field(default=False, metadata=_flag("no progress bar or per-epoch lines"))
    log_steps: int = field(default=20, metadata=_flag("log the first N steps' losses to steps.jsonl (default 20)"))

    def pretrained_variant(self) -> str | None:
        """The variant named by ``--pretrained`` (its official weights are fetched), or None for a file."""
        p = self.pretrained
        return p if p is not None and p in WEIGHTS and not Path(p).is_file() else None

    def model_name(self) -> str:
        return self.model or self.pretrained_variant() or DEFAULT_MODEL

    def model_overrides(self) -> dict:
        full = self.model or self.pretrained_variant()  # the variant as published, not the reduced default
        return self.overrides if full else {**DEFAULT_OVERRIDES, **self.overrides}

    def input_size(self) -> int:
        return self.size or (32 if self.data is None else 224)

    def check(self) -> None:
        """Reject nonsense before anything is built or written."""
        if self.model is not None and self.model not in list_models():
            raise ValueError(f"unknown model {self.model!r}; choose from {', '.join(list_models())}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"--amp must be none, bf16 or fp16, got {self.amp!r}")
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("workers", 0), ("log_steps", 0)):
            if getattr(self, name) < minimum:
                raise ValueError(f"--{name.replace('_', '-')} must be >= {minimum}, got {getattr(self, name)}")
        if self.size is not None and self.size < 1:
            raise ValueError(f"--size must be >= 1, got {self.size}")
        for name, low, high in (("lr", 0.0, math.inf), ("weight_decay", 0.0, math.inf),
                                ("warmup_epochs", 0.0, math.inf), ("clip_grad", 0.0, math.inf),
                                ("label_smoothing", 0.0, 1.0), ("ema", 0.0, 1.0)):
            value = getattr(self, name)
            if not (math.isfinite(value) and low <= value and (value < high or high == math.inf)):
                bound = f"in [{low:g}, {high:g})" if high != math.inf else f"a finite number >= {low:g}"
                raise ValueError(f"--{name.replace('_', '-')} must be {bound}, got {value}")
        for key, why in (("num_classes", "the data set's class count"), ("in_chans", "3 (images are read as RGB)")):
            if key in self.overrides:
                raise ValueError(f"--set {key}=... is not for training: it is {why}; drop it")
        if self.pretrained is not None and not Path(self.pretrained).is_file() and self.pretrained not in WEIGHTS:
            raise FileNotFoundError(f"--pretrained: no checkpoint at {self.pretrained}, and no variant of that name "
                                    f"has official weights (visattn weights lists them)")
        if self.threads != "auto" and not (str(self.threads).isdigit() and int(self.threads) >= 1):
            raise ValueError(f"--threads must be auto or a positive number, got {self.threads!r}")
        if self.resume and self.overwrite:
            raise ValueError("--resume continues a run and --overwrite discards it; pass one of them")


def add_arguments(parser) -> None:
    """One flag per :class:`TrainConfig` field, from the field's type, default and metadata."""
    for f in fields(TrainConfig):
        meta = dict(f.metadata)
        flag = meta.pop("flag", "--" + f.name.replace("_", "-"))
        default = f.default if f.default is not MISSING else None
        if f.type == "bool":
            parser.add_argument(flag, dest=f.name, action="store_true", **meta)
        elif "action" in meta:
            parser.add_argument(flag, dest=f.name, default=[], **meta)
        else:
            kind = {"int": int, "float": float}.get(f.type.replace(" | None", ""), str)
            parser.add_argument(flag, dest=f.name, type=kind, default=default, **meta)


def config_from_args(args) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    values["overrides"] = parse_overrides(values["overrides"])
    return TrainConfig(**values)
